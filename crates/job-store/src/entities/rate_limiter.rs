//! `rate_limiters`: the shared limiter's state, one row per Apollo key fingerprint.

use sea_orm::entity::prelude::*;

/// One key's limiter state; its row lock serialises every replica's admission decisions.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rate_limiters")]
pub struct Model {
    /// The key's fingerprint (a hash; the key itself is never stored).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// The per-minute limit Apollo's headers last stated (`None`: none stated).
    pub learned_minute: Option<i64>,
    /// The hourly limit the headers last stated.
    pub learned_hour: Option<i64>,
    /// The daily limit the headers last stated.
    pub learned_day: Option<i64>,
    /// No call before this instant (a 429's retry-after, or a window the headers said is used up).
    pub blocked_until: Option<DateTimeUtc>,
    /// 429 answers seen by all replicas.
    pub rate_limited: i64,
    /// The largest margin a replica measured lately, in ms ([`rules::window::shared_margin`]).
    pub margin_ms: Option<i64>,
    /// When it was stored.
    pub margin_at: Option<DateTimeUtc>,
    /// Last written.
    pub updated_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
