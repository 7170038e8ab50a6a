//! `task_leases`: which replica runs a once-at-a-time task (reconciler, retention) until when.

use sea_orm::entity::prelude::*;

/// One task's lease.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "task_leases")]
pub struct Model {
    /// The task's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub task: String,
    /// The replica holding it.
    pub owner: String,
    /// The lease runs out then (database clock).
    pub expires_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
