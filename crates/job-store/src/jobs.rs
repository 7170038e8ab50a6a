//! Jobs: creation (job and people in one transaction, idempotent), cancellation, and the queries
//! behind `GET /v1/jobs…`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;

use apollo_client::{Credits, EnrichFlags};
use chrono::{DateTime, Utc};
use rules::Counts;
use rules::events::PersonEvents;
use rules::lifecycle::Event;
use rules::{BatchState, CallbackEvent, DeliveryState, JobState, PersonState, person_key};
use sea_orm::sea_query::{Expr, LockType, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::callbacks::{CallbackView, load_callbacks};
use crate::clock::now;
use crate::columns::{flags_column, flags_of};
use crate::counters::{Tally, finish_if_done, recount};
use crate::entities::{batch, batch_person, inbound_delivery, job, person};
use crate::error::{StoreError, StoreResult};
use crate::people::move_primaries;
use crate::{Store, dispatcher, new_id, new_ids};

/// A job to create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The API key name submitting it.
    pub client: String,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Apollo flags.
    pub flags: EnrichFlags,
    /// Where the final callback goes.
    pub callback_url: Option<String>,
    /// Opaque client metadata.
    pub metadata: Option<Value>,
    /// Input people (JSON objects), in order.
    pub people: Vec<NewPerson>,
    /// Credit budget: dispatch stops before the worst case could pass it ([`crate::budget`]).
    #[serde(default)]
    pub max_credits: Option<Credits>,
    /// The client's daily cap (a server setting, not part of the request): the job's budget is
    /// at most what remains of it today, and none remaining refuses the job.
    #[serde(default)]
    pub daily_cap: Option<Credits>,
    /// The job this one retries.
    #[serde(default)]
    pub retry_of: Option<Uuid>,
    /// Answer people from earlier lookups within this window ([`crate::reuse`]).
    #[serde(default)]
    pub reuse: Option<rules::reuse::ReusePolicy>,
    /// The per-person events asked for.
    #[serde(default)]
    pub events: PersonEvents,
}

impl NewJob {
    /// The retry of `original`: `people` (their original inputs) with its flags, callback URL,
    /// metadata, budget and reuse setting, for the same client, linked by `retry_of`.
    pub fn retry(original: &JobView, people: Vec<Value>, idempotency_key: Option<String>) -> NewJob {
        NewJob {
            client: original.client.clone(),
            idempotency_key,
            flags: original.flags,
            callback_url: original.callback_url.clone(),
            metadata: original.metadata.clone(),
            people: people.into_iter().map(Into::into).collect(),
            max_credits: original.max_credits,
            daily_cap: None,
            retry_of: Some(original.id),
            reuse: original.reuse,
            events: original.events,
        }
    }

    /// sha256 hex of everything but the client and key: the same request gives the same hash.
    pub fn request_hash(&self) -> String {
        use sha2::{Digest, Sha256};

        /// Feeds serialized JSON straight into the hash: no copy of a 100,000-person body.
        struct HashWriter(Sha256);
        impl std::io::Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        #[derive(Serialize)]
        struct Hashed<'a> {
            // The name the stored hashes were made with.
            options: &'a EnrichFlags,
            callback_url: &'a Option<String>,
            metadata: &'a Option<Value>,
            people: &'a [NewPerson],
            // Left out when absent, so requests without a budget hash as they always did.
            #[serde(skip_serializing_if = "Option::is_none")]
            max_credits: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_of: Option<Uuid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reuse: Option<rules::reuse::ReusePolicy>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            events: Vec<&'static str>,
        }
        let body = Hashed {
            options: &self.flags,
            callback_url: &self.callback_url,
            metadata: &self.metadata,
            people: &self.people,
            max_credits: self.max_credits.map(|c| c.micros()),
            retry_of: self.retry_of,
            reuse: self.reuse,
            events: self.events.names(),
        };
        let mut w = HashWriter(Sha256::new());
        // Writing JSON of plain values into a hasher cannot fail.
        let _ = serde_json::to_writer(&mut w, &body);
        crate::hex(&w.0.finalize())
    }
}

/// One person of a [`NewJob`]: its input as the row will hold it (a JSON object, written as text
/// once) and its [`person_key`], computed once. A 100,000-person job is about 300 bytes a person
/// this way, against about 1 KiB as `serde_json::Value`s.
#[derive(Clone, Debug)]
pub struct NewPerson {
    input: Box<RawValue>,
    key: Option<Box<str>>,
}

impl NewPerson {
    /// The person whose input is `input`.
    pub fn new(input: &Value) -> NewPerson {
        // Writing a `Value` as JSON cannot fail.
        let text = serde_json::value::to_raw_value(input).unwrap_or_else(|_| RawValue::NULL.to_owned());
        NewPerson { input: text, key: person_key(input).map(String::into_boxed_str) }
    }

    /// The person whose input is the JSON text `input`, with `key` = [`person_key`] of that input,
    /// computed by the caller from the same fields ([`rules::person_key_of`]): nothing is parsed.
    pub fn with_key(input: Box<RawValue>, key: Option<String>) -> NewPerson {
        debug_assert_eq!(
            serde_json::from_str::<Value>(input.get()).ok().as_ref().and_then(person_key),
            key,
            "the key of {}",
            input.get()
        );
        NewPerson { input, key: key.map(String::into_boxed_str) }
    }

    /// The input as JSON text (what the `input` column stores).
    pub fn input_json(&self) -> &str {
        self.input.get()
    }

    /// The input, decoded.
    pub fn input(&self) -> Value {
        serde_json::from_str(self.input.get()).unwrap_or_default()
    }

    /// The person's key; `None`: no usable identifier (stored `invalid`).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl From<Value> for NewPerson {
    fn from(input: Value) -> NewPerson {
        NewPerson::new(&input)
    }
}

impl From<&Value> for NewPerson {
    fn from(input: &Value) -> NewPerson {
        NewPerson::new(input)
    }
}

impl PartialEq for NewPerson {
    fn eq(&self, other: &NewPerson) -> bool {
        self.input.get() == other.input.get() && self.key == other.key
    }
}

/// The same input (as JSON values: key order and spacing aside).
impl PartialEq<Value> for NewPerson {
    fn eq(&self, other: &Value) -> bool {
        self.input() == *other
    }
}

impl PartialEq<NewPerson> for Value {
    fn eq(&self, other: &NewPerson) -> bool {
        other == self
    }
}

/// As its input: the request hash and any JSON copy of a job hold the text as written.
impl Serialize for NewPerson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.input.serialize(s)
    }
}

impl<'de> Deserialize<'de> for NewPerson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NewPerson, D::Error> {
        Value::deserialize(d).map(|v| NewPerson::new(&v))
    }
}

/// The outcome of [`Store::create_job`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedJob {
    /// The job.
    pub job: JobView,
    /// `true` when an earlier request with the same idempotency key and body created it.
    pub existing: bool,
}

/// A job as read from its row (no scan of people).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: Uuid,
    /// Submitting client.
    pub client: String,
    /// Idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Apollo flags.
    pub flags: EnrichFlags,
    /// Callback URL.
    pub callback_url: Option<String>,
    /// Client metadata.
    pub metadata: Option<Value>,
    /// State.
    pub state: JobState,
    /// Why dispatch is paused.
    pub pause_reason: Option<String>,
    /// People per state.
    pub counts: Counts,
    /// Number of people.
    pub total: i64,
    /// Credits consumed.
    pub credits: Credits,
    /// The credit budget, if any.
    #[serde(default)]
    pub max_credits: Option<Credits>,
    /// Why the job ended before sending everyone (its budget ran out).
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Apollo calls answered for this job.
    pub calls: i64,
    /// Calls of unknown outcome (a lease that ran out, a lost answer) possibly charged twice.
    pub possible_double_charges: i64,
    /// What they may have cost a second time (worst case until an answered copy shows it).
    #[serde(default)]
    pub possible_double_charge_credits: Credits,
    /// When the client asked to cancel.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Reached its final state.
    pub completed_at: Option<DateTime<Utc>>,
    /// When its personal data was erased (inputs, records, raw payloads; counters stay).
    pub erased_at: Option<DateTime<Utc>>,
    /// The `job.completed` callback, once the job completed with a callback URL.
    pub callback: Option<CallbackView>,
    /// Every callback event of the job, oldest first (`job.completed`, then any `job.updated`).
    pub callback_events: Vec<CallbackView>,
    /// Apollo deliveries for this job's calls that could not be used, newest first (at most
    /// [`FAILED_DELIVERIES_SHOWN`]; only `get_job` loads them).
    #[serde(default)]
    pub failed_deliveries: Vec<FailedDelivery>,
    /// The job this one retries.
    #[serde(default)]
    pub retry_of: Option<Uuid>,
    /// Jobs that retry this one, oldest first (only `get_job` loads them).
    #[serde(default)]
    pub retries: Vec<Uuid>,
    /// Credits by kind (they add up to `credits`).
    #[serde(default)]
    pub credits_by_kind: CreditsByKind,
    /// The reuse window and scope, if the job reuses earlier lookups.
    #[serde(default)]
    pub reuse: Option<rules::reuse::ReusePolicy>,
    /// People answered from an earlier lookup (no call, no credit).
    #[serde(default)]
    pub reuse_hits: i64,
    /// What those people cost when they were looked up.
    #[serde(default)]
    pub credits_saved: Credits,
    /// The per-person events the job asked for.
    #[serde(default)]
    pub events: PersonEvents,
}

/// A job's credits by what Apollo charged them for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsByKind {
    /// Synchronous answers (the match, personal emails).
    pub sync: Credits,
    /// Phone-reveal deliveries.
    pub phone: Credits,
    /// Waterfall deliveries.
    pub waterfall: Credits,
}

/// Which jobs [`Store::list_jobs`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobFilter<'a> {
    /// Only this client's jobs; `None`: every client's (operators).
    pub client: Option<&'a str>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
}

/// Every job of one client.
impl<'a> From<&'a str> for JobFilter<'a> {
    fn from(client: &'a str) -> JobFilter<'a> {
        JobFilter { client: Some(client), state: None }
    }
}

/// How many failed deliveries a job view lists.
pub const FAILED_DELIVERIES_SHOWN: u64 = 20;

/// An Apollo delivery that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDelivery {
    /// Delivery id.
    pub id: Uuid,
    /// Its batch (Apollo call).
    pub batch_id: Uuid,
    /// Why it could not be used.
    pub error: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

impl JobView {
    fn from_row(j: job::Model, callback_events: Vec<CallbackView>) -> StoreResult<JobView> {
        let callback = callback_events.iter().find(|c| c.event == CallbackEvent::JobCompleted).cloned();
        Ok(JobView {
            counts: crate::counters::counts_of(&j),
            state: j.state,
            flags: flags_of(j.flags),
            id: j.id,
            client: j.client,
            idempotency_key: j.idempotency_key,
            callback_url: j.callback_url,
            metadata: j.metadata,
            pause_reason: j.pause_reason,
            total: j.total,
            credits: Credits(j.credits_micros),
            max_credits: j.max_credits_micros.map(Credits),
            end_reason: j.end_reason,
            calls: j.calls,
            possible_double_charges: j.possible_double_charges,
            possible_double_charge_credits: Credits(j.possible_double_charge_micros),
            cancel_requested_at: j.cancel_requested_at,
            created_at: j.created_at,
            updated_at: j.updated_at,
            completed_at: j.completed_at,
            erased_at: j.erased_at,
            callback,
            callback_events,
            failed_deliveries: Vec::new(),
            retry_of: j.retry_of,
            retries: Vec::new(),
            credits_by_kind: CreditsByKind {
                sync: Credits(j.credits_sync_micros),
                phone: Credits(j.credits_phone_micros),
                waterfall: Credits(j.credits_waterfall_micros),
            },
            reuse: j
                .reuse_within_secs
                .map(|secs| rules::reuse::ReusePolicy { within_secs: secs, shared: j.reuse_shared }),
            reuse_hits: j.reuse_hits,
            credits_saved: Credits(j.credits_saved_micros),
            events: PersonEvents { completed: j.events_completed, updated: j.events_updated },
        })
    }
}

/// One person of a job with its merged record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonView {
    /// Id.
    pub id: Uuid,
    /// Job.
    pub job_id: Uuid,
    /// Position in the input.
    pub ordinal: i64,
    /// The client's input.
    pub input: Value,
    /// Normalised identity.
    pub person_key: Option<String>,
    /// The person whose result this one copies (same key in the same job).
    pub dup_of: Option<Uuid>,
    /// State.
    pub state: PersonState,
    /// Apollo person id.
    pub apollo_id: Option<String>,
    /// Current batch.
    pub batch_id: Option<Uuid>,
    /// The merged record ([`rules::merge::Record`]).
    pub record: Option<Value>,
    /// Phone delivery expected.
    pub expect_phone: bool,
    /// Waterfall delivery expected.
    pub expect_waterfall: bool,
    /// Phone delivery arrived.
    pub got_phone: bool,
    /// Waterfall delivery arrived.
    pub got_waterfall: bool,
    /// Parts that never arrived (`phone`, `waterfall`).
    pub missing_parts: Vec<String>,
    /// Credits attributed to the person by the synchronous answer.
    pub credits: Credits,
    /// Failure reason.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The earlier person whose record answered this one (reuse window).
    #[serde(default)]
    pub reused_from: Option<Uuid>,
    /// That person's job.
    #[serde(default)]
    pub reused_from_job: Option<Uuid>,
    /// When that person was enriched.
    #[serde(default)]
    pub reused_at: Option<DateTime<Utc>>,
}

impl PersonView {
    /// The view of a stored person.
    pub(crate) fn from_row(p: person::Model) -> StoreResult<PersonView> {
        Ok(PersonView {
            state: p.state,
            missing_parts: p.missing_parts.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default(),
            id: p.id,
            job_id: p.job_id,
            ordinal: p.ordinal,
            input: p.input,
            person_key: p.person_key,
            dup_of: p.dup_of,
            apollo_id: p.apollo_id,
            batch_id: p.batch_id,
            record: p.record,
            expect_phone: p.expect_phone,
            expect_waterfall: p.expect_waterfall,
            got_phone: p.got_phone,
            got_waterfall: p.got_waterfall,
            credits: Credits(p.credits_micros),
            last_error: p.last_error,
            created_at: p.created_at,
            updated_at: p.updated_at,
            reused_from: p.reused_from,
            reused_from_job: p.reused_from_job,
            reused_at: p.reused_at,
        })
    }
}

/// The cancel step of [`Store::cancel_job`] (also used by [`Store::erase_job`]), in the caller's
/// transaction: queued people, and people waiting in a batch for a retry, become `cancelled`
/// (tallied) and the job gets `cancel_requested_at`.
/// The caller flushes the tally, which completes the job if nothing of it is in flight.
pub(crate) async fn cancel_queued<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // People waiting in a batch for a retry (after a 429, a 5xx, a pause) are not in a call:
    // cancelled too, so no later call contains them. Their batches are locked first (the lock
    // order), so a dispatcher reclaiming one right now is waited for (its people are then in a
    // call and finish), and one that has not yet started skips it.
    let waiting_batches: Vec<Uuid> = batch::Entity::find()
        .select_only()
        .column(batch::Column::Id)
        .filter(batch::Column::State.eq(BatchState::RetryWait))
        .filter(
            batch::Column::Id.in_subquery(
                Query::select()
                    .column(batch_person::Column::BatchId)
                    .from(batch_person::Entity)
                    .and_where(batch_person::Column::JobId.eq(job_id))
                    .to_owned(),
            ),
        )
        .order_by_asc(batch::Column::Id)
        .lock(LockType::Update)
        .into_tuple()
        .all(db)
        .await?;
    if !waiting_batches.is_empty() {
        let waiting = person::Entity::find()
            .filter(person::Column::JobId.eq(job_id))
            .filter(person::Column::BatchId.is_in(waiting_batches))
            .filter(person::Column::State.eq(PersonState::Submitted))
            .filter(person::Column::DupOf.is_null())
            .order_by_asc(person::Column::Id)
            .lock(LockType::Update)
            .all(db)
            .await?;
        let refs: Vec<&person::Model> = waiting.iter().collect();
        move_primaries(db, tally, &refs, Event::Cancelled, None, None, now).await?;
    }
    // Primaries first, then their duplicates (the lock order); a primary being claimed right now
    // is waited for and then skipped, as it is no longer queued.
    for primaries in [true, false] {
        let cond = if primaries { person::Column::DupOf.is_null() } else { person::Column::DupOf.is_not_null() };
        // The ids first, locked, so each cancelled person is tallied (its `person.completed`).
        let ids: Vec<Uuid> = person::Entity::find()
            .select_only()
            .column(person::Column::Id)
            .filter(person::Column::JobId.eq(job_id))
            .filter(person::Column::State.eq(PersonState::Queued))
            .filter(cond.clone())
            .order_by_asc(person::Column::Id)
            .lock(LockType::Update)
            .into_tuple()
            .all(db)
            .await?;
        let moved = person::Entity::update_many()
            .filter(person::Column::JobId.eq(job_id))
            .filter(person::Column::State.eq(PersonState::Queued))
            .filter(cond)
            .col_expr(person::Column::State, Expr::value(PersonState::Cancelled))
            .col_expr(person::Column::UpdatedAt, Expr::value(now))
            .exec(db)
            .await?
            .rows_affected;
        if moved != ids.len() as u64 {
            return Err(StoreError::Invalid(format!("{moved} of {} queued people cancelled", ids.len())));
        }
        for id in ids {
            tally.moved_person(job_id, id, PersonState::Queued, PersonState::Cancelled);
        }
    }
    job::Entity::update_many()
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::CancelRequestedAt.is_null())
        .col_expr(job::Column::CancelRequestedAt, Expr::value(now))
        .exec(db)
        .await?;
    tally.touch(job_id);
    Ok(())
}

/// Jobs at least this large refresh PostgreSQL's planner statistics after they are inserted.
const ANALYZE_AFTER: usize = 10_000;

/// Columns of a new person that are not the same literal for everyone, in the order the insert
/// names them: the first [`BOUND_PER_PERSON`] are bound for each person; then the job and the
/// creation time, bound once per statement; then the state and error, derived from the key.
const NEW_PERSON_BOUND: [person::Column; 12] = [
    person::Column::Id,
    person::Column::Ordinal,
    person::Column::Input,
    person::Column::PersonKey,
    person::Column::DupOf,
    person::Column::HasDups,
    person::Column::SuppressHashes,
    person::Column::JobId,
    person::Column::CreatedAt,
    person::Column::UpdatedAt,
    person::Column::State,
    person::Column::LastError,
];

/// Parameters bound for each new person: id, ordinal, input (JSON text), key, dup_of, has_dups,
/// suppress_hashes.
const BOUND_PER_PERSON: usize = 7;

/// Parameters every row of one insert shares: the job id, `created_at` and `updated_at`.
const SHARED_BOUND: usize = 3;

/// Columns every new person starts with the same value in, written as SQL literals: binding half
/// the values makes a 100,000-person insert markedly cheaper (sea-query and sqlx spend more per
/// bound value than SQLite does per row).
const NEW_PERSON_LITERAL: [(person::Column, &str); 14] = [
    (person::Column::ApolloId, "NULL"),
    (person::Column::BatchId, "NULL"),
    (person::Column::Record, "NULL"),
    (person::Column::ExpectPhone, "FALSE"),
    (person::Column::ExpectWaterfall, "FALSE"),
    (person::Column::GotPhone, "FALSE"),
    (person::Column::GotWaterfall, "FALSE"),
    (person::Column::MissingParts, "NULL"),
    (person::Column::CreditsMicros, "0"),
    (person::Column::AwaitingSince, "NULL"),
    (person::Column::PhoneElsewhere, "FALSE"),
    (person::Column::ReusedFrom, "NULL"),
    (person::Column::ReusedFromJob, "NULL"),
    (person::Column::ReusedAt, "NULL"),
];

/// The most parameters one statement may bind: SQLite's `SQLITE_MAX_VARIABLE_NUMBER` (32,766 in
/// the bundled build), PostgreSQL's protocol limit (65,535).
pub(crate) fn bind_limit(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Postgres => 65_535,
        _ => 32_766,
    }
}

/// People in the next insert when `remaining` are left: as many as the bind limit allows; the
/// rest in power-of-two pieces, so that the statements (each prepared once and kept in sqlx's
/// statement cache) come in a handful of sizes whatever the job's size.
fn rows_per_insert(backend: DbBackend, remaining: usize) -> usize {
    let most = (bind_limit(backend) - SHARED_BOUND) / BOUND_PER_PERSON;
    if remaining >= most { most } else { 1 << remaining.max(1).ilog2() }
}

/// A multi-row insert of `rows` new people: `INSERT … SELECT … FROM (VALUES …)`, so each row binds
/// only what differs between people; the job id and times are the first parameters, shared by all.
fn new_people_sql(backend: DbBackend, rows: usize) -> String {
    let p = |n: usize| crate::sql::param(backend, n);
    // The input is bound as JSON text (a deep copy of each person's JSON is what binding a JSON
    // value would cost); PostgreSQL casts it to the column's jsonb.
    let input = match backend {
        DbBackend::Postgres => "CAST(v.column3 AS jsonb)",
        _ => "v.column3",
    };
    let exprs: [String; 12] = [
        "v.column1".into(),
        "v.column2".into(),
        input.into(),
        "v.column4".into(),
        "v.column5".into(),
        "v.column6".into(),
        "v.column7".into(),
        p(1),
        p(2),
        p(3),
        "CASE WHEN v.column4 IS NULL THEN 'invalid' ELSE 'queued' END".into(),
        "CASE WHEN v.column4 IS NULL THEN 'no usable identifier' END".into(),
    ];
    let columns: Vec<&str> = NEW_PERSON_BOUND
        .iter()
        .chain(NEW_PERSON_LITERAL.iter().map(|(c, _)| c))
        .map(|c| sea_orm::IdenStatic::as_str(c))
        .collect();
    let values: Vec<&str> =
        exprs.iter().map(String::as_str).chain(NEW_PERSON_LITERAL.iter().map(|(_, l)| *l)).collect();
    let mut sql = String::with_capacity(600 + rows * 48);
    let _ = write!(sql, "INSERT INTO people ({}) SELECT {} FROM (VALUES ", columns.join(", "), values.join(", "));
    crate::sql::push_values(&mut sql, backend, SHARED_BOUND + 1, rows, BOUND_PER_PERSON);
    sql.push_str(") AS v");
    sql
}

impl Store {
    /// Creates a job and all its people in one transaction.
    ///
    /// People without a usable identifier are stored `invalid` (never sent); people whose key
    /// repeats an earlier person of the job are duplicates of it. With an idempotency key, the same
    /// client, key and request give back the existing job (`existing: true`); a different request
    /// is [`StoreError::IdempotencyConflict`].
    pub async fn create_job(&self, new: NewJob) -> StoreResult<CreatedJob> {
        let hash = new.request_hash();
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.idempotent_match(&new.client, key, &hash).await?
        {
            return Ok(existing);
        }
        let now = now();
        let job_id = new_id();
        let n = new.people.len();
        let ids = new_ids(n);
        let mut dup_of: Vec<Option<Uuid>> = vec![None; n];
        let mut has_dups = vec![false; n];
        // The index of each duplicate's primary.
        let mut primary_of: Vec<Option<usize>> = vec![None; n];
        {
            // Borrows the keys: the map adds no copy of them.
            let mut first_by_key: HashMap<&str, usize> = HashMap::with_capacity(n);
            for (i, person) in new.people.iter().enumerate() {
                let Some(k) = person.key() else { continue };
                match first_by_key.entry(k) {
                    Entry::Occupied(e) => {
                        dup_of[i] = Some(ids[*e.get()]);
                        primary_of[i] = Some(*e.get());
                        has_dups[*e.get()] = true;
                    }
                    Entry::Vacant(e) => {
                        e.insert(i);
                    }
                }
            }
        }
        let valid = new.people.iter().filter(|p| p.key.is_some()).count() as i64;
        // Each primary holds the hashes of its whole group (duplicates follow it): one listed
        // identifier of any of them keeps them all from Apollo.
        let mut tokens: Vec<Option<String>> = match self.suppression_key() {
            None => vec![None; n],
            Some(key) => new
                .people
                .iter()
                .map(|p| p.key.as_ref().and_then(|_| crate::suppressions::input_tokens(key, p.input.get())))
                .collect(),
        };
        for i in 0..n {
            if let Some(primary) = primary_of[i]
                && let Some(t) = tokens[i].take()
            {
                let merged = match tokens[primary].take() {
                    Some(p) => format!("{p} {t}"),
                    None => t,
                };
                tokens[primary] = Some(merged);
            }
        }
        // Invalid people are final from the start: their `person.completed` is due at once (and
        // so are listed people, found in the transaction below).
        let invalid: Vec<Uuid> = if new.events.completed {
            new.people.iter().zip(&ids).filter(|(p, _)| p.key.is_none()).map(|(_, id)| *id).collect()
        } else {
            Vec::new()
        };

        let (txn, _gate) = self.write_txn().await?;
        let suppressed: Vec<bool> = {
            let hashes: Vec<&str> =
                tokens.iter().flatten().flat_map(|t| rules::suppression::parse_tokens(t).map(|(_, h)| h)).collect();
            let listed = match hashes.is_empty() {
                true => Default::default(),
                false => crate::suppressions::listed(&txn, &new.client, &hashes).await?,
            };
            let primary: Vec<bool> =
                tokens.iter().map(|t| crate::suppressions::any_listed(t.as_deref(), &listed)).collect();
            (0..n).map(|i| primary[primary_of[i].unwrap_or(i)]).collect()
        };
        let n_suppressed = suppressed.iter().filter(|s| **s).count() as i64;
        let mut max_credits = new.max_credits;
        if let Some(cap) = new.daily_cap {
            let day_start = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
            let room = crate::budget::day_room(&txn, &new.client, cap, day_start).await?;
            if room <= Credits::ZERO {
                txn.rollback().await?;
                return Err(StoreError::DailyCapReached { cap });
            }
            max_credits = Some(max_credits.map_or(room, |m| m.min(room)));
        }
        let pause = dispatcher::pause_reason(&txn).await?;
        let flags = new.flags;
        let job_row = job::Model {
            id: job_id,
            client: new.client.clone(),
            idempotency_key: new.idempotency_key.clone(),
            request_hash: Some(hash.clone()),
            flags: flags_column(&flags),
            callback_url: new.callback_url.clone(),
            metadata: new.metadata.clone(),
            state: if pause.is_some() { JobState::Paused } else { JobState::Queued },
            pause_reason: pause,
            n_queued: valid - n_suppressed,
            n_submitted: 0,
            n_awaiting_async: 0,
            n_complete: 0,
            n_partial: 0,
            n_not_found: 0,
            n_invalid: n as i64 - valid,
            n_failed: 0,
            n_cancelled: 0,
            n_skipped_budget: 0,
            max_credits_micros: max_credits.map(|c| c.micros()),
            end_reason: None,
            total: n as i64,
            credits_micros: 0,
            calls: 0,
            possible_double_charges: 0,
            possible_double_charge_micros: 0,
            last_claimed_at: None,
            cancel_requested_at: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
            erased_at: None,
            retry_of: new.retry_of,
            credits_sync_micros: 0,
            credits_phone_micros: 0,
            credits_waterfall_micros: 0,
            reuse_within_secs: new.reuse.map(|r| r.within_secs),
            reuse_shared: new.reuse.is_some_and(|r| r.shared),
            reuse_hits: 0,
            credits_saved_micros: 0,
            n_suppressed,
            events_completed: new.events.completed,
            events_updated: new.events.updated,
        };
        let inserted = job::Entity::insert(job_row.into_active_model().reset_all())
            .on_conflict(
                OnConflict::columns([job::Column::Client, job::Column::IdempotencyKey]).do_nothing().to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            // A concurrent request with the same key won the race: answer as it would have.
            txn.rollback().await?;
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            return self
                .idempotent_match(&new.client, key, &hash)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("job for idempotency key {key:?}")));
        }

        // Chunk by chunk in the one transaction: each person's input text and key move into its
        // chunk's values and are dropped once the chunk is written, so the job is never held twice.
        let backend = txn.get_database_backend();
        let mut people = new.people.into_iter().enumerate().peekable();
        while people.peek().is_some() {
            let rows = rows_per_insert(backend, n - people.peek().map_or(n, |(i, _)| *i));
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(SHARED_BOUND + rows * BOUND_PER_PERSON);
            values.extend([job_id.into(), now.into(), now.into()]);
            for (i, person) in people.by_ref().take(rows) {
                values.extend([
                    ids[i].into(),
                    (i as i64).into(),
                    String::from(Box::<str>::from(person.input)).into(),
                    person.key.map(String::from).into(),
                    dup_of[i].into(),
                    has_dups[i].into(),
                    tokens[i].take().into(),
                ]);
            }
            let stmt = sea_orm::Statement::from_sql_and_values(backend, new_people_sql(backend, rows), values);
            let written = txn.execute_raw(stmt).await?.rows_affected();
            if written != rows as u64 {
                return Err(StoreError::Invalid(format!("{written} of {rows} new people written")));
            }
        }
        if n_suppressed > 0 {
            // Listed people never reach the queue (rare: a plain update after the bulk insert).
            let listed: Vec<Uuid> = (0..n).filter(|i| suppressed[*i]).map(|i| ids[i]).collect();
            for chunk in listed.chunks(500) {
                person::Entity::update_many()
                    .filter(person::Column::Id.is_in(chunk.iter().copied()))
                    .col_expr(person::Column::State, Expr::value(PersonState::Suppressed))
                    .exec(&txn)
                    .await?;
            }
        }
        // Listed people are final from the start too.
        let mut done_at_once = invalid;
        if new.events.completed {
            done_at_once.extend((0..n).filter(|i| suppressed[*i]).map(|i| ids[i]));
        }
        crate::outbox::record_completed(&txn, job_id, &done_at_once, now).await?;
        if valid == n_suppressed {
            finish_if_done(&txn, job_id, now).await?;
        }
        txn.commit().await?;
        if n >= ANALYZE_AFTER && self.backend() == DbBackend::Postgres {
            // Fresh planner statistics after a bulk load: with stale ones PostgreSQL estimates a
            // handful of queued people and sorts the whole job on every claim.
            self.count_unseen(1);
            if let Err(e) = self.db.execute_unprepared("ANALYZE people").await {
                tracing::warn!(error = %e, "ANALYZE people failed");
            }
        }
        let job = self.get_job(job_id).await?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
        Ok(CreatedJob { job, existing: false })
    }

    /// The job created earlier with this client and key, if the request matches.
    async fn idempotent_match(&self, client: &str, key: &str, hash: &str) -> StoreResult<Option<CreatedJob>> {
        let Some(j) = job::Entity::find()
            .filter(job::Column::Client.eq(client))
            .filter(job::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if j.request_hash.as_deref() != Some(hash) {
            return Err(StoreError::IdempotencyConflict { key: key.to_owned(), job_id: j.id });
        }
        let job = self.job_view(&self.db, j).await?;
        Ok(Some(CreatedJob { job, existing: true }))
    }

    async fn job_view<C: ConnectionTrait>(&self, db: &C, j: job::Model) -> StoreResult<JobView> {
        let events = load_callbacks(db, &[j.id], true).await?.remove(&j.id).unwrap_or_default();
        let job_id = j.id;
        let mut view = JobView::from_row(j, events)?;
        view.retries = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(job::Column::RetryOf.eq(job_id))
            .order_by_asc(job::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        view.failed_deliveries = inbound_delivery::Entity::find()
            .filter(inbound_delivery::Column::State.eq(DeliveryState::Failed))
            .filter(
                inbound_delivery::Column::BatchId.in_subquery(
                    Query::select()
                        .column(batch_person::Column::BatchId)
                        .from(batch_person::Entity)
                        .and_where(batch_person::Column::JobId.eq(job_id))
                        .to_owned(),
                ),
            )
            .order_by_desc(inbound_delivery::Column::ReceivedAt)
            .limit(FAILED_DELIVERIES_SHOWN)
            .all(db)
            .await?
            .into_iter()
            .map(|d| FailedDelivery {
                id: d.id,
                batch_id: d.batch_id,
                error: d.parse_error,
                received_at: d.received_at,
            })
            .collect();
        Ok(view)
    }

    /// A job from its row alone (plus its callback state and attempt log).
    pub async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobView>> {
        match job::Entity::find_by_id(id).one(&self.db).await? {
            Some(j) => Ok(Some(self.job_view(&self.db, j).await?)),
            None => Ok(None),
        }
    }

    /// Jobs newest first, as `filter` narrows them; `after` is the last id of the previous page
    /// (keyset paging: the filter is the query's `WHERE`, never a scan of pages).
    /// Callback state is included, the attempt log is not.
    pub async fn list_jobs<'f>(
        &self,
        filter: impl Into<JobFilter<'f>>,
        after: Option<Uuid>,
        limit: u64,
    ) -> StoreResult<Vec<JobView>> {
        let filter = filter.into();
        let mut q = job::Entity::find();
        if let Some(client) = filter.client {
            q = q.filter(job::Column::Client.eq(client));
        }
        if let Some(state) = filter.state {
            q = q.filter(job::Column::State.eq(state.as_str()));
        }
        if let Some(after) = after {
            q = q.filter(job::Column::Id.lt(after));
        }
        let rows = q.order_by_desc(job::Column::Id).limit(limit).all(&self.db).await?;
        let ids: Vec<Uuid> = rows.iter().map(|j| j.id).collect();
        let mut callbacks = load_callbacks(&self.db, &ids, false).await?;
        rows.into_iter()
            .map(|j| {
                let events = callbacks.remove(&j.id).unwrap_or_default();
                JobView::from_row(j, events)
            })
            .collect()
    }

    /// People of a job in input order; `after_ordinal` is the last ordinal of the previous page.
    pub async fn list_people(
        &self,
        job_id: Uuid,
        after_ordinal: Option<i64>,
        limit: u64,
    ) -> StoreResult<Vec<PersonView>> {
        self.list_people_in(job_id, None, after_ordinal, limit).await
    }

    /// [`Store::list_people`] of one state only, when given: a `WHERE` on the
    /// `(job_id, state, ordinal)` index, paged by ordinal.
    pub async fn list_people_in(
        &self,
        job_id: Uuid,
        state: Option<PersonState>,
        after_ordinal: Option<i64>,
        limit: u64,
    ) -> StoreResult<Vec<PersonView>> {
        let mut q = person::Entity::find().filter(person::Column::JobId.eq(job_id));
        if let Some(state) = state {
            q = q.filter(person::Column::State.eq(state.as_str()));
        }
        if let Some(after) = after_ordinal {
            q = q.filter(person::Column::Ordinal.gt(after));
        }
        q.order_by_asc(person::Column::Ordinal)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(PersonView::from_row)
            .collect()
    }

    /// The inputs of a job's people in `states`, in input order (what a retry of them submits).
    pub async fn inputs_in_states(&self, job_id: Uuid, states: &[PersonState]) -> StoreResult<Vec<Value>> {
        Ok(person::Entity::find()
            .select_only()
            .column(person::Column::Input)
            .filter(person::Column::JobId.eq(job_id))
            .filter(person::Column::State.is_in(states.iter().map(|s| s.as_str())))
            .order_by_asc(person::Column::Ordinal)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The job a client created with an idempotency key, if any.
    pub async fn job_by_idempotency_key(&self, client: &str, key: &str) -> StoreResult<Option<JobView>> {
        match job::Entity::find()
            .filter(job::Column::Client.eq(client))
            .filter(job::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
        {
            Some(j) => Ok(Some(self.job_view(&self.db, j).await?)),
            None => Ok(None),
        }
    }

    /// One person.
    pub async fn get_person(&self, id: Uuid) -> StoreResult<Option<PersonView>> {
        person::Entity::find_by_id(id).one(&self.db).await?.map(PersonView::from_row).transpose()
    }

    /// Stops dispatching a job: queued people become `cancelled`. People already sent still merge;
    /// the job ends `cancelled` as soon as nothing of it is in flight (now, or when the last
    /// in-flight person finishes). Cancelling a finished job changes nothing.
    pub async fn cancel_job(&self, job_id: Uuid) -> StoreResult<JobView> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        let Some(j) = job::Entity::find_by_id(job_id).one(&txn).await? else {
            return Err(StoreError::NotFound(format!("job {job_id}")));
        };
        if j.completed_at.is_none() {
            let mut tally = Tally::default();
            cancel_queued(&txn, &mut tally, job_id, now).await?;
            tally.flush(&txn, now).await?;
        }
        txn.commit().await?;
        self.get_job(job_id).await?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))
    }

    /// Counts a job's people by state with a scan of its people (audits and tests; the API reads
    /// the counters kept in the job row, which must always equal this).
    pub async fn recount(&self, job_id: Uuid) -> StoreResult<Counts> {
        let txn = self.begin(Default::default()).await?;
        let counts = recount(&txn, job_id).await?;
        txn.commit().await?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{IdenStatic, Iterable};

    use super::*;

    #[test]
    fn a_new_person_names_every_column_once() {
        let mut named: Vec<&str> =
            NEW_PERSON_BOUND.iter().chain(NEW_PERSON_LITERAL.iter().map(|(c, _)| c)).map(|c| c.as_str()).collect();
        let mut all: Vec<&str> = person::Column::iter().map(|c| c.as_str()).collect();
        named.sort_unstable();
        all.sort_unstable();
        assert_eq!(named, all);
    }

    /// A request hashes as it did when people were kept as `Value`s (the hashed struct as it was):
    /// a job created before still matches its Idempotency-Key.
    #[test]
    fn people_kept_as_text_hash_as_values_did() {
        use sha2::{Digest, Sha256};
        #[derive(Serialize)]
        struct Hashed<'a> {
            // The name the stored hashes were made with.
            options: &'a EnrichFlags,
            callback_url: &'a Option<String>,
            metadata: &'a Option<Value>,
            people: &'a [Value],
            #[serde(skip_serializing_if = "Option::is_none")]
            max_credits: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_of: Option<Uuid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reuse: Option<rules::reuse::ReusePolicy>,
        }
        let people = vec![
            serde_json::json!({"email": "a@b.io", "external_id": "7"}),
            serde_json::json!({"first_name": "Ünï \"q\"\t", "last_name": "N", "source_row": ["x", ""]}),
        ];
        let new = NewJob {
            client: "acme".into(),
            callback_url: Some("https://h.io/cb".into()),
            metadata: Some(serde_json::json!({"k": [1, 2.5]})),
            people: people.iter().map(NewPerson::new).collect(),
            max_credits: Some(Credits::whole(3)),
            ..NewJob::default()
        };
        let before = Hashed {
            options: &new.flags,
            callback_url: &new.callback_url,
            metadata: &new.metadata,
            people: &people,
            max_credits: new.max_credits.map(|c| c.micros()),
            retry_of: None,
            reuse: None,
        };
        let expected = crate::hex(&Sha256::digest(serde_json::to_vec(&before).unwrap()));
        assert_eq!(new.request_hash(), expected);
        assert_eq!(new.people[1], people[1]);
        assert_eq!(new.people[0].key(), Some("email:a@b.io"));
    }

    #[test]
    fn inserts_fill_the_bind_limit_then_come_in_powers_of_two() {
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 100_000), 4_680);
        assert_eq!(rows_per_insert(DbBackend::Postgres, 100_000), 9_361);
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 4_680), 4_680);
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 4_679), 4_096);
        assert_eq!(rows_per_insert(DbBackend::Postgres, 3), 2);
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 1), 1);
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let rows = rows_per_insert(backend, usize::MAX);
            assert!(SHARED_BOUND + rows * BOUND_PER_PERSON <= bind_limit(backend));
            let sql = new_people_sql(backend, rows);
            let params = match backend {
                DbBackend::Postgres => sql.matches('$').count(),
                _ => sql.matches('?').count(),
            };
            assert_eq!(params, SHARED_BOUND + rows * BOUND_PER_PERSON);
        }
        assert!(
            new_people_sql(DbBackend::Postgres, 2)
                .ends_with("FROM (VALUES ($4,$5,$6,$7,$8,$9,$10), ($11,$12,$13,$14,$15,$16,$17)) AS v")
        );
    }
}
