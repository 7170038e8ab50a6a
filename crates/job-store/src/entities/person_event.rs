//! `person_events`: the outbox of per-person events, one row per person that reached a final state
//! (or changed after it), written in the transaction of that change and sealed into a callback
//! event later.

use sea_orm::entity::prelude::*;

/// A person waiting for (or sealed into) an event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "person_events")]
pub struct Model {
    /// UUID v7 (creation order).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// The person.
    pub person_id: Uuid,
    /// `person.completed` or `person.updated` ([`rules::CallbackEvent`] name).
    pub kind: rules::states::CallbackEvent,
    /// When the change happened.
    pub created_at: DateTimeUtc,
    /// The callback event it was sealed into; `None` while pending.
    pub callback_id: Option<Uuid>,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
