//! `jobs`: one client request; counters per person state are kept in the row.

use sea_orm::entity::prelude::*;

/// A job row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    /// UUID v7 (time-ordered: id order is creation order).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The API key name that submitted the job.
    pub client: String,
    /// The client's `Idempotency-Key`, unique per client.
    pub idempotency_key: Option<String>,
    /// sha256 hex of the request content, compared on an idempotent retry.
    pub request_hash: Option<String>,
    /// Bitmask of the four Apollo flags (see [`EnrichFlags::flags`]).
    pub flags: i16,
    /// Where the final callback goes.
    pub callback_url: Option<String>,
    /// The client's opaque metadata.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    /// [`rules::JobState`] name.
    pub state: rules::states::JobState,
    /// Why dispatch is paused, while it is.
    pub pause_reason: Option<String>,
    /// People queued.
    pub n_queued: i64,
    /// People submitted.
    pub n_submitted: i64,
    /// People awaiting asynchronous parts.
    pub n_awaiting_async: i64,
    /// People complete.
    pub n_complete: i64,
    /// People partial.
    pub n_partial: i64,
    /// People not found.
    pub n_not_found: i64,
    /// People invalid.
    pub n_invalid: i64,
    /// People failed.
    pub n_failed: i64,
    /// People cancelled.
    pub n_cancelled: i64,
    /// People left unsent because the job's credit budget ran out.
    pub n_skipped_budget: i64,
    /// The job's credit budget (`max_credits`), in millionths of a credit; `None` = no budget.
    pub max_credits_micros: Option<i64>,
    /// Why the job ended before sending everyone (the budget ran out), if it did.
    pub end_reason: Option<String>,
    /// Number of people.
    pub total: i64,
    /// Credits consumed, in millionths of a credit.
    pub credits_micros: i64,
    /// Apollo calls whose answer involved this job.
    pub calls: i64,
    /// Leases that expired while a call for this job was in flight (the call may have been charged).
    pub possible_double_charges: i64,
    /// What those calls may have cost a second time, in millionths of a credit: a call's
    /// worst case until its retry is answered, then what the answered copy cost.
    pub possible_double_charge_micros: i64,
    /// When a batch last took people of this job (fairness order; `None` = never).
    pub last_claimed_at: Option<DateTimeUtc>,
    /// When the client asked to cancel.
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// Created.
    pub created_at: DateTimeUtc,
    /// Last changed.
    pub updated_at: DateTimeUtc,
    /// When the job reached its final state.
    pub completed_at: Option<DateTimeUtc>,
    /// When the job's personal data was erased ([`crate::Store::erase_job`]).
    pub erased_at: Option<DateTimeUtc>,
    /// The job this one retries (`POST /v1/jobs/{id}/retry`), if it is a retry.
    pub retry_of: Option<Uuid>,
    /// Of `credits_micros`: what synchronous answers charged.
    pub credits_sync_micros: i64,
    /// Of `credits_micros`: what phone-reveal deliveries charged.
    pub credits_phone_micros: i64,
    /// Of `credits_micros`: what waterfall deliveries charged.
    pub credits_waterfall_micros: i64,
    /// The reuse window in seconds: people enriched this recently are answered from the store.
    pub reuse_within_secs: Option<i64>,
    /// Reuse also takes earlier lookups of other clients (`REUSE_SCOPE=shared`).
    pub reuse_shared: bool,
    /// People answered from an earlier lookup.
    pub reuse_hits: i64,
    /// What those people cost when they were looked up, in millionths of a credit.
    pub credits_saved_micros: i64,
    /// People never sent: on the do-not-enrich list.
    pub n_suppressed: i64,
    /// The job asked for `person.completed` events.
    pub events_completed: bool,
    /// The job asked for `person.updated` events.
    pub events_updated: bool,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
