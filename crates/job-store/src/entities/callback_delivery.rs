//! `callback_deliveries`: the callback outbox, one row per event of a job (`job.completed`, then
//! `job.updated` per later change, and the batched `person.completed` / `person.updated` events).

use sea_orm::entity::prelude::*;

/// A callback outbox row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "callback_deliveries")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// Standard Webhooks `webhook-id` (unique), the same for every retry.
    pub webhook_id: String,
    /// [`rules::CallbackEvent`] name.
    pub event_type: rules::states::CallbackEvent,
    /// The body, frozen at the first send: every retry and redelivery sends these bytes.
    pub body: Option<Vec<u8>>,
    /// [`rules::CallbackState`] name.
    pub state: rules::states::CallbackState,
    /// HTTP tries so far.
    pub attempts: i32,
    /// When the next try is due.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// The next try was asked for by an operator.
    pub manual_requested: bool,
    /// The replica sending it now.
    pub lease_owner: Option<String>,
    /// When that lease runs out.
    pub lease_expires_at: Option<DateTimeUtc>,
    /// Status code of the last try.
    pub last_status: Option<i32>,
    /// Error of the last try.
    pub last_error: Option<String>,
    /// Created (in the transaction that completed or changed the job).
    pub created_at: DateTimeUtc,
    /// Last changed.
    pub updated_at: DateTimeUtc,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTimeUtc>,
    /// Place in the job's sequence of events (the order of sending, the event stream's id);
    /// `None` while a job event waits for the person events it follows to be sealed.
    pub seq: Option<i64>,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
