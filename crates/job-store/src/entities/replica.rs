//! `replicas`: one heartbeat row per running process.

use sea_orm::entity::prelude::*;

/// One process.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "replicas")]
pub struct Model {
    /// The process's owner id (the one its leases carry).
    #[sea_orm(primary_key, auto_increment = false)]
    pub owner: String,
    /// Host and process id, for people.
    pub label: String,
    /// Its first heartbeat (database clock).
    pub started_at: DateTimeUtc,
    /// Its latest heartbeat (database clock).
    pub last_seen_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
