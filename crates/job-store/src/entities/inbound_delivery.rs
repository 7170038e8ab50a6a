//! `inbound_deliveries`: raw Apollo webhook bodies, deduplicated, kept for audit and replay.

use sea_orm::entity::prelude::*;

/// A stored delivery.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbound_deliveries")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The batch named by the webhook URL.
    pub batch_id: Uuid,
    /// sha256 hex of (batch id, body): unique.
    pub dedup_key: String,
    /// The body as received.
    pub body: Vec<u8>,
    /// Received.
    pub received_at: DateTimeUtc,
    /// [`rules::DeliveryState`] name.
    pub state: rules::states::DeliveryState,
    /// `phone` or `waterfall`, once parsed.
    pub kind: Option<String>,
    /// Credits the delivery reported, in millionths.
    pub credits_micros: i64,
    /// Why it could not be used.
    pub parse_error: Option<String>,
    /// When it was merged or failed.
    pub processed_at: Option<DateTimeUtc>,
    /// The claim (Apollo call) of its batch that it answers, from the webhook URL.
    pub claim: Option<i32>,
    /// Failed attempts to apply it; past a cap it is failed with its error.
    pub apply_attempts: i32,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
