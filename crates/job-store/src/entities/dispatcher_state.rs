//! `dispatcher_state`: key/value rows shared by replicas (pause reason, rate-limit windows).

use sea_orm::entity::prelude::*;

/// One shared value.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dispatcher_state")]
pub struct Model {
    /// The key (`pause`, `rate_limit:…`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// The value.
    #[sea_orm(column_type = "JsonBinary")]
    pub value: Json,
    /// Last written.
    pub updated_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
