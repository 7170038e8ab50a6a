//! Batches: formed when the dispatcher claims work, fairly and across jobs, under a lease; then
//! retried, failed, or released when the lease runs out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use apollo_client::{Credits, EnrichFlags, RequestId};
use chrono::{DateTime, TimeDelta, Utc};
use rules::lifecycle::Event;
use rules::lifecycle::Part;
use rules::reuse::{Earlier, ReusePolicy};
use rules::{BATCH_SIZE, BatchState, JobState, PersonState};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::clock::ts;
use crate::counters::{Tally, people_per_job, set_batch_double_charge};
use crate::entities::{batch, batch_person, job, person};
use crate::error::{StoreError, StoreResult};
use crate::people::{apply_event, move_primaries, update_person};
use crate::sql;
use crate::system::{CallError, record_call_error};
use crate::{Store, budget, dispatcher, hex, new_id};

/// Counted attempts after which a batch is given up whatever the dispatcher's own limit.
pub const MAX_ATTEMPTS: i32 = 12;

/// How many candidate jobs one claim looks at before it gives up filling the batch.
const CANDIDATE_JOBS: u64 = 64;

/// A batch handed to the dispatcher: make the Apollo call, then record the outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimedBatch {
    /// Batch id (the webhook URL names it).
    pub batch_id: Uuid,
    /// Apollo flags of every person in it.
    pub flags: EnrichFlags,
    /// Counted attempts including this one (1 for a new batch).
    pub attempt: i32,
    /// Claims including this one (every call, counted or not).
    pub claims: i32,
    /// Apollo's failed answers (5xx, timeouts) to earlier calls of this batch; leases that ran out
    /// are not among them, so restarts do not use up the retries an Apollo outage gets.
    pub failures: i32,
    /// Whether this is a retry of an earlier claim.
    pub retry: bool,
    /// The lease runs out then; record the outcome before.
    pub lease_expires_at: DateTime<Utc>,
    /// 32 random bytes (hex) from which the service derives the webhook URL token.
    pub webhook_secret: String,
    /// The people, in `details` order.
    pub people: Vec<ClaimedPerson>,
}

/// One person of a claimed batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimedPerson {
    /// Person id.
    pub person_id: Uuid,
    /// Job id.
    pub job_id: Uuid,
    /// The client's input object.
    pub input: Value,
}

/// A batch as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    /// Id.
    pub id: Uuid,
    /// Apollo flags.
    pub flags: EnrichFlags,
    /// State.
    pub state: BatchState,
    /// Number of people.
    pub size: i32,
    /// Counted attempts.
    pub attempt: i32,
    /// Claims.
    pub claims: i32,
    /// When a `retry_wait` batch is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Lease holder.
    pub lease_owner: Option<String>,
    /// Lease expiry.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Webhook token material (hex).
    pub webhook_secret: String,
    /// Apollo `request_id`.
    pub request_id: Option<RequestId>,
    /// Pending phone job id.
    pub phone_request_id: Option<String>,
    /// HTTP status of the recorded answer.
    pub http_status: Option<i32>,
    /// The raw synchronous response.
    pub response: Option<Value>,
    /// The response byte for byte, when `response` had to be sanitized to be stored.
    pub response_body: Option<Vec<u8>>,
    /// Credits of the call and its deliveries.
    pub credits: Credits,
    /// Last error.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Answer recorded.
    pub submitted_at: Option<DateTime<Utc>>,
    /// People ids in `details` order.
    pub people: Vec<Uuid>,
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> StoreResult<DateTime<Utc>> {
    let d = TimeDelta::from_std(lease).map_err(|e| StoreError::Invalid(format!("lease {lease:?}: {e}")))?;
    Ok(ts(now + d))
}

fn new_secret() -> StoreResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Invalid(format!("no randomness: {e}")))?;
    Ok(hex(&bytes))
}

/// The people of a batch in `details` order (membership rows joined to current person rows).
async fn members<C: ConnectionTrait>(db: &C, batch_id: Uuid) -> StoreResult<Vec<person::Model>> {
    let order: Vec<Uuid> = batch_person::Entity::find()
        .select_only()
        .column(batch_person::Column::PersonId)
        .filter(batch_person::Column::BatchId.eq(batch_id))
        .order_by_asc(batch_person::Column::Position)
        .into_tuple()
        .all(db)
        .await?;
    let mut rows: BTreeMap<Uuid, person::Model> = person::Entity::find()
        .filter(person::Column::BatchId.eq(batch_id))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    Ok(order.into_iter().filter_map(|id| rows.remove(&id)).collect())
}

impl Store {
    /// Claims the next Apollo call: a due `retry_wait` batch if there is one (same batch, same
    /// people), else a new batch of up to ten queued people sharing the same flags, across jobs.
    ///
    /// Fairness: jobs are visited never-claimed first, then by oldest last claim, and each job's
    /// people in input order; the batch takes people from several jobs if the first one runs out.
    /// So a one-person job submitted while a 100,000-person job runs is in the next claim.
    ///
    /// In one transaction: the batch row (`submitting`, lease, attempt), the people `submitted`
    /// with the batch id, job counters, `queued` → `running`. Returns `None` when paused or idle.
    pub async fn claim_batch(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedBatch>> {
        Ok(self.claim_batches(owner, lease, now, 1).await?.pop())
    }

    /// Up to `max` claims of [`Store::claim_batch`] in one transaction (one commit for the calls
    /// that may go together); fewer when the work runs out. Only the first may hold fewer than
    /// [`BATCH_SIZE`] people: a short batch after it is left queued (its people may yet fill it
    /// before the next claim), so claiming together never costs a call more than claiming one
    /// at a time.
    pub async fn claim_batches(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        max: usize,
    ) -> StoreResult<Vec<ClaimedBatch>> {
        let now = ts(now);
        let (txn, _gate) = self.write_txn().await?;
        let mut tally = Tally::default();
        let mut claimed: Vec<ClaimedBatch> = claim_in(&txn, &mut tally, owner, lease, now).await?.into_iter().collect();
        while !claimed.is_empty() && claimed.len() < max {
            // A savepoint, so a short batch can be given back whole (SAVEPOINT and its end counted),
            // its counter changes with it.
            let attempt = txn.begin().await?;
            self.count_unseen(2);
            let mut trial = tally.clone();
            match claim_in(&attempt, &mut trial, owner, lease, now).await? {
                Some(batch) if batch.people.len() >= BATCH_SIZE => {
                    attempt.commit().await?;
                    tally = trial;
                    claimed.push(batch);
                }
                _ => {
                    attempt.rollback().await?;
                    break;
                }
            }
        }
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(claimed)
    }

    /// While dispatch is paused: takes the longest-due `retry_wait` batch (a call the pause
    /// refused) as [`Store::claim_batch`] would unpaused, so the pause's probe is a real call that
    /// proves what a free one cannot (credits back) and spends nothing in vain. `None` when no
    /// retried batch is due.
    pub async fn claim_paused_retry(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedBatch>> {
        let now = ts(now);
        let expires = lease_end(now, lease)?;
        let (txn, _gate) = self.write_txn().await?;
        let mut tally = Tally::default();
        let batch = reclaim_retry(&txn, &mut tally, owner, expires, now).await?;
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(batch)
    }

    /// Puts a `submitting` batch back to wait until `at` (5xx, timeout, 429). With
    /// `count_attempt = false` (a 429) the next claim does not count as an attempt. Returns
    /// `false` if the batch was not `submitting` (already recorded, failed or released).
    /// The failure is recorded for the system page in the same transaction.
    pub async fn schedule_retry<'e>(
        &self,
        batch_id: Uuid,
        at: DateTime<Utc>,
        count_attempt: bool,
        error: impl Into<CallError<'e>>,
    ) -> StoreResult<bool> {
        let error = error.into();
        let (txn, _gate) = self.write_txn().await?;
        let retried = retry_in(&txn, batch_id, at, count_attempt, error.message).await?;
        if retried {
            record_call_error(&txn, batch_id, &error, crate::clock::now()).await?;
        }
        txn.commit().await?;
        Ok(retried)
    }

    /// [`Store::schedule_retry`] (a counted attempt) of a call whose outcome is unknown — a
    /// timeout after sending, a 502/504, an unreadable 200: Apollo may have charged it and may
    /// still deliver for it, so every job with people in it gets `possible_double_charges + 1`
    /// in the same transaction. Returns `false` if the batch was not `submitting`.
    pub async fn retry_unknown_outcome<'e>(
        &self,
        batch_id: Uuid,
        at: DateTime<Utc>,
        error: impl Into<CallError<'e>>,
    ) -> StoreResult<bool> {
        let error = error.into();
        let now = crate::clock::now();
        let (txn, _gate) = self.write_txn().await?;
        if !retry_in(&txn, batch_id, at, true, error.message).await? {
            return Ok(false);
        }
        let mut tally = Tally::default();
        unknown_outcome(&txn, &mut tally, batch_id).await?;
        tally.flush(&txn, now).await?;
        record_call_error(&txn, batch_id, &error, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Splits a `submitting` batch that Apollo refused into two halves (in `details` order), both
    /// due now without counting an attempt, so the refused detail ends alone and only its person
    /// fails. The first half keeps the batch; the second gets a new one. Returns the new batch's
    /// id, or `None` if the batch was not `submitting` or holds fewer than two people.
    pub async fn split_batch<'e>(&self, batch_id: Uuid, error: impl Into<CallError<'e>>) -> StoreResult<Option<Uuid>> {
        let call_error = error.into();
        let error = call_error.message;
        let now = crate::clock::now();
        let (txn, _gate) = self.write_txn().await?;
        let Some(b) = sql::by_key(&txn, batch::Entity::find_by_id(batch_id).lock(LockType::Update)).await? else {
            return Err(StoreError::NotFound(format!("batch {batch_id}")));
        };
        let people: Vec<person::Model> =
            members(&txn, batch_id).await?.into_iter().filter(|p| p.state == PersonState::Submitted).collect();
        if b.state != BatchState::Submitting || people.len() < 2 {
            return Ok(None);
        }
        let second = &people[people.len() / 2..];
        let new_batch = new_id();
        let row = batch::Model {
            id: new_batch,
            flags: b.flags,
            state: BatchState::RetryWait,
            size: second.len() as i32,
            attempt: b.attempt,
            claims: b.claims,
            failures: b.failures,
            count_next_attempt: false,
            next_attempt_at: Some(now),
            lease_owner: None,
            lease_expires_at: None,
            webhook_secret: new_secret()?,
            request_id: None,
            phone_request_id: None,
            http_status: None,
            response: None,
            credits_micros: 0,
            last_error: crate::columns::storable_text(Some(format!("split from batch {batch_id}: {error}"))),
            created_at: now,
            updated_at: now,
            submitted_at: None,
            answered_claim: None,
            sync_credits_micros: 0,
            next_poll_at: None,
            polls: 0,
            response_body: None,
            unknown_outcomes: 0,
            lost_credits_micros: 0,
            double_charge_micros: 0,
        };
        batch::Entity::insert(row.into_active_model().reset_all()).exec_without_returning(&txn).await?;
        let rows = second.iter().enumerate().map(|(i, p)| {
            batch_person::Model { batch_id: new_batch, person_id: p.id, job_id: p.job_id, position: i as i32 }
                .into_active_model()
                .reset_all()
        });
        batch_person::Entity::insert_many(rows).exec_without_returning(&txn).await?;
        person::Entity::update_many()
            .filter(person::Column::Id.is_in(second.iter().map(|p| p.id)))
            .col_expr(person::Column::BatchId, Expr::value(new_batch))
            .col_expr(person::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        // The first half stays here: it keeps the membership rows of the moved people as the
        // record of the refused call, but `members` reads only people still pointing here.
        batch::Entity::update_many()
            .filter(batch::Column::Id.eq(batch_id))
            .col_expr(batch::Column::Size, Expr::value((people.len() - second.len()) as i32))
            .exec(&txn)
            .await?;
        retry_in(&txn, batch_id, now, false, error).await?;
        record_call_error(&txn, batch_id, &call_error, now).await?;
        txn.commit().await?;
        Ok(Some(new_batch))
    }
}

/// Puts a `submitting` batch back to `retry_wait`, in the caller's transaction.
pub(crate) async fn retry_in(
    txn: &DatabaseTransaction,
    batch_id: Uuid,
    at: DateTime<Utc>,
    count_attempt: bool,
    error: &str,
) -> StoreResult<bool> {
    let now = crate::clock::now();
    let res = batch::Entity::update_many()
        .filter(batch::Column::Id.eq(batch_id))
        .filter(batch::Column::State.eq(BatchState::Submitting))
        .col_expr(batch::Column::State, Expr::value(BatchState::RetryWait))
        .col_expr(batch::Column::NextAttemptAt, Expr::value(ts(at)))
        .col_expr(batch::Column::CountNextAttempt, Expr::value(count_attempt))
        // Every counted retry answers an Apollo failure (429s, pauses and splits are not counted).
        .col_expr(batch::Column::Failures, Expr::col(batch::Column::Failures).add(i32::from(count_attempt)))
        .col_expr(batch::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(batch::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(batch::Column::LastError, Expr::value(crate::columns::storable_text(Some(error.to_owned()))))
        .col_expr(batch::Column::UpdatedAt, Expr::value(now))
        .exec(txn)
        .await?;
    if res.rows_affected == 0 && batch::Entity::find_by_id(batch_id).one(txn).await?.is_none() {
        return Err(StoreError::NotFound(format!("batch {batch_id}")));
    }
    Ok(res.rows_affected == 1)
}

/// A call of the batch had an unknown outcome: counted on the batch, and on each job with its
/// worst case ([`budget::double_charge_worst`]) until an answered copy tells what it cost.
async fn unknown_outcome(txn: &DatabaseTransaction, tally: &mut Tally, batch_id: Uuid) -> StoreResult<()> {
    let Some(b) = sql::by_key(txn, batch::Entity::find_by_id(batch_id)).await? else {
        return Err(StoreError::NotFound(format!("batch {batch_id}")));
    };
    let by_job = people_per_job(txn, batch_id).await?;
    for (job, _) in &by_job {
        tally.possible_double_charge(*job);
    }
    let unknown = b.unknown_outcomes + 1;
    let amount = budget::batch_double_charge_of(
        &batch::Model { unknown_outcomes: unknown, ..b.clone() },
        by_job.iter().map(|(_, n)| n).sum(),
        // Not answered yet: no delivery of the batch has been merged.
        0,
    );
    batch::Entity::update_many()
        .filter(batch::Column::Id.eq(batch_id))
        .col_expr(batch::Column::UnknownOutcomes, Expr::value(unknown))
        .exec(txn)
        .await?;
    set_batch_double_charge(txn, tally, batch_id, &by_job, b.double_charge_micros, amount.micros()).await
}

impl Store {
    /// Batches whose lease ran out in `submitting` (a replica died mid-call): the outcome is
    /// unknown, so each goes to `retry_wait` due now (a counted attempt), and every job with people
    /// in it gets `possible_double_charges + 1`. Returns how many batches were released.
    pub async fn release_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.release_leases(now, false).await
    }

    /// [`Store::release_expired_leases`] for every `submitting` batch, expired or not: for a store
    /// only this process can open (SQLite under its lock file), whose earlier holder is gone.
    pub async fn release_orphaned_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.release_leases(now, true).await
    }

    async fn release_leases(&self, now: DateTime<Utc>, all: bool) -> StoreResult<u64> {
        let now = ts(now);
        let (txn, _gate) = self.write_txn().await?;
        let mut find = batch::Entity::find()
            .select_only()
            .column(batch::Column::Id)
            .filter(batch::Column::State.eq(BatchState::Submitting));
        if !all {
            find = find.filter(batch::Column::LeaseExpiresAt.lt(now));
        }
        let expired: Vec<Uuid> = find
            .order_by_asc(batch::Column::Id)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .into_tuple()
            .all(&txn)
            .await?;
        let mut tally = Tally::default();
        let mut released = 0;
        for id in expired {
            let res = batch::Entity::update_many()
                .filter(batch::Column::Id.eq(id))
                .filter(batch::Column::State.eq(BatchState::Submitting))
                .col_expr(batch::Column::State, Expr::value(BatchState::RetryWait))
                .col_expr(batch::Column::NextAttemptAt, Expr::value(now))
                .col_expr(batch::Column::CountNextAttempt, Expr::value(true))
                .col_expr(batch::Column::LeaseOwner, Expr::value(Option::<String>::None))
                .col_expr(batch::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(batch::Column::LastError, Expr::value("lease expired during the call: outcome unknown"))
                .col_expr(batch::Column::UpdatedAt, Expr::value(now))
                .exec(&txn)
                .await?;
            if res.rows_affected == 0 {
                continue;
            }
            released += 1;
            unknown_outcome(&txn, &mut tally, id).await?;
        }
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(released)
    }

    /// Gives up on a batch: its people become `failed` with `reason`, counters and job completion
    /// follow; deliveries for it are kept (their credits still count). Returns `false` if the
    /// batch already has its answer or already failed.
    /// The failure is recorded for the system page in the same transaction.
    pub async fn fail_batch<'e>(&self, batch_id: Uuid, reason: impl Into<CallError<'e>>) -> StoreResult<bool> {
        let error = reason.into();
        let now = crate::clock::now();
        let reason = crate::columns::storable_text(Some(error.message.to_owned())).unwrap_or_default();
        let (txn, _gate) = self.write_txn().await?;
        let res = batch::Entity::update_many()
            .filter(batch::Column::Id.eq(batch_id))
            .filter(batch::Column::State.is_in([BatchState::Queued, BatchState::Submitting, BatchState::RetryWait]))
            .col_expr(batch::Column::State, Expr::value(BatchState::Failed))
            .col_expr(batch::Column::LastError, Expr::value(reason.as_str()))
            .col_expr(batch::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(batch::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(batch::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(batch::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            if batch::Entity::find_by_id(batch_id).one(&txn).await?.is_none() {
                return Err(StoreError::NotFound(format!("batch {batch_id}")));
            }
            return Ok(false);
        }
        let people = crate::people::lock_batch_primaries(&txn, batch_id).await?;
        let submitted: Vec<&person::Model> = people.iter().filter(|p| p.state == PersonState::Submitted).collect();
        let mut tally = Tally::default();
        move_primaries(&txn, &mut tally, &submitted, Event::Failed, None, Some(&reason), now).await?;
        // Deliveries of its calls stay: they prove Apollo ran (and charged) a call whose answer
        // never came, and ingest books their credits.
        tally.flush(&txn, now).await?;
        record_call_error(&txn, batch_id, &error, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// A batch's webhook secret alone: what the webhook route checks on every delivery, without
    /// reading the stored response or the people.
    pub async fn batch_webhook_secret(&self, batch_id: Uuid) -> StoreResult<Option<String>> {
        Ok(batch::Entity::find_by_id(batch_id)
            .select_only()
            .column(batch::Column::WebhookSecret)
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    /// A batch and its people ids.
    pub async fn get_batch(&self, batch_id: Uuid) -> StoreResult<Option<BatchView>> {
        let Some(b) = batch::Entity::find_by_id(batch_id).one(&self.db).await? else { return Ok(None) };
        let people: Vec<Uuid> = batch_person::Entity::find()
            .select_only()
            .column(batch_person::Column::PersonId)
            .filter(batch_person::Column::BatchId.eq(batch_id))
            .order_by_asc(batch_person::Column::Position)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(Some(BatchView {
            id: b.id,
            flags: crate::columns::flags_of(b.flags),
            state: b.state,
            size: b.size,
            attempt: b.attempt,
            claims: b.claims,
            next_attempt_at: b.next_attempt_at,
            lease_owner: b.lease_owner,
            lease_expires_at: b.lease_expires_at,
            webhook_secret: b.webhook_secret,
            request_id: b.request_id.map(RequestId),
            phone_request_id: b.phone_request_id,
            http_status: b.http_status,
            response: b.response,
            response_body: b.response_body,
            credits: Credits(b.credits_micros),
            last_error: b.last_error,
            created_at: b.created_at,
            submitted_at: b.submitted_at,
            people,
        }))
    }
}

/// [`Store::claim_batch`] inside the caller's transaction (the shared rate limiter claims under
/// its row lock).
pub(crate) async fn claim_in(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    owner: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Option<ClaimedBatch>> {
    let expires = lease_end(now, lease)?;
    if dispatcher::pause_reason(txn).await?.is_some() {
        return Ok(None);
    }
    if let Some(b) = reclaim_retry(txn, tally, owner, expires, now).await? {
        return Ok(Some(b));
    }
    // People answered from earlier lookups leave the queue without a call: look again until a
    // claim either forms a batch or answers nobody.
    loop {
        let (batch, reused) = form_batch(txn, tally, owner, expires, now).await?;
        if batch.is_some() || reused == 0 {
            return Ok(batch);
        }
    }
}

/// The jobs of `people` that were cancelled or erased: their people are not sent again.
async fn stopped_jobs(txn: &DatabaseTransaction, people: &[person::Model]) -> StoreResult<HashSet<Uuid>> {
    let mut ids: Vec<Uuid> = people.iter().map(|p| p.job_id).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .filter(job::Column::Id.is_in(ids))
        .filter(job::Column::CancelRequestedAt.is_not_null().or(job::Column::ErasedAt.is_not_null()))
        .into_tuple::<Uuid>()
        .all(txn)
        .await?
        .into_iter()
        .collect())
}

/// Takes the longest-due `retry_wait` batch again, with the same people (less those of jobs
/// cancelled or erased since). A batch past [`MAX_ATTEMPTS`] fails instead: the backstop for
/// calls that keep ending with an unknown outcome (lease expiries, answers that cannot be
/// recorded), each of which may have been charged.
async fn reclaim_retry(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    owner: &str,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ClaimedBatch>> {
    loop {
        let due = batch::Entity::find()
            .filter(batch::Column::State.eq(BatchState::RetryWait))
            .filter(batch::Column::NextAttemptAt.lte(now))
            .order_by_asc(batch::Column::NextAttemptAt)
            .order_by_asc(batch::Column::Id)
            .limit(1)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        let Some(b) = sql::rows(txn, due).await?.pop() else {
            return Ok(None);
        };
        let waiting: Vec<person::Model> =
            members(txn, b.id).await?.into_iter().filter(|p| p.state == PersonState::Submitted).collect();
        let stopped = stopped_jobs(txn, &waiting).await?;
        let (people, dropped): (Vec<person::Model>, Vec<person::Model>) =
            waiting.into_iter().partition(|p| !stopped.contains(&p.job_id));
        if !dropped.is_empty() {
            // People of a job cancelled or erased while their call waited for a retry: no later
            // call may contain them (nor spend on them); they are cancelled.
            let refs: Vec<&person::Model> = dropped.iter().collect();
            move_primaries(txn, tally, &refs, Event::Cancelled, None, None, now).await?;
        }
        // Listed while their call waited: not sent again.
        let jobs: Vec<Uuid> = people.iter().map(|p| p.job_id).collect();
        let client_of = crate::suppressions::clients_of(txn, &jobs).await?;
        let people = crate::suppressions::drop_suppressed(txn, tally, people, &client_of, now).await?;
        let attempt = b.attempt + i32::from(b.count_next_attempt);
        let give_up = (attempt > MAX_ATTEMPTS).then(|| {
            format!(
                "gave up after {} attempts whose outcome was unknown or failed: {}",
                b.attempt,
                b.last_error.clone().unwrap_or_default()
            )
        });
        if let Some(reason) = &give_up {
            let refs: Vec<&person::Model> = people.iter().collect();
            move_primaries(txn, tally, &refs, Event::Failed, None, Some(reason), now).await?;
        }
        if people.is_empty() || give_up.is_some() {
            let mut am = b.into_active_model();
            am.state = sea_orm::Set(BatchState::Failed);
            am.last_error =
                sea_orm::Set(Some(give_up.unwrap_or_else(|| "no people left to send (cancelled or erased)".into())));
            am.next_attempt_at = sea_orm::Set(None);
            am.updated_at = sea_orm::Set(now);
            am.update(txn).await?;
            continue;
        }
        let claims = b.claims + 1;
        let res = batch::Entity::update_many()
            .filter(batch::Column::Id.eq(b.id))
            .filter(batch::Column::State.eq(BatchState::RetryWait))
            .col_expr(batch::Column::State, Expr::value(BatchState::Submitting))
            .col_expr(batch::Column::Attempt, Expr::value(attempt))
            .col_expr(batch::Column::Claims, Expr::value(claims))
            .col_expr(batch::Column::CountNextAttempt, Expr::value(true))
            .col_expr(batch::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(batch::Column::LeaseOwner, Expr::value(owner))
            .col_expr(batch::Column::LeaseExpiresAt, Expr::value(expires))
            .col_expr(batch::Column::UpdatedAt, Expr::value(now))
            .exec(txn)
            .await?;
        if res.rows_affected != 1 {
            return Err(StoreError::Invalid(format!("batch {} changed while being reclaimed", b.id)));
        }
        return Ok(Some(ClaimedBatch {
            batch_id: b.id,
            flags: crate::columns::flags_of(b.flags),
            attempt,
            claims,
            failures: b.failures,
            retry: true,
            lease_expires_at: expires,
            webhook_secret: b.webhook_secret,
            people: people
                .into_iter()
                .map(|p| ClaimedPerson { person_id: p.id, job_id: p.job_id, input: p.input })
                .collect(),
        }));
    }
}

/// A job a claim may take people from.
struct Candidate {
    id: Uuid,
    flags: i16,
    budgeted: bool,
    client: String,
    reuse: Option<ReusePolicy>,
}

/// Active jobs with queued people, in fairness order (never claimed first, then oldest claim;
/// jobs claimed earlier in this transaction last, as their unflushed `last_claimed_at` is now),
/// with whether each has a credit budget and its reuse setting.
async fn candidate_jobs(
    txn: &DatabaseTransaction,
    tally: &Tally,
    flags: Option<i16>,
    limit: u64,
) -> StoreResult<Vec<Candidate>> {
    let mut q = job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .column(job::Column::Flags)
        .column_as(job::Column::MaxCreditsMicros.is_not_null(), "budgeted")
        .column(job::Column::Client)
        .column(job::Column::ReuseWithinSecs)
        .column(job::Column::ReuseShared)
        .filter(job::Column::State.is_in([JobState::Queued, JobState::Running]))
        .filter(job::Column::NQueued.gt(0));
    if let Some(f) = flags {
        q = q.filter(job::Column::Flags.eq(f));
    }
    // `IS NULL` sorts never-claimed jobs first on both databases (their NULL ordering differs).
    let q = q
        .order_by(Expr::col(job::Column::LastClaimedAt).is_null(), Order::Desc)
        .order_by_asc(job::Column::LastClaimedAt)
        .order_by_asc(job::Column::Id)
        .limit(limit);
    let rows: Vec<(Uuid, i16, bool, String, Option<i64>, bool)> = sql::tuples(txn, q).await?;
    let (mut list, mut claimed_here): (Vec<Candidate>, Vec<Candidate>) = rows
        .into_iter()
        .map(|(id, flags, budgeted, client, within, shared)| Candidate {
            id,
            flags,
            budgeted,
            client,
            reuse: within.filter(|w| *w > 0).map(|within_secs| ReusePolicy { within_secs, shared }),
        })
        .partition(|c| !tally.claimed_here(c.id));
    // Claimed at the same instant: by id, as the database orders equal times.
    claimed_here.sort_by_key(|c| c.id);
    list.append(&mut claimed_here);
    Ok(list)
}

/// Forms a new batch from queued primaries (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent
/// claimers take different people). People of jobs with a reuse window are answered from an
/// earlier lookup when one answers them, or left queued while one that will is in flight
/// ([`crate::reuse`]). Returns the batch and how many people were answered from earlier lookups.
async fn form_batch(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    owner: &str,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<(Option<ClaimedBatch>, usize)> {
    let mut flags: Option<i16> = None;
    let mut picked: Vec<person::Model> = Vec::with_capacity(BATCH_SIZE);
    let mut visited: HashSet<Uuid> = HashSet::new();
    // (client, person key) of everyone this batch sends: a later person of the same key waits.
    let mut sending: Vec<(String, String)> = Vec::new();
    let mut reused = 0;
    // First pass over all flags; the first job that yields people fixes the flags. Second pass:
    // more jobs with those flags, if the batch is not full yet.
    for pass in 0..2 {
        if pass == 1 && (flags.is_none() || picked.len() == BATCH_SIZE) {
            break;
        }
        for cand in candidate_jobs(txn, tally, flags, CANDIDATE_JOBS).await? {
            let (job_id, job_flags) = (cand.id, cand.flags);
            if picked.len() == BATCH_SIZE {
                break;
            }
            if flags.is_some_and(|f| f != job_flags) || !visited.insert(job_id) {
                continue;
            }
            let room = match cand.budgeted {
                false => BATCH_SIZE - picked.len(),
                true => match budget::room(txn, tally, job_id, now).await? {
                    budget::Room::Take(n) => n.min(BATCH_SIZE - picked.len()),
                    budget::Room::Wait => continue,
                },
            };
            // `state = 'queued'` is written as a literal, not a bound parameter, so that both
            // planners match the partial index `ix_people_claimable` (a generic PostgreSQL plan
            // or SQLite cannot prove `state = $1` implies the index predicate).
            let queued = person::Entity::find()
                .filter(person::Column::JobId.eq(job_id))
                .filter(Expr::col(person::Column::State).eq(Expr::cust("'queued'")))
                .filter(person::Column::DupOf.is_null())
                .order_by_asc(person::Column::Ordinal)
                .limit(room as u64)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            let got = sql::rows(txn, queued).await?;
            // The do-not-enrich list first: a listed person is neither sent nor answered by reuse.
            let client_of = HashMap::from([(job_id, cand.client.clone())]);
            let got = crate::suppressions::drop_suppressed(txn, tally, got, &client_of, now).await?;
            let got = match &cand.reuse {
                None => got,
                Some(policy) => {
                    let want = crate::columns::flags_of(job_flags);
                    let mut send = Vec::with_capacity(got.len());
                    for p in got {
                        match reuse_decision(txn, policy, &cand.client, want, &p, &sending, now).await? {
                            Reuse::Send => send.push(p),
                            Reuse::Wait => {}
                            Reuse::From(earlier) => {
                                answer_from(txn, tally, &p, &earlier, now).await?;
                                reused += 1;
                            }
                        }
                    }
                    send
                }
            };
            if !got.is_empty() {
                flags.get_or_insert(job_flags);
                sending.extend(got.iter().filter_map(|p| Some((cand.client.clone(), p.person_key.clone()?))));
                picked.extend(got);
            }
        }
    }
    let Some(flags) = flags else {
        return Ok((None, reused));
    };

    let batch_id = new_id();
    let secret = new_secret()?;
    let row = batch::Model {
        id: batch_id,
        flags,
        state: BatchState::Submitting,
        size: picked.len() as i32,
        attempt: 1,
        claims: 1,
        failures: 0,
        count_next_attempt: true,
        next_attempt_at: None,
        lease_owner: Some(owner.to_owned()),
        lease_expires_at: Some(expires),
        webhook_secret: secret.clone(),
        request_id: None,
        phone_request_id: None,
        http_status: None,
        response: None,
        credits_micros: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
        submitted_at: None,
        answered_claim: None,
        sync_credits_micros: 0,
        next_poll_at: None,
        polls: 0,
        response_body: None,
        unknown_outcomes: 0,
        lost_credits_micros: 0,
        double_charge_micros: 0,
    };
    batch::Entity::insert(row.into_active_model().reset_all()).exec_without_returning(txn).await?;
    let members = picked.iter().enumerate().map(|(i, p)| {
        batch_person::Model { batch_id, person_id: p.id, job_id: p.job_id, position: i as i32 }
            .into_active_model()
            .reset_all()
    });
    batch_person::Entity::insert_many(members).exec_without_returning(txn).await?;

    let refs: Vec<&person::Model> = picked.iter().collect();
    move_primaries(txn, tally, &refs, Event::Claimed, Some(batch_id), None, now).await?;
    for p in &picked {
        tally.claimed(p.job_id);
    }
    let batch = ClaimedBatch {
        batch_id,
        flags: crate::columns::flags_of(flags),
        attempt: 1,
        claims: 1,
        failures: 0,
        retry: false,
        lease_expires_at: expires,
        webhook_secret: secret,
        people: picked
            .into_iter()
            .map(|p| ClaimedPerson { person_id: p.id, job_id: p.job_id, input: p.input })
            .collect(),
    };
    Ok((Some(batch), reused))
}

/// What a claim does with a queued person of a job with a reuse window.
enum Reuse {
    /// Nobody answers it: send it.
    Send,
    /// A lookup of the same person is in flight (or in this batch): leave it queued.
    Wait,
    /// Answer it from this earlier person.
    From(Box<person::Model>),
}

/// What the rules need of an earlier person's job: client, flags, completed and erased at.
type EarlierJob = (String, i16, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// How many earlier people with the same key a claim looks at (most recent first).
const EARLIER_LOOKED_AT: u64 = 20;

/// Asks the rules ([`crate::reuse`]) about the earlier people with `p`'s person key.
async fn reuse_decision(
    txn: &DatabaseTransaction,
    policy: &ReusePolicy,
    client: &str,
    want: EnrichFlags,
    p: &person::Model,
    sending: &[(String, String)],
    now: DateTime<Utc>,
) -> StoreResult<Reuse> {
    let Some(key) = p.person_key.as_deref() else { return Ok(Reuse::Send) };
    if sending.iter().any(|(c, k)| k == key && (policy.shared || c == client)) {
        return Ok(Reuse::Wait);
    }
    let earlier = earlier_lookups(txn, policy, client, key, Some(p.id)).await?;
    if earlier.is_empty() {
        return claim_key(txn, key).await;
    }
    let mut wait = false;
    for (e, seen) in earlier {
        if rules::reuse::answers(policy, client, want, now, &seen) {
            return Ok(Reuse::From(Box::new(e)));
        }
        wait |= rules::reuse::will_answer(policy, client, want, &seen);
    }
    if wait { Ok(Reuse::Wait) } else { claim_key(txn, key).await }
}

impl Store {
    /// How many of `keys` (person keys, each counted once) an earlier lookup would answer now
    /// under `policy` for `client` asking for `want`: what a dry run reports as reusable.
    pub async fn reusable(
        &self,
        client: &str,
        policy: &ReusePolicy,
        want: EnrichFlags,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut n = 0;
        for key in keys.iter().collect::<std::collections::BTreeSet<_>>() {
            let earlier = earlier_lookups(&self.db, policy, client, key, None).await?;
            n += usize::from(earlier.iter().any(|(_, seen)| rules::reuse::answers(policy, client, want, now, seen)));
        }
        Ok(n)
    }
}

/// The most recent earlier people with person key `key` in `client`'s reuse scope (matched, or
/// being looked up), each with what the rules need to know of it; `except` is the asking person.
pub(crate) async fn earlier_lookups<C: ConnectionTrait>(
    db: &C,
    policy: &ReusePolicy,
    client: &str,
    key: &str,
    except: Option<Uuid>,
) -> StoreResult<Vec<(person::Model, Earlier)>> {
    let mut q = person::Entity::find()
        .filter(person::Column::PersonKey.eq(key))
        .filter(person::Column::DupOf.is_null())
        .filter(person::Column::ReusedFrom.is_null())
        .filter(person::Column::State.is_in([
            PersonState::Complete,
            PersonState::Partial,
            PersonState::Submitted,
            PersonState::AwaitingAsync,
        ]));
    if let Some(id) = except {
        q = q.filter(person::Column::Id.ne(id));
    }
    if !policy.shared {
        q = q.filter(
            person::Column::JobId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(job::Column::Id)
                    .from(job::Entity)
                    .and_where(job::Column::Client.eq(client))
                    .to_owned(),
            ),
        );
    }
    let earlier = q.order_by_desc(person::Column::UpdatedAt).limit(EARLIER_LOOKED_AT).all(db).await?;
    if earlier.is_empty() {
        return Ok(Vec::new());
    }
    let mut job_ids: Vec<Uuid> = earlier.iter().map(|e| e.job_id).collect();
    job_ids.sort();
    job_ids.dedup();
    let jobs: BTreeMap<Uuid, EarlierJob> = job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .column(job::Column::Client)
        .column(job::Column::Flags)
        .column(job::Column::CompletedAt)
        .column(job::Column::ErasedAt)
        .filter(job::Column::Id.is_in(job_ids))
        .into_tuple::<(Uuid, String, i16, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(id, c, f, done, erased)| (id, (c, f, done, erased)))
        .collect();
    Ok(earlier
        .into_iter()
        .filter_map(|e| {
            let (c, f, done, erased) = jobs.get(&e.job_id)?;
            let seen = Earlier {
                client: c.clone(),
                flags: crate::columns::flags_of(*f),
                state: e.state,
                missing: missing_parts(&e),
                enriched_at: e.updated_at,
                job_completed_at: *done,
                job_erased: erased.is_some(),
                has_record: e.record.is_some(),
            };
            Some((e, seen))
        })
        .collect())
}

/// PostgreSQL: a person key this claim sends is held until commit, so a concurrent claim (another
/// replica) holding the same key leaves its person waiting rather than calling twice.
async fn claim_key(txn: &DatabaseTransaction, key: &str) -> StoreResult<Reuse> {
    if txn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(Reuse::Send);
    }
    let got = txn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock(hashtext($1)) AS got",
            [format!("enrichd-reuse:{key}").into()],
        ))
        .await?
        .map(|r| r.try_get::<bool>("", "got"))
        .transpose()?
        .unwrap_or(true);
    Ok(if got { Reuse::Send } else { Reuse::Wait })
}

/// The parts a stored person never got.
fn missing_parts(p: &person::Model) -> Vec<Part> {
    let names: Vec<String> = p.missing_parts.clone().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    names.iter().filter_map(|n| [Part::Phone, Part::Waterfall].into_iter().find(|part| part.as_str() == n)).collect()
}

/// Answers a queued person (and its duplicates) from an earlier person's record: `complete`, no
/// call, no credit; the person says where the record came from and when it was made.
async fn answer_from(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    p: &person::Model,
    earlier: &person::Model,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut new = p.clone();
    new.record = earlier.record.clone();
    new.apollo_id = earlier.apollo_id.clone();
    new.last_error = None;
    apply_event(&mut new, Event::Reused, now)?;
    update_person(txn, tally, p, &new, now).await?;
    person::Entity::update_many()
        .filter(person::Column::Id.eq(p.id).or(person::Column::DupOf.eq(p.id)))
        .col_expr(person::Column::ReusedFrom, Expr::value(earlier.id))
        .col_expr(person::Column::ReusedFromJob, Expr::value(earlier.job_id))
        .col_expr(person::Column::ReusedAt, Expr::value(earlier.updated_at))
        .exec(txn)
        .await?;
    tally.reused(p.job_id, earlier.credits_micros);
    tally.claimed(p.job_id);
    Ok(())
}
