//! `callback_attempts`: one row per HTTP try of a final callback.

use sea_orm::entity::prelude::*;

/// One try.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "callback_attempts")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The outbox row.
    pub callback_id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// 1-based try number.
    pub attempt_no: i32,
    /// `scheduled` or `manual`.
    pub trigger: String,
    /// HTTP status, when a response came.
    pub status_code: Option<i32>,
    /// At most 20 KB of the response body.
    pub response_excerpt: Option<String>,
    /// Duration of the try.
    pub duration_ms: i64,
    /// Transport error, when no response came.
    pub error: Option<String>,
    /// When the try was recorded.
    pub created_at: DateTimeUtc,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
