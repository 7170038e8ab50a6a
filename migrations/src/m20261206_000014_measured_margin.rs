//! The shared limiter no longer learns where Apollo's windows restart (a wrong reading cost a
//! window of 429s, again and again); it stores instead the largest margin a replica measured
//! lately from its send-to-answer times, so every replica spaces its calls by it.

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
    MarginMs,
    MarginAt,
}

const RESTARTS: [RateLimiters; 6] = [
    RateLimiters::RestartMinuteLo,
    RateLimiters::RestartMinuteHi,
    RateLimiters::RestartHourLo,
    RateLimiters::RestartHourHi,
    RateLimiters::RestartDayLo,
    RateLimiters::RestartDayHi,
];

fn alter() -> TableAlterStatement {
    Table::alter().table(RateLimiters::Table).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite changes one column per `ALTER TABLE`.
        for col in RESTARTS {
            manager.alter_table(alter().drop_column(col).to_owned()).await?;
        }
        manager.alter_table(alter().add_column(big_integer_null(RateLimiters::MarginMs)).to_owned()).await?;
        manager.alter_table(alter().add_column(timestamp_with_time_zone_null(RateLimiters::MarginAt)).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [RateLimiters::MarginMs, RateLimiters::MarginAt] {
            manager.alter_table(alter().drop_column(col).to_owned()).await?;
        }
        for col in RESTARTS {
            manager.alter_table(alter().add_column(big_integer_null(col)).to_owned()).await?;
        }
        Ok(())
    }
}
