//! `callback_deliveries`: the outbox row of a job's final callback (one per job).

use sea_orm::entity::prelude::*;

/// A callback outbox row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "callback_deliveries")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The job (unique).
    pub job_id: Uuid,
    /// Standard Webhooks `webhook-id`, the same for every retry.
    pub webhook_id: String,
    /// [`crate::CallbackState`] name.
    pub state: String,
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
    /// Created (in the job's completing transaction).
    pub created_at: DateTimeUtc,
    /// Last changed.
    pub updated_at: DateTimeUtc,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTimeUtc>,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
