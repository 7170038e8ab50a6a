//! Credit budgets (`max_credits` on a job): what one person can cost at worst, and how many more
//! people a claim may take so that what the job spent, plus the worst case of what is in flight,
//! plus the worst case of what it takes, stays within the budget.
//!
//! The bound: a job's credits never exceed its budget as long as Apollo charges each person no more
//! than [`worst_case`] (REFERENCE.md §6's figures, the top of each typical range). Calls whose
//! outcome was unknown and were retried may be charged twice by Apollo; they are counted apart in
//! `possible_double_charges`, not in this bound.

use apollo_client::{Credits, Flag};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::counters::{Counts, Tally};
use crate::entities::{batch, job, person};
use crate::lifecycle::Event;
use crate::people::move_primaries;
use crate::{JobOptions, StoreResult};

/// The synchronous match: 1 credit for demographics or email (charged only when matched).
pub const SYNC_MATCH: Credits = Credits::whole(1);
/// `reveal_personal_emails`: "may cost credits"; counted as one more email.
pub const PERSONAL_EMAILS: Credits = Credits::whole(1);
/// `reveal_phone_number`: 8 credits when a mobile is returned.
pub const PHONE_REVEAL: Credits = Credits::whole(8);
/// `run_waterfall_email`: typically 1–4 credits; the top of that range.
pub const WATERFALL_EMAIL: Credits = Credits::whole(4);
/// `run_waterfall_phone`: typically 8–25 credits; the top of that range.
pub const WATERFALL_PHONE: Credits = Credits::whole(25);

/// The most `flag` can add to what one person costs.
pub fn price(flag: Flag) -> Credits {
    match flag {
        Flag::RevealPersonalEmails => PERSONAL_EMAILS,
        Flag::RevealPhoneNumber => PHONE_REVEAL,
        Flag::RunWaterfallEmail => WATERFALL_EMAIL,
        Flag::RunWaterfallPhone => WATERFALL_PHONE,
    }
}

/// The most one person can cost under `flags`: the sync match plus every part asked for.
pub fn worst_case(flags: &JobOptions) -> Credits {
    flags.on().map(price).fold(SYNC_MATCH, |sum, c| sum + c)
}

/// What a call of `people` people under `flags` may have cost: the worst case of each, which a
/// call of unknown outcome is counted at until an answered copy of it shows its real cost.
pub fn double_charge_worst(flags: &JobOptions, people: i64) -> Credits {
    Credits(worst_case(flags).micros().saturating_mul(people))
}

/// What a batch's calls of unknown outcome (`unknown` of them) may have cost that is not booked.
/// Before the batch is answered, each is counted at `worst`; once it is, each at what the answered
/// call cost (`booked` less `lost`: its answer and the parts delivered for it), less what
/// deliveries of the lost calls have booked since (`lost`: they ran, and what they cost is in the
/// credits now). Never below zero: Apollo may deliver a part for one of the calls instead of
/// another (a phone reveal it skipped in the answered call).
pub fn batch_double_charge(unknown: i32, answered: bool, worst: Credits, booked: Credits, lost: Credits) -> Credits {
    let each = if answered { booked.micros() - lost.micros() } else { worst.micros() };
    Credits(i64::from(unknown).saturating_mul(each).saturating_sub(lost.micros()).max(0))
}

/// [`batch_double_charge`] of batch `b` as it stands, `people` people in it.
pub(crate) fn batch_double_charge_of(b: &batch::Model, people: i64) -> Credits {
    let worst = double_charge_worst(&crate::jobs::options_of(b.flags), people);
    let answered = b.state == crate::BatchState::Submitted;
    batch_double_charge(b.unknown_outcomes, answered, worst, Credits(b.credits_micros), Credits(b.lost_credits_micros))
}

/// How many more people of a job a claim may take: each reserved at `worst` (per person), on top
/// of `in_flight` people already reserved at `worst` and the credits already `spent`.
pub fn affordable(budget: Credits, spent: Credits, in_flight: i64, worst: Credits) -> i64 {
    let w = worst.micros().max(1);
    let left = budget.micros() - spent.micros() - in_flight.saturating_mul(w);
    if left <= 0 { 0 } else { left / w }
}

/// What a claim may take from a budgeted job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Up to this many people.
    Take(usize),
    /// None now: calls in flight may leave room once answered (or another claimer holds the job).
    Wait,
}

/// The room a budgeted job leaves, read under its row lock (PostgreSQL: a job another claimer is
/// looking at is skipped, so two claimers never spend the same room). When nothing is in flight
/// and not even one person fits, its queued people end `skipped_budget` and the job says why.
pub(crate) async fn room<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Room> {
    let Some(j) = crate::sql::by_key(
        db,
        job::Entity::find_by_id(job_id).lock_with_behavior(LockType::Update, LockBehavior::SkipLocked),
    )
    .await?
    else {
        return Ok(Room::Wait);
    };
    let Some(max) = j.max_credits_micros.map(Credits) else { return Ok(Room::Take(usize::MAX)) };
    let worst = worst_case(&crate::jobs::options_of(j.flags));
    // What this transaction did to the job already counts (its tally is flushed at the end).
    let in_flight = Counts::of_job(&j).in_flight() + tally.pending_counts(job_id).in_flight();
    let spent = Credits(j.credits_micros + tally.pending_credits(job_id));
    let n = affordable(max, spent, in_flight, worst);
    if n > 0 {
        return Ok(Room::Take(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    if in_flight > 0 {
        return Ok(Room::Wait);
    }
    let reason = format!(
        "budget reached: max_credits {max}, spent {spent}; one more person could cost {worst} \
         ({} people left unsent)",
        j.n_queued + tally.pending_counts(job_id).queued
    );
    let queued = person::Entity::find()
        .filter(person::Column::JobId.eq(job_id))
        .filter(person::Column::State.eq(crate::PersonState::Queued))
        .filter(person::Column::DupOf.is_null())
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?;
    let refs: Vec<&person::Model> = queued.iter().collect();
    move_primaries(db, tally, &refs, Event::OverBudget, None, Some(&reason), now).await?;
    job::Entity::update_many()
        .filter(job::Column::Id.eq(job_id))
        .col_expr(job::Column::EndReason, Expr::value(reason))
        .exec(db)
        .await?;
    tally.touch(job_id);
    Ok(Room::Wait)
}

/// What one of a client's jobs holds of its daily cap: what it spent once finished, else the
/// larger of what it spent and its budget (the budget bounds what it can still spend).
pub fn committed(spent: Credits, max_credits: Option<Credits>, finished: bool) -> Credits {
    match max_credits {
        Some(max) if !finished => spent.max(max),
        _ => spent,
    }
}

/// Room left today under a client's daily cap (`ENRICHD_CLIENT_DAILY_CREDITS`), in the create
/// transaction: the cap less what the client's jobs created since `day_start` hold. On
/// PostgreSQL a transaction-scoped advisory lock on the client serializes its submissions, so two
/// jobs never both take the same room. Every job created under a cap gets a budget, so the jobs
/// of one day together never pass it (at [`worst_case`] charges).
pub(crate) async fn day_room<C: ConnectionTrait>(
    db: &C,
    client: &str,
    cap: Credits,
    day_start: DateTime<Utc>,
) -> StoreResult<Credits> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("enrichd-daily-cap:{client}").into()],
        ))
        .await?;
    }
    let rows: Vec<(i64, Option<i64>, Option<DateTime<Utc>>)> = job::Entity::find()
        .select_only()
        .column(job::Column::CreditsMicros)
        .column(job::Column::MaxCreditsMicros)
        .column(job::Column::CompletedAt)
        .filter(job::Column::Client.eq(client))
        .filter(job::Column::CreatedAt.gte(day_start))
        .into_tuple()
        .all(db)
        .await?;
    let held = rows.into_iter().fold(Credits::ZERO, |sum, (spent, max, done)| {
        sum + committed(Credits(spent), max.map(Credits), done.is_some())
    });
    Ok(Credits(cap.micros() - held.micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(bits: u8) -> JobOptions {
        JobOptions::from_bits(bits)
    }

    #[test]
    fn a_call_of_unknown_outcome_is_priced_at_worst_then_by_what_its_copies_show() {
        let phone = JobOptions { reveal_phone_number: true, ..JobOptions::default() };
        let worst = double_charge_worst(&phone, 10);
        assert_eq!(worst, Credits::whole(90));
        let c = Credits::whole;
        assert_eq!(batch_double_charge(0, false, worst, c(0), c(0)), c(0));
        assert_eq!(batch_double_charge(2, false, worst, c(0), c(0)), c(180), "two lost calls, not answered yet");
        // The retry answered 7 credits, then its phones came (16): each lost copy ran the same request.
        assert_eq!(batch_double_charge(2, true, worst, c(7), c(0)), c(14));
        assert_eq!(batch_double_charge(2, true, worst, c(23), c(0)), c(46));
        // One lost copy's phone delivery came too: it ran (sync 7 and phones 16 booked now).
        assert_eq!(batch_double_charge(2, true, worst, c(46), c(23)), c(23), "the other copy is still possible");
        // Apollo skipped the answered call's phones and delivered the lost call's instead.
        assert_eq!(batch_double_charge(1, true, worst, c(30), c(23)), c(0), "never below zero");
    }

    #[test]
    fn worst_case_per_flag() {
        assert_eq!(worst_case(&JobOptions::default()), Credits::whole(1));
        let phone = JobOptions { reveal_phone_number: true, ..JobOptions::default() };
        assert_eq!(worst_case(&phone), Credits::whole(9));
        let all = JobOptions::of(apollo_client::Flag::ALL);
        assert_eq!(worst_case(&all), Credits::whole(1 + 1 + 8 + 4 + 25));
    }

    #[test]
    fn a_running_job_holds_its_budget_and_a_finished_one_what_it_spent() {
        let c = Credits::whole;
        assert_eq!(committed(c(3), Some(c(50)), false), c(50));
        assert_eq!(committed(c(3), Some(c(50)), true), c(3));
        assert_eq!(committed(c(60), Some(c(50)), false), c(60), "a double charge past the budget counts");
        assert_eq!(committed(c(7), None, false), c(7));
    }

    #[test]
    fn affordable_counts_whole_people() {
        let w = Credits::whole(9);
        assert_eq!(affordable(Credits::whole(90), Credits::ZERO, 0, w), 10);
        assert_eq!(affordable(Credits::whole(89), Credits::ZERO, 0, w), 9);
        assert_eq!(affordable(Credits::whole(90), Credits::whole(1), 9, w), 0);
        assert_eq!(affordable(Credits::whole(90), Credits::whole(100), 0, w), 0, "overspent: nothing");
        assert_eq!(affordable(Credits::ZERO, Credits::ZERO, 0, w), 0);
    }

    /// A job of random size, flags and budget, dispatched in claims of up to ten through
    /// [`affordable`], with calls finishing in random order and each person charged a random
    /// amount up to [`worst_case`] (sync part at the answer, the rest later): the credits never
    /// pass the budget, and people are skipped only when not even one more fits.
    #[test]
    fn spending_never_passes_the_budget() {
        let mut rng = fastrand::Rng::with_seed(13);
        for round in 0..2_000 {
            let f = flags(rng.u8(0..16));
            let worst = worst_case(&f);
            let people = rng.i64(1..60);
            let budget = Credits(rng.i64(0..=people * worst.micros() + 3_000_000));
            let mut queued = people;
            let mut spent = Credits::ZERO;
            // In flight: the charge each person will still make.
            let mut flight: Vec<i64> = Vec::new();
            let mut skipped = 0;
            loop {
                if queued > 0 {
                    let n = affordable(budget, spent, flight.len() as i64, worst).min(10).min(queued);
                    if n > 0 {
                        queued -= n;
                        for _ in 0..n {
                            flight.push(rng.i64(0..=worst.micros()));
                        }
                    } else if flight.is_empty() {
                        assert!(budget.micros() - spent.micros() < worst.micros(), "round {round}: skipped with room");
                        skipped = queued;
                        queued = 0;
                    }
                }
                if flight.is_empty() && queued == 0 {
                    break;
                }
                // Some in-flight charges land, part or whole, in random order.
                for _ in 0..rng.usize(0..=flight.len()) {
                    let i = rng.usize(..flight.len());
                    let part = rng.i64(0..=flight[i]);
                    spent += Credits(part);
                    flight[i] -= part;
                    if flight[i] == 0 || rng.bool() {
                        spent += Credits(flight.swap_remove(i));
                    }
                }
                assert!(spent <= budget, "round {round}: spent {spent} over budget {budget} ({f:?})");
            }
            assert!(spent <= budget, "round {round}");
            if skipped > 0 {
                assert!(budget.micros() - spent.micros() < worst.micros(), "round {round}: skipped with room left");
            }
        }
    }
}
