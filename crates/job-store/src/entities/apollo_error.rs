//! `apollo_errors`: the recent Apollo calls that ended in an error, for the system page.

use sea_orm::entity::prelude::*;

/// One failed call.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "apollo_errors")]
pub struct Model {
    /// Row id (insertion order).
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the outcome was recorded.
    pub at: DateTimeUtc,
    /// The batch the call carried.
    pub batch_id: Option<Uuid>,
    /// What kind of failure (`rate_limited`, `transient`, …).
    pub kind: String,
    /// The HTTP status, when an answer came.
    pub status: Option<i32>,
    /// What happened, shortened.
    pub message: String,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
