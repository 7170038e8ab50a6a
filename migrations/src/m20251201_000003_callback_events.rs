//! Callback events: several per job (`job.completed`, then one `job.updated` per later change),
//! each with its event type and the body frozen at its first send.
//!
//! `callback_deliveries.job_id` was an inline `UNIQUE`, which SQLite cannot drop in place, so both
//! callback tables are rebuilt: new tables, rows copied (existing rows become `job.completed`
//! events whose body is frozen at their next send), old tables dropped, new ones renamed to the
//! old names. The same steps run on PostgreSQL.

use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, StatementBuilder, TransactionTrait};
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
}

/// The columns of both shapes; `EventType` and `Body` exist only in the new one.
#[derive(DeriveIden, Clone, Copy)]
enum CallbackDeliveries {
    Table,
    Id,
    JobId,
    WebhookId,
    EventType,
    Body,
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

#[derive(DeriveIden, Clone, Copy)]
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

/// Temporary names while the old tables still exist.
#[derive(DeriveIden, Clone, Copy)]
enum Rebuilt {
    CallbackDeliveriesNext,
    CallbackAttemptsNext,
}

/// The columns both shapes share, in copy order.
const SHARED: [CallbackDeliveries; 14] = [
    CallbackDeliveries::Id,
    CallbackDeliveries::JobId,
    CallbackDeliveries::WebhookId,
    CallbackDeliveries::State,
    CallbackDeliveries::Attempts,
    CallbackDeliveries::NextAttemptAt,
    CallbackDeliveries::ManualRequested,
    CallbackDeliveries::LeaseOwner,
    CallbackDeliveries::LeaseExpiresAt,
    CallbackDeliveries::LastStatus,
    CallbackDeliveries::LastError,
    CallbackDeliveries::CreatedAt,
    CallbackDeliveries::UpdatedAt,
    CallbackDeliveries::DeliveredAt,
];

const ATTEMPT_COLUMNS: [CallbackAttempts; 10] = [
    CallbackAttempts::Id,
    CallbackAttempts::CallbackId,
    CallbackAttempts::JobId,
    CallbackAttempts::AttemptNo,
    CallbackAttempts::Trigger,
    CallbackAttempts::StatusCode,
    CallbackAttempts::ResponseExcerpt,
    CallbackAttempts::DurationMs,
    CallbackAttempts::Error,
    CallbackAttempts::CreatedAt,
];

/// The event type of every row that existed before events.
const COMPLETED: &str = "job.completed";

/// Runs one statement in the migration's transaction.
async fn exec<S: StatementBuilder>(txn: &DatabaseTransaction, backend: DbBackend, stmt: &S) -> Result<(), DbErr> {
    txn.execute_raw(backend.build(stmt)).await.map(|_| ())
}

/// Rebuilds both tables in the shape with events (`events`) or the old one-row-per-job shape, in
/// one transaction: atomic, and on one SQLite connection (another connection of the pool could
/// still hold the schema from before the drops, and refuse the renames).
async fn rebuild(manager: &SchemaManager<'_>, events: bool) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let txn = manager.get_connection().begin().await?;
    let mut outbox = Table::create();
    outbox.table(Rebuilt::CallbackDeliveriesNext).col(pk_uuid(CallbackDeliveries::Id));
    if events {
        outbox
            .col(uuid(CallbackDeliveries::JobId))
            .col(string_uniq(CallbackDeliveries::WebhookId))
            .col(string(CallbackDeliveries::EventType))
            .col(blob_null(CallbackDeliveries::Body));
    } else {
        outbox.col(uuid_uniq(CallbackDeliveries::JobId)).col(string(CallbackDeliveries::WebhookId));
    }
    outbox
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
                .name(if events { "fk_callback_events_job" } else { "fk_callback_deliveries_job" })
                .from(Rebuilt::CallbackDeliveriesNext, CallbackDeliveries::JobId)
                .to(Jobs::Table, Jobs::Id)
                .on_delete(ForeignKeyAction::Cascade),
        );
    exec(&txn, backend, &outbox.to_owned()).await?;
    exec(
        &txn,
        backend,
        &Table::create()
            .table(Rebuilt::CallbackAttemptsNext)
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
                    .name(if events { "fk_callback_event_attempts_event" } else { "fk_callback_attempts_callback" })
                    .from(Rebuilt::CallbackAttemptsNext, CallbackAttempts::CallbackId)
                    .to(Rebuilt::CallbackDeliveriesNext, CallbackDeliveries::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
    )
    .await?;

    // Copy: every row into events; back to the old shape, only the completion events fit.
    let mut select = Query::select();
    select.columns(SHARED).from(CallbackDeliveries::Table);
    let mut columns: Vec<CallbackDeliveries> = SHARED.to_vec();
    if events {
        select.expr(Expr::val(COMPLETED));
        columns.push(CallbackDeliveries::EventType);
    } else {
        select.and_where(Expr::col(CallbackDeliveries::EventType).eq(COMPLETED));
    }
    let copy = Query::insert()
        .into_table(Rebuilt::CallbackDeliveriesNext)
        .columns(columns)
        .select_from(select)
        .map_err(|e| DbErr::Migration(e.to_string()))?
        .to_owned();
    exec(&txn, backend, &copy).await?;
    let attempts = Query::select()
        .columns(ATTEMPT_COLUMNS.map(|c| (CallbackAttempts::Table, c)))
        .from(CallbackAttempts::Table)
        .inner_join(
            Rebuilt::CallbackDeliveriesNext,
            Expr::col((Rebuilt::CallbackDeliveriesNext, CallbackDeliveries::Id))
                .equals((CallbackAttempts::Table, CallbackAttempts::CallbackId)),
        )
        .to_owned();
    let copy = Query::insert()
        .into_table(Rebuilt::CallbackAttemptsNext)
        .columns(ATTEMPT_COLUMNS)
        .select_from(attempts)
        .map_err(|e| DbErr::Migration(e.to_string()))?
        .to_owned();
    exec(&txn, backend, &copy).await?;

    // Children before parents; then the new tables take the old names (foreign keys follow).
    exec(&txn, backend, &Table::drop().table(CallbackAttempts::Table).to_owned()).await?;
    exec(&txn, backend, &Table::drop().table(CallbackDeliveries::Table).to_owned()).await?;
    let rename = Table::rename().table(Rebuilt::CallbackDeliveriesNext, CallbackDeliveries::Table).to_owned();
    exec(&txn, backend, &rename).await?;
    let rename = Table::rename().table(Rebuilt::CallbackAttemptsNext, CallbackAttempts::Table).to_owned();
    exec(&txn, backend, &rename).await?;

    for (name, table, cols) in [
        ("ix_callback_deliveries_state_next", "callback_deliveries", &["state", "next_attempt_at"][..]),
        ("ix_callback_deliveries_job", "callback_deliveries", &["job_id"]),
        ("ix_callback_attempts_callback", "callback_attempts", &["callback_id", "attempt_no"]),
        ("ix_callback_attempts_job", "callback_attempts", &["job_id"]),
    ] {
        let mut index = Index::create().name(name).table(Alias::new(table)).take();
        for c in cols {
            index.col(Alias::new(*c));
        }
        exec(&txn, backend, &index).await?;
    }
    txn.commit().await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Later events do not fit one row per job: only the completion events are kept.
        rebuild(manager, false).await
    }
}
