//! Personal data: erasing a job's people ([`Store::erase_job`], `DELETE /v1/jobs/{id}`) and
//! purging finished jobs after a retention period ([`Store::purge_finished_jobs`]).
//!
//! **Erasure** runs in one transaction and removes:
//! - from every person of the job: the input, the merged record, the Apollo id, the person key,
//!   the identifier hashes and the last error (the input becomes `{}`, the others null); ordinal, state, expected/received
//!   parts and credits stay, so the job's counters stay true;
//! - from the job: `metadata`, `callback_url` and `request_hash` (a digest of the request, people
//!   included: reusing the job's `Idempotency-Key` afterwards answers a conflict); a callback still
//!   pending can no longer be sent and becomes `exhausted`; the response excerpts of its attempts;
//! - the raw payloads that hold the job's people: every batch that had people of the job (by
//!   `batch_people` membership) loses its raw `response`, and every delivery of those batches
//!   its body (an empty byte string; id, state, kind, credits and dedup key stay, so a re-sent
//!   payload is still recognised as a duplicate).
//!
//! A batch may also hold **other jobs' people** (batches span jobs): their merged records stay
//! (they live on their own person rows), only the shared raw audit payload goes. A delivery still
//! *pending* at erase time keeps its body until it is merged (normally within a second), because
//! other jobs' people of the batch still need it; it is emptied when it is applied (or failed).
//!
//! **A running job** is cancelled, then erased (never refused): queued people are cancelled as
//! [`Store::cancel_job`] does, and people waiting in a batch that is not in flight (a retry) are
//! cancelled too, since they could not be sent again without their input. A call already in
//! flight still gets its answer recorded, and deliveries for its batch still arrive; for people
//! of an erased job those writes keep the state changes and credits but no data: `record_sync`
//! and `apply_delivery` check `jobs.erased_at` and write no record, Apollo id or raw payload for
//! them, and a batch retried later cancels them instead of sending them.
//!
//! **Purging** deletes finished jobs with all their rows, in bounded transactions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use rules::lifecycle::Event;
use rules::{BatchState, CallbackState, DeliveryState, JobState, PersonState};
use sea_orm::sea_query::{Expr, ExprTrait, LockType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::clock::{now, ts};
use crate::counters::Tally;
use crate::entities::{
    apollo_error, batch, batch_person, callback_attempt, callback_delivery, inbound_delivery, job, person, person_event,
};
use crate::error::{StoreError, StoreResult};
use crate::jobs::cancel_queued;
use crate::people::move_primaries;
use crate::{JobView, Store};

/// Ids per `IN (…)` list: far under SQLite's bound-parameter limit.
const IN_LIST: usize = 500;

/// Most people one purge transaction removes. A job is never split across transactions: a larger
/// one is purged alone, in a transaction the size of the one that created it.
const PURGE_PEOPLE_PER_TXN: i64 = 10_000;

/// Most jobs one purge transaction removes.
const PURGE_JOBS_PER_TXN: u64 = 200;

/// What [`Store::erase_job`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Erased {
    /// The job after erasure: counters and credits as before, `erased_at` set.
    pub job: JobView,
    /// People whose input and results were removed.
    pub people: u64,
    /// People cancelled by the erasure (the job was still running).
    pub cancelled: i64,
    /// Batches that held people of the job (their raw responses were removed).
    pub batches: u64,
    /// Of those, batches that also held other jobs' people (whose records stay).
    pub shared_batches: u64,
    /// Deliveries whose body was removed.
    pub deliveries: u64,
    /// Deliveries still waiting to be merged: their bodies are removed when they are applied.
    pub pending_deliveries: u64,
    /// With `suppress`: the entries this erasure put on the client's do-not-enrich list.
    #[serde(default)]
    pub suppressed: Option<crate::suppressions::AddedEntries>,
}

/// The erased jobs among those with people in batch `batch_id` (membership history).
pub(crate) async fn erased_jobs_in_batch<C: ConnectionTrait>(db: &C, batch_id: Uuid) -> StoreResult<HashSet<Uuid>> {
    Ok(erased_jobs_in_batches(db, &[batch_id]).await?.remove(&batch_id).unwrap_or_default())
}

/// [`erased_jobs_in_batch`] for several batches in one statement per [`IN_LIST`] of them; a
/// batch without erased jobs is absent.
pub(crate) async fn erased_jobs_in_batches<C: ConnectionTrait>(
    db: &C,
    batch_ids: &[Uuid],
) -> StoreResult<HashMap<Uuid, HashSet<Uuid>>> {
    let mut out: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for chunk in batch_ids.chunks(IN_LIST) {
        let erased = Query::select()
            .column(job::Column::Id)
            .from(job::Entity)
            .and_where(Expr::col(job::Column::ErasedAt).is_not_null())
            .to_owned();
        let pairs: Vec<(Uuid, Uuid)> = batch_person::Entity::find()
            .select_only()
            .columns([batch_person::Column::BatchId, batch_person::Column::JobId])
            .distinct()
            .filter(batch_person::Column::BatchId.is_in(chunk.iter().copied()))
            .filter(batch_person::Column::JobId.in_subquery(erased))
            .into_tuple()
            .all(db)
            .await?;
        for (batch_id, job_id) in pairs {
            out.entry(batch_id).or_default().insert(job_id);
        }
    }
    Ok(out)
}

/// Empties a delivery's body (and its parse error, which may quote it); everything else stays.
pub(crate) async fn empty_delivery_bodies<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> StoreResult<()> {
    for chunk in ids.chunks(IN_LIST) {
        inbound_delivery::Entity::update_many()
            .filter(inbound_delivery::Column::Id.is_in(chunk.iter().copied()))
            .col_expr(inbound_delivery::Column::Body, Expr::value(Vec::<u8>::new()))
            .exec(db)
            .await?;
        inbound_delivery::Entity::update_many()
            .filter(inbound_delivery::Column::Id.is_in(chunk.iter().copied()))
            .filter(inbound_delivery::Column::ParseError.is_not_null())
            .col_expr(inbound_delivery::Column::ParseError, Expr::value("(erased with the job's personal data)"))
            .exec(db)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Erases a job's personal data in one transaction (see the [module docs](self)): the people's
    /// inputs, records, Apollo ids, keys and errors; the job's metadata and callback URL; the raw
    /// responses and delivery bodies of every batch that held its people; its callback response
    /// excerpts. Counters, states and credits stay; the job gets `erased_at`. A running job is
    /// cancelled first. Erasing twice is harmless (`erased_at` keeps the first time).
    pub async fn erase_job(&self, job_id: Uuid) -> StoreResult<Erased> {
        self.erase_job_with(job_id, false).await
    }

    /// [`Store::erase_job`]; with `suppress`, in the same transaction, every erased person's
    /// identifiers (email, LinkedIn URL and Apollo id as given, and the Apollo id it was matched
    /// to) go on the job's client's do-not-enrich list, so a later job never sends them.
    /// `suppress` needs a suppression key ([`Store::with_suppression_key`]).
    pub async fn erase_job_with(&self, job_id: Uuid, suppress: bool) -> StoreResult<Erased> {
        if suppress && self.suppression_key().is_none() {
            return Err(StoreError::Invalid("no suppression key is configured".into()));
        }
        let now = now();
        let postgres = self.backend() == DbBackend::Postgres;
        let (txn, _gate) = self.write_txn().await?;
        let Some(j) = job::Entity::find_by_id(job_id).one(&txn).await? else {
            return Err(StoreError::NotFound(format!("job {job_id}")));
        };
        let counts_before = crate::counters::counts_of(&j);
        let batch_ids: Vec<Uuid> = batch_person::Entity::find()
            .select_only()
            .column(batch_person::Column::BatchId)
            .distinct()
            .filter(batch_person::Column::JobId.eq(job_id))
            .order_by_asc(batch_person::Column::BatchId)
            .into_tuple()
            .all(&txn)
            .await?;

        // The lock order: deliveries, then batches, then people (in id order), then the job row.
        let (mut deliveries, mut pending_deliveries) = (0u64, 0u64);
        for chunk in batch_ids.chunks(IN_LIST) {
            let rows: Vec<(Uuid, String)> = inbound_delivery::Entity::find()
                .select_only()
                .column(inbound_delivery::Column::Id)
                .column(inbound_delivery::Column::State)
                .filter(inbound_delivery::Column::BatchId.is_in(chunk.iter().copied()))
                .order_by_asc(inbound_delivery::Column::Id)
                .lock(LockType::Update)
                .into_tuple()
                .all(&txn)
                .await?;
            // Pending ones are still needed by other jobs' people of the batch: emptied once applied.
            let settled: Vec<Uuid> =
                rows.iter().filter(|(_, state)| state != DeliveryState::Pending.as_str()).map(|(id, _)| *id).collect();
            pending_deliveries += (rows.len() - settled.len()) as u64;
            deliveries += settled.len() as u64;
            empty_delivery_bodies(&txn, &settled).await?;
        }
        let mut shared_batches = 0u64;
        for chunk in batch_ids.chunks(IN_LIST) {
            if postgres {
                batch::Entity::find()
                    .select_only()
                    .column(batch::Column::Id)
                    .filter(batch::Column::Id.is_in(chunk.iter().copied()))
                    .order_by_asc(batch::Column::Id)
                    .lock(LockType::Update)
                    .into_tuple::<Uuid>()
                    .all(&txn)
                    .await?;
            }
            // Apollo's answer (parsed, or kept byte for byte) and its error texts may quote a detail.
            batch::Entity::update_many()
                .filter(batch::Column::Id.is_in(chunk.iter().copied()))
                .col_expr(batch::Column::Response, Expr::value(Option::<Value>::None))
                .col_expr(batch::Column::ResponseBody, Expr::value(Option::<Vec<u8>>::None))
                .col_expr(batch::Column::LastError, Expr::value(Option::<String>::None))
                .exec(&txn)
                .await?;
            apollo_error::Entity::delete_many()
                .filter(apollo_error::Column::BatchId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            let shared: Vec<Uuid> = batch_person::Entity::find()
                .select_only()
                .column(batch_person::Column::BatchId)
                .distinct()
                .filter(batch_person::Column::BatchId.is_in(chunk.iter().copied()))
                .filter(batch_person::Column::JobId.ne(job_id))
                .into_tuple()
                .all(&txn)
                .await?;
            shared_batches += shared.len() as u64;
        }

        if postgres {
            person::Entity::find()
                .select_only()
                .column(person::Column::Id)
                .filter(person::Column::JobId.eq(job_id))
                .order_by_asc(person::Column::Id)
                .lock(LockType::Update)
                .into_tuple::<Uuid>()
                .all(&txn)
                .await?;
        }
        let mut tally = Tally::default();
        if j.completed_at.is_none() {
            cancel_queued(&txn, &mut tally, job_id, now).await?;
            // People waiting in a batch that is not in flight (a retry) would be sent again without
            // their input: cancelled. Those in a call in flight get its answer, without data.
            let not_in_flight = Query::select()
                .expr(Expr::val(1))
                .from(batch::Entity)
                .and_where(
                    Expr::col((batch::Entity, batch::Column::Id)).equals((person::Entity, person::Column::BatchId)),
                )
                .and_where(Expr::col((batch::Entity, batch::Column::State)).ne(BatchState::Submitting))
                .to_owned();
            let waiting = person::Entity::find()
                .filter(person::Column::JobId.eq(job_id))
                .filter(person::Column::State.eq(PersonState::Submitted))
                .filter(person::Column::DupOf.is_null())
                .filter(Expr::exists(not_in_flight))
                .order_by_asc(person::Column::Id)
                .all(&txn)
                .await?;
            let refs: Vec<&person::Model> = waiting.iter().collect();
            move_primaries(&txn, &mut tally, &refs, Event::Cancelled, None, None, now).await?;
        }
        let suppressed = match suppress {
            false => None,
            true => {
                let entries = crate::suppressions::erased_people_entries(&txn, self.suppression_key(), job_id).await?;
                let scope = crate::suppressions::Scope::Client(j.client.clone());
                Some(crate::suppressions::insert_entries(&txn, &scope, &entries, now).await?)
            }
        };
        let people = person::Entity::update_many()
            .filter(person::Column::JobId.eq(job_id))
            .col_expr(person::Column::Input, Expr::value(Value::Object(Default::default())))
            .col_expr(person::Column::SuppressHashes, Expr::value(Option::<String>::None))
            .col_expr(person::Column::PersonKey, Expr::value(Option::<String>::None))
            .col_expr(person::Column::ApolloId, Expr::value(Option::<String>::None))
            .col_expr(person::Column::Record, Expr::value(Option::<Value>::None))
            .col_expr(person::Column::LastError, Expr::value(Option::<String>::None))
            .col_expr(person::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?
            .rows_affected;

        callback_attempt::Entity::update_many()
            .filter(callback_attempt::Column::JobId.eq(job_id))
            .col_expr(callback_attempt::Column::ResponseExcerpt, Expr::value(Option::<String>::None))
            .exec(&txn)
            .await?;
        // Frozen callback bodies hold the people's records.
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .col_expr(callback_delivery::Column::Body, Expr::value(Option::<Vec<u8>>::None))
            .exec(&txn)
            .await?;
        // Without its URL a pending callback cannot be sent: it ends here, visibly.
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(callback_delivery::Column::State.eq(CallbackState::Pending))
            .col_expr(callback_delivery::Column::State, Expr::value(CallbackState::Exhausted))
            .col_expr(callback_delivery::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(callback_delivery::Column::ManualRequested, Expr::value(false))
            .col_expr(callback_delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(
                callback_delivery::Column::LastError,
                Expr::value("the job was erased before its callback was delivered"),
            )
            .col_expr(callback_delivery::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;

        // The job row before the tally's completion check: with `callback_url` gone, a job that
        // completes now (or later) queues no callback.
        job::Entity::update_many()
            .filter(job::Column::Id.eq(job_id))
            .col_expr(job::Column::Metadata, Expr::value(Option::<Value>::None))
            .col_expr(job::Column::CallbackUrl, Expr::value(Option::<String>::None))
            .col_expr(job::Column::RequestHash, Expr::value(Option::<String>::None))
            .col_expr(job::Column::ErasedAt, Expr::value(j.erased_at.unwrap_or(now)))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        tally.touch(job_id);
        tally.flush(&txn, now).await?;
        // Nobody left to announce: the people's records are gone.
        crate::outbox::drop_unsealed(&txn, job_id).await?;
        txn.commit().await?;

        let job = self.get_job(job_id).await?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
        Ok(Erased {
            cancelled: job.counts.cancelled - counts_before.cancelled,
            job,
            people,
            batches: batch_ids.len() as u64,
            shared_batches,
            deliveries,
            pending_deliveries,
            suppressed,
        })
    }

    /// Deletes every job that finished (`completed`, `failed` or `cancelled`) before `older_than`,
    /// with all its rows: people, their batch memberships, its callback and attempts, and the
    /// batches (with their deliveries) whose people all belonged to purged jobs; a batch shared
    /// with a job that stays is kept (it goes with the last of its jobs). Jobs whose final callback
    /// is still pending are kept until it is delivered or exhausted.
    ///
    /// Works in bounded transactions (at most 200 jobs and 10,000 people each, a larger job alone),
    /// so it never holds the database for long; returns how many jobs were purged.
    pub async fn purge_finished_jobs(&self, older_than: DateTime<Utc>) -> StoreResult<u64> {
        let older_than = ts(older_than);
        let mut purged = 0;
        loop {
            let n = self.purge_chunk(older_than).await?;
            if n == 0 {
                return Ok(purged);
            }
            purged += n;
        }
    }

    /// One purge transaction; returns how many jobs it deleted (0: nothing left to purge).
    async fn purge_chunk(&self, older_than: DateTime<Utc>) -> StoreResult<u64> {
        let (txn, _gate) = self.write_txn().await?;
        let callback_pending = Query::select()
            .expr(Expr::val(1))
            .from(callback_delivery::Entity)
            .and_where(
                Expr::col((callback_delivery::Entity, callback_delivery::Column::JobId))
                    .equals((job::Entity, job::Column::Id)),
            )
            .and_where(
                Expr::col((callback_delivery::Entity, callback_delivery::Column::State))
                    .eq(CallbackState::Pending.as_str()),
            )
            .to_owned();
        let candidates: Vec<(Uuid, i64, String, DateTime<Utc>, i64)> = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .column(job::Column::Total)
            .column(job::Column::Client)
            .column(job::Column::CreatedAt)
            .column(job::Column::CreditsMicros)
            .filter(job::Column::CompletedAt.lt(older_than))
            .filter(job::Column::State.is_in([JobState::Completed, JobState::Failed, JobState::Cancelled]))
            .filter(Expr::exists(callback_pending).not())
            .order_by_asc(job::Column::CompletedAt)
            .order_by_asc(job::Column::Id)
            .limit(PURGE_JOBS_PER_TXN)
            .into_tuple()
            .all(&txn)
            .await?;
        let mut jobs: Vec<Uuid> = Vec::new();
        let mut people = 0i64;
        // What the purged jobs spent stays counted against their day's cap.
        let mut spent: BTreeMap<(String, NaiveDate), i64> = BTreeMap::new();
        for (id, total, client, created_at, credits) in candidates {
            if !jobs.is_empty() && people + total > PURGE_PEOPLE_PER_TXN {
                break;
            }
            jobs.push(id);
            people += total;
            *spent.entry((client, created_at.date_naive())).or_default() += credits;
        }
        if jobs.is_empty() {
            return Ok(0);
        }
        let purged: HashSet<Uuid> = jobs.iter().copied().collect();

        // Batches that held people of these jobs; those that also held people of a job that stays
        // are kept.
        let mut batches: BTreeSet<Uuid> = BTreeSet::new();
        for chunk in jobs.chunks(IN_LIST) {
            let ids: Vec<Uuid> = batch_person::Entity::find()
                .select_only()
                .column(batch_person::Column::BatchId)
                .distinct()
                .filter(batch_person::Column::JobId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&txn)
                .await?;
            batches.extend(ids);
        }
        let candidates: Vec<Uuid> = batches.iter().copied().collect();
        for chunk in candidates.chunks(IN_LIST) {
            let members: Vec<(Uuid, Uuid)> = batch_person::Entity::find()
                .select_only()
                .column(batch_person::Column::BatchId)
                .column(batch_person::Column::JobId)
                .filter(batch_person::Column::BatchId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&txn)
                .await?;
            for (batch_id, job_id) in members {
                if !purged.contains(&job_id) {
                    batches.remove(&batch_id);
                }
            }
        }
        let doomed: Vec<Uuid> = batches.into_iter().collect();

        // Children first, in the lock order: deliveries, batches' people, people, batches, then
        // the callbacks and the jobs.
        for chunk in doomed.chunks(IN_LIST) {
            inbound_delivery::Entity::delete_many()
                .filter(inbound_delivery::Column::BatchId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
        }
        for chunk in jobs.chunks(IN_LIST) {
            batch_person::Entity::delete_many()
                .filter(batch_person::Column::JobId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            person::Entity::delete_many().filter(person::Column::JobId.is_in(chunk.iter().copied())).exec(&txn).await?;
        }
        for chunk in doomed.chunks(IN_LIST) {
            batch::Entity::delete_many().filter(batch::Column::Id.is_in(chunk.iter().copied())).exec(&txn).await?;
        }
        let mut deleted = 0;
        for chunk in jobs.chunks(IN_LIST) {
            callback_attempt::Entity::delete_many()
                .filter(callback_attempt::Column::JobId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            callback_delivery::Entity::delete_many()
                .filter(callback_delivery::Column::JobId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            person_event::Entity::delete_many()
                .filter(person_event::Column::JobId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            deleted += job::Entity::delete_many()
                .filter(job::Column::Id.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        crate::budget::keep_day_credits(&txn, &spent, older_than.date_naive()).await?;
        txn.commit().await?;
        Ok(deleted)
    }
}
