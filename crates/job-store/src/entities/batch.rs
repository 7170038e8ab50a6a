//! `batches`: one Apollo call of up to ten people, formed when claimed.

use sea_orm::entity::prelude::*;

/// A batch row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batches")]
pub struct Model {
    /// UUID v7; also the path segment of the batch's webhook URL.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The Apollo flags bitmask shared by every person of the batch.
    pub flags: i16,
    /// [`rules::BatchState`] name.
    pub state: rules::states::BatchState,
    /// Number of people.
    pub size: i32,
    /// Counted attempts (a 429 requeue is not counted).
    pub attempt: i32,
    /// Times claimed (every HTTP call, counted or not).
    pub claims: i32,
    /// Apollo's failed answers so far (5xx, timeouts); an expired lease is an attempt, not one.
    pub failures: i32,
    /// Whether the next claim counts as an attempt.
    pub count_next_attempt: bool,
    /// When a `retry_wait` batch may be claimed again.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// The replica holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease runs out.
    pub lease_expires_at: Option<DateTimeUtc>,
    /// 32 random bytes, hex; the service derives the webhook URL token from it.
    pub webhook_secret: String,
    /// Apollo's `request_id` of the recorded answer.
    pub request_id: Option<i64>,
    /// `phone_enrichment.request_id`, when pending.
    pub phone_request_id: Option<String>,
    /// HTTP status of the recorded answer.
    pub http_status: Option<i32>,
    /// The raw synchronous response.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub response: Option<Json>,
    /// Credits of the call and its deliveries, in millionths.
    pub credits_micros: i64,
    /// Last error (retry reason or failure).
    pub last_error: Option<String>,
    /// Created (first claim).
    pub created_at: DateTimeUtc,
    /// Last changed.
    pub updated_at: DateTimeUtc,
    /// When the synchronous answer was recorded.
    pub submitted_at: Option<DateTimeUtc>,
    /// The claim (Apollo call) whose answer was recorded.
    pub answered_claim: Option<i32>,
    /// What that answer charged; a delivery from another claim proves that call was charged too.
    pub sync_credits_micros: i64,
    /// When the reconciler may poll this batch again.
    pub next_poll_at: Option<DateTimeUtc>,
    /// How often the reconciler polled it.
    pub polls: i32,
    /// The answer byte for byte, when the JSON column cannot hold it as it is.
    pub response_body: Option<Vec<u8>>,
    /// Calls of this batch whose outcome was unknown (a lost answer, a lease that ran out).
    pub unknown_outcomes: i32,
    /// Of `credits_micros`: what deliveries of those calls booked (they proved the calls ran).
    pub lost_credits_micros: i64,
    /// What those calls may have cost and is not booked ([`rules::budget::batch_double_charge`]),
    /// as last added to the jobs' `possible_double_charge_micros`.
    pub double_charge_micros: i64,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
