//! Credit budgets: a job's `max_credits` (micro-credits), the people left when it ran out
//! (`skipped_budget`), and why the job ended early.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    MaxCreditsMicros,
    NSkippedBudget,
    EndReason,
}

/// SQLite adds one column per `ALTER TABLE`.
async fn add(manager: &SchemaManager<'_>, col: ColumnDef) -> Result<(), DbErr> {
    manager.alter_table(Table::alter().table(Jobs::Table).add_column(col).to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add(manager, big_integer_null(Jobs::MaxCreditsMicros)).await?;
        add(manager, big_integer(Jobs::NSkippedBudget).default(0).take()).await?;
        add(manager, text_null(Jobs::EndReason)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Jobs::MaxCreditsMicros, Jobs::NSkippedBudget, Jobs::EndReason] {
            manager.alter_table(Table::alter().table(Jobs::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
