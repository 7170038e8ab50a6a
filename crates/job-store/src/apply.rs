//! Applying a group of stored deliveries in one transaction, set-wise (the ingest worker's
//! merges, [`crate::Store::apply_deliveries`]).
//!
//! The rows a group needs are read in a few statements at its start (its deliveries, their
//! batches, the batches' applied deliveries, people and erased jobs, and the people elsewhere
//! waiting for a phone a delivery brings); the deliveries are then applied one after another in
//! memory, each seeing what the earlier ones did, so everything ends as if each had been applied
//! on its own; and every changed row is written in a few multi-row statements at the end. So a
//! group costs about a dozen statements whatever its size, where each delivery used to cost
//! about ten (each a round trip on PostgreSQL), and a person's record is decoded and encoded
//! once per group.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use apollo_client::{Credits, Delivery, DeliveryKind, PersonFacts};
use chrono::{DateTime, Utc};
use rules::budget::split_credits;
use rules::lifecycle::{self, Event, Part};
use rules::merge::Record;
use rules::vendors::{attribute_credits, person_attempts};
use rules::{BatchState, DeliveryState, PersonState};
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::budget;
use crate::counters::{CreditKind, Tally};
use crate::entities::{batch, inbound_delivery, job, person};
use crate::erase::{empty_delivery_bodies, erased_jobs_in_batches};
use crate::error::{StoreError, StoreResult};
use crate::people::{Assign, apply_event, lock_people_where, update_from_rows, update_people};
use crate::vendors::VendorDeltas;

/// The outcome of [`crate::Store::apply_delivery`].
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

/// The `request_id` a stored delivery body names, if any.
pub(crate) fn request_id_of(body: &[u8]) -> Option<apollo_client::RequestId> {
    apollo_client::parse_delivery(body).ok().and_then(|d| d.request_id)
}

/// Ids per `IN (…)` list: far under SQLite's bound-parameter limit.
const IN_LIST: usize = 500;

/// What applying a delivery reads of its own row.
struct Stored {
    batch_id: Uuid,
    state: DeliveryState,
    claim: Option<i32>,
}

/// An applied delivery's columns as read: id, batch, claim, kind, credits.
type AppliedRow = (Uuid, Uuid, Option<i32>, Option<String>, i64);

/// A delivery of a batch applied before (or earlier in the group), as the charge rule reads it.
struct Applied {
    id: Uuid,
    claim: Option<i32>,
    kind: Option<String>,
    credits: i64,
}

/// A person the group read: as read, and as the group leaves it so far.
struct Slot {
    old: person::Model,
    new: person::Model,
    /// `new`'s record, decoded once the group first merges into it (encoded back at the end).
    record: Option<Record>,
}

impl Slot {
    fn new(p: person::Model) -> Slot {
        Slot { new: p.clone(), old: p, record: None }
    }

    /// The person's record, for merging.
    fn record(&mut self) -> &mut Record {
        let stored = &self.new.record;
        self.record.get_or_insert_with(|| Record::from_json(stored.as_ref()))
    }
}

/// A group of deliveries being applied in one transaction.
pub(crate) struct Group {
    stored: HashMap<Uuid, Stored>,
    /// The group's batches that deliveries can be applied to (submitted or failed), locked.
    batches: HashMap<Uuid, batch::Model>,
    /// Per batch, its deliveries applied so far.
    applied: HashMap<Uuid, Vec<Applied>>,
    /// Per batch, its people (primaries), in id order.
    members: HashMap<Uuid, Vec<Uuid>>,
    /// Every person the group read, locked: the batches' people and those waiting for a phone.
    people: BTreeMap<Uuid, Slot>,
    /// People of other batches waiting for the phone of an Apollo person a delivery names
    /// (Apollo skipped their own request's reveal), in id order.
    waiting_for_phone: Vec<Uuid>,
    /// Per batch (of the group's and of the people waiting), its erased jobs, if any.
    erased: HashMap<Uuid, HashSet<Uuid>>,
    /// Written at the end: deliveries applied (id, kind, credits), credits added per batch and
    /// per person, deliveries whose body goes (they name people of erased jobs).
    processed: Vec<(Uuid, &'static str, i64)>,
    batch_credits: BTreeMap<Uuid, i64>,
    person_credits: BTreeMap<Uuid, i64>,
    emptied: Vec<Uuid>,
    /// Batches whose calls of unknown outcome were repriced (their row's amounts are written).
    repriced: BTreeSet<Uuid>,
    /// The client of each job of the people read (vendor statistics are per client).
    clients: HashMap<Uuid, String>,
    /// Waterfall vendor statistics the group adds ([`crate::vendors`]).
    vendors: VendorDeltas,
}

impl Group {
    /// Reads (and on PostgreSQL locks) what applying `items` needs. A delivery that does not
    /// exist is an error: nothing is applied.
    pub(crate) async fn load(txn: &DatabaseTransaction, items: &[(Uuid, &Delivery)]) -> StoreResult<Group> {
        // First, before any row lock: the Apollo people whose phone comes, so that an answer
        // recorded meanwhile that waits for one of these phones is ordered with this group.
        let phones: Vec<&str> = items
            .iter()
            .filter(|(_, d)| Part::of(d.kind) == Part::Phone)
            .flat_map(|(_, d)| d.people.iter().filter_map(|f| f.apollo_id.as_deref()))
            .collect();
        crate::sql::lock_apollo_people(txn, &phones).await?;
        let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>().into_iter().collect();
        let mut stored = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_LIST) {
            let rows: Vec<(Uuid, Uuid, DeliveryState, Option<i32>)> = inbound_delivery::Entity::find()
                .select_only()
                .columns([
                    inbound_delivery::Column::Id,
                    inbound_delivery::Column::BatchId,
                    inbound_delivery::Column::State,
                    inbound_delivery::Column::Claim,
                ])
                .filter(inbound_delivery::Column::Id.is_in(chunk.iter().copied()))
                .order_by_asc(inbound_delivery::Column::Id)
                .lock(LockType::Update)
                .into_tuple()
                .all(txn)
                .await?;
            for (id, batch_id, state, claim) in rows {
                stored.insert(id, Stored { batch_id, state, claim });
            }
        }
        if let Some((missing, _)) = items.iter().find(|(id, _)| !stored.contains_key(id)) {
            return Err(StoreError::NotFound(format!("delivery {missing}")));
        }

        // The batches before their people: the lock order.
        let batch_ids: Vec<Uuid> = stored.values().map(|s| s.batch_id).collect::<BTreeSet<_>>().into_iter().collect();
        let mut batches = HashMap::with_capacity(batch_ids.len());
        for chunk in batch_ids.chunks(IN_LIST) {
            let found = batch::Entity::find()
                .filter(batch::Column::Id.is_in(chunk.iter().copied()))
                .filter(batch::Column::State.is_in([BatchState::Submitted, BatchState::Failed]))
                .order_by_asc(batch::Column::Id)
                .lock(LockType::Update)
                .all(txn)
                .await?;
            batches.extend(found.into_iter().map(|b| (b.id, b)));
        }
        let mut ready: Vec<Uuid> = batches.keys().copied().collect();
        ready.sort();

        // What the charge rule reads of the batches' applied deliveries.
        let mut applied: HashMap<Uuid, Vec<Applied>> = HashMap::new();
        let mut people = BTreeMap::new();
        let mut members: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for chunk in ready.chunks(IN_LIST) {
            let rows: Vec<AppliedRow> = inbound_delivery::Entity::find()
                .select_only()
                .columns([
                    inbound_delivery::Column::Id,
                    inbound_delivery::Column::BatchId,
                    inbound_delivery::Column::Claim,
                    inbound_delivery::Column::Kind,
                    inbound_delivery::Column::CreditsMicros,
                ])
                .filter(inbound_delivery::Column::BatchId.is_in(chunk.iter().copied()))
                .filter(inbound_delivery::Column::State.eq(DeliveryState::Processed))
                .into_tuple()
                .all(txn)
                .await?;
            for (id, batch_id, claim, kind, credits) in rows {
                applied.entry(batch_id).or_default().push(Applied { id, claim, kind, credits });
            }
            for p in lock_people_where(txn, person::Column::BatchId.is_in(chunk.iter().copied())).await? {
                if let Some(b) = p.batch_id {
                    members.entry(b).or_default().push(p.id);
                }
                people.insert(p.id, Slot::new(p));
            }
        }

        // People elsewhere waiting for the phone of an Apollo person a phone delivery names: as
        // read now, a superset of those each delivery finds (merges never make one wait).
        let named: Vec<&str> = items
            .iter()
            .filter(|(id, d)| {
                Part::of(d.kind) == Part::Phone
                    && stored
                        .get(id)
                        .and_then(|s| batches.get(&s.batch_id))
                        .is_some_and(|b| b.state == BatchState::Submitted)
            })
            .flat_map(|(_, d)| d.people.iter().filter_map(|f| f.apollo_id.as_deref()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut waiting_for_phone = Vec::new();
        let mut erased_of: BTreeSet<Uuid> = ready.iter().copied().collect();
        for chunk in named.chunks(IN_LIST) {
            let waiting = Condition::all()
                .add(person::Column::ApolloId.is_in(chunk.iter().copied()))
                .add(person::Column::PhoneElsewhere.eq(true))
                .add(person::Column::GotPhone.eq(false))
                .add(person::Column::DupOf.is_null());
            for p in lock_people_where(txn, waiting).await? {
                waiting_for_phone.push(p.id);
                erased_of.extend(p.batch_id);
                people.entry(p.id).or_insert_with(|| Slot::new(p));
            }
        }
        waiting_for_phone.sort();
        waiting_for_phone.dedup();
        let erased = erased_jobs_in_batches(txn, &erased_of.into_iter().collect::<Vec<_>>()).await?;
        let job_ids: Vec<Uuid> = people.values().map(|s| s.old.job_id).collect::<BTreeSet<_>>().into_iter().collect();
        let mut clients = HashMap::with_capacity(job_ids.len());
        for chunk in job_ids.chunks(IN_LIST) {
            let rows: Vec<(Uuid, String)> = job::Entity::find()
                .select_only()
                .columns([job::Column::Id, job::Column::Client])
                .filter(job::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(txn)
                .await?;
            clients.extend(rows);
        }

        Ok(Group {
            stored,
            batches,
            applied,
            members,
            people,
            waiting_for_phone,
            erased,
            processed: Vec::new(),
            batch_credits: BTreeMap::new(),
            person_credits: BTreeMap::new(),
            emptied: Vec::new(),
            repriced: BTreeSet::new(),
            clients,
            vendors: VendorDeltas::new(),
        })
    }

    /// A delivery booked `credits` for a batch that had calls of unknown outcome: from the
    /// answered call (`from_answered`) it tells what each of them cost too, from another call that
    /// this one ran; the batch's amount ([`budget::batch_double_charge`]) moves, and its jobs' with it.
    fn reprice_unknown_calls(
        &mut self,
        tally: &mut Tally,
        batch_id: Uuid,
        by_job: &[(Uuid, i64)],
        credits: i64,
        from_answered: bool,
    ) {
        let Some(b) = self.batches.get_mut(&batch_id) else { return };
        b.credits_micros += credits;
        if !from_answered {
            b.lost_credits_micros += credits;
        }
        // Lost calls a merged delivery named: they ran, and their answers' charge is booked.
        let proven: BTreeSet<i32> = self
            .applied
            .get(&batch_id)
            .into_iter()
            .flatten()
            .filter_map(|e| e.claim)
            .filter(|c| *c > 0 && Some(*c) != b.answered_claim)
            .collect();
        let proven = i32::try_from(proven.len()).unwrap_or(i32::MAX);
        let new = budget::batch_double_charge_of(b, by_job.iter().map(|(_, n)| n).sum(), proven).micros();
        tally.reprice_double_charges(by_job, b.double_charge_micros, new);
        b.double_charge_micros = new;
        self.repriced.insert(batch_id);
    }

    /// Applies one delivery of the group (in memory but for rare reads), its job changes added
    /// to `tally` (`completed_jobs` is left empty). The rules are [`crate::Store::apply_delivery`]'s.
    pub(crate) async fn apply(
        &mut self,
        txn: &DatabaseTransaction,
        tally: &mut Tally,
        delivery_id: Uuid,
        parsed: &Delivery,
        now: DateTime<Utc>,
    ) -> StoreResult<ApplyOutcome> {
        let Some(d) = self.stored.get_mut(&delivery_id) else {
            return Err(StoreError::NotFound(format!("delivery {delivery_id}")));
        };
        if d.state != DeliveryState::Pending {
            return Ok(ApplyOutcome::AlreadyProcessed);
        }
        let (batch_id, claim) = (d.batch_id, d.claim);
        let Some(b) = self.batches.get(&batch_id) else {
            return Ok(ApplyOutcome::NotReady);
        };
        let (batch_state, answered_claim, batch_sync_credits) = (b.state, b.answered_claim, b.sync_credits_micros);
        let unknown_outcomes = b.unknown_outcomes;
        d.state = DeliveryState::Processed;

        let earlier = self.applied.get(&batch_id).map(Vec::as_slice).unwrap_or_default();
        // Bodies only where a claim is missing (deliveries from before claims were in the URL),
        // to compare request ids; a body emptied earlier in the group reads as emptied.
        let unclaimed: Vec<Uuid> =
            earlier.iter().filter(|e| e.claim.is_none() || claim.is_none()).map(|e| e.id).collect();
        let mut bodies: HashMap<Uuid, Vec<u8>> = HashMap::new();
        for chunk in unclaimed.chunks(IN_LIST) {
            let found: Vec<(Uuid, Vec<u8>)> = inbound_delivery::Entity::find()
                .select_only()
                .columns([inbound_delivery::Column::Id, inbound_delivery::Column::Body])
                .filter(inbound_delivery::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(txn)
                .await?;
            bodies.extend(found);
        }
        for id in &self.emptied {
            if let Some(body) = bodies.get_mut(id) {
                body.clear();
            }
        }
        let same_request = |e: &Applied| match (e.claim, claim) {
            (Some(x), Some(y)) => x == y,
            // Without claims (older URLs): the request id decides. An emptied body (its job was
            // erased) no longer names its request: assume the same one, so erasure never makes a
            // part count twice.
            _ => bodies.get(&e.id).is_none_or(|body| body.is_empty() || request_id_of(body) == parsed.request_id),
        };
        let part_charged = earlier
            .iter()
            .any(|e| e.kind.as_deref() == Some(parsed.kind.as_str()) && e.credits != 0 && same_request(e));
        let part_credits = lifecycle::delivery_charge(parsed.credits.map(|c| c.micros()).unwrap_or(0), part_charged);
        // Proof that an unanswered claim ran: book its synchronous charge once.
        // (Claim 0 is the dispatcher's probe: one detail matching nobody, charged nothing.)
        let unanswered_claim_ran = matches!((claim, answered_claim), (Some(c), Some(a)) if c != a && c > 0)
            && !earlier.iter().any(|e| e.claim == claim);
        let sync_credits = if unanswered_claim_ran { batch_sync_credits } else { 0 };
        let credits = part_credits + sync_credits;

        self.processed.push((delivery_id, parsed.kind.as_str(), part_credits));
        self.applied.entry(batch_id).or_default().push(Applied {
            id: delivery_id,
            claim,
            kind: Some(parsed.kind.as_str().to_owned()),
            credits: part_credits,
        });
        if credits != 0 {
            *self.batch_credits.entry(batch_id).or_default() += credits;
        }

        let members = self.members.get(&batch_id).cloned().unwrap_or_default();
        let erased = self.erased.get(&batch_id).cloned().unwrap_or_default();
        let probe = claim.is_some_and(|c| c <= 0);
        let merged = batch_state == BatchState::Submitted && !probe;
        let (matched, unmatched) = if merged {
            // The answered call's payload speaks for everyone in it; another call's (a retry
            // Apollo ran too) only for the people it names.
            let whole_request = claim.is_none() || claim == answered_claim;
            self.merge_into_batch(batch_id, &members, &erased, parsed, whole_request, now)?
        } else {
            (0, parsed.people.iter().map(|f| f.apollo_id.clone().unwrap_or_default()).collect())
        };
        if credits != 0 {
            let by_job = self.jobs_of(&members, |_| true);
            // The charge goes to the jobs of the people Apollo matched (by their number in the
            // call): a person it did not match is in no payload, and its job, final since the
            // answer, takes no later charge. None matched: all of the call.
            let charged = match self.jobs_of(&members, |p| self.people[p].new.state != PersonState::NotFound) {
                none if none.is_empty() => by_job.clone(),
                some => some,
            };
            // Each kind split on its own, so the per-kind totals are exact too.
            for (kind, amount) in [(CreditKind::of(parsed.kind), part_credits), (CreditKind::Sync, sync_credits)] {
                for (job_id, share) in split_credits(amount, &charged) {
                    tally.credits(job_id, kind, share);
                }
            }
            // Calls of unknown outcome: what this delivery tells of their cost.
            if !probe && unknown_outcomes > 0 {
                self.reprice_unknown_calls(
                    tally,
                    batch_id,
                    &by_job,
                    credits,
                    claim.is_none() || claim == answered_claim,
                );
            }
        }
        if merged && part_credits != 0 {
            self.charge_people(&members, parsed, part_credits);
        }
        if parsed.kind == DeliveryKind::Waterfall {
            self.count_vendors(&members, parsed, part_credits);
        }
        if !erased.is_empty() {
            // The raw payload names erased people: merged (for the others), it is not kept.
            self.emptied.push(delivery_id);
        }
        Ok(ApplyOutcome::Applied { matched, unmatched, completed_jobs: Vec::new() })
    }

    /// Merges a delivery into the people of its (answered) batch: every person with an Apollo id
    /// the delivery names gets its facts; every person expecting the part gets it (only those it
    /// names, unless it answers the recorded call: `whole_request`); for a phone delivery, people
    /// of other calls waiting for the same Apollo person's phone get it too. Returns how many
    /// entries matched someone, and the Apollo ids that matched nobody.
    fn merge_into_batch(
        &mut self,
        batch_id: Uuid,
        members: &[Uuid],
        erased: &HashSet<Uuid>,
        parsed: &Delivery,
        whole_request: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<(usize, Vec<String>)> {
        let mut by_apollo_id: HashMap<String, Vec<Uuid>> = HashMap::new();
        for id in members {
            if let Some(a) = self.people[id].new.apollo_id.clone() {
                by_apollo_id.entry(a).or_default().push(*id);
            }
        }
        let mut facts_of: BTreeMap<Uuid, Vec<&PersonFacts>> = BTreeMap::new();
        let mut unmatched = Vec::new();
        let mut matched = 0;
        for f in &parsed.people {
            match f.apollo_id.as_deref().and_then(|a| by_apollo_id.get(a)) {
                Some(all) => {
                    matched += 1;
                    for id in all {
                        facts_of.entry(*id).or_default().push(f);
                    }
                }
                None => unmatched.push(f.apollo_id.clone().unwrap_or_default()),
            }
        }
        let part = Part::of(parsed.kind);
        for id in members {
            let slot = self.people.get_mut(id).ok_or_else(|| StoreError::Corrupt(format!("person {id} not read")))?;
            let facts = facts_of.get(id);
            if let Some(facts) = facts
                && !erased.contains(&slot.old.job_id)
            {
                let record = slot.record();
                for f in facts {
                    record.merge_facts(f);
                }
            }
            // A person whose phone Apollo skipped gets it only from a delivery that names it, and
            // so does everyone when the delivery answers another call than the recorded one.
            let speaks_for = whole_request && !(part == Part::Phone && slot.new.phone_elsewhere);
            if speaks_for || facts.is_some() {
                apply_event(&mut slot.new, Event::PartArrived(part), now)?;
            }
        }
        if part == Part::Phone {
            let named: HashSet<&str> = parsed
                .people
                .iter()
                .filter_map(|f| f.apollo_id.as_deref())
                .filter(|a| by_apollo_id.contains_key(*a))
                .collect();
            self.deliver_phone_elsewhere(batch_id, &named, parsed, now)?;
        }
        Ok((matched, unmatched))
    }

    /// People outside `batch_id` who wait for the phone of one of `apollo_ids` because Apollo
    /// skipped their own request's reveal: they get the phone facts the delivery holds for them.
    fn deliver_phone_elsewhere(
        &mut self,
        batch_id: Uuid,
        apollo_ids: &HashSet<&str>,
        parsed: &Delivery,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if apollo_ids.is_empty() {
            return Ok(());
        }
        for id in &self.waiting_for_phone {
            let Some(slot) = self.people.get_mut(id) else { continue };
            let p = &slot.new;
            let waits = p.phone_elsewhere
                && !p.got_phone
                && p.dup_of.is_none()
                && p.batch_id.is_some_and(|b| b != batch_id)
                && p.apollo_id.as_deref().is_some_and(|a| apollo_ids.contains(a));
            if !waits {
                continue;
            }
            let erased = p.batch_id.is_some_and(|b| self.erased.get(&b).is_some_and(|e| e.contains(&p.job_id)));
            if !erased {
                let apollo_id = p.apollo_id.clone();
                let record = slot.record();
                for f in parsed.people.iter().filter(|f| f.apollo_id == apollo_id) {
                    record.merge_facts(f);
                }
            }
            apply_event(&mut slot.new, Event::PartArrived(Part::Phone), now)?;
        }
        Ok(())
    }

    /// Adds a waterfall delivery's vendor attempts to the group's statistics, with the part's
    /// credits attributed over them ([`rules::vendors`]). Each person entry counts for the client
    /// of the batch's first person with its Apollo id (people of several clients may share an
    /// Apollo person in one call; the vendor was asked once), an entry naming nobody of the batch
    /// for the client of the batch's first person.
    fn count_vendors(&mut self, members: &[Uuid], parsed: &Delivery, part_credits: i64) {
        let client_of = |id: &Uuid| self.people.get(id).and_then(|s| self.clients.get(&s.old.job_id));
        let mut by_apollo_id: HashMap<&str, &String> = HashMap::new();
        for id in members {
            if let (Some(a), Some(c)) = (self.people[id].new.apollo_id.as_deref(), client_of(id)) {
                by_apollo_id.entry(a).or_insert(c);
            }
        }
        let fallback = members.iter().find_map(client_of);
        let mut attempts = Vec::new();
        let mut owners: Vec<String> = Vec::new();
        for f in &parsed.people {
            let owner = f.apollo_id.as_deref().and_then(|a| by_apollo_id.get(a).copied()).or(fallback);
            let Some(owner) = owner else { continue };
            for a in person_attempts(&f.raw) {
                attempts.push(a);
                owners.push(owner.clone());
            }
        }
        let shares = attribute_credits(Credits(part_credits), &attempts);
        for ((a, share), client) in attempts.iter().zip(shares).zip(owners) {
            self.vendors.entry((client, a.vendor.clone(), a.kind)).or_default().add_attempt(a, share);
        }
    }

    /// How many of `members` that pass `keep` each job has, in job id order.
    fn jobs_of(&self, members: &[Uuid], keep: impl Fn(&Uuid) -> bool) -> Vec<(Uuid, i64)> {
        let mut by_job: BTreeMap<Uuid, i64> = BTreeMap::new();
        for id in members.iter().filter(|id| keep(id)) {
            *by_job.entry(self.people[id].old.job_id).or_default() += 1;
        }
        by_job.into_iter().collect()
    }

    /// Books a delivery's charge on the people of the batch it names, evenly (exactly: the shares
    /// add up), so that a person's credits are what its lookup cost: what answering it again from
    /// the store saves ([`crate::reuse`]). The job's credits are booked apart, by [`Tally::credits`].
    fn charge_people(&mut self, members: &[Uuid], parsed: &Delivery, micros: i64) {
        let ids: HashSet<&str> = parsed.people.iter().filter_map(|f| f.apollo_id.as_deref()).collect();
        let weights: Vec<(Uuid, i64)> = members
            .iter()
            .filter(|id| {
                let p = &self.people[*id].new;
                p.dup_of.is_none() && p.apollo_id.as_deref().is_some_and(|a| ids.contains(a))
            })
            .map(|id| (*id, 1))
            .collect();
        for (id, share) in split_credits(micros, &weights) {
            *self.person_credits.entry(id).or_default() += share;
        }
    }

    /// Writes what the group applied: the deliveries, the batches' credits, the people (with their
    /// duplicates, tallied on their jobs), their credits, the bodies that go. Returns the vendor
    /// statistics to add, written by the caller after the job rows (the lock order).
    pub(crate) async fn write(
        mut self,
        txn: &DatabaseTransaction,
        tally: &mut Tally,
        now: DateTime<Utc>,
    ) -> StoreResult<VendorDeltas> {
        let processed = DeliveryState::Processed.as_str();
        let rows: Vec<Vec<Value>> = self
            .processed
            .iter()
            .map(|(id, kind, credits)| {
                vec![(*id).into(), processed.into(), (*kind).into(), (*credits).into(), now.into()]
            })
            .collect();
        let set = [
            (inbound_delivery::Column::State, Assign::Value),
            (inbound_delivery::Column::Kind, Assign::Value),
            (inbound_delivery::Column::CreditsMicros, Assign::Value),
            (inbound_delivery::Column::ProcessedAt, Assign::Value),
        ];
        update_from_rows::<inbound_delivery::Entity, _>(txn, inbound_delivery::Column::Id, false, &set, rows, None)
            .await?;

        add_credits::<batch::Entity>(txn, batch::Column::Id, batch::Column::CreditsMicros, &self.batch_credits).await?;
        for id in &self.repriced {
            let b = &self.batches[id];
            batch::Entity::update_many()
                .filter(batch::Column::Id.eq(*id))
                .col_expr(batch::Column::LostCreditsMicros, Expr::value(b.lost_credits_micros))
                .col_expr(batch::Column::DoubleChargeMicros, Expr::value(b.double_charge_micros))
                .exec(txn)
                .await?;
        }

        for slot in self.people.values_mut() {
            if let Some(record) = slot.record.take() {
                slot.new.record = Some(record.to_json());
            }
        }
        let changes: Vec<(&person::Model, &person::Model)> =
            self.people.values().filter(|s| s.new != s.old).map(|s| (&s.old, &s.new)).collect();
        update_people(txn, tally, &changes, now).await?;
        // Credits are added apart: they are not a change of the person's state or data.
        add_credits::<person::Entity>(txn, person::Column::Id, person::Column::CreditsMicros, &self.person_credits)
            .await?;

        empty_delivery_bodies(txn, &self.emptied).await?;
        Ok(self.vendors)
    }
}

/// Adds each row's credits (by id; zeros skipped) in one multi-row statement.
async fn add_credits<E: EntityTrait>(
    txn: &DatabaseTransaction,
    key: E::Column,
    credits: E::Column,
    by_id: &BTreeMap<Uuid, i64>,
) -> StoreResult<u64> {
    let rows: Vec<Vec<Value>> =
        by_id.iter().filter(|(_, c)| **c != 0).map(|(id, c)| vec![(*id).into(), (*c).into()]).collect();
    update_from_rows::<E, _>(txn, key, false, &[(credits, Assign::Add)], rows, None).await
}
