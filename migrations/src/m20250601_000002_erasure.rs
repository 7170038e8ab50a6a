//! Erasure and retention: `jobs.erased_at`, and the indexes that erasing and purging a job use.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    ErasedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum BatchPeople {
    Table,
    JobId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // When the job's personal data was erased (`DELETE /v1/jobs/{id}`); its counters stay.
        manager
            .alter_table(
                Table::alter().table(Jobs::Table).add_column(timestamp_with_time_zone_null(Jobs::ErasedAt)).to_owned(),
            )
            .await?;
        // Retention: finished jobs by completion time.
        manager
            .create_index(
                Index::create()
                    .name("ix_jobs_completed_at")
                    .table(Jobs::Table)
                    .col(Jobs::CompletedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Erase and purge: the batches that held a job's people.
        manager
            .create_index(
                Index::create()
                    .name("ix_batch_people_job")
                    .table(BatchPeople::Table)
                    .col(BatchPeople::JobId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_batch_people_job").table(BatchPeople::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_index(Index::drop().name("ix_jobs_completed_at").table(Jobs::Table).if_exists().to_owned())
            .await?;
        manager.alter_table(Table::alter().table(Jobs::Table).drop_column(Jobs::ErasedAt).to_owned()).await?;
        Ok(())
    }
}
