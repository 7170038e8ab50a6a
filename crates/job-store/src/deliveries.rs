//! Inbound Apollo deliveries: stored raw and deduplicated at once, merged later by the ingest
//! worker into the people of their batch; plus the reconcile and deadline queries.

use std::collections::{BTreeMap, HashMap, HashSet};

use apollo_client::{Delivery, DeliveryKind, PersonFacts};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockType, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbBackend, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::counters::Tally;
use crate::entities::{batch, inbound_delivery, person};
use crate::erase::{empty_delivery_bodies, erased_jobs_in_batch};
use crate::merge::Record;
use crate::people::{lock_batch_primaries, update_person};
use crate::sync::split_credits;
use crate::{BatchState, DeliveryState, PersonState, Store, StoreError, StoreResult, new_id, now, sha256_hex, ts};

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

/// The outcome of [`Store::apply_delivery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// Merged.
    Applied {
        /// Person entries matched to people of the batch.
        matched: usize,
        /// Apollo ids in the delivery that no person of the batch has (ignored).
        unmatched: Vec<String>,
        /// Jobs that completed in the same transaction.
        completed_jobs: Vec<Uuid>,
    },
    /// Already processed or failed: nothing changed.
    AlreadyProcessed,
    /// The batch's synchronous answer is not recorded yet: kept pending, nothing changed.
    NotReady,
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
    /// Some person still waits for the phone part.
    pub awaiting_phone: bool,
    /// Some person still waits for the waterfall part.
    pub awaiting_waterfall: bool,
}

/// The parts a person expected and has not received.
fn missing_parts(p: &person::Model) -> Vec<&'static str> {
    let mut parts = Vec::new();
    if p.expect_phone && !p.got_phone {
        parts.push(DeliveryKind::Phone.as_str());
    }
    if p.expect_waterfall && !p.got_waterfall {
        parts.push(DeliveryKind::Waterfall.as_str());
    }
    parts
}

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
        self.store_deliveries(&[(batch_id, body)], received_at).await?.pop().expect("one result per delivery")
    }

    /// Stores several deliveries in one transaction (group commit: one commit for many webhook
    /// requests), with [`Store::store_delivery`]'s dedup. One result per delivery, in order; a
    /// delivery for a batch that does not exist is `NotFound` without failing the others.
    pub async fn store_deliveries(
        &self,
        items: &[(Uuid, &[u8])],
        received_at: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<StoredDelivery>>> {
        let received_at = ts(received_at);
        // Keys and rows before taking the writer: canonicalising and hashing bodies is CPU work
        // that need not hold SQLite's single writer.
        let rows: Vec<inbound_delivery::Model> = items
            .iter()
            .map(|(batch_id, body)| {
                let canonical = canonical_json(body);
                inbound_delivery::Model {
                    id: new_id(),
                    batch_id: *batch_id,
                    dedup_key: sha256_hex(&[batch_id.as_bytes(), canonical.as_deref().unwrap_or(body)]),
                    body: body.to_vec(),
                    received_at,
                    state: DeliveryState::Pending.as_str().to_owned(),
                    kind: None,
                    credits_micros: 0,
                    parse_error: None,
                    processed_at: None,
                }
            })
            .collect();
        let mut batch_ids: Vec<Uuid> = items.iter().map(|(b, _)| *b).collect();
        batch_ids.sort();
        batch_ids.dedup();

        let (txn, _gate) = self.write_txn().await?;
        let existing: HashSet<Uuid> = batch::Entity::find()
            .select_only()
            .column(batch::Column::Id)
            .filter(batch::Column::Id.is_in(batch_ids))
            .into_tuple::<Uuid>()
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        // What each result needs; the rows themselves (bodies included) move into the insert.
        let identities: Vec<(Uuid, Uuid, String)> =
            rows.iter().map(|r| (r.id, r.batch_id, r.dedup_key.clone())).collect();
        let mut known: Vec<inbound_delivery::ActiveModel> = rows
            .into_iter()
            .filter(|r| existing.contains(&r.batch_id))
            .map(|r| r.into_active_model().reset_all())
            .collect();
        // Multi-row inserts; a key already stored (or earlier in this group) keeps its first row.
        while !known.is_empty() {
            let chunk = known.drain(..known.len().min(1000));
            inbound_delivery::Entity::insert_many(chunk)
                .on_conflict(OnConflict::column(inbound_delivery::Column::DedupKey).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        let mut keys: Vec<&str> =
            identities.iter().filter(|(_, b, _)| existing.contains(b)).map(|(_, _, k)| k.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut stored: HashMap<String, Uuid> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let found: Vec<(Uuid, String)> = inbound_delivery::Entity::find()
                .select_only()
                .column(inbound_delivery::Column::Id)
                .column(inbound_delivery::Column::DedupKey)
                .filter(inbound_delivery::Column::DedupKey.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&txn)
                .await?;
            stored.extend(found.into_iter().map(|(id, key)| (key, id)));
        }
        let out = identities
            .iter()
            .map(|(row_id, batch_id, key)| {
                if !existing.contains(batch_id) {
                    return Err(StoreError::NotFound(format!("batch {batch_id}")));
                }
                match stored.get(key) {
                    Some(&id) if id == *row_id => Ok(StoredDelivery::Stored { id }),
                    Some(&id) => Ok(StoredDelivery::Duplicate { id }),
                    None => Err(StoreError::NotFound("duplicate delivery vanished".into())),
                }
            })
            .collect();
        txn.commit().await?;
        Ok(out)
    }

    /// Pending deliveries whose batch has its synchronous answer recorded, oldest first. A
    /// delivery that arrived before the answer waits here until the answer is recorded.
    pub async fn pending_deliveries(&self, limit: u64) -> StoreResult<Vec<PendingDelivery>> {
        let batch_ready = Query::select()
            .expr(Expr::val(1))
            .from(batch::Entity)
            .and_where(
                Expr::col((batch::Entity, batch::Column::Id))
                    .equals((inbound_delivery::Entity, inbound_delivery::Column::BatchId)),
            )
            .and_where(Expr::col((batch::Entity, batch::Column::State)).eq(BatchState::Submitted.as_str()))
            .to_owned();
        let rows = inbound_delivery::Entity::find()
            .filter(inbound_delivery::Column::State.eq(DeliveryState::Pending.as_str()))
            .filter(Expr::exists(batch_ready))
            .order_by_asc(inbound_delivery::Column::ReceivedAt)
            .order_by_asc(inbound_delivery::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|d| PendingDelivery { id: d.id, batch_id: d.batch_id, body: d.body, received_at: d.received_at })
            .collect())
    }

    /// Merges a parsed delivery into the people of its batch, in one transaction.
    ///
    /// Only people of that batch are touched, matched by Apollo id. The delivery's part (phone or
    /// waterfall) counts as arrived for every person of the batch expecting it, since Apollo
    /// sends one payload per request; a person whose expected parts have all arrived becomes
    /// `complete` (a `partial` one too, when a late part completes it). The delivery's credits go
    /// to the batch and to its jobs, split by their number of people in the batch.
    /// Applying a delivery twice is a no-op. People of an erased job get no data (their parts
    /// still count), and a delivery naming them is not kept: its body is emptied once applied.
    pub async fn apply_delivery(&self, delivery_id: Uuid, parsed: &Delivery) -> StoreResult<ApplyOutcome> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        let Some(d) = inbound_delivery::Entity::find_by_id(delivery_id).lock(LockType::Update).one(&txn).await? else {
            return Err(StoreError::NotFound(format!("delivery {delivery_id}")));
        };
        if d.state != DeliveryState::Pending.as_str() {
            return Ok(ApplyOutcome::AlreadyProcessed);
        }
        let b = batch::Entity::find_by_id(d.batch_id).one(&txn).await?;
        if b.is_none_or(|b| b.state != BatchState::Submitted.as_str()) {
            return Ok(ApplyOutcome::NotReady);
        }
        // A part is charged once per Apollo request: a second delivery of the same kind and request
        // (pushed and also polled, with different bytes) merges but adds no credits.
        let same_part_charged = inbound_delivery::Entity::find()
            .filter(inbound_delivery::Column::BatchId.eq(d.batch_id))
            .filter(inbound_delivery::Column::Kind.eq(parsed.kind.as_str()))
            .filter(inbound_delivery::Column::State.eq(DeliveryState::Processed.as_str()))
            .filter(inbound_delivery::Column::CreditsMicros.ne(0))
            .all(&txn)
            .await?
            .iter()
            // An emptied body (its job was erased) no longer names its request: assume the same
            // one, so erasure never makes a part count twice.
            .any(|earlier| earlier.body.is_empty() || request_id_of(&earlier.body) == parsed.request_id);
        let credits = if same_part_charged { 0 } else { parsed.credits.map(|c| c.micros()).unwrap_or(0) };
        inbound_delivery::Entity::update_many()
            .filter(inbound_delivery::Column::Id.eq(delivery_id))
            .col_expr(inbound_delivery::Column::State, Expr::value(DeliveryState::Processed.as_str()))
            .col_expr(inbound_delivery::Column::Kind, Expr::value(parsed.kind.as_str()))
            .col_expr(inbound_delivery::Column::CreditsMicros, Expr::value(credits))
            .col_expr(inbound_delivery::Column::ProcessedAt, Expr::value(now))
            .exec(&txn)
            .await?;

        if credits != 0 {
            // The batch row before people: the lock order.
            batch::Entity::update_many()
                .filter(batch::Column::Id.eq(d.batch_id))
                .col_expr(batch::Column::CreditsMicros, Expr::col(batch::Column::CreditsMicros).add(credits))
                .exec(&txn)
                .await?;
        }
        let people = lock_batch_primaries(&txn, d.batch_id).await?;
        // People of erased jobs get no data back (their parts still count as arrived).
        let erased = erased_jobs_in_batch(&txn, d.batch_id).await?;
        let by_apollo_id: HashMap<&str, usize> = people
            .iter()
            .enumerate()
            .filter(|(_, p)| !erased.contains(&p.job_id))
            .filter_map(|(i, p)| p.apollo_id.as_deref().map(|a| (a, i)))
            .collect();
        let mut facts_of: BTreeMap<usize, Vec<&PersonFacts>> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for f in &parsed.people {
            match f.apollo_id.as_deref().and_then(|a| by_apollo_id.get(a)) {
                Some(&i) => facts_of.entry(i).or_default().push(f),
                None => unmatched.push(f.apollo_id.clone().unwrap_or_default()),
            }
        }
        let matched = facts_of.values().map(Vec::len).sum();

        let mut tally = Tally::default();
        let mut per_job: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (i, p) in people.iter().enumerate() {
            *per_job.entry(p.job_id).or_default() += 1;
            let mut new = p.clone();
            if let Some(facts) = facts_of.get(&i) {
                let mut record = Record::from_json(p.record.as_ref());
                for f in facts {
                    record.merge_facts(f);
                }
                new.record = Some(record.to_json());
            }
            match parsed.kind {
                DeliveryKind::Phone if p.expect_phone => new.got_phone = true,
                DeliveryKind::Waterfall if p.expect_waterfall => new.got_waterfall = true,
                _ => {}
            }
            let state: PersonState = p.state.parse()?;
            if matches!(state, PersonState::AwaitingAsync | PersonState::Partial) {
                let missing = missing_parts(&new);
                if missing.is_empty() {
                    new.state = PersonState::Complete.as_str().to_owned();
                    new.missing_parts = None;
                    new.awaiting_since = None;
                } else if state == PersonState::Partial {
                    new.missing_parts = Some(serde_json::json!(missing));
                }
            }
            if new != *p {
                update_person(&txn, &mut tally, p, &new, now).await?;
            }
        }
        if credits != 0 {
            let weights: Vec<(Uuid, i64)> = per_job.into_iter().collect();
            for (job_id, share) in split_credits(credits, &weights) {
                tally.credits(job_id, share);
            }
        }
        let completed_jobs = tally.flush(&txn, now).await?;
        if !erased.is_empty() {
            // The raw payload names erased people: merged (for the others), it is not kept.
            empty_delivery_bodies(&txn, &[delivery_id]).await?;
        }
        txn.commit().await?;
        Ok(ApplyOutcome::Applied { matched, unmatched, completed_jobs })
    }

    /// Marks a pending delivery unusable, keeping the parse error. Returns `false` if it was not
    /// pending.
    pub async fn fail_delivery(&self, delivery_id: Uuid, parse_error: &str) -> StoreResult<bool> {
        let _gate = self.write_gate().await;
        let res = inbound_delivery::Entity::update_many()
            .filter(inbound_delivery::Column::Id.eq(delivery_id))
            .filter(inbound_delivery::Column::State.eq(DeliveryState::Pending.as_str()))
            .col_expr(inbound_delivery::Column::State, Expr::value(DeliveryState::Failed.as_str()))
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

    /// Submitted batches answered before `older_than` whose people still await parts, oldest first.
    pub async fn overdue_batches(&self, older_than: DateTime<Utc>, limit: u64) -> StoreResult<Vec<OverdueBatch>> {
        let awaiting = Query::select()
            .expr(Expr::val(1))
            .from(person::Entity)
            .and_where(Expr::col((person::Entity, person::Column::BatchId)).equals((batch::Entity, batch::Column::Id)))
            .and_where(Expr::col((person::Entity, person::Column::State)).eq(PersonState::AwaitingAsync.as_str()))
            .to_owned();
        let batches = batch::Entity::find()
            .filter(batch::Column::State.eq(BatchState::Submitted.as_str()))
            .filter(batch::Column::SubmittedAt.lt(ts(older_than)))
            .filter(Expr::exists(awaiting))
            .order_by_asc(batch::Column::SubmittedAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let waiting = person::Entity::find()
                .filter(person::Column::BatchId.eq(b.id))
                .filter(person::Column::State.eq(PersonState::AwaitingAsync.as_str()))
                .all(&self.db)
                .await?;
            out.push(OverdueBatch {
                batch_id: b.id,
                request_id: b.request_id,
                phone_request_id: b.phone_request_id,
                submitted_at: b.submitted_at,
                awaiting_phone: waiting.iter().any(|p| p.expect_phone && !p.got_phone),
                awaiting_waterfall: waiting.iter().any(|p| p.expect_waterfall && !p.got_waterfall),
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
            .filter(person::Column::State.eq(PersonState::AwaitingAsync.as_str()))
            .filter(person::Column::DupOf.is_null());
        if self.backend() == DbBackend::Postgres {
            // Lock in id order (the lock order). SQLite has one writer and no row locks, and
            // there the ORDER BY would make its planner scan the primary key instead of the
            // small `awaiting_since` index.
            q = q.order_by_asc(person::Column::Id);
        }
        let people = q.lock(LockType::Update).all(&txn).await?;
        let mut tally = Tally::default();
        for p in &people {
            let mut new = p.clone();
            new.state = PersonState::Partial.as_str().to_owned();
            new.missing_parts = Some(serde_json::json!(missing_parts(p)));
            // Only people awaiting parts keep `awaiting_since`, so the deadline index stays small.
            new.awaiting_since = None;
            update_person(&txn, &mut tally, p, &new, now).await?;
        }
        tally.flush(&txn, now).await?;
        txn.commit().await?;
        Ok(people.len() as u64)
    }
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

/// The `request_id` a stored delivery body names, if any.
fn request_id_of(body: &[u8]) -> Option<apollo_client::RequestId> {
    apollo_client::parse_delivery(body).ok().and_then(|d| d.request_id)
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
