//! The lifecycle fixes: which call (claim) a delivery belongs to and how often it failed to apply,
//! the answered claim and its sync credits, reconcile polling back-off, a phone expected from an
//! earlier request, and raw bodies the JSON column cannot hold.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum People {
    Table,
    PhoneElsewhere,
    ApolloId,
}

#[derive(DeriveIden, Clone, Copy)]
enum Batches {
    Table,
    AnsweredClaim,
    SyncCreditsMicros,
    NextPollAt,
    Polls,
    ResponseBody,
}

#[derive(DeriveIden, Clone, Copy)]
enum InboundDeliveries {
    Table,
    Claim,
    ApplyAttempts,
}

/// SQLite adds one column per `ALTER TABLE`.
async fn add(manager: &SchemaManager<'_>, table: impl IntoIden + Copy + 'static, col: ColumnDef) -> Result<(), DbErr> {
    manager.alter_table(Table::alter().table(table).add_column(col).to_owned()).await
}

async fn drop(
    manager: &SchemaManager<'_>,
    table: impl IntoIden + Copy + 'static,
    col: impl IntoIden,
) -> Result<(), DbErr> {
    manager.alter_table(Table::alter().table(table).drop_column(col).to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Apollo answered `phone_enrichment: skipped`: the phone comes with an earlier request.
        add(manager, People::Table, boolean(People::PhoneElsewhere).default(false).take()).await?;
        // Which claim (Apollo call) of the batch was answered, and what its answer charged: a
        // delivery from another claim proves that call ran too (and was charged).
        add(manager, Batches::Table, integer_null(Batches::AnsweredClaim)).await?;
        add(manager, Batches::Table, big_integer(Batches::SyncCreditsMicros).default(0).take()).await?;
        // Reconcile: least recently polled first, with back-off.
        add(manager, Batches::Table, timestamp_with_time_zone_null(Batches::NextPollAt)).await?;
        add(manager, Batches::Table, integer(Batches::Polls).default(0).take()).await?;
        // An answer the JSON column cannot hold as it is (PostgreSQL jsonb refuses U+0000) is kept
        // here byte for byte; the JSON column then holds a sanitized copy.
        add(manager, Batches::Table, blob_null(Batches::ResponseBody)).await?;
        add(manager, InboundDeliveries::Table, integer_null(InboundDeliveries::Claim)).await?;
        add(manager, InboundDeliveries::Table, integer(InboundDeliveries::ApplyAttempts).default(0).take()).await?;
        // People of other batches with the same Apollo id (a skipped phone, delivered elsewhere).
        manager
            .create_index(
                Index::create()
                    .name("ix_people_apollo_id")
                    .table(People::Table)
                    .col(People::ApolloId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_people_apollo_id").table(People::Table).if_exists().to_owned())
            .await?;
        drop(manager, InboundDeliveries::Table, InboundDeliveries::ApplyAttempts).await?;
        drop(manager, InboundDeliveries::Table, InboundDeliveries::Claim).await?;
        drop(manager, Batches::Table, Batches::ResponseBody).await?;
        drop(manager, Batches::Table, Batches::Polls).await?;
        drop(manager, Batches::Table, Batches::NextPollAt).await?;
        drop(manager, Batches::Table, Batches::SyncCreditsMicros).await?;
        drop(manager, Batches::Table, Batches::AnsweredClaim).await?;
        drop(manager, People::Table, People::PhoneElsewhere).await?;
        Ok(())
    }
}
