//! Job counters, kept in the job row and changed only through a [`Tally`] flushed in the same
//! transaction as the person changes it counts, followed by the job completion check.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rules::budget::split_credits;
use rules::events::PersonEvents;
use rules::lifecycle;
use rules::{CallbackEvent, Counts, JobState, PersonState};
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::callbacks::{insert_job_event, record_job_updated};
use crate::entities::{batch, batch_person, job, person};
use crate::error::StoreResult;

/// The counters stored in a job row.
pub fn counts_of(j: &job::Model) -> Counts {
    Counts {
        queued: j.n_queued,
        submitted: j.n_submitted,
        awaiting_async: j.n_awaiting_async,
        complete: j.n_complete,
        partial: j.n_partial,
        not_found: j.n_not_found,
        invalid: j.n_invalid,
        failed: j.n_failed,
        cancelled: j.n_cancelled,
        skipped_budget: j.n_skipped_budget,
        suppressed: j.n_suppressed,
    }
}

/// The job column holding the counter of `state`.
pub(crate) fn column(state: PersonState) -> job::Column {
    match state {
        PersonState::Queued => job::Column::NQueued,
        PersonState::Submitted => job::Column::NSubmitted,
        PersonState::AwaitingAsync => job::Column::NAwaitingAsync,
        PersonState::Complete => job::Column::NComplete,
        PersonState::Partial => job::Column::NPartial,
        PersonState::NotFound => job::Column::NNotFound,
        PersonState::Invalid => job::Column::NInvalid,
        PersonState::Failed => job::Column::NFailed,
        PersonState::Cancelled => job::Column::NCancelled,
        PersonState::SkippedBudget => job::Column::NSkippedBudget,
        PersonState::Suppressed => job::Column::NSuppressed,
    }
}

/// What Apollo charged credits for (the job keeps a total per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CreditKind {
    /// A synchronous answer.
    Sync,
    /// A phone-reveal delivery.
    Phone,
    /// A waterfall delivery.
    Waterfall,
}

impl CreditKind {
    /// The kind of a delivery's charge.
    pub fn of(kind: apollo_client::DeliveryKind) -> CreditKind {
        match kind {
            apollo_client::DeliveryKind::Phone => CreditKind::Phone,
            apollo_client::DeliveryKind::Waterfall => CreditKind::Waterfall,
        }
    }
}

/// Changes to one job, accumulated during a transaction.
#[derive(Clone, Debug, Default)]
struct JobDelta {
    counts: Counts,
    credits_micros: i64,
    sync_micros: i64,
    phone_micros: i64,
    waterfall_micros: i64,
    reuse_hits: i64,
    saved_micros: i64,
    calls: i64,
    possible_double_charges: i64,
    possible_double_charge_micros: i64,
    claimed: bool,
    /// A person of the job changed (a merge, a state move), not only the job row.
    people_changed: bool,
    /// People who are final after this transaction, each with whether it was final before
    /// (the job's `person.completed` / `person.updated` outbox).
    finals: Vec<(Uuid, bool)>,
}

/// Everything a transaction changes on job rows. Created at the start of a write, fed by every
/// person transition, and flushed once before commit: the only way job counters change. Flushing
/// locks the job rows until the commit, so a transaction flushes last (readers of a job's counters
/// before then add [`Tally::pending_counts`] and [`Tally::pending_credits`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    jobs: BTreeMap<Uuid, JobDelta>,
}

impl Tally {
    /// `n` people of `job` moved from `from` to `to`.
    pub fn moved(&mut self, job: Uuid, from: PersonState, to: PersonState, n: i64) {
        let d = self.jobs.entry(job).or_default();
        d.people_changed |= n != 0;
        if from != to && n != 0 {
            d.counts.add(from, -n);
            d.counts.add(to, n);
        }
    }

    /// Person `person` of `job` moved from `from` to `to` (or changed in place, `from == to`):
    /// tallied, and noted for the job's person events when it is final now.
    pub fn moved_person(&mut self, job: Uuid, person: Uuid, from: PersonState, to: PersonState) {
        self.moved(job, from, to, 1);
        if to.is_final() {
            self.jobs.entry(job).or_default().finals.push((person, from.is_final()));
        }
    }

    /// Credits consumed for `job`, charged for `kind`.
    pub fn credits(&mut self, job: Uuid, kind: CreditKind, micros: i64) {
        let d = self.jobs.entry(job).or_default();
        d.credits_micros += micros;
        match kind {
            CreditKind::Sync => d.sync_micros += micros,
            CreditKind::Phone => d.phone_micros += micros,
            CreditKind::Waterfall => d.waterfall_micros += micros,
        }
    }

    /// A person of `job` answered from an earlier lookup that cost `saved_micros`.
    pub fn reused(&mut self, job: Uuid, saved_micros: i64) {
        let d = self.jobs.entry(job).or_default();
        d.reuse_hits += 1;
        d.saved_micros += saved_micros;
    }

    /// One Apollo call answered for `job`.
    pub fn call(&mut self, job: Uuid) {
        self.jobs.entry(job).or_default().calls += 1;
    }

    /// A call for `job` of unknown outcome (its lease expired, its answer was lost) that may
    /// have been charged a second time.
    pub fn possible_double_charge(&mut self, job: Uuid) {
        self.jobs.entry(job).or_default().possible_double_charges += 1;
    }

    /// What a batch's calls of unknown outcome may have cost went from `old` to `new`
    /// micro-credits: the change goes to its jobs, split by their people in it (`by_job`).
    pub fn reprice_double_charges(&mut self, by_job: &[(Uuid, i64)], old: i64, new: i64) {
        for (job, share) in split_credits(new - old, by_job) {
            self.jobs.entry(job).or_default().possible_double_charge_micros += share;
        }
    }

    /// A batch took people of `job`: fairness timestamp, and `queued` → `running`.
    pub fn claimed(&mut self, job: Uuid) {
        self.jobs.entry(job).or_default().claimed = true;
    }

    /// Make sure `job` gets the completion check even if nothing else changed.
    pub fn touch(&mut self, job: Uuid) {
        self.jobs.entry(job).or_default();
    }

    /// The counter changes of `job` not yet flushed.
    pub fn pending_counts(&self, job: Uuid) -> Counts {
        self.jobs.get(&job).map(|d| d.counts).unwrap_or_default()
    }

    /// The credits of `job` not yet flushed, in micro-credits.
    pub fn pending_credits(&self, job: Uuid) -> i64 {
        self.jobs.get(&job).map_or(0, |d| d.credits_micros)
    }

    /// Whether a batch took people of `job` in this transaction (its `last_claimed_at` is now).
    pub fn claimed_here(&self, job: Uuid) -> bool {
        self.jobs.get(&job).is_some_and(|d| d.claimed)
    }

    /// Applies the deltas (jobs in id order, the lock order) and completes every job that has no
    /// open people left. Returns the ids of jobs that completed.
    pub async fn flush<C: ConnectionTrait>(self, db: &C, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        let mut completed = Vec::new();
        for (job_id, d) in self.jobs {
            let mut update = job::Entity::update_many()
                .filter(job::Column::Id.eq(job_id))
                .col_expr(job::Column::UpdatedAt, Expr::value(now));
            for state in PersonState::ALL {
                let n = d.counts.get(*state);
                if n != 0 {
                    update = update.col_expr(column(*state), Expr::col(column(*state)).add(n));
                }
            }
            for (col, n) in [
                (job::Column::CreditsMicros, d.credits_micros),
                (job::Column::CreditsSyncMicros, d.sync_micros),
                (job::Column::CreditsPhoneMicros, d.phone_micros),
                (job::Column::CreditsWaterfallMicros, d.waterfall_micros),
                (job::Column::ReuseHits, d.reuse_hits),
                (job::Column::CreditsSavedMicros, d.saved_micros),
                (job::Column::Calls, d.calls),
                (job::Column::PossibleDoubleCharges, d.possible_double_charges),
                (job::Column::PossibleDoubleChargeMicros, d.possible_double_charge_micros),
            ] {
                if n != 0 {
                    update = update.col_expr(col, Expr::col(col).add(n));
                }
            }
            if d.claimed {
                // `queued` → `running` in the same statement.
                let running = CaseStatement::new()
                    .case(job::Column::State.eq(JobState::Queued), Expr::value(JobState::Running))
                    .finally(Expr::col(job::Column::State));
                update = update
                    .col_expr(job::Column::LastClaimedAt, Expr::value(now))
                    .col_expr(job::Column::State, running.into());
            }
            // The row comes back with the update (one round trip less while this hot row is
            // locked: every answer and merge of the job queues on it).
            let row = update.exec_with_returning(db).await?.into_iter().next();
            if let Some(j) = &row {
                let wanted = PersonEvents { completed: j.events_completed, updated: j.events_updated };
                crate::outbox::record(db, job_id, wanted, &d.finals, now).await?;
            }
            match finish_read(db, row, now).await? {
                Completion::CompletedNow => completed.push(job_id),
                // A finished job changed (e.g. a late part merged): a `job.updated` callback.
                Completion::CompletedBefore if d.people_changed => {
                    record_job_updated(db, job_id, now).await?;
                }
                _ => {}
            }
        }
        Ok(completed)
    }
}

/// What the completion check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// People are still queued or in flight.
    Open,
    /// This transaction completed the job.
    CompletedNow,
    /// The job was complete already.
    CompletedBefore,
}

/// Completes the job when nothing is queued or in flight: final state, `completed_at`, and the
/// `job.completed` callback event (at most one per job), all in the caller's transaction.
///
/// The final state is the lifecycle's [`lifecycle::job_outcome`].
pub(crate) async fn finish_if_done<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Completion> {
    let row = crate::sql::by_key(db, job::Entity::find_by_id(job_id)).await?;
    finish_read(db, row, now).await
}

/// [`finish_if_done`] on the job row as just read (`None`: no such job).
async fn finish_read<C: ConnectionTrait>(
    db: &C,
    row: Option<job::Model>,
    now: DateTime<Utc>,
) -> StoreResult<Completion> {
    let Some(j) = row else { return Ok(Completion::Open) };
    let job_id = j.id;
    if j.completed_at.is_some() {
        return Ok(Completion::CompletedBefore);
    }
    let Some(state) = lifecycle::job_outcome(&counts_of(&j), j.total, j.cancel_requested_at.is_some()) else {
        return Ok(Completion::Open);
    };
    let done = job::Entity::update_many()
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::CompletedAt.is_null())
        .col_expr(job::Column::State, Expr::value(state))
        .col_expr(job::Column::PauseReason, Expr::value(Option::<String>::None))
        .col_expr(job::Column::CompletedAt, Expr::value(now))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .exec(db)
        .await?;
    if done.rows_affected == 0 {
        return Ok(Completion::CompletedBefore);
    }
    insert_job_event(db, &j, CallbackEvent::JobCompleted, now).await?;
    Ok(Completion::CompletedNow)
}

/// Counts a job's people by state with a scan (for audits and tests; the API reads the row).
pub(crate) async fn recount<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<Counts> {
    let rows: Vec<(PersonState, i64)> = person::Entity::find()
        .select_only()
        .column(person::Column::State)
        .column_as(person::Column::Id.count(), "n")
        .filter(person::Column::JobId.eq(job_id))
        .group_by(person::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let mut counts = Counts::default();
    for (state, n) in rows {
        counts.add(state, n);
    }
    Ok(counts)
}

/// The jobs with people in a batch and how many each (its membership rows), in job id order.
pub(crate) async fn people_per_job<C: ConnectionTrait>(db: &C, batch_id: Uuid) -> StoreResult<Vec<(Uuid, i64)>> {
    Ok(batch_person::Entity::find()
        .select_only()
        .column(batch_person::Column::JobId)
        .column_as(batch_person::Column::PersonId.count(), "people")
        .filter(batch_person::Column::BatchId.eq(batch_id))
        .group_by(batch_person::Column::JobId)
        .order_by_asc(batch_person::Column::JobId)
        .into_tuple()
        .all(db)
        .await?)
}

/// Sets what batch `batch_id`'s calls of unknown outcome may have cost to `new` (it was `old`):
/// the change goes to its jobs' amounts, split by their people in the batch.
pub(crate) async fn set_batch_double_charge<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    batch_id: Uuid,
    by_job: &[(Uuid, i64)],
    old: i64,
    new: i64,
) -> StoreResult<()> {
    if new == old {
        return Ok(());
    }
    tally.reprice_double_charges(by_job, old, new);
    batch::Entity::update_many()
        .filter(batch::Column::Id.eq(batch_id))
        .col_expr(batch::Column::DoubleChargeMicros, Expr::value(new))
        .exec(db)
        .await?;
    Ok(())
}
