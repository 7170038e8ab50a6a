//! Inbound Apollo deliveries: stored raw and deduplicated at once, merged later by the ingest
//! worker into the people of their batch; plus the reconcile and deadline queries.

use std::collections::{HashMap, HashSet};

use apollo_client::{Delivery, FactSource};
use chrono::{DateTime, Utc};
use rules::lifecycle::{Event, Part};
use rules::merge::Record;
use rules::{BatchState, DeliveryState, PersonState};
use sea_orm::sea_query::{Expr, ExprTrait, LockType, Order, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apply::{ApplyOutcome, Group};
use crate::clock::{now, ts};
use crate::columns::storable_text;
use crate::counters::Tally;
use crate::entities::{batch, inbound_delivery, person};
use crate::erase::{empty_delivery_bodies, erased_jobs_in_batch};
use crate::error::{StoreError, StoreResult};
use crate::people::{apply_event, lock_batch_primaries, update_people};
use crate::sql;
use crate::{Store, new_id, sha256_hex};

/// Most deliveries a merge group takes on SQLite: a group holds the one writer from its first
/// read to its commit, and storing what Apollo sends must not wait long behind it.
const SQLITE_GROUP: usize = 8;

/// The outcome of [`Store::store_delivery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredDelivery {
    /// Stored for the first time.
    Stored {
        /// The delivery id.
        id: Uuid,
    },
    /// The same body for the same batch was stored before: nothing changed.
    Duplicate {
        /// The earlier delivery's id.
        id: Uuid,
    },
}

impl StoredDelivery {
    /// The delivery id, new or earlier.
    pub fn id(&self) -> Uuid {
        match self {
            StoredDelivery::Stored { id } | StoredDelivery::Duplicate { id } => *id,
        }
    }
}

/// A delivery as received, to be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundDelivery<'a> {
    /// The batch its URL names.
    pub batch_id: Uuid,
    /// The claim (Apollo call) its URL names; `None` for URLs without one (and stored tests).
    pub claim: Option<i32>,
    /// The body as received.
    pub body: &'a [u8],
}

impl InboundDelivery<'_> {
    /// Its deduplication key: the same content for the same batch and claim is one delivery,
    /// whatever its key order or spacing. CPU work (the body is canonicalised and hashed), so
    /// callers with many threads compute it before queuing for the store's one writer.
    pub fn dedup_key(&self) -> String {
        let canonical = canonical_json(self.body);
        let content = canonical.as_deref().unwrap_or(self.body);
        match self.claim.map(i32::to_be_bytes) {
            Some(c) => sha256_hex(&[self.batch_id.as_bytes(), &c, content]),
            None => sha256_hex(&[self.batch_id.as_bytes(), content]),
        }
    }
}

/// A stored delivery ready to be parsed and applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// Delivery id.
    pub id: Uuid,
    /// Its batch.
    pub batch_id: Uuid,
    /// The body as received.
    pub body: Vec<u8>,
    /// Received.
    pub received_at: DateTime<Utc>,
}

/// A submitted batch whose people still wait for parts (the reconciler polls Apollo for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueBatch {
    /// Batch id.
    pub batch_id: Uuid,
    /// Apollo `request_id` of the call (waterfall results are polled with it).
    pub request_id: Option<i64>,
    /// Phone job id, when Apollo gave one.
    pub phone_request_id: Option<String>,
    /// When the answer was recorded.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The claim whose answer was recorded (polled payloads belong to it).
    pub answered_claim: Option<i32>,
    /// How often it was polled before.
    pub polls: i32,
    /// The phone part is wanted: some person still waits for it, or the answered call's own
    /// phone payload (which Apollo bills) never arrived although its people got a phone elsewhere.
    pub awaiting_phone: bool,
    /// The waterfall part is wanted, on the same terms.
    pub awaiting_waterfall: bool,
}

/// Why a person whose phone reveal Apollo skipped ends without the phone.
const PHONE_SKIPPED: &str = "Apollo skipped this request's phone reveal (an earlier request was enriching this person) and that request's phone never arrived";

impl Store {
    /// Stores a delivery for a batch as received. The same content for the same batch is stored
    /// once (sha256 dedup key over canonical JSON, unique index), so a payload that was both pushed
    /// and fetched by polling `webhook_result` counts once; storing it again reports the earlier id.
    pub async fn store_delivery(
        &self,
        batch_id: Uuid,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> StoreResult<StoredDelivery> {
        let item = InboundDelivery { batch_id, claim: None, body };
        self.store_deliveries(&[item], received_at).await?.pop().expect("one result per delivery")
    }

    /// Stores several deliveries in one transaction (group commit: one commit for many webhook
    /// requests), with [`Store::store_delivery`]'s dedup — per claim: the same bytes answering two
    /// calls of a batch are two deliveries. One result per delivery, in order; a delivery for a
    /// batch that does not exist is `NotFound` without failing the others.
    pub async fn store_deliveries(
        &self,
        items: &[InboundDelivery<'_>],
        received_at: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<StoredDelivery>>> {
        let keys: Vec<String> = items.iter().map(InboundDelivery::dedup_key).collect();
        let keyed: Vec<(InboundDelivery<'_>, &str)> =
            items.iter().copied().zip(keys.iter().map(String::as_str)).collect();
        self.store_keyed_deliveries(&keyed, received_at).await
    }

    /// [`Store::store_deliveries`] with each delivery's [`InboundDelivery::dedup_key`] computed
    /// by the caller (off the writer's task).
    ///
    /// One statement for the whole group (a statement is atomic and, outside a transaction, its
    /// own commit): the rows of known batches are inserted unless their key is stored already, and
    /// come back with their ids; only keys stored before, or of unknown batches, are looked up
    /// after. On SQLite every statement is a hand-off to sqlx's thread and back, and a group took
    /// five (BEGIN, the batches, the insert, the keys, COMMIT).
    pub async fn store_keyed_deliveries(
        &self,
        items: &[(InboundDelivery<'_>, &str)],
        received_at: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<StoredDelivery>>> {
        let received_at = ts(received_at);
        let backend = self.backend();
        let ids: Vec<Uuid> = items.iter().map(|_| new_id()).collect();
        // A key stored before keeps its row; within the group the first item of a key is the
        // one inserted (a statement's rows are not written in a promised order), the others
        // are its duplicates.
        let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
        let mut firsts: Vec<(&InboundDelivery<'_>, &str, Uuid)> = items
            .iter()
            .zip(&ids)
            .filter(|((_, key), _)| seen.insert(key))
            .map(|((item, key), id)| (item, *key, *id))
            .collect();
        // Each row's foreign key locks its batch (PostgreSQL: `FOR KEY SHARE`) as it is written:
        // in batch id order, as every `FOR UPDATE` of batches takes them, or a group and a
        // transaction locking the same batches in the other order deadlock.
        firsts.sort_by_key(|(item, _, _)| item.batch_id);
        let mut stored: HashMap<String, Uuid> = HashMap::with_capacity(items.len());
        {
            let _gate = self.write_gate().await;
            let per_statement = (crate::jobs::bind_limit(backend) - 1) / DELIVERY_BOUND;
            for chunk in firsts.chunks(per_statement) {
                let mut values: Vec<sea_orm::Value> = Vec::with_capacity(1 + chunk.len() * DELIVERY_BOUND);
                values.push(received_at.into());
                for (item, key, id) in chunk {
                    values.extend([
                        (*id).into(),
                        item.batch_id.into(),
                        (*key).to_owned().into(),
                        item.body.to_vec().into(),
                        item.claim.into(),
                    ]);
                }
                let stmt =
                    sea_orm::Statement::from_sql_and_values(backend, new_deliveries_sql(backend, chunk.len()), values);
                for row in self.db.query_all_raw(stmt).await? {
                    stored.insert(row.try_get_by_index(1)?, row.try_get_by_index(0)?);
                }
            }
        }
        let mut missing: Vec<&str> = items.iter().map(|(_, k)| *k).filter(|k| !stored.contains_key(*k)).collect();
        missing.sort_unstable();
        missing.dedup();
        for chunk in missing.chunks(1000) {
            let found: Vec<(Uuid, String)> = inbound_delivery::Entity::find()
                .select_only()
                .column(inbound_delivery::Column::Id)
                .column(inbound_delivery::Column::DedupKey)
                .filter(inbound_delivery::Column::DedupKey.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            stored.extend(found.into_iter().map(|(id, key)| (key, id)));
        }
        Ok(items
            .iter()
            .zip(&ids)
            .map(|((item, key), row_id)| match stored.get(*key) {
                Some(&id) if id == *row_id => Ok(StoredDelivery::Stored { id }),
                Some(&id) => Ok(StoredDelivery::Duplicate { id }),
                // Neither inserted nor stored before: its batch is unknown (the insert skips those).
                None => Err(StoreError::NotFound(format!("batch {}", item.batch_id))),
            })
            .collect())
    }

    /// Pending deliveries whose batch has its synchronous answer recorded (or failed: then only
    /// their credits count), oldest first. A delivery that arrived before the answer waits here
    /// until the answer is recorded.
    pub async fn pending_deliveries(&self, limit: u64) -> StoreResult<Vec<PendingDelivery>> {
        // The batch's state is read per delivery (a scalar subquery, which the planner cannot turn
        // into a join driven by batches), and `state = 'pending'` is a literal: so the only plan is
        // the partial index of pending deliveries, in this order, stopping at the limit. As a
        // semi-join, PostgreSQL with a young table's statistics walked every answered batch and
        // sorted their deliveries for every page.
        let batch_ready = format!(
            "(SELECT {b}.state FROM {b} WHERE {b}.id = {d}.batch_id) IN ('{}', '{}')",
            BatchState::Submitted.as_str(),
            BatchState::Failed.as_str(),
            b = sea_orm::EntityName::table_name(&batch::Entity),
            d = sea_orm::EntityName::table_name(&inbound_delivery::Entity),
        );
        let pending = inbound_delivery::Entity::find()
            .filter(Expr::col(inbound_delivery::Column::State).eq(Expr::cust("'pending'")))
            .filter(Expr::cust(batch_ready))
            .order_by_asc(inbound_delivery::Column::ReceivedAt)
            .order_by_asc(inbound_delivery::Column::Id)
            .limit(limit);
        let rows = sql::rows(&self.db, pending).await?;
        Ok(rows
            .into_iter()
            .map(|d| PendingDelivery { id: d.id, batch_id: d.batch_id, body: d.body, received_at: d.received_at })
            .collect())
    }

    /// Merges a parsed delivery into the people of its batch, in one transaction.
    ///
    /// Only people of that batch are touched, matched by Apollo id — every one of them with that
    /// id (two jobs, or one person given twice, may share a call) — plus, for a phone delivery,
    /// people of other calls that wait for the same Apollo person's phone because Apollo skipped
    /// their own reveal. The delivery's part counts as arrived for every person of the batch
    /// expecting it (Apollo sends one payload per request); the lifecycle decides the states.
    ///
    /// Credits: a part is charged once per Apollo request (claim), so a second copy of the same
    /// claim's part adds nothing while another claim's (a retried call Apollo ran as well) adds
    /// its own; the first delivery of a claim other than the answered one also proves that call
    /// was charged for its synchronous part, booked as the answered call's sync credits. Credits
    /// go to the batch and to the jobs of the people Apollo matched, split by their number of them
    /// in the batch (a job whose people in it were not matched is final and takes no more).
    ///
    /// A delivery for a batch that failed (every attempt's outcome unknown) adds its credits and
    /// merges nothing: without an answer its people cannot be told apart. Nor does a probe's
    /// (claim 0).
    /// Applying a delivery twice is a no-op. People of an erased job get no data (their parts
    /// still count), and a delivery naming them is not kept: its body is emptied once applied.
    pub async fn apply_delivery(&self, delivery_id: Uuid, parsed: &Delivery) -> StoreResult<ApplyOutcome> {
        let mut outcomes = self.apply_deliveries(&[(delivery_id, parsed)]).await?;
        outcomes.pop().ok_or_else(|| StoreError::Corrupt(format!("no outcome for delivery {delivery_id}")))
    }

    /// [`Store::apply_delivery`] for several deliveries, in order, in one transaction (one commit
    /// for a burst of webhooks), set-wise: a few statements for the whole group ([`crate::apply`]).
    /// The people and deliveries end as if each had been applied on its own; the job counters
    /// are written once, at the end, so job rows (which claims and answers update too) stay
    /// locked only for the commit, and jobs the group completes are listed on its last applied
    /// delivery (their `job.completed` event covers every change of the group).
    /// Merging is background work: on SQLite it waits while foreground writers queue for the one
    /// writer, takes at most [`SQLITE_GROUP`] deliveries (one when a writer waits already), and
    /// stops after the first delivery that finds one waiting, so the outcomes (one per applied
    /// delivery, in order) may cover only the first items: the caller applies the rest next.
    /// On an error nothing is applied: the caller applies them one at a time to find the culprit.
    pub async fn apply_deliveries(&self, items: &[(Uuid, &Delivery)]) -> StoreResult<Vec<ApplyOutcome>> {
        let now = now();
        let (txn, _gate) = self.background_txn().await?;
        // On SQLite a group holds the one writer for all its reads and writes: a few deliveries
        // at a time, and one alone when a foreground writer is waiting already (as when each
        // delivery was merged on its own, so ingest waits no longer than it did then).
        let most = match (self.is_shared(), self.writer_wanted()) {
            (true, _) => items.len(),
            (false, false) => SQLITE_GROUP,
            (false, true) => 1,
        };
        let items = &items[..items.len().min(most)];
        let mut group = Group::load(&txn, items).await?;
        let mut tally = Tally::default();
        let mut outcomes = Vec::with_capacity(items.len());
        for (delivery_id, parsed) in items {
            // SQLite's one writer is wanted for something that cannot wait (storing what Apollo
            // sends, recording a paid answer): write what is merged and let it go.
            if !outcomes.is_empty() && self.writer_wanted() {
                break;
            }
            outcomes.push(group.apply(&txn, &mut tally, *delivery_id, parsed, now).await?);
        }
        let vendors = group.write(&txn, &mut tally, now).await?;
        let completed = tally.flush(&txn, now).await?;
        crate::vendors::add_vendor_usage(&txn, now.date_naive(), &vendors).await?;
        let last = outcomes.iter_mut().rev().find_map(|o| match o {
            ApplyOutcome::Applied { completed_jobs, .. } => Some(completed_jobs),
            _ => None,
        });
        if let Some(completed_jobs) = last {
            *completed_jobs = completed;
        }
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Counts a failed attempt to apply a delivery (the database refused the write, not because
    /// it is down); at `cap` attempts it is failed with `error`, so ingest moves on and the job
    /// shows it. Returns whether it was failed.
    pub async fn note_apply_failure(&self, delivery_id: Uuid, error: &str, cap: i32) -> StoreResult<bool> {
        {
            let _gate = self.write_gate().await;
            inbound_delivery::Entity::update_many()
                .filter(inbound_delivery::Column::Id.eq(delivery_id))
                .filter(inbound_delivery::Column::State.eq(DeliveryState::Pending))
                .col_expr(
                    inbound_delivery::Column::ApplyAttempts,
                    Expr::col(inbound_delivery::Column::ApplyAttempts).add(1),
                )
                .exec(&self.db)
                .await?;
        }
        let attempts = inbound_delivery::Entity::find_by_id(delivery_id).one(&self.db).await?.map(|d| d.apply_attempts);
        if attempts.is_some_and(|n| n >= cap) {
            return self
                .fail_delivery(delivery_id, &format!("could not be applied after {cap} attempts: {error}"))
                .await;
        }
        Ok(false)
    }

    /// Ends a part that Apollo reports failed (`webhook_status: failed` when polled): people of
    /// the batch still waiting for it become `partial`, with Apollo's reason. Returns how many.
    pub async fn fail_part(&self, batch_id: Uuid, part: Part, reason: &str) -> StoreResult<u64> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        let people = lock_batch_primaries(&txn, batch_id).await?;
        let mut tally = Tally::default();
        let mut changes = Vec::new();
        for p in &people {
            let mut new = p.clone();
            apply_event(&mut new, Event::PartFailed(part), now)?;
            if new.state != p.state {
                new.last_error = storable_text(Some(format!("{} failed at Apollo: {reason}", part.as_str())));
                changes.push((p, new));
            }
        }
        update_people(&txn, &mut tally, &changes, now).await?;
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(changes.len() as u64)
    }

    /// Records a reconcile poll of a batch: it is polled again at `next_at` at the earliest.
    pub async fn record_poll(&self, batch_id: Uuid, next_at: DateTime<Utc>) -> StoreResult<()> {
        let _gate = self.write_gate().await;
        batch::Entity::update_many()
            .filter(batch::Column::Id.eq(batch_id))
            .col_expr(batch::Column::NextPollAt, Expr::value(ts(next_at)))
            .col_expr(batch::Column::Polls, Expr::col(batch::Column::Polls).add(1))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Marks a pending delivery unusable, keeping the parse error. Returns `false` if it was not
    /// pending.
    pub async fn fail_delivery(&self, delivery_id: Uuid, parse_error: &str) -> StoreResult<bool> {
        let _gate = self.write_gate().await;
        let res = inbound_delivery::Entity::update_many()
            .filter(inbound_delivery::Column::Id.eq(delivery_id))
            .filter(inbound_delivery::Column::State.eq(DeliveryState::Pending))
            .col_expr(inbound_delivery::Column::State, Expr::value(DeliveryState::Failed))
            .col_expr(inbound_delivery::Column::ParseError, Expr::value(parse_error))
            .col_expr(inbound_delivery::Column::ProcessedAt, Expr::value(now()))
            .exec(&self.db)
            .await?;
        if res.rows_affected == 1
            && let Some(d) = inbound_delivery::Entity::find_by_id(delivery_id).one(&self.db).await?
            && !erased_jobs_in_batch(&self.db, d.batch_id).await?.is_empty()
        {
            // Kept for audit, except when it may name erased people.
            empty_delivery_bodies(&self.db, &[delivery_id]).await?;
        }
        Ok(res.rows_affected == 1)
    }

    /// A stored delivery's row.
    pub async fn get_delivery(&self, delivery_id: Uuid) -> StoreResult<Option<inbound_delivery::Model>> {
        Ok(inbound_delivery::Entity::find_by_id(delivery_id).one(&self.db).await?)
    }

    /// Submitted batches answered before `older_than` whose poll back-off has passed, least
    /// recently polled first, that want a part: some person still awaits it, or — until
    /// `unbilled_until` passes the answer — the answered call announced it (a person expects it
    /// from this call) but no payload of that call arrived. The latter happens when a lost
    /// answer's retry ran too and the people got their part from the other copy: Apollo bills
    /// both copies, so the answered call's payload is still fetched for its credits.
    pub async fn overdue_batches(
        &self,
        older_than: DateTime<Utc>,
        unbilled_until: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<OverdueBatch>> {
        let awaiting = Query::select()
            .expr(Expr::val(1))
            .from(person::Entity)
            .and_where(Expr::col((person::Entity, person::Column::BatchId)).equals((batch::Entity, batch::Column::Id)))
            .and_where(Expr::col((person::Entity, person::Column::State)).eq(PersonState::AwaitingAsync))
            .to_owned();
        let unbilled = |part: Part| {
            let expects = match part {
                Part::Phone => Expr::col((person::Entity, person::Column::ExpectPhone))
                    .eq(true)
                    .and(Expr::col((person::Entity, person::Column::PhoneElsewhere)).eq(false)),
                Part::Waterfall => Expr::col((person::Entity, person::Column::ExpectWaterfall)).eq(true),
            };
            let announced = Query::select()
                .expr(Expr::val(1))
                .from(person::Entity)
                .and_where(
                    Expr::col((person::Entity, person::Column::BatchId)).equals((batch::Entity, batch::Column::Id)),
                )
                .and_where(expects)
                .to_owned();
            let received = Query::select()
                .expr(Expr::val(1))
                .from(inbound_delivery::Entity)
                .and_where(
                    Expr::col((inbound_delivery::Entity, inbound_delivery::Column::BatchId))
                        .equals((batch::Entity, batch::Column::Id)),
                )
                .and_where(
                    Expr::col((inbound_delivery::Entity, inbound_delivery::Column::Claim))
                        .equals((batch::Entity, batch::Column::AnsweredClaim)),
                )
                // A payload stored but not yet applied has no kind yet: it may be this part.
                .and_where(
                    Expr::col((inbound_delivery::Entity, inbound_delivery::Column::Kind))
                        .eq(part.as_str())
                        .or(Expr::col((inbound_delivery::Entity, inbound_delivery::Column::Kind)).is_null()),
                )
                .to_owned();
            Expr::exists(announced).and(Expr::exists(received).not())
        };
        let within_billing = batch::Column::AnsweredClaim
            .is_not_null()
            .and(batch::Column::SubmittedAt.gt(ts(unbilled_until)))
            .and(unbilled(Part::Phone).or(unbilled(Part::Waterfall)));
        let batches = batch::Entity::find()
            .filter(batch::Column::State.eq(BatchState::Submitted))
            .filter(batch::Column::SubmittedAt.lt(ts(older_than)))
            .filter(batch::Column::NextPollAt.is_null().or(batch::Column::NextPollAt.lte(now())))
            .filter(Expr::exists(awaiting).or(within_billing))
            // Least recently polled first (never polled before all), so a batch that stays
            // pending, polled again with back-off, cannot starve the others.
            .order_by(Expr::col(batch::Column::NextPollAt).is_null(), Order::Desc)
            .order_by_asc(batch::Column::NextPollAt)
            .order_by_asc(batch::Column::SubmittedAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let people = person::Entity::find().filter(person::Column::BatchId.eq(b.id)).all(&self.db).await?;
            let received: Vec<Option<String>> = inbound_delivery::Entity::find()
                .select_only()
                .column(inbound_delivery::Column::Kind)
                .filter(inbound_delivery::Column::BatchId.eq(b.id))
                .filter(inbound_delivery::Column::Claim.eq(b.answered_claim))
                .into_tuple()
                .all(&self.db)
                .await?;
            let unbilled = |part: Part| {
                b.answered_claim.is_some()
                    && b.submitted_at.is_some_and(|at| at > unbilled_until)
                    && !received.iter().any(|k| k.is_none() || k.as_deref() == Some(part.as_str()))
            };
            let waiting = |p: &&person::Model| p.state == PersonState::AwaitingAsync;
            // People whose reveal Apollo skipped wait for another request, not this one.
            let phone_here = |p: &person::Model| p.expect_phone && !p.phone_elsewhere;
            out.push(OverdueBatch {
                batch_id: b.id,
                request_id: b.request_id,
                phone_request_id: b.phone_request_id,
                submitted_at: b.submitted_at,
                answered_claim: b.answered_claim,
                polls: b.polls,
                awaiting_phone: people.iter().filter(waiting).any(|p| phone_here(p) && !p.got_phone)
                    || (unbilled(Part::Phone) && people.iter().any(phone_here)),
                awaiting_waterfall: people.iter().filter(waiting).any(|p| p.expect_waterfall && !p.got_waterfall)
                    || (unbilled(Part::Waterfall) && people.iter().any(|p| p.expect_waterfall)),
            });
        }
        Ok(out)
    }

    /// People awaiting parts since before `deadline` become `partial`, with the missing parts
    /// listed (`["phone", "waterfall"]`); one transaction. Returns how many (primaries) expired.
    pub async fn expire_parts(&self, deadline: DateTime<Utc>) -> StoreResult<u64> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        let mut q = person::Entity::find()
            .filter(person::Column::AwaitingSince.lt(ts(deadline)))
            .filter(person::Column::State.eq(PersonState::AwaitingAsync))
            .filter(person::Column::DupOf.is_null());
        if self.backend() == DbBackend::Postgres {
            // Lock in id order (the lock order). SQLite has one writer and no row locks, and
            // there the ORDER BY would make its planner scan the primary key instead of the
            // small `awaiting_since` index.
            q = q.order_by_asc(person::Column::Id);
        }
        let people = q.lock(LockType::Update).all(&txn).await?;
        let mut tally = Tally::default();
        let mut changes = Vec::with_capacity(people.len());
        for p in &people {
            let mut new = p.clone();
            apply_event(&mut new, Event::Deadline, now)?;
            if new.phone_elsewhere && !new.got_phone {
                new.last_error = Some(PHONE_SKIPPED.into());
            }
            changes.push((p, new));
        }
        update_people(&txn, &mut tally, &changes, now).await?;
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(people.len() as u64)
    }
}

/// A person whose phone reveal Apollo skipped, just answered: if a phone delivery of an earlier
/// request already brought this Apollo person's phone to someone else, it is copied now (the
/// delivery will not come again). `with_data = false` (an erased job): the part, not the data.
pub(crate) async fn phone_from_elsewhere(
    txn: &DatabaseTransaction,
    mut new: person::Model,
    with_data: bool,
    now: DateTime<Utc>,
) -> StoreResult<person::Model> {
    let Some(apollo_id) = new.apollo_id.clone() else { return Ok(new) };
    let donors = person::Entity::find()
        .filter(person::Column::ApolloId.eq(apollo_id.as_str()))
        .filter(person::Column::GotPhone.eq(true))
        .filter(person::Column::PhoneElsewhere.eq(false))
        .filter(person::Column::Id.ne(new.id))
        .all(txn)
        .await?;
    let Some(donor) = donors.iter().find(|d| d.record.is_some()) else { return Ok(new) };
    let from = Record::from_json(donor.record.as_ref());
    let phones: Vec<_> = from
        .phones
        .iter()
        .filter(|p| p.sources.iter().any(|s| s == FactSource::PhoneWebhook.as_str()))
        .cloned()
        .collect();
    if with_data {
        let mut record = Record::from_json(new.record.as_ref());
        record.merge_record(&Record { phones, ..Record::default() });
        new.record = Some(record.to_json());
    }
    apply_event(&mut new, Event::PartArrived(Part::Phone), now)?;
    Ok(new)
}

/// Object keys sorted, no insignificant white space: equal JSON gives equal bytes.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut out = String::with_capacity(body.len());
    write(&v, &mut out);
    Some(out.into_bytes())
}

/// Values bound per stored delivery: id, batch, key, body, claim.
const DELIVERY_BOUND: usize = 5;

/// `INSERT … SELECT … FROM (VALUES …)` of `rows` deliveries received at `$1`, of known batches
/// only, keeping the first row of a key, returning the inserted rows' ids and keys.
fn new_deliveries_sql(backend: DbBackend, rows: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(400 + rows * 32);
    let _ = write!(
        sql,
        "INSERT INTO inbound_deliveries (id, batch_id, dedup_key, body, claim, received_at, state, kind, \
         credits_micros, parse_error, processed_at, apply_attempts) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, {}, '{}', NULL, 0, NULL, NULL, 0 FROM (VALUES ",
        sql::param(backend, 1),
        DeliveryState::Pending.as_str(),
    );
    sql::push_values(&mut sql, backend, 2, rows, DELIVERY_BOUND);
    // The WHERE also tells SQLite's parser that ON CONFLICT belongs to the INSERT.
    sql.push_str(
        ") AS v WHERE EXISTS (SELECT 1 FROM batches WHERE batches.id = v.column2) \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key",
    );
    sql
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_json;

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let a = canonical_json(br#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b = canonical_json(br#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, canonical_json(br#"{"a":{"x":null,"y":[2,1]},"b":1}"#).unwrap());
        assert!(canonical_json(b"not json").is_none());
    }
}
