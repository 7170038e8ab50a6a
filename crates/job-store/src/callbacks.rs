//! The callback outbox: one row per event of a job with a callback URL — `job.completed` (created
//! in the completing transaction), then one `job.updated` per later change of the finished job
//! (created in the changing transaction) — leased to one sender at a time, with one attempt row per
//! HTTP try. Each event's body is frozen at its first send ([`Store::freeze_callback_body`]), so
//! retries and redeliveries send the same bytes under the same `webhook-id`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rules::{CallbackEvent, CallbackState};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::{now, ts};
use crate::entities::{callback_attempt, callback_delivery, job};
use crate::error::{StoreError, StoreResult};
use crate::{Store, new_id};

/// Longest response excerpt kept per attempt.
pub const MAX_EXCERPT_BYTES: usize = 20 * 1024;

/// A callback due to be sent, leased to the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueCallback {
    /// Outbox row id.
    pub callback_id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// What it announces.
    pub event: CallbackEvent,
    /// When the event happened (the body's `timestamp`).
    pub created_at: DateTime<Utc>,
    /// Standard Webhooks `webhook-id` (the same for every retry).
    pub webhook_id: String,
    /// The frozen body; `None` before the first send (the sender renders and freezes it).
    pub body: Option<Vec<u8>>,
    /// Where to send it.
    pub callback_url: String,
    /// The try number this send will be (1-based).
    pub attempt_no: i32,
    /// Asked for by an operator (`redeliver_callback`) rather than by the schedule.
    pub manual: bool,
}

/// What one HTTP try gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAttemptRecord {
    /// HTTP status, when a response came.
    pub status_code: Option<i32>,
    /// The response body (cut to [`MAX_EXCERPT_BYTES`] when stored).
    pub response_excerpt: Option<String>,
    /// How long the try took.
    pub duration_ms: i64,
    /// Transport error, when no response came.
    pub error: Option<String>,
    /// Operator-triggered.
    pub manual: bool,
}

/// What happens after a try (the caller owns the retry schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackNext {
    /// The receiver took it.
    Delivered,
    /// Try again then.
    RetryAt(DateTime<Utc>),
    /// The schedule ran out.
    Exhausted,
}

/// The state of one callback event, shown on a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackView {
    /// Outbox row id.
    pub id: Uuid,
    /// What it announces.
    pub event: CallbackEvent,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// `webhook-id`.
    pub webhook_id: String,
    /// State.
    pub state: CallbackState,
    /// Tries so far.
    pub attempts: i32,
    /// Next try, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status of the last try.
    pub last_status: Option<i32>,
    /// Error of the last try.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every try, oldest first (only loaded by `get_job`).
    pub attempt_log: Vec<CallbackAttemptView>,
}

/// One recorded try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAttemptView {
    /// Try number.
    pub attempt_no: i32,
    /// `scheduled` or `manual`.
    pub trigger: String,
    /// HTTP status.
    pub status_code: Option<i32>,
    /// Response excerpt (≤ 20 KB).
    pub response_excerpt: Option<String>,
    /// Duration.
    pub duration_ms: i64,
    /// Transport error.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Callback events of some jobs, oldest first, keyed by job id, optionally with their attempt logs.
pub(crate) async fn load_callbacks<C: ConnectionTrait>(
    db: &C,
    job_ids: &[Uuid],
    with_log: bool,
) -> StoreResult<HashMap<Uuid, Vec<CallbackView>>> {
    if job_ids.is_empty() {
        return Ok(HashMap::new());
    }
    // Person events are many and have their own stream; the job shows its own events.
    let rows = callback_delivery::Entity::find()
        .filter(callback_delivery::Column::JobId.is_in(job_ids.iter().copied()))
        .filter(callback_delivery::Column::EventType.is_in([CallbackEvent::JobCompleted, CallbackEvent::JobUpdated]))
        .order_by_asc(callback_delivery::Column::CreatedAt)
        .order_by_asc(callback_delivery::Column::Id)
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<CallbackView>> = HashMap::with_capacity(rows.len());
    for r in rows {
        let attempt_log = if with_log {
            callback_attempt::Entity::find()
                .filter(callback_attempt::Column::CallbackId.eq(r.id))
                .order_by_asc(callback_attempt::Column::AttemptNo)
                .all(db)
                .await?
                .into_iter()
                .map(|a| CallbackAttemptView {
                    attempt_no: a.attempt_no,
                    trigger: a.trigger,
                    status_code: a.status_code,
                    response_excerpt: a.response_excerpt,
                    duration_ms: a.duration_ms,
                    error: a.error,
                    at: a.created_at,
                })
                .collect()
        } else {
            Vec::new()
        };
        out.entry(r.job_id).or_default().push(CallbackView {
            id: r.id,
            event: r.event_type,
            created_at: r.created_at,
            webhook_id: r.webhook_id,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            delivered_at: r.delivered_at,
            attempt_log,
        });
    }
    Ok(out)
}

/// A new event row for `job_id`, due now when `state` is pending, at place `seq` of the job's
/// sequence (`None`: held until the person events before it are sealed). The completion's
/// `webhook-id` is derived from the job (at most one per job, as before events); another event's
/// from its own id.
pub(crate) fn event_row(
    job_id: Uuid,
    event: CallbackEvent,
    state: CallbackState,
    seq: Option<i64>,
    now: DateTime<Utc>,
) -> callback_delivery::ActiveModel {
    let id = new_id();
    let webhook_id = match event {
        CallbackEvent::JobCompleted => format!("msg_{}", job_id.simple()),
        _ => format!("msg_{}", id.simple()),
    };
    callback_delivery::ActiveModel {
        id: Set(id),
        job_id: Set(job_id),
        webhook_id: Set(webhook_id),
        event_type: Set(event),
        body: Set(None),
        state: Set(state),
        attempts: Set(0),
        next_attempt_at: Set((state == CallbackState::Pending).then_some(now)),
        manual_requested: Set(false),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        last_status: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        delivered_at: Set(None),
        seq: Set(seq),
    }
}

/// The next place in `job_id`'s sequence of events. The caller holds the job row's lock (it
/// changed the row in this transaction), so two writers never take the same place.
pub(crate) async fn next_seq<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<i64> {
    let max: Option<Option<i64>> = callback_delivery::Entity::find()
        .select_only()
        .column_as(callback_delivery::Column::Seq.max(), "max_seq")
        .filter(callback_delivery::Column::JobId.eq(job_id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(max.flatten().unwrap_or(0) + 1)
}

/// Queues a job event (`job.completed`, `job.updated`) of `j` in the caller's transaction: sent
/// when the job has a callback URL, recorded for its event stream when it only asked for person
/// events. A job with person events holds it (no place in the sequence) until the person events
/// before it are sealed, so it is sent after them.
pub(crate) async fn insert_job_event<C: ConnectionTrait>(
    db: &C,
    j: &job::Model,
    event: CallbackEvent,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let person_events = j.events_completed || j.events_updated;
    let state = match (&j.callback_url, person_events) {
        (Some(_), _) => CallbackState::Pending,
        (None, true) => CallbackState::Recorded,
        (None, false) => return Ok(false),
    };
    let seq = if person_events { None } else { Some(next_seq(db, j.id).await?) };
    let row = event_row(j.id, event, state, seq, now);
    let inserted = callback_delivery::Entity::insert(row)
        .on_conflict(OnConflict::column(callback_delivery::Column::WebhookId).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(inserted > 0)
}

/// A finished job (with a callback URL) changed: queues a `job.updated` event, in the caller's
/// transaction. Not when an event of the job is still unsent and unfrozen: its body, frozen after
/// this transaction commits, shows the change already ([`Store::freeze_callback_body`] refuses a
/// body rendered before a change). Returns whether an event was queued.
pub(crate) async fn record_job_updated<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let Some(j) = job::Entity::find_by_id(job_id).one(db).await? else { return Ok(false) };
    if j.completed_at.is_none() {
        return Ok(false);
    }
    let unfrozen = callback_delivery::Entity::find()
        .filter(callback_delivery::Column::JobId.eq(job_id))
        .filter(callback_delivery::Column::State.is_in([CallbackState::Pending, CallbackState::Recorded]))
        .filter(callback_delivery::Column::EventType.is_in([CallbackEvent::JobCompleted, CallbackEvent::JobUpdated]))
        .filter(callback_delivery::Column::Body.is_null())
        .count(db)
        .await?;
    if unfrozen > 0 {
        return Ok(false);
    }
    insert_job_event(db, &j, CallbackEvent::JobUpdated, now).await
}

impl Store {
    /// Pending callbacks due at `now`, leased to `owner` for `lease` so that another replica does
    /// not send them meanwhile (an expired lease makes them due again).
    pub async fn due_callbacks(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<DueCallback>> {
        let now = ts(now);
        let expires = ts(now + TimeDelta::from_std(lease).map_err(|e| StoreError::Invalid(e.to_string()))?);
        let (txn, _gate) = self.write_txn().await?;
        let rows = callback_delivery::Entity::find()
            .filter(callback_delivery::Column::State.eq(CallbackState::Pending))
            .filter(callback_delivery::Column::NextAttemptAt.lte(now))
            .filter(
                callback_delivery::Column::LeaseExpiresAt
                    .is_null()
                    .or(callback_delivery::Column::LeaseExpiresAt.lt(now)),
            )
            // One job's events go in the order of its sequence, one at a time: an event waits
            // while an earlier one is still pending (being sent or waiting for a retry).
            .filter(callback_delivery::Column::Seq.is_not_null())
            .filter(Expr::cust(
                "NOT EXISTS (SELECT 1 FROM callback_deliveries earlier \
                 WHERE earlier.job_id = callback_deliveries.job_id AND earlier.state = 'pending' \
                 AND earlier.seq < callback_deliveries.seq)",
            ))
            .order_by_asc(callback_delivery::Column::NextAttemptAt)
            .order_by_asc(callback_delivery::Column::Id)
            .limit(limit)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .all(&txn)
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in rows {
            callback_delivery::Entity::update_many()
                .filter(callback_delivery::Column::Id.eq(r.id))
                .col_expr(callback_delivery::Column::LeaseOwner, Expr::value(owner))
                .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(expires))
                .col_expr(callback_delivery::Column::UpdatedAt, Expr::value(now))
                .exec(&txn)
                .await?;
            let url = job::Entity::find_by_id(r.job_id).one(&txn).await?.and_then(|j| j.callback_url);
            let Some(callback_url) = url else { continue };
            due.push(DueCallback {
                callback_id: r.id,
                job_id: r.job_id,
                event: r.event_type,
                created_at: r.created_at,
                webhook_id: r.webhook_id,
                body: r.body,
                callback_url,
                attempt_no: r.attempts + 1,
                manual: r.manual_requested,
            });
        }
        txn.commit().await?;
        Ok(due)
    }

    /// Records one HTTP try and what follows it, releasing the lease.
    pub async fn record_callback_attempt(
        &self,
        callback_id: Uuid,
        attempt: CallbackAttemptRecord,
        next: CallbackNext,
    ) -> StoreResult<()> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        let Some(cb) = callback_delivery::Entity::find_by_id(callback_id).lock(LockType::Update).one(&txn).await?
        else {
            return Err(StoreError::NotFound(format!("callback {callback_id}")));
        };
        let attempt_no = cb.attempts + 1;
        let row = callback_attempt::ActiveModel {
            id: Set(new_id()),
            callback_id: Set(callback_id),
            job_id: Set(cb.job_id),
            attempt_no: Set(attempt_no),
            trigger: Set(if attempt.manual { "manual" } else { "scheduled" }.to_owned()),
            status_code: Set(attempt.status_code),
            response_excerpt: Set(attempt
                .response_excerpt
                .as_deref()
                .map(|s| truncate_utf8(s, MAX_EXCERPT_BYTES).to_owned())),
            duration_ms: Set(attempt.duration_ms),
            error: Set(attempt.error.clone()),
            created_at: Set(now),
        };
        callback_attempt::Entity::insert(row).exec_without_returning(&txn).await?;
        let (state, next_at, delivered_at) = match next {
            CallbackNext::Delivered => (CallbackState::Delivered, None, Some(now)),
            CallbackNext::RetryAt(at) => (CallbackState::Pending, Some(ts(at)), None),
            CallbackNext::Exhausted => (CallbackState::Exhausted, None, None),
        };
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::Id.eq(callback_id))
            .col_expr(callback_delivery::Column::Attempts, Expr::col(callback_delivery::Column::Attempts).add(1))
            .col_expr(callback_delivery::Column::State, Expr::value(state))
            .col_expr(callback_delivery::Column::NextAttemptAt, Expr::value(next_at))
            .col_expr(callback_delivery::Column::DeliveredAt, Expr::value(delivered_at.or(cb.delivered_at)))
            .col_expr(callback_delivery::Column::ManualRequested, Expr::value(false))
            .col_expr(callback_delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(callback_delivery::Column::LastStatus, Expr::value(attempt.status_code))
            .col_expr(callback_delivery::Column::LastError, Expr::value(attempt.error))
            .col_expr(callback_delivery::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Gives back a leased event untried, due again at `at` (its body could not be rendered yet,
    /// say while the job kept changing): no attempt is counted and no replica waits out the lease.
    pub async fn postpone_callback(&self, callback_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let _gate = self.write_gate().await;
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::Id.eq(callback_id))
            .filter(callback_delivery::Column::State.eq(CallbackState::Pending))
            .col_expr(callback_delivery::Column::NextAttemptAt, Expr::value(Some(ts(at))))
            .col_expr(callback_delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(callback_delivery::Column::UpdatedAt, Expr::value(now()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Freezes an event's body: stores `body` unless one is stored already, and returns the
    /// stored bytes — or `None` when the job changed after `job_updated_at` (the version the body
    /// was rendered from), so that the caller renders it again and no change goes unannounced.
    pub async fn freeze_callback_body(
        &self,
        callback_id: Uuid,
        body: Vec<u8>,
        job_updated_at: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<u8>>> {
        let (txn, _gate) = self.write_txn().await?;
        // The event, then its job (as erasing locks them). A change of the job either committed
        // before the job row is read here (then `updated_at` differs), or waits for this commit and
        // then finds the body frozen (then it queues a `job.updated`).
        let Some(cb) = callback_delivery::Entity::find_by_id(callback_id).lock(LockType::Update).one(&txn).await?
        else {
            return Err(StoreError::NotFound(format!("callback {callback_id}")));
        };
        if let Some(frozen) = cb.body {
            return Ok(Some(frozen));
        }
        let job = job::Entity::find_by_id(cb.job_id).lock(LockType::Update).one(&txn).await?;
        if job.map(|j| j.updated_at) != Some(ts(job_updated_at)) {
            return Ok(None);
        }
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::Id.eq(callback_id))
            .col_expr(callback_delivery::Column::Body, Expr::value(Some(body.clone())))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(body))
    }

    /// Sends one event of a job (by its `webhook-id`) again now, whatever its state, as a manual
    /// try with its frozen body. An event kept only for the stream (`recorded`) is not sent.
    pub async fn redeliver_event(&self, job_id: Uuid, webhook_id: &str) -> StoreResult<()> {
        let _gate = self.write_gate().await;
        let now = now();
        let event = callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(callback_delivery::Column::WebhookId.eq(webhook_id))
            .filter(callback_delivery::Column::State.ne(CallbackState::Recorded));
        let res = manual_try_now(event, now).exec(&self.db).await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("event {webhook_id} of job {job_id}")));
        }
        Ok(())
    }

    /// Sends a job's latest callback event again now (whatever its state), as a manual try, with
    /// its frozen body. The latest event carries the job's latest state.
    pub async fn redeliver_callback(&self, job_id: Uuid) -> StoreResult<()> {
        let _gate = self.write_gate().await;
        let now = now();
        let latest = callback_delivery::Entity::find()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(
                callback_delivery::Column::EventType.is_in([CallbackEvent::JobCompleted, CallbackEvent::JobUpdated]),
            )
            .filter(callback_delivery::Column::State.ne(CallbackState::Recorded))
            .order_by_desc(callback_delivery::Column::CreatedAt)
            .order_by_desc(callback_delivery::Column::Id)
            .one(&self.db)
            .await?;
        let Some(latest) = latest else {
            return Err(StoreError::NotFound(format!("callback of job {job_id}")));
        };
        let event = callback_delivery::Entity::update_many().filter(callback_delivery::Column::Id.eq(latest.id));
        let res = manual_try_now(event, now).exec(&self.db).await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("callback of job {job_id}")));
        }
        Ok(())
    }
}

/// The events `update` selects, due now as a manual try (redelivery): pending, whatever their state.
fn manual_try_now(
    update: sea_orm::UpdateMany<callback_delivery::Entity>,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<callback_delivery::Entity> {
    update
        .col_expr(callback_delivery::Column::State, Expr::value(CallbackState::Pending))
        .col_expr(callback_delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(callback_delivery::Column::ManualRequested, Expr::value(true))
        .col_expr(callback_delivery::Column::UpdatedAt, Expr::value(now))
}

#[cfg(test)]
mod tests {
    use super::truncate_utf8;

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        let long = "x".repeat(30_000);
        assert_eq!(truncate_utf8(&long, super::MAX_EXCERPT_BYTES).len(), 20 * 1024);
    }
}
