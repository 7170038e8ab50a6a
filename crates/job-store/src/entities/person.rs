//! `people`: one row per input person, with its merged record.

use sea_orm::entity::prelude::*;

/// A person row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "people")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning job.
    pub job_id: Uuid,
    /// Position in the job's input (0-based).
    pub ordinal: i64,
    /// The client's input object.
    #[sea_orm(column_type = "JsonBinary")]
    pub input: Json,
    /// Normalised identity ([`rules::person_key`]); `None` for invalid input.
    pub person_key: Option<String>,
    /// The first person of the same job with the same key; duplicates are never sent.
    pub dup_of: Option<Uuid>,
    /// Whether other people of the job are duplicates of this one.
    pub has_dups: bool,
    /// [`rules::PersonState`] name.
    pub state: rules::states::PersonState,
    /// Apollo's person id, once matched.
    pub apollo_id: Option<String>,
    /// The batch currently holding the person.
    pub batch_id: Option<Uuid>,
    /// The merged record ([`rules::merge::Record`] as JSON).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub record: Option<Json>,
    /// A phone-reveal delivery is expected.
    pub expect_phone: bool,
    /// A waterfall delivery is expected.
    pub expect_waterfall: bool,
    /// The phone-reveal delivery arrived.
    pub got_phone: bool,
    /// The waterfall delivery arrived.
    pub got_waterfall: bool,
    /// Parts that never arrived (`["phone", "waterfall"]`), for `partial` people.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub missing_parts: Option<Json>,
    /// Credits attributed to this person, in millionths.
    pub credits_micros: i64,
    /// Why the person failed (or the last retryable error).
    pub last_error: Option<String>,
    /// When the person started waiting for asynchronous parts.
    pub awaiting_since: Option<DateTimeUtc>,
    /// Created.
    pub created_at: DateTimeUtc,
    /// Last changed.
    pub updated_at: DateTimeUtc,
    /// Apollo skipped this request's phone reveal: an earlier request delivers the phone.
    pub phone_elsewhere: bool,
    /// The earlier person whose record answered this one (reuse window), if any.
    pub reused_from: Option<Uuid>,
    /// That person's job.
    pub reused_from_job: Option<Uuid>,
    /// When that person was enriched (its last change).
    pub reused_at: Option<DateTimeUtc>,
    /// Keyed hashes of the person's identifiers ([`rules::suppression::tokens`]), checked against
    /// the do-not-enrich list; a primary holds those of its duplicates too. No plaintext.
    pub suppress_hashes: Option<String>,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
