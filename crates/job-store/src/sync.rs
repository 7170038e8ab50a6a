//! Recording the synchronous answer of a batch, per person, in one transaction.

use std::collections::{BTreeMap, HashMap};

use apollo_client::Credits;
use chrono::{DateTime, Utc};
use rules::budget::split_credits;
use rules::lifecycle::{Answer, Event};
use rules::merge::{Record, needs_sanitizing, storable};
use rules::records::{SyncMatch, SyncPerson};
use rules::{BatchState, PersonState};
use sea_orm::sea_query::{Expr, ExprTrait, LockType};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Store;
use crate::budget;
use crate::clock::now;
use crate::columns::storable_text;
use crate::counters::{CreditKind, Tally, people_per_job, set_batch_double_charge};
use crate::entities::{batch, person};
use crate::error::{StoreError, StoreResult};
use crate::people::{apply_event, lock_batch_primaries, update_people};
use crate::sql::by_key;

/// The synchronous answer of one batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// The batch.
    pub batch_id: Uuid,
    /// The claim that made this call ([`crate::ClaimedBatch::claims`]); deliveries name it.
    #[serde(default = "first_claim")]
    pub claim: i32,
    /// HTTP status.
    pub http_status: i32,
    /// Apollo `request_id`.
    pub request_id: Option<i64>,
    /// `phone_enrichment.request_id`, when pending.
    pub phone_request_id: Option<String>,
    /// The raw response, kept for audit and replay.
    pub response: Value,
    /// `credits_consumed` of the call.
    pub credits: Credits,
    /// Per person. People of the batch left out are recorded `not_found` (never guessed).
    pub people: Vec<SyncPerson>,
}

fn first_claim() -> i32 {
    1
}

/// The outcome of [`Store::record_sync`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRecorded {
    /// Recorded; these jobs completed in the same transaction.
    Recorded {
        /// Jobs that completed.
        completed_jobs: Vec<Uuid>,
    },
    /// The batch already had its answer: nothing changed.
    AlreadyRecorded,
    /// The batch was failed earlier: nothing changed.
    BatchFailed,
}

impl Store {
    /// Records a batch's synchronous answer in one transaction: the batch becomes `submitted`
    /// with the raw response; each person becomes `not_found`, `awaiting_async` (parts expected)
    /// or `complete`, with its facts merged and copied to its duplicates; job counters, credits and
    /// calls; jobs left without open people complete (with their callback row).
    ///
    /// Credits: each job gets the credits attributed to its people plus a share of the rest of
    /// the call's total (total − attributed), split by its number of people in the batch, so
    /// the jobs' credits always add up to the call's.
    ///
    /// People of an erased job get their state and credits but no data, and the raw response is
    /// not kept when the batch holds any ([`crate::erase`]).
    ///
    /// Idempotent: a second call for the same batch changes nothing.
    pub async fn record_sync(&self, outcome: SyncOutcome) -> StoreResult<SyncRecorded> {
        let mut recorded = self.record_syncs(std::slice::from_ref(&outcome)).await?;
        recorded.pop().ok_or_else(|| StoreError::Corrupt(format!("no outcome for batch {}", outcome.batch_id)))
    }

    /// [`Store::record_sync`] for several answers, in order, in one transaction (one commit for
    /// the answers that arrived together): each ends as if recorded on its own; the job counters
    /// are written once, at the end, and the jobs the group completes are listed on its last
    /// `Recorded`. On an error nothing is recorded: the caller records them one at a time.
    pub async fn record_syncs(&self, outcomes: &[SyncOutcome]) -> StoreResult<Vec<SyncRecorded>> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        // First, before any row lock: the Apollo people whose phone Apollo skipped here, so that
        // a group merging one of their phones meanwhile is ordered with this answer.
        let skipped: Vec<&str> = outcomes
            .iter()
            .flat_map(|o| o.people.iter().filter(|p| p.phone_elsewhere))
            .filter_map(|p| p.apollo_id.as_deref().or(p.facts.apollo_id.as_deref()))
            .collect();
        crate::sql::lock_apollo_people(&txn, &skipped).await?;
        let mut tally = Tally::default();
        let mut recorded = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            recorded.push(record_in(&txn, &mut tally, outcome, now).await?);
        }
        let completed = tally.flush(&txn, now).await?;
        let answered = recorded.iter().filter(|r| matches!(r, SyncRecorded::Recorded { .. })).count();
        crate::calls::count_calls(&txn, now, answered as i64, 0).await?;
        if let Some(SyncRecorded::Recorded { completed_jobs }) =
            recorded.iter_mut().rev().find(|r| matches!(r, SyncRecorded::Recorded { .. }))
        {
            *completed_jobs = completed;
        }
        txn.commit().await?;
        Ok(recorded)
    }
}

/// [`Store::record_sync`] in the caller's transaction, its job changes added to `tally` (the
/// caller flushes it; `completed_jobs` is left empty).
async fn record_in(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    outcome: &SyncOutcome,
    now: DateTime<Utc>,
) -> StoreResult<SyncRecorded> {
    let Some(b) = by_key(txn, batch::Entity::find_by_id(outcome.batch_id).lock(LockType::Update)).await? else {
        return Err(StoreError::NotFound(format!("batch {}", outcome.batch_id)));
    };
    match b.state {
        BatchState::Submitted => return Ok(SyncRecorded::AlreadyRecorded),
        BatchState::Failed => return Ok(SyncRecorded::BatchFailed),
        BatchState::Queued | BatchState::Submitting | BatchState::RetryWait => {}
    }
    // People of jobs erased while the call was in flight: states and credits, no data, and
    // the raw response (which names them) is not kept.
    let erased = crate::erase::erased_jobs_in_batch(txn, b.id).await?;
    // Apollo's answer is kept whatever it holds: what the JSON column cannot hold (U+0000 on
    // PostgreSQL) is kept byte for byte beside a sanitized copy, so the write never fails.
    let (response, response_body) = match erased.is_empty() {
        false => (None, None),
        true if needs_sanitizing(&outcome.response) => {
            (Some(storable(outcome.response.clone())), Some(serde_json::to_vec(&outcome.response).unwrap_or_default()))
        }
        true => (Some(outcome.response.clone()), None),
    };
    batch::Entity::update_many()
        .filter(batch::Column::Id.eq(b.id))
        .col_expr(batch::Column::State, Expr::value(BatchState::Submitted))
        .col_expr(batch::Column::HttpStatus, Expr::value(outcome.http_status))
        .col_expr(batch::Column::RequestId, Expr::value(outcome.request_id))
        .col_expr(batch::Column::PhoneRequestId, Expr::value(storable_text(outcome.phone_request_id.clone())))
        .col_expr(batch::Column::Response, Expr::value(response))
        .col_expr(batch::Column::ResponseBody, Expr::value(response_body))
        .col_expr(batch::Column::AnsweredClaim, Expr::value(outcome.claim))
        .col_expr(batch::Column::SyncCreditsMicros, Expr::value(outcome.credits.micros()))
        .col_expr(batch::Column::CreditsMicros, Expr::col(batch::Column::CreditsMicros).add(outcome.credits.micros()))
        .col_expr(batch::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(batch::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(batch::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(batch::Column::SubmittedAt, Expr::value(now))
        .col_expr(batch::Column::UpdatedAt, Expr::value(now))
        .exec(txn)
        .await?;
    let people = lock_batch_primaries(txn, b.id).await?;
    let mut answers: HashMap<Uuid, &SyncPerson> = HashMap::with_capacity(outcome.people.len());
    for a in &outcome.people {
        if !people.iter().any(|p| p.id == a.person_id) {
            return Err(StoreError::Invalid(format!("person {} is not in batch {}", a.person_id, b.id)));
        }
        if answers.insert(a.person_id, a).is_some() {
            return Err(StoreError::Invalid(format!("person {} answered twice", a.person_id)));
        }
    }

    let mut per_job: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut attributed = 0i64;
    // Every answered person's row, written together below (one statement for the call).
    let mut changes: Vec<(&person::Model, person::Model)> = Vec::with_capacity(people.len());
    let mut elsewhere: Vec<(&person::Model, person::Model)> = Vec::new();
    for p in &people {
        if p.state != PersonState::Submitted {
            continue;
        }
        *per_job.entry(p.job_id).or_default() += 1;
        let mut new = p.clone();
        new.last_error = None;
        let erased_person = erased.contains(&p.job_id);
        let answer = answers.get(&p.id);
        let matched = answer.filter(|a| a.outcome == SyncMatch::Matched);
        if let Some(a) = matched
            && !erased_person
        {
            let mut record = Record::from_json(p.record.as_ref());
            record.merge_facts(&a.facts);
            record.merge_fields(&a.fields, "sync");
            new.apollo_id = a.apollo_id.clone().or_else(|| a.facts.apollo_id.clone()).or(new.apollo_id);
            new.record = Some(record.to_json());
        }
        apply_event(
            &mut new,
            Event::Answered(Answer {
                matched: matched.is_some(),
                expect_phone: matched.is_some_and(|a| a.expect_phone),
                expect_waterfall: matched.is_some_and(|a| a.expect_waterfall),
                phone_elsewhere: matched.is_some_and(|a| a.phone_elsewhere),
            }),
            now,
        )?;
        if answer.is_none() && !erased_person {
            new.last_error = Some("no answer for this person in the response".into());
        }
        if let Some(a) = answer {
            new.credits_micros += a.credits.micros();
            attributed += a.credits.micros();
            tally.credits(p.job_id, CreditKind::Sync, a.credits.micros());
        }
        if new.phone_elsewhere && !new.got_phone {
            elsewhere.push((p, new));
        } else {
            changes.push((p, new));
        }
    }
    update_people(txn, tally, &changes, now).await?;
    // A skipped phone reveal: the phone may already have come with an earlier request.
    let mut later = Vec::with_capacity(elsewhere.len());
    for (old, new) in elsewhere {
        let new = crate::deliveries::phone_from_elsewhere(txn, new, !erased.contains(&old.job_id), now).await?;
        later.push((old, new));
    }
    update_people(txn, tally, &later, now).await?;
    let weights: Vec<(Uuid, i64)> = per_job.into_iter().collect();
    for (job_id, share) in split_credits(outcome.credits.micros() - attributed, &weights) {
        tally.credits(job_id, CreditKind::Sync, share);
        tally.call(job_id);
    }
    if b.unknown_outcomes > 0 {
        // Earlier calls of this batch whose outcome was unknown cost what this one did.
        let by_job = people_per_job(txn, b.id).await?;
        let answered = batch::Model {
            state: BatchState::Submitted,
            credits_micros: b.credits_micros + outcome.credits.micros(),
            sync_credits_micros: outcome.credits.micros(),
            ..b.clone()
        };
        // Deliveries wait for the answer to be merged: none has proven a lost call yet.
        let amount = budget::batch_double_charge_of(&answered, by_job.iter().map(|(_, n)| n).sum(), 0);
        set_batch_double_charge(txn, tally, b.id, &by_job, b.double_charge_micros, amount.micros()).await?;
    }
    Ok(SyncRecorded::Recorded { completed_jobs: Vec::new() })
}
