//! `suppressions`: the do-not-enrich list, keyed hashes only.

use sea_orm::entity::prelude::*;

/// One entry of a client's list or of the global one.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "suppressions")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The client's name, or `*` for the global list ([`crate::suppressions::Scope`]).
    pub scope: String,
    /// What the hash identifies.
    pub kind: rules::SuppressionKind,
    /// [`rules::suppression::SuppressionKey::hash`] of the normalised identifier (hex).
    pub hash: String,
    /// Added.
    pub created_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
