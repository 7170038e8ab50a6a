//! `client_day_credits`: credits of a client's purged jobs, per day the jobs were created.

use sea_orm::entity::prelude::*;

/// What the purged jobs one client created on one day (UTC) had spent.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_day_credits")]
pub struct Model {
    /// The client.
    #[sea_orm(primary_key, auto_increment = false)]
    pub client: String,
    /// The day the jobs were created (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: Date,
    /// Their credits, in micro-credits.
    pub credits_micros: i64,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
