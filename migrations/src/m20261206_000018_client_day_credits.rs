//! `client_day_credits`: what the jobs a client created on a day spent, once retention has purged
//! them. The daily cap counts a day's jobs from the jobs table; without this row, purging a job
//! would give its credits back to the day.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum ClientDayCredits {
    Table,
    Client,
    Day,
    CreditsMicros,
}

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClientDayCredits::Table)
                    .if_not_exists()
                    .col(string(ClientDayCredits::Client))
                    .col(date(ClientDayCredits::Day))
                    .col(big_integer(ClientDayCredits::CreditsMicros).default(0))
                    .primary_key(Index::create().col(ClientDayCredits::Client).col(ClientDayCredits::Day))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ClientDayCredits::Table).to_owned()).await
    }
}
