//! Per-person events: the outbox rows written in the transaction of each person's change, sealed
//! later into `person.completed` / `person.updated` events of at most `max_people` people (rows of
//! the callback outbox, body frozen at sealing), and the job's sequence of events read by its
//! event stream.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rules::events::{Batching, event_sizes, to_seal};
use rules::{CallbackEvent, CallbackState};
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Store;
use crate::callbacks::{event_row, next_seq};
use crate::clock::ts;
use crate::entities::{callback_delivery, job, person, person_event};
use crate::error::StoreResult;
use crate::jobs::PersonView;

/// People per `IN` list.
const CHUNK: usize = 500;

/// An event being sealed, handed to the caller's renderer.
#[derive(Clone, Debug)]
pub struct SealedEvent<'a> {
    /// The job.
    pub job_id: Uuid,
    /// `person.completed` or `person.updated`.
    pub event: CallbackEvent,
    /// When it was sealed (the body's `timestamp`).
    pub created_at: DateTime<Utc>,
    /// Its people as they are now, each once, in the order they became due.
    pub people: &'a [PersonView],
}

/// Renders the frozen body of a sealed event.
pub type Render = dyn Fn(&SealedEvent<'_>) -> Vec<u8> + Send + Sync;

/// One event of a job's sequence, as its event stream sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Its outbox row.
    pub callback_id: Uuid,
    /// Place in the job's sequence (the stream's `id:`).
    pub seq: i64,
    /// What it announces.
    pub event: CallbackEvent,
    /// `webhook-id`.
    pub webhook_id: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// The frozen body; `None` for a job event not sent or streamed yet.
    pub body: Option<Vec<u8>>,
}

/// What one sealing pass of a job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Person events sealed.
    pub person_events: u64,
    /// Job events given their place in the sequence.
    pub job_events: u64,
}

/// Unsealed rows of one job: per kind, how many and the oldest.
#[derive(Default)]
struct Waiting {
    by_kind: HashMap<CallbackEvent, (u64, DateTime<Utc>)>,
    held_completion: bool,
    held: bool,
}

impl Waiting {
    fn due(&self, now: DateTime<Utc>, batching: Batching) -> bool {
        let sealable = self.by_kind.values().any(|(n, oldest)| {
            to_seal(*n, (now - *oldest).to_std().unwrap_or_default(), batching, self.held_completion) > 0
        });
        sealable || (self.held && self.by_kind.is_empty())
    }
}

impl Store {
    /// Jobs with something to seal at `now`: a whole event of people pending, a pending person
    /// older than `max_wait`, a completion waiting for its people, or a held job event with no
    /// people before it.
    pub async fn jobs_to_seal(&self, now: DateTime<Utc>, batching: Batching) -> StoreResult<Vec<Uuid>> {
        let pending: Vec<(Uuid, CallbackEvent, i64, DateTime<Utc>)> = person_event::Entity::find()
            .select_only()
            .column(person_event::Column::JobId)
            .column(person_event::Column::Kind)
            .column_as(person_event::Column::Id.count(), "n")
            .column_as(person_event::Column::CreatedAt.min(), "oldest")
            .filter(person_event::Column::CallbackId.is_null())
            .group_by(person_event::Column::JobId)
            .group_by(person_event::Column::Kind)
            .into_tuple()
            .all(&self.db)
            .await?;
        let held: Vec<(Uuid, CallbackEvent)> = callback_delivery::Entity::find()
            .select_only()
            .column(callback_delivery::Column::JobId)
            .column(callback_delivery::Column::EventType)
            .filter(callback_delivery::Column::Seq.is_null())
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut jobs: BTreeMap<Uuid, Waiting> = BTreeMap::new();
        for (job, kind, n, oldest) in pending {
            jobs.entry(job).or_default().by_kind.insert(kind, (n as u64, oldest));
        }
        for (job, event) in held {
            let w = jobs.entry(job).or_default();
            w.held = true;
            w.held_completion |= event == CallbackEvent::JobCompleted;
        }
        Ok(jobs.into_iter().filter(|(_, w)| w.due(now, batching)).map(|(job, _)| job).collect())
    }

    /// Seals what is due of one job's pending people into events (bodies rendered by `render`,
    /// frozen), each with its `webhook-id` and place in the job's sequence, in one transaction;
    /// then, when no person of the job is left pending, gives the held job events their places
    /// after them. `person.completed` people go first; a `person.updated` waits while the same
    /// person's `person.completed` is pending.
    pub async fn seal_person_events(
        &self,
        job_id: Uuid,
        now: DateTime<Utc>,
        batching: Batching,
        render: &Render,
    ) -> StoreResult<Sealed> {
        let now = ts(now);
        let (txn, _gate) = self.background_txn().await?;
        // The job row's lock orders sealers of one job (replicas) and places in its sequence.
        let Some(j) = job::Entity::find_by_id(job_id).lock(LockType::Update).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(Sealed::default());
        };
        let state = if j.callback_url.is_some() { CallbackState::Pending } else { CallbackState::Recorded };
        let rows = person_event::Entity::find()
            .filter(person_event::Column::JobId.eq(job_id))
            .filter(person_event::Column::CallbackId.is_null())
            .order_by_asc(person_event::Column::CreatedAt)
            .order_by_asc(person_event::Column::Id)
            .all(&txn)
            .await?;
        let held: Vec<callback_delivery::Model> = callback_delivery::Entity::find()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(callback_delivery::Column::Seq.is_null())
            .order_by_asc(callback_delivery::Column::CreatedAt)
            .order_by_asc(callback_delivery::Column::Id)
            .all(&txn)
            .await?;
        let flush = held.iter().any(|h| h.event_type == CallbackEvent::JobCompleted);
        let mut seq = next_seq(&txn, job_id).await?;
        let mut sealed = Sealed::default();
        let mut left = 0usize;
        let mut completed_left: HashSet<Uuid> = HashSet::new();
        for kind in [CallbackEvent::PersonCompleted, CallbackEvent::PersonUpdated] {
            let of_kind: Vec<&person_event::Model> =
                rows.iter().filter(|r| r.kind == kind && !completed_left.contains(&r.person_id)).collect();
            let blocked = rows.iter().filter(|r| r.kind == kind).count() - of_kind.len();
            let waited = of_kind.first().map(|r| (now - r.created_at).to_std().unwrap_or_default()).unwrap_or_default();
            let n = to_seal(of_kind.len() as u64, waited, batching, flush) as usize;
            let mut taken = 0usize;
            for size in event_sizes(n as u64, batching.max_people) {
                let chunk = &of_kind[taken..taken + size as usize];
                taken += size as usize;
                self.seal_one(&txn, job_id, kind, state, seq, chunk, now, render).await?;
                seq += 1;
                sealed.person_events += 1;
            }
            if kind == CallbackEvent::PersonCompleted {
                completed_left.extend(of_kind[taken..].iter().map(|r| r.person_id));
            }
            left += of_kind.len() - taken + blocked;
        }
        if left == 0 {
            for h in held {
                callback_delivery::Entity::update_many()
                    .filter(callback_delivery::Column::Id.eq(h.id))
                    .col_expr(callback_delivery::Column::Seq, Expr::value(seq))
                    .col_expr(
                        callback_delivery::Column::NextAttemptAt,
                        Expr::value((h.state == CallbackState::Pending).then_some(now)),
                    )
                    .exec(&txn)
                    .await?;
                seq += 1;
                sealed.job_events += 1;
            }
        }
        txn.commit().await?;
        Ok(sealed)
    }

    /// One event of `rows` (oldest first), in the sealing transaction.
    #[allow(clippy::too_many_arguments)]
    async fn seal_one<C: ConnectionTrait>(
        &self,
        txn: &C,
        job_id: Uuid,
        kind: CallbackEvent,
        state: CallbackState,
        seq: i64,
        rows: &[&person_event::Model],
        now: DateTime<Utc>,
        render: &Render,
    ) -> StoreResult<()> {
        let mut order: Vec<Uuid> = Vec::with_capacity(rows.len());
        let mut seen = HashSet::with_capacity(rows.len());
        for r in rows {
            if seen.insert(r.person_id) {
                order.push(r.person_id);
            }
        }
        let mut found: HashMap<Uuid, PersonView> = HashMap::with_capacity(order.len());
        for chunk in order.chunks(CHUNK) {
            for p in person::Entity::find().filter(person::Column::Id.is_in(chunk.iter().copied())).all(txn).await? {
                found.insert(p.id, PersonView::from_row(p)?);
            }
        }
        let people: Vec<PersonView> = order.iter().filter_map(|id| found.remove(id)).collect();
        let mut event = event_row(job_id, kind, state, Some(seq), now);
        let body = render(&SealedEvent { job_id, event: kind, created_at: now, people: &people });
        event.body = Set(Some(body));
        let callback_id = match &event.id {
            sea_orm::ActiveValue::Set(id) | sea_orm::ActiveValue::Unchanged(id) => *id,
            sea_orm::ActiveValue::NotSet => unreachable!("event_row sets the id"),
        };
        callback_delivery::Entity::insert(event).exec_without_returning(txn).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        for chunk in ids.chunks(CHUNK) {
            person_event::Entity::update_many()
                .filter(person_event::Column::Id.is_in(chunk.iter().copied()))
                .col_expr(person_event::Column::CallbackId, Expr::value(callback_id))
                .exec(txn)
                .await?;
        }
        Ok(())
    }

    /// Events of `job_id` after place `after` of its sequence, oldest first, at most `limit`.
    pub async fn job_events_after(&self, job_id: Uuid, after: i64, limit: u64) -> StoreResult<Vec<StreamEvent>> {
        Ok(callback_delivery::Entity::find()
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(callback_delivery::Column::Seq.gt(after))
            .order_by_asc(callback_delivery::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(StreamEvent {
                    callback_id: r.id,
                    seq: r.seq?,
                    event: r.event_type,
                    webhook_id: r.webhook_id,
                    created_at: r.created_at,
                    body: r.body,
                })
            })
            .collect())
    }

    /// The place of `job_id`'s `job.completed` in its sequence, once it has one.
    pub async fn completion_seq(&self, job_id: Uuid) -> StoreResult<Option<i64>> {
        let seq: Option<Option<i64>> = callback_delivery::Entity::find()
            .select_only()
            .column(callback_delivery::Column::Seq)
            .filter(callback_delivery::Column::JobId.eq(job_id))
            .filter(callback_delivery::Column::EventType.eq(CallbackEvent::JobCompleted))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(seq.flatten())
    }

    /// Which events each person of `job_id` was sealed into, with the event type (for audits and
    /// tests): `(person, event, callback id)`, oldest first.
    pub async fn person_event_rows(&self, job_id: Uuid) -> StoreResult<Vec<(Uuid, CallbackEvent, Option<Uuid>)>> {
        Ok(person_event::Entity::find()
            .select_only()
            .columns([person_event::Column::PersonId, person_event::Column::Kind, person_event::Column::CallbackId])
            .filter(person_event::Column::JobId.eq(job_id))
            .order_by_asc(person_event::Column::CreatedAt)
            .order_by_asc(person_event::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}
