//! `api_keys`: client API keys, stored as sha256 hex only.

use sea_orm::entity::prelude::*;

/// A client key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The client name (unique), recorded on its jobs.
    pub name: String,
    /// sha256 hex of the key (unique).
    pub key_hash: String,
    /// Created.
    pub created_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
