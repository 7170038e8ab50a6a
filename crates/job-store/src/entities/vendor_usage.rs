//! `vendor_usage`: waterfall vendor statistics per client, day, vendor and kind.

use sea_orm::entity::prelude::*;

/// One client's figures for one vendor and kind on one day (UTC, the day deliveries were applied).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vendor_usage")]
pub struct Model {
    /// The client whose people the vendor was asked about.
    #[sea_orm(primary_key, auto_increment = false)]
    pub client: String,
    /// The day the deliveries were applied (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: Date,
    /// The vendor's display name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub vendor: String,
    /// What it was asked to find.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: rules::VendorKind,
    /// Attempts.
    pub attempts: i64,
    /// Attempts that returned a value.
    pub results: i64,
    /// Results the vendor called verified.
    pub verified: i64,
    /// Credits attributed, in micro-credits.
    pub credits_micros: i64,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
