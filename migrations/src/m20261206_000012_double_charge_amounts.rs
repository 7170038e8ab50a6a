//! Possible double charges as an amount: per job, the credits that calls of unknown outcome may
//! have cost a second time; per batch, how many of its calls had an unknown outcome, what
//! deliveries of those calls have booked since, and the amount the batch adds to its jobs'.

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
    LostCreditsMicros,
    DoubleChargeMicros,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let amount = big_integer(Jobs::PossibleDoubleChargeMicros).default(0).take();
        manager.alter_table(Table::alter().table(Jobs::Table).add_column(amount).to_owned()).await?;
        let unknown = integer(Batches::UnknownOutcomes).default(0).take();
        manager.alter_table(Table::alter().table(Batches::Table).add_column(unknown).to_owned()).await?;
        let lost = big_integer(Batches::LostCreditsMicros).default(0).take();
        manager.alter_table(Table::alter().table(Batches::Table).add_column(lost).to_owned()).await?;
        let amount = big_integer(Batches::DoubleChargeMicros).default(0).take();
        manager.alter_table(Table::alter().table(Batches::Table).add_column(amount).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Batches::DoubleChargeMicros, Batches::LostCreditsMicros, Batches::UnknownOutcomes] {
            manager.alter_table(Table::alter().table(Batches::Table).drop_column(col).to_owned()).await?;
        }
        manager
            .alter_table(Table::alter().table(Jobs::Table).drop_column(Jobs::PossibleDoubleChargeMicros).to_owned())
            .await
    }
}
