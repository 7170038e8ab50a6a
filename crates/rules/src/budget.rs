//! Credit budgets (`max_credits` on a job): what one person can cost at worst, and how many more
//! people a claim may take so that what the job spent, plus the worst case of what is in flight,
//! plus the worst case of what it takes, stays within the budget.
//!
//! The bound: a job's credits never exceed its budget as long as Apollo charges each person no more
//! than [`worst_case`] (REFERENCE.md §6's figures, the top of each typical range). Calls whose
//! outcome was unknown and were retried may be charged twice by Apollo; they are counted apart in
//! `possible_double_charges`, not in this bound.

use apollo_client::{Credits, EnrichFlags, Flag};
use uuid::Uuid;

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
pub fn worst_case(flags: &EnrichFlags) -> Credits {
    flags.on().map(price).fold(SYNC_MATCH, |sum, c| sum + c)
}

/// What a call of `people` people under `flags` may have cost: the worst case of each, which a
/// call of unknown outcome is counted at until an answered copy of it shows its real cost.
pub fn double_charge_worst(flags: &EnrichFlags, people: i64) -> Credits {
    Credits(worst_case(flags).micros().saturating_mul(people))
}

/// A batch's calls of unknown outcome, as its row counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostCalls {
    /// How many.
    pub count: i32,
    /// How many of them a delivery proved ran: their answers' charge is booked since.
    pub proven: i32,
    /// What deliveries of them booked, those answers' charges included.
    pub booked: Credits,
}

/// The batch's answered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnsweredCall {
    /// Everything the batch booked: the answer, the parts delivered for it, and what the lost
    /// calls' deliveries booked.
    pub booked: Credits,
    /// What its answer charged.
    pub sync: Credits,
}

/// What a batch's lost calls may have cost that is not booked. Before the batch is answered, each
/// is counted at `worst`. Once it is, each at what the answered call cost (its answer and the
/// parts delivered for it), less what deliveries of the lost calls have booked since (they ran,
/// and what they cost is in the credits now); and never below the answer's charge for each lost
/// call no delivery has proven ran, whose answer is booked nowhere, whatever the others delivered
/// (Apollo may deliver a part for one call instead of another: a phone reveal it skipped in the
/// answered call).
pub fn batch_double_charge(lost: LostCalls, answered: Option<AnsweredCall>, worst: Credits) -> Credits {
    let count = i64::from(lost.count);
    let Some(a) = answered else {
        return Credits(count.saturating_mul(worst.micros()).saturating_sub(lost.booked.micros()).max(0));
    };
    let each = a.booked.micros() - lost.booked.micros();
    let estimate = count.saturating_mul(each).saturating_sub(lost.booked.micros());
    let unproven = i64::from((lost.count - lost.proven).max(0));
    Credits(estimate.max(unproven.saturating_mul(a.sync.micros())).max(0))
}

/// How many more people of a job a claim may take: each reserved at `worst` (per person), on top
/// of `in_flight` people already reserved at `worst` and the credits already `spent`.
pub fn affordable(budget: Credits, spent: Credits, in_flight: i64, worst: Credits) -> i64 {
    let w = worst.micros().max(1);
    let left = budget.micros() - spent.micros() - in_flight.saturating_mul(w);
    if left <= 0 { 0 } else { left / w }
}

/// What one of a client's jobs holds of its daily cap: what it spent once finished, else the
/// larger of what it spent and its budget (the budget bounds what it can still spend).
pub fn committed(spent: Credits, max_credits: Option<Credits>, finished: bool) -> Credits {
    match max_credits {
        Some(max) if !finished => spent.max(max),
        _ => spent,
    }
}

/// Splits `total` micro-credits across parts in proportion to their weights, exactly: floors,
/// then the remainder one micro at a time to the first parts (callers pass them in id order).
pub fn split_credits(total: i64, parts: &[(Uuid, i64)]) -> Vec<(Uuid, i64)> {
    let weight: i128 = parts.iter().map(|(_, w)| i128::from(*w)).sum();
    if weight == 0 || total == 0 {
        return parts.iter().map(|(id, _)| (*id, 0)).collect();
    }
    let mut shares: Vec<(Uuid, i64)> =
        parts.iter().map(|(id, w)| (*id, (i128::from(total) * i128::from(*w)).div_euclid(weight) as i64)).collect();
    let mut rest = total - shares.iter().map(|(_, s)| s).sum::<i64>();
    for s in shares.iter_mut() {
        if rest == 0 {
            break;
        }
        s.1 += 1;
        rest -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(bits: u8) -> EnrichFlags {
        EnrichFlags::from_bits(bits)
    }

    #[test]
    fn a_call_of_unknown_outcome_is_priced_at_worst_then_by_what_its_copies_show() {
        let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
        let worst = double_charge_worst(&phone, 10);
        assert_eq!(worst, Credits::whole(90));
        let c = Credits::whole;
        let lost = |count, proven, booked| LostCalls { count, proven, booked: c(booked) };
        let answered = |booked, sync| Some(AnsweredCall { booked: c(booked), sync: c(sync) });
        assert_eq!(batch_double_charge(lost(0, 0, 0), None, worst), c(0));
        assert_eq!(batch_double_charge(lost(2, 0, 0), None, worst), c(180), "two lost calls, not answered yet");
        // The retry answered 7 credits, then its phones came (16): each lost copy ran the same request.
        assert_eq!(batch_double_charge(lost(2, 0, 0), answered(7, 7), worst), c(14));
        assert_eq!(batch_double_charge(lost(2, 0, 0), answered(23, 7), worst), c(46));
        // One lost copy's phone delivery came too: it ran (sync 7 and phones 16 booked now).
        assert_eq!(
            batch_double_charge(lost(2, 1, 23), answered(46, 7), worst),
            c(23),
            "the other copy is still possible"
        );
        // Apollo skipped the answered call's phones and delivered the lost call's instead.
        assert_eq!(batch_double_charge(lost(1, 1, 23), answered(30, 7), worst), c(0), "never below zero");
        // Two lost copies: one delivered those phones, the other nothing. The other's answer (7)
        // is booked nowhere, whatever the first delivered.
        assert_eq!(batch_double_charge(lost(2, 1, 23), answered(30, 7), worst), c(7), "an unproven copy's answer");
    }

    #[test]
    fn worst_case_per_flag() {
        assert_eq!(worst_case(&EnrichFlags::default()), Credits::whole(1));
        let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
        assert_eq!(worst_case(&phone), Credits::whole(9));
        let all = EnrichFlags::of(apollo_client::Flag::ALL);
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

    #[test]
    fn credit_split_is_exact() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let c = Uuid::from_u128(3);
        let s = split_credits(1_000_001, &[(a, 1), (b, 1), (c, 1)]);
        assert_eq!(s, vec![(a, 333_334), (b, 333_334), (c, 333_333)]);
        let s = split_credits(10, &[(a, 9), (b, 1)]);
        assert_eq!(s, vec![(a, 9), (b, 1)]);
        let s = split_credits(-7, &[(a, 1), (b, 1)]);
        assert_eq!(s.iter().map(|x| x.1).sum::<i64>(), -7);
        assert_eq!(split_credits(5, &[(a, 0)]), vec![(a, 0)]);
    }
}
