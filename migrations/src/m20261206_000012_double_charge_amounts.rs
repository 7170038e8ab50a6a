//! Possible double charges as an amount: per job, the credits that calls of unknown outcome may
//! have cost a second time; per batch, how many of its calls had an unknown outcome, so that the
//! answer of its retry can replace the worst case with what such a call really costs.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    PossibleDoubleChargeMicros,
}

#[derive(DeriveIden, Clone, Copy)]
enum Batches {
    Table,
    UnknownOutcomes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let amount = big_integer(Jobs::PossibleDoubleChargeMicros).default(0).take();
        manager.alter_table(Table::alter().table(Jobs::Table).add_column(amount).to_owned()).await?;
        let unknown = integer(Batches::UnknownOutcomes).default(0).take();
        manager.alter_table(Table::alter().table(Batches::Table).add_column(unknown).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Batches::Table).drop_column(Batches::UnknownOutcomes).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(Jobs::Table).drop_column(Jobs::PossibleDoubleChargeMicros).to_owned())
            .await
    }
}
