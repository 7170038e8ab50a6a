//! Cost controls, second part: a job made by retrying another (`retry_of`), credits by kind
//! (sync, phone, waterfall) for the usage report, and the reuse window (`reuse_within`, the
//! people answered from an earlier lookup, their source and the credits they saved).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    RetryOf,
    CreditsSyncMicros,
    CreditsPhoneMicros,
    CreditsWaterfallMicros,
    ReuseWithinSecs,
    ReuseShared,
    ReuseHits,
    CreditsSavedMicros,
}

#[derive(DeriveIden, Clone, Copy)]
enum People {
    Table,
    PersonKey,
    ReusedFrom,
    ReusedFromJob,
    ReusedAt,
}

/// SQLite adds one column per `ALTER TABLE`.
async fn add<T: IntoIden + Copy + 'static>(manager: &SchemaManager<'_>, table: T, col: ColumnDef) -> Result<(), DbErr> {
    manager.alter_table(Table::alter().table(table).add_column(col).to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add(manager, Jobs::Table, uuid_null(Jobs::RetryOf)).await?;
        add(manager, Jobs::Table, big_integer(Jobs::CreditsSyncMicros).default(0).take()).await?;
        add(manager, Jobs::Table, big_integer(Jobs::CreditsPhoneMicros).default(0).take()).await?;
        add(manager, Jobs::Table, big_integer(Jobs::CreditsWaterfallMicros).default(0).take()).await?;
        add(manager, Jobs::Table, big_integer_null(Jobs::ReuseWithinSecs)).await?;
        add(manager, Jobs::Table, boolean(Jobs::ReuseShared).default(false).take()).await?;
        add(manager, Jobs::Table, big_integer(Jobs::ReuseHits).default(0).take()).await?;
        add(manager, Jobs::Table, big_integer(Jobs::CreditsSavedMicros).default(0).take()).await?;
        add(manager, People::Table, uuid_null(People::ReusedFrom)).await?;
        add(manager, People::Table, uuid_null(People::ReusedFromJob)).await?;
        add(manager, People::Table, timestamp_with_time_zone_null(People::ReusedAt)).await?;
        // The retries of a job (shown on it).
        manager
            .create_index(
                Index::create()
                    .name("ix_jobs_retry_of")
                    .table(Jobs::Table)
                    .col(Jobs::RetryOf)
                    .and_where(Expr::col(Jobs::RetryOf).is_not_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Reuse: earlier lookups of the same person.
        manager
            .create_index(
                Index::create()
                    .name("ix_people_person_key")
                    .table(People::Table)
                    .col(People::PersonKey)
                    .and_where(Expr::col(People::PersonKey).is_not_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_people_person_key").table(People::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("ix_jobs_retry_of").table(Jobs::Table).to_owned()).await?;
        for col in [People::ReusedFrom, People::ReusedFromJob, People::ReusedAt] {
            manager.alter_table(Table::alter().table(People::Table).drop_column(col).to_owned()).await?;
        }
        for col in [
            Jobs::RetryOf,
            Jobs::CreditsSyncMicros,
            Jobs::CreditsPhoneMicros,
            Jobs::CreditsWaterfallMicros,
            Jobs::ReuseWithinSecs,
            Jobs::ReuseShared,
            Jobs::ReuseHits,
            Jobs::CreditsSavedMicros,
        ] {
            manager.alter_table(Table::alter().table(Jobs::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
