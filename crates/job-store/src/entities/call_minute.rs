//! `call_minutes`: Apollo calls per minute, for the usage page's chart.

use sea_orm::entity::prelude::*;

/// One minute's calls.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "call_minutes")]
pub struct Model {
    /// The minute's start (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub minute: DateTimeUtc,
    /// Calls whose outcome was recorded in that minute.
    pub calls: i64,
    /// Of those, the ones Apollo answered 429.
    pub rate_limited: i64,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
