//! What the dashboard's system page shows besides queue depths: the recent failed Apollo calls
//! (`apollo_errors`, kept short), the replicas seen (`replicas`, a heartbeat row per process), and
//! an index for the jobs list filtered by state.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum ApolloErrors {
    Table,
    Id,
    At,
    BatchId,
    Kind,
    Status,
    Message,
}

#[derive(DeriveIden)]
enum Replicas {
    Table,
    Owner,
    Label,
    StartedAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Client,
    State,
    Id,
}

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per Apollo call that ended in an error; the id orders them (newest last).
        manager
            .create_table(
                Table::create()
                    .table(ApolloErrors::Table)
                    .if_not_exists()
                    .col(big_integer(ApolloErrors::Id).auto_increment().primary_key())
                    .col(timestamp_with_time_zone(ApolloErrors::At))
                    .col(uuid_null(ApolloErrors::BatchId))
                    .col(string(ApolloErrors::Kind))
                    .col(integer_null(ApolloErrors::Status))
                    .col(text(ApolloErrors::Message))
                    .to_owned(),
            )
            .await?;
        // Purges by age (retention) read the oldest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_apollo_errors_at")
                    .table(ApolloErrors::Table)
                    .col(ApolloErrors::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Replicas::Table)
                    .if_not_exists()
                    .col(string(Replicas::Owner).primary_key())
                    .col(string(Replicas::Label))
                    .col(timestamp_with_time_zone(Replicas::StartedAt))
                    .col(timestamp_with_time_zone(Replicas::LastSeenAt))
                    .to_owned(),
            )
            .await?;
        // The jobs list filtered by state, per client, newest first, paged by id.
        manager
            .create_index(
                Index::create()
                    .name("ix_jobs_client_state_id")
                    .table(Jobs::Table)
                    .col(Jobs::Client)
                    .col(Jobs::State)
                    .col(Jobs::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_jobs_client_state_id").table(Jobs::Table).if_exists().to_owned())
            .await?;
        for t in [Replicas::Table.into_iden(), ApolloErrors::Table.into_iden()] {
            manager.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
