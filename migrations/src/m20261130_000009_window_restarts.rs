//! Where Apollo's fixed windows restart, as the shared limiter has learned from usage counts:
//! per window an interval holding one restart, in milliseconds since the epoch on the database's
//! clock (the next restarts follow every window length).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum RateLimiters {
    Table,
    RestartMinuteLo,
    RestartMinuteHi,
    RestartHourLo,
    RestartHourHi,
    RestartDayLo,
    RestartDayHi,
}

const COLUMNS: [RateLimiters; 6] = [
    RateLimiters::RestartMinuteLo,
    RateLimiters::RestartMinuteHi,
    RateLimiters::RestartHourLo,
    RateLimiters::RestartHourHi,
    RateLimiters::RestartDayLo,
    RateLimiters::RestartDayHi,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per `ALTER TABLE`.
        for col in COLUMNS {
            let alter = Table::alter().table(RateLimiters::Table).add_column(big_integer_null(col)).to_owned();
            manager.alter_table(alter).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            manager.alter_table(Table::alter().table(RateLimiters::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
