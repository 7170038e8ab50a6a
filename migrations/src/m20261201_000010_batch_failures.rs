//! Apollo's failed answers per batch (5xx, timeouts), apart from its counted attempts: a lease that
//! ran out because our own process died is an attempt (the call may have been charged) but not a
//! failure of Apollo's, so restarts never use up the retries Apollo's outages are allowed.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Batches {
    Table,
    Failures,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let col = integer(Batches::Failures).default(0).take();
        manager.alter_table(Table::alter().table(Batches::Table).add_column(col).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Batches::Table).drop_column(Batches::Failures).to_owned()).await
    }
}
