//! `rate_limit_calls`: the shared limiter's sliding log, one row per admitted call.

use sea_orm::entity::prelude::*;

/// One admitted call.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rate_limit_calls")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The key's fingerprint.
    pub key: String,
    /// When the call was admitted (database clock).
    pub at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
