//! Several replicas on one PostgreSQL database: the shared rate limiter per Apollo key (its state
//! row and its call log), lease rows for tasks that must run on one replica at a time, and (on
//! PostgreSQL) triggers that wake every replica's dispatcher when work arrives.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum RateLimiters {
    Table,
    Key,
    LearnedMinute,
    LearnedHour,
    LearnedDay,
    BlockedUntil,
    RateLimited,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RateLimitCalls {
    Table,
    Id,
    Key,
    At,
}

#[derive(DeriveIden)]
enum TaskLeases {
    Table,
    Task,
    Owner,
    ExpiresAt,
}

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A notification on `enrichd_dispatch` (the channel `job_store::wakeups` listens on) when a job is
/// created or a pause is lifted; PostgreSQL sends it at commit.
const WAKE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION enrichd_wake_dispatch() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('enrichd_dispatch', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER enrichd_jobs_wake AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION enrichd_wake_dispatch();
CREATE TRIGGER enrichd_pause_wake AFTER DELETE ON dispatcher_state
    FOR EACH STATEMENT EXECUTE FUNCTION enrichd_wake_dispatch();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per Apollo key fingerprint (never the key): limits learned from headers, and
        // the instant before which no call may go (a 429's retry-after, a window with none left).
        manager
            .create_table(
                Table::create()
                    .table(RateLimiters::Table)
                    .if_not_exists()
                    .col(string(RateLimiters::Key).primary_key())
                    .col(big_integer_null(RateLimiters::LearnedMinute))
                    .col(big_integer_null(RateLimiters::LearnedHour))
                    .col(big_integer_null(RateLimiters::LearnedDay))
                    .col(timestamp_with_time_zone_null(RateLimiters::BlockedUntil))
                    .col(big_integer(RateLimiters::RateLimited).default(0))
                    .col(timestamp_with_time_zone(RateLimiters::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // The sliding log: one row per call, kept as long as the longest limited window.
        manager
            .create_table(
                Table::create()
                    .table(RateLimitCalls::Table)
                    .if_not_exists()
                    .col(big_integer(RateLimitCalls::Id).auto_increment().primary_key())
                    .col(string(RateLimitCalls::Key))
                    .col(timestamp_with_time_zone(RateLimitCalls::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_rate_limit_calls_key_at")
                    .table(RateLimitCalls::Table)
                    .col(RateLimitCalls::Key)
                    .col(RateLimitCalls::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskLeases::Table)
                    .if_not_exists()
                    .col(string(TaskLeases::Task).primary_key())
                    .col(string(TaskLeases::Owner))
                    .col(timestamp_with_time_zone(TaskLeases::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            manager.get_connection().execute_unprepared(WAKE_FUNCTION).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "DROP TRIGGER IF EXISTS enrichd_jobs_wake ON jobs; \
                     DROP TRIGGER IF EXISTS enrichd_pause_wake ON dispatcher_state; \
                     DROP FUNCTION IF EXISTS enrichd_wake_dispatch();",
                )
                .await?;
        }
        for t in [TaskLeases::Table.into_iden(), RateLimitCalls::Table.into_iden(), RateLimiters::Table.into_iden()] {
            manager.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
