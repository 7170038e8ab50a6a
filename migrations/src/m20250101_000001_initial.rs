//! The initial schema: jobs, people, batches, deliveries, callbacks, API keys, dispatcher state.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Client,
    IdempotencyKey,
    RequestHash,
    Flags,
    RevealPersonalEmails,
    RevealPhoneNumber,
    RunWaterfallEmail,
    RunWaterfallPhone,
    CallbackUrl,
    Metadata,
    State,
    PauseReason,
    NQueued,
    NSubmitted,
    NAwaitingAsync,
    NComplete,
    NPartial,
    NNotFound,
    NInvalid,
    NFailed,
    NCancelled,
    Total,
    CreditsMicros,
    Calls,
    PossibleDoubleCharges,
    LastClaimedAt,
    CancelRequestedAt,
    CreatedAt,
    UpdatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum People {
    Table,
    Id,
    JobId,
    Ordinal,
    Input,
    PersonKey,
    DupOf,
    HasDups,
    State,
    ApolloId,
    BatchId,
    Record,
    ExpectPhone,
    ExpectWaterfall,
    GotPhone,
    GotWaterfall,
    MissingParts,
    CreditsMicros,
    LastError,
    AwaitingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Batches {
    Table,
    Id,
    Flags,
    State,
    Size,
    Attempt,
    Claims,
    CountNextAttempt,
    NextAttemptAt,
    LeaseOwner,
    LeaseExpiresAt,
    WebhookSecret,
    RequestId,
    PhoneRequestId,
    HttpStatus,
    Response,
    CreditsMicros,
    LastError,
    CreatedAt,
    UpdatedAt,
    SubmittedAt,
}

#[derive(DeriveIden)]
enum BatchPeople {
    Table,
    BatchId,
    PersonId,
    JobId,
    Position,
}

#[derive(DeriveIden)]
enum InboundDeliveries {
    Table,
    Id,
    BatchId,
    DedupKey,
    Body,
    ReceivedAt,
    State,
    Kind,
    CreditsMicros,
    ParseError,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum CallbackDeliveries {
    Table,
    Id,
    JobId,
    WebhookId,
    State,
    Attempts,
    NextAttemptAt,
    ManualRequested,
    LeaseOwner,
    LeaseExpiresAt,
    LastStatus,
    LastError,
    CreatedAt,
    UpdatedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum CallbackAttempts {
    Table,
    Id,
    CallbackId,
    JobId,
    AttemptNo,
    Trigger,
    StatusCode,
    ResponseExcerpt,
    DurationMs,
    Error,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    KeyHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DispatcherState {
    Table,
    Key,
    Value,
    UpdatedAt,
}

/// One `bigint not null default 0` column: counters and micro-credit sums.
fn counter<T: IntoIden>(col: T) -> ColumnDef {
    big_integer(col).default(0).take()
}

/// A plain (non-unique) index.
fn index<T: IntoIden + 'static>(name: &str, table: T, cols: &[&'static str]) -> IndexCreateStatement {
    let mut idx = Index::create().name(name).table(table).if_not_exists().take();
    for c in cols {
        idx.col(Alias::new(*c));
    }
    idx
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(pk_uuid(Jobs::Id))
                    .col(string(Jobs::Client))
                    .col(string_null(Jobs::IdempotencyKey))
                    .col(string_null(Jobs::RequestHash))
                    .col(small_integer(Jobs::Flags))
                    .col(boolean(Jobs::RevealPersonalEmails))
                    .col(boolean(Jobs::RevealPhoneNumber))
                    .col(boolean(Jobs::RunWaterfallEmail))
                    .col(boolean(Jobs::RunWaterfallPhone))
                    .col(text_null(Jobs::CallbackUrl))
                    .col(json_binary_null(Jobs::Metadata))
                    .col(string(Jobs::State))
                    .col(text_null(Jobs::PauseReason))
                    .col(counter(Jobs::NQueued))
                    .col(counter(Jobs::NSubmitted))
                    .col(counter(Jobs::NAwaitingAsync))
                    .col(counter(Jobs::NComplete))
                    .col(counter(Jobs::NPartial))
                    .col(counter(Jobs::NNotFound))
                    .col(counter(Jobs::NInvalid))
                    .col(counter(Jobs::NFailed))
                    .col(counter(Jobs::NCancelled))
                    .col(counter(Jobs::Total))
                    .col(counter(Jobs::CreditsMicros))
                    .col(counter(Jobs::Calls))
                    .col(counter(Jobs::PossibleDoubleCharges))
                    .col(timestamp_with_time_zone_null(Jobs::LastClaimedAt))
                    .col(timestamp_with_time_zone_null(Jobs::CancelRequestedAt))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Jobs::CompletedAt))
                    .to_owned(),
            )
            .await?;
        // Idempotency: NULL keys are distinct in a unique index on both databases.
        manager
            .create_index(
                Index::create()
                    .name("ux_jobs_client_idempotency_key")
                    .table(Jobs::Table)
                    .col(Jobs::Client)
                    .col(Jobs::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // `list_jobs`: newest first per client (ids are UUID v7, so id order is creation order).
        manager.create_index(index("ix_jobs_client_id", Jobs::Table, &["client", "id"])).await?;
        // Claim: active jobs in fairness order.
        manager.create_index(index("ix_jobs_state_last_claimed", Jobs::Table, &["state", "last_claimed_at"])).await?;

        manager
            .create_table(
                Table::create()
                    .table(Batches::Table)
                    .if_not_exists()
                    .col(pk_uuid(Batches::Id))
                    .col(small_integer(Batches::Flags))
                    .col(string(Batches::State))
                    .col(integer(Batches::Size))
                    .col(integer(Batches::Attempt))
                    .col(integer(Batches::Claims))
                    .col(boolean(Batches::CountNextAttempt))
                    .col(timestamp_with_time_zone_null(Batches::NextAttemptAt))
                    .col(string_null(Batches::LeaseOwner))
                    .col(timestamp_with_time_zone_null(Batches::LeaseExpiresAt))
                    .col(string(Batches::WebhookSecret))
                    .col(big_integer_null(Batches::RequestId))
                    .col(string_null(Batches::PhoneRequestId))
                    .col(integer_null(Batches::HttpStatus))
                    .col(json_binary_null(Batches::Response))
                    .col(counter(Batches::CreditsMicros))
                    .col(text_null(Batches::LastError))
                    .col(timestamp_with_time_zone(Batches::CreatedAt))
                    .col(timestamp_with_time_zone(Batches::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Batches::SubmittedAt))
                    .to_owned(),
            )
            .await?;
        // Claim of due retries; lease expiry; overdue (reconcile) scan.
        manager
            .create_index(index("ix_batches_state_next_attempt", Batches::Table, &["state", "next_attempt_at"]))
            .await?;
        manager
            .create_index(index("ix_batches_state_lease_expires", Batches::Table, &["state", "lease_expires_at"]))
            .await?;
        manager.create_index(index("ix_batches_state_submitted", Batches::Table, &["state", "submitted_at"])).await?;

        manager
            .create_table(
                Table::create()
                    .table(People::Table)
                    .if_not_exists()
                    .col(pk_uuid(People::Id))
                    .col(uuid(People::JobId))
                    .col(big_integer(People::Ordinal))
                    .col(json_binary(People::Input))
                    .col(string_null(People::PersonKey))
                    .col(uuid_null(People::DupOf))
                    .col(boolean(People::HasDups))
                    .col(string(People::State))
                    .col(string_null(People::ApolloId))
                    .col(uuid_null(People::BatchId))
                    .col(json_binary_null(People::Record))
                    .col(boolean(People::ExpectPhone))
                    .col(boolean(People::ExpectWaterfall))
                    .col(boolean(People::GotPhone))
                    .col(boolean(People::GotWaterfall))
                    .col(json_binary_null(People::MissingParts))
                    .col(counter(People::CreditsMicros))
                    .col(text_null(People::LastError))
                    .col(timestamp_with_time_zone_null(People::AwaitingSince))
                    .col(timestamp_with_time_zone(People::CreatedAt))
                    .col(timestamp_with_time_zone(People::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_people_job")
                            .from(People::Table, People::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_people_batch")
                            .from(People::Table, People::BatchId)
                            .to(Batches::Table, Batches::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // `list_people` in input order, and one ordinal per person.
        manager
            .create_index(
                Index::create()
                    .name("ux_people_job_ordinal")
                    .table(People::Table)
                    .col(People::JobId)
                    .col(People::Ordinal)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Claim: the queued primaries of a job in input order. Partial, so claimed people leave
        // it and a claim never walks past them; the claim query repeats the predicate literally.
        manager
            .create_index(
                Index::create()
                    .name("ix_people_claimable")
                    .table(People::Table)
                    .col(People::JobId)
                    .col(People::Ordinal)
                    .and_where(Expr::col(People::State).eq("queued"))
                    .and_where(Expr::col(People::DupOf).is_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Cancel (queued people of a job) and recounts.
        manager
            .create_index(index("ix_people_job_state_ordinal", People::Table, &["job_id", "state", "ordinal"]))
            .await?;
        // People of a batch (sync results, deliveries, failures).
        manager.create_index(index("ix_people_batch", People::Table, &["batch_id"])).await?;
        // Copying a primary's result to its duplicates. Partial: most people are not duplicates,
        // and an index on the NULLs would tempt planners into scanning it for `dup_of IS NULL`.
        manager
            .create_index(
                Index::create()
                    .name("ix_people_dup_of")
                    .table(People::Table)
                    .col(People::DupOf)
                    .and_where(Expr::col(People::DupOf).is_not_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Deadline sweep: only people awaiting asynchronous parts have `awaiting_since`.
        manager
            .create_index(
                Index::create()
                    .name("ix_people_awaiting_since")
                    .table(People::Table)
                    .col(People::AwaitingSince)
                    .and_where(Expr::col(People::AwaitingSince).is_not_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BatchPeople::Table)
                    .if_not_exists()
                    .col(uuid(BatchPeople::BatchId))
                    .col(uuid(BatchPeople::PersonId))
                    .col(uuid(BatchPeople::JobId))
                    .col(integer(BatchPeople::Position))
                    .primary_key(Index::create().col(BatchPeople::BatchId).col(BatchPeople::PersonId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_batch_people_batch")
                            .from(BatchPeople::Table, BatchPeople::BatchId)
                            .to(Batches::Table, Batches::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_batch_people_person")
                            .from(BatchPeople::Table, BatchPeople::PersonId)
                            .to(People::Table, People::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Membership history of one person (a person may be claimed again after a retry).
        manager.create_index(index("ix_batch_people_person", BatchPeople::Table, &["person_id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table(InboundDeliveries::Table)
                    .if_not_exists()
                    .col(pk_uuid(InboundDeliveries::Id))
                    .col(uuid(InboundDeliveries::BatchId))
                    .col(string(InboundDeliveries::DedupKey))
                    .col(blob(InboundDeliveries::Body))
                    .col(timestamp_with_time_zone(InboundDeliveries::ReceivedAt))
                    .col(string(InboundDeliveries::State))
                    .col(string_null(InboundDeliveries::Kind))
                    .col(counter(InboundDeliveries::CreditsMicros))
                    .col(text_null(InboundDeliveries::ParseError))
                    .col(timestamp_with_time_zone_null(InboundDeliveries::ProcessedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_inbound_deliveries_batch")
                            .from(InboundDeliveries::Table, InboundDeliveries::BatchId)
                            .to(Batches::Table, Batches::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Dedup: the same (batch, body) is stored once.
        manager
            .create_index(
                Index::create()
                    .name("ux_inbound_deliveries_dedup")
                    .table(InboundDeliveries::Table)
                    .col(InboundDeliveries::DedupKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_inbound_deliveries_state_received",
                InboundDeliveries::Table,
                &["state", "received_at"],
            ))
            .await?;
        manager.create_index(index("ix_inbound_deliveries_batch", InboundDeliveries::Table, &["batch_id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table(CallbackDeliveries::Table)
                    .if_not_exists()
                    .col(pk_uuid(CallbackDeliveries::Id))
                    .col(uuid_uniq(CallbackDeliveries::JobId))
                    .col(string(CallbackDeliveries::WebhookId))
                    .col(string(CallbackDeliveries::State))
                    .col(integer(CallbackDeliveries::Attempts))
                    .col(timestamp_with_time_zone_null(CallbackDeliveries::NextAttemptAt))
                    .col(boolean(CallbackDeliveries::ManualRequested))
                    .col(string_null(CallbackDeliveries::LeaseOwner))
                    .col(timestamp_with_time_zone_null(CallbackDeliveries::LeaseExpiresAt))
                    .col(integer_null(CallbackDeliveries::LastStatus))
                    .col(text_null(CallbackDeliveries::LastError))
                    .col(timestamp_with_time_zone(CallbackDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(CallbackDeliveries::UpdatedAt))
                    .col(timestamp_with_time_zone_null(CallbackDeliveries::DeliveredAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_callback_deliveries_job")
                            .from(CallbackDeliveries::Table, CallbackDeliveries::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_callback_deliveries_state_next",
                CallbackDeliveries::Table,
                &["state", "next_attempt_at"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CallbackAttempts::Table)
                    .if_not_exists()
                    .col(pk_uuid(CallbackAttempts::Id))
                    .col(uuid(CallbackAttempts::CallbackId))
                    .col(uuid(CallbackAttempts::JobId))
                    .col(integer(CallbackAttempts::AttemptNo))
                    .col(string(CallbackAttempts::Trigger))
                    .col(integer_null(CallbackAttempts::StatusCode))
                    .col(text_null(CallbackAttempts::ResponseExcerpt))
                    .col(big_integer(CallbackAttempts::DurationMs))
                    .col(text_null(CallbackAttempts::Error))
                    .col(timestamp_with_time_zone(CallbackAttempts::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_callback_attempts_callback")
                            .from(CallbackAttempts::Table, CallbackAttempts::CallbackId)
                            .to(CallbackDeliveries::Table, CallbackDeliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_callback_attempts_callback",
                CallbackAttempts::Table,
                &["callback_id", "attempt_no"],
            ))
            .await?;
        manager.create_index(index("ix_callback_attempts_job", CallbackAttempts::Table, &["job_id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(pk_uuid(ApiKeys::Id))
                    .col(string_uniq(ApiKeys::Name))
                    .col(string_uniq(ApiKeys::KeyHash))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(DispatcherState::Table)
                    .if_not_exists()
                    .col(string(DispatcherState::Key).primary_key())
                    .col(json_binary(DispatcherState::Value))
                    .col(timestamp_with_time_zone(DispatcherState::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents, so foreign keys never block the drop.
        for table in [
            CallbackAttempts::Table.into_iden(),
            CallbackDeliveries::Table.into_iden(),
            InboundDeliveries::Table.into_iden(),
            BatchPeople::Table.into_iden(),
            People::Table.into_iden(),
            Batches::Table.into_iden(),
            Jobs::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            DispatcherState::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
