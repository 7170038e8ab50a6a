//! The rules of a person's and a job's life, in one place: pure functions of (state, event) →
//! state. The store loads rows, asks these functions, and writes what they answer; nothing here
//! touches the database, so every rule is unit- and property-tested on its own.
//!
//! A person: `queued → submitted → awaiting_async → complete | partial`, or `not_found`,
//! `failed`, `cancelled`, `skipped_budget`, `suppressed` (`invalid` is decided at submission and never changes). An event that
//! does not apply to the current state changes nothing, so events may repeat and arrive late.

use std::time::{Duration, Instant};

use apollo_client::DeliveryKind;

use crate::{Counts, JobState, PersonState};

/// An asynchronous part a matched person may wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// The phone reveal webhook.
    Phone,
    /// The email/phone waterfall webhook.
    Waterfall,
}

impl Part {
    /// The part a delivery of `kind` carries.
    pub fn of(kind: DeliveryKind) -> Part {
        match kind {
            DeliveryKind::Phone => Part::Phone,
            DeliveryKind::Waterfall => Part::Waterfall,
        }
    }

    /// The stored name (`phone`, `waterfall`), as listed in `missing_parts`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Phone => DeliveryKind::Phone.as_str(),
            Part::Waterfall => DeliveryKind::Waterfall.as_str(),
        }
    }
}

/// What the rules need to know of a person (the lifecycle columns of its row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Life {
    /// The state column.
    pub state: PersonState,
    /// A phone part is expected.
    pub expect_phone: bool,
    /// A waterfall part is expected.
    pub expect_waterfall: bool,
    /// The phone part arrived.
    pub got_phone: bool,
    /// The waterfall part arrived.
    pub got_waterfall: bool,
    /// Apollo skipped the phone reveal for this request: an earlier request delivers it.
    pub phone_elsewhere: bool,
}

/// What Apollo's synchronous answer says about one person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// A person object came back.
    pub matched: bool,
    /// The phone reveal is `pending` for this request, or `skipped` (see `phone_elsewhere`).
    pub expect_phone: bool,
    /// Apollo accepted the waterfall.
    pub expect_waterfall: bool,
    /// The phone reveal was `skipped`: an earlier request is enriching this person.
    pub phone_elsewhere: bool,
}

/// Something that happens to a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Taken into a batch for an Apollo call.
    Claimed,
    /// The batch's synchronous answer was recorded.
    Answered(Answer),
    /// A part arrived (pushed, polled, or copied from an earlier request's delivery).
    PartArrived(Part),
    /// Apollo reported that a part will not come (`webhook_status: failed`).
    PartFailed(Part),
    /// The asynchronous deadline passed.
    Deadline,
    /// Apollo refused this person, or the batch's retries ran out.
    Failed,
    /// The job was cancelled (or erased) while the person was not in an Apollo call.
    Cancelled,
    /// The job's credit budget cannot cover this person's worst-case cost (nothing is in flight).
    OverBudget,
    /// Answered from an earlier lookup of the same person (the reuse window): never sent.
    Reused,
    /// An identifier of the person is on the do-not-enrich list, found while it was not in an
    /// Apollo call: never sent.
    Suppressed,
}

impl Life {
    /// A person as submitted: queued, expecting nothing yet.
    pub const QUEUED: Life = Life {
        state: PersonState::Queued,
        expect_phone: false,
        expect_waterfall: false,
        got_phone: false,
        got_waterfall: false,
        phone_elsewhere: false,
    };

    /// The parts expected and not (yet) arrived, in a fixed order.
    pub fn missing(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        if self.expect_phone && !self.got_phone {
            parts.push(Part::Phone);
        }
        if self.expect_waterfall && !self.got_waterfall {
            parts.push(Part::Waterfall);
        }
        parts
    }

    /// Whether the part is expected.
    pub fn expects(&self, part: Part) -> bool {
        match part {
            Part::Phone => self.expect_phone,
            Part::Waterfall => self.expect_waterfall,
        }
    }
}

/// The person after `event`. Events that do not apply leave it unchanged (idempotence).
pub fn step(life: Life, event: Event) -> Life {
    use PersonState as S;
    let mut next = life;
    match (life.state, event) {
        (S::Queued, Event::Claimed) => next.state = S::Submitted,
        (S::Submitted, Event::Answered(a)) if a.matched => {
            next.expect_phone = a.expect_phone;
            next.expect_waterfall = a.expect_waterfall;
            next.phone_elsewhere = a.expect_phone && a.phone_elsewhere;
            next.state = if next.missing().is_empty() { S::Complete } else { S::AwaitingAsync };
        }
        (S::Submitted, Event::Answered(_)) => {
            next = Life { state: S::NotFound, ..Life::QUEUED };
        }
        // A part counts only for a person that expects it, whenever it comes: a late part
        // completes a `partial` person, so the record ends the same in any order.
        (S::AwaitingAsync | S::Partial, Event::PartArrived(part)) if life.expects(part) => {
            match part {
                Part::Phone => next.got_phone = true,
                Part::Waterfall => next.got_waterfall = true,
            }
            if next.missing().is_empty() {
                next.state = S::Complete;
            }
        }
        (S::AwaitingAsync, Event::PartFailed(part)) if life.missing().contains(&part) => next.state = S::Partial,
        (S::AwaitingAsync, Event::Deadline) => next.state = S::Partial,
        (S::Submitted, Event::Failed) => next.state = S::Failed,
        (S::Queued | S::Submitted, Event::Cancelled) => next.state = S::Cancelled,
        // Only a person never sent: one in a call already has its cost reserved.
        (S::Queued, Event::OverBudget) => next.state = S::SkippedBudget,
        // The earlier record holds every part the job asks for ([`crate::reuse`]): nothing to wait for.
        (S::Queued, Event::Reused) => next = Life { state: S::Complete, ..Life::QUEUED },
        // Like a cancel: only a person not in a call (queued, or waiting in a batch for a retry).
        (S::Queued | S::Submitted, Event::Suppressed) => next.state = S::Suppressed,
        _ => {}
    }
    next
}

/// The final state of a job whose people are counted in `counts`, or `None` while any is open.
/// `cancelled` if the client cancelled, `failed` if every person that could be sent failed,
/// else `completed`.
pub fn job_outcome(counts: &Counts, total: i64, cancel_requested: bool) -> Option<JobState> {
    if counts.open() != 0 {
        return None;
    }
    Some(if cancel_requested {
        JobState::Cancelled
    } else if counts.failed > 0 && counts.failed + counts.invalid == total {
        JobState::Failed
    } else {
        JobState::Completed
    })
}

/// How many micro-credits a delivery adds: Apollo charges a part once per request, so a second
/// copy of the same request's part (pushed and also polled, or retried with other bytes) adds
/// nothing, while the same part of another request (a retried call Apollo also ran) is a new charge.
pub fn delivery_charge(reported_micros: i64, same_request_part_charged: bool) -> i64 {
    if same_request_part_charged { 0 } else { reported_micros.max(0) }
}

/// What to do when Apollo refuses a batch's request (400, 404, a 422 other than credits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Apollo refuses every call (a probe with a plain detail was refused too): pause dispatch.
    Pause,
    /// Several people: split the batch and send the halves, so only the refused detail fails.
    Split,
    /// One person, and Apollo accepts other calls: this person fails with Apollo's message.
    FailPerson,
}

/// The decision for a refused request of `size` people, given whether Apollo accepts other
/// calls right now (a recent success or a probe).
pub fn on_rejection(size: usize, apollo_accepts_others: bool) -> Rejection {
    if !apollo_accepts_others {
        Rejection::Pause
    } else if size > 1 {
        Rejection::Split
    } else {
        Rejection::FailPerson
    }
}

/// Whether a batch whose call Apollo just failed (5xx, timeout) is sent again: its `failures`
/// before this one, plus this one, stay under `max_attempts`. Leases that ran out because this
/// service died are not failures: restarts never use up the retries an Apollo outage gets (the
/// claim store's own backstop bounds attempts of every kind).
pub fn retry_after_failure(failures: i32, max_attempts: u32) -> bool {
    u32::try_from(failures).is_ok_and(|f| f.saturating_add(1) < max_attempts)
}

/// What the lease sweep knows of the database's reachability. An outage stops every renewal, so
/// afterwards every lease looks expired: live owners get one whole lease, counted from the first
/// probe that reached the database again, to renew theirs and record the answers they held
/// through the outage before anyone's call is sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// No outage seen, or the last one ended a lease or more ago.
    Steady,
    /// The last probe failed.
    Lost,
    /// Reached again since this instant, after an outage.
    Back(Instant),
}

impl Reach {
    /// The state after a probe at `now` that did or did not reach the database.
    pub fn after_probe(self, reached: bool, now: Instant, lease: Duration) -> Reach {
        match (self, reached) {
            (_, false) => Reach::Lost,
            (Reach::Lost, true) => Reach::Back(now),
            (Reach::Back(since), true) if now.saturating_duration_since(since) >= lease => Reach::Steady,
            (reach, true) => reach,
        }
    }

    /// Whether expired leases may be taken from their owners.
    pub fn may_release_leases(self) -> bool {
        self == Reach::Steady
    }
}

/// The longest wait between two attempts of a failed call, whatever the doubling reaches.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// How long a batch waits after its `failures`-th failed call (counting from 0): `base`, doubled
/// per failure before it, at most [`MAX_RETRY_BACKOFF`]. With the defaults (2 s, 10 attempts) a
/// batch rides out about 13 minutes of Apollo failing before its people fail.
pub fn retry_backoff(base: Duration, failures: i32) -> Duration {
    base.saturating_mul(1 << failures.clamp(0, 15)).min(MAX_RETRY_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PersonState as S;

    fn answered(expect_phone: bool, expect_waterfall: bool) -> Event {
        Event::Answered(Answer { matched: true, expect_phone, expect_waterfall, phone_elsewhere: false })
    }

    fn submitted() -> Life {
        step(Life::QUEUED, Event::Claimed)
    }

    #[test]
    fn parts_are_named_as_stored_and_listed_in_missing_parts() {
        assert_eq!((Part::Phone.as_str(), Part::Waterfall.as_str()), ("phone", "waterfall"));
        assert_eq!(Part::of(DeliveryKind::Phone), Part::Phone);
        assert_eq!(Part::of(DeliveryKind::Waterfall), Part::Waterfall);
    }

    #[test]
    fn a_match_without_parts_is_complete_and_with_parts_waits() {
        assert_eq!(submitted().state, S::Submitted);
        assert_eq!(step(submitted(), answered(false, false)).state, S::Complete);
        let waiting = step(submitted(), answered(true, true));
        assert_eq!(waiting.state, S::AwaitingAsync);
        assert_eq!(waiting.missing(), vec![Part::Phone, Part::Waterfall]);
        let one = step(waiting, Event::PartArrived(Part::Phone));
        assert_eq!((one.state, one.missing()), (S::AwaitingAsync, vec![Part::Waterfall]));
        assert_eq!(step(one, Event::PartArrived(Part::Waterfall)).state, S::Complete);
    }

    #[test]
    fn not_found_expects_nothing() {
        let nf = step(
            submitted(),
            Event::Answered(Answer {
                matched: false,
                expect_phone: true,
                expect_waterfall: true,
                phone_elsewhere: true,
            }),
        );
        assert_eq!(nf, Life { state: S::NotFound, ..Life::QUEUED });
        assert_eq!(step(nf, Event::PartArrived(Part::Phone)), nf, "a part for an unmatched person changes nothing");
    }

    #[test]
    fn a_skipped_phone_is_still_expected() {
        let a = Answer { matched: true, expect_phone: true, expect_waterfall: false, phone_elsewhere: true };
        let p = step(submitted(), Event::Answered(a));
        assert_eq!(p.state, S::AwaitingAsync, "never complete without the phone");
        assert!(p.phone_elsewhere);
        assert_eq!(step(p, Event::Deadline).state, S::Partial);
        assert_eq!(step(p, Event::PartArrived(Part::Phone)).state, S::Complete);
        let no_phone = Answer { expect_phone: false, ..a };
        assert!(!step(submitted(), Event::Answered(no_phone)).phone_elsewhere, "elsewhere only when expected");
    }

    #[test]
    fn parts_that_were_not_expected_change_nothing() {
        let p = step(submitted(), answered(true, false));
        assert_eq!(step(p, Event::PartArrived(Part::Waterfall)), p);
        assert_eq!(step(p, Event::PartFailed(Part::Waterfall)), p, "a failed part it never expected");
    }

    #[test]
    fn deadline_and_failed_parts_make_partial_and_late_parts_still_complete() {
        let p = step(submitted(), answered(true, true));
        let failed = step(p, Event::PartFailed(Part::Phone));
        assert_eq!(failed.state, S::Partial);
        assert_eq!(failed.missing(), vec![Part::Phone, Part::Waterfall]);
        let late = step(step(failed, Event::PartArrived(Part::Phone)), Event::PartArrived(Part::Waterfall));
        assert_eq!(late.state, S::Complete);
        assert_eq!(step(step(p, Event::Deadline), Event::Deadline).state, S::Partial);
        let complete = step(step(p, Event::PartArrived(Part::Phone)), Event::PartArrived(Part::Waterfall));
        assert_eq!(step(complete, Event::Deadline), complete, "the deadline never undoes a complete person");
        assert_eq!(step(complete, Event::PartFailed(Part::Phone)), complete);
    }

    #[test]
    fn failure_and_cancel_only_before_an_answer() {
        assert_eq!(step(submitted(), Event::Failed).state, S::Failed);
        assert_eq!(step(Life::QUEUED, Event::Failed).state, S::Queued, "a queued person was never sent");
        assert_eq!(step(Life::QUEUED, Event::Cancelled).state, S::Cancelled);
        assert_eq!(step(submitted(), Event::Cancelled).state, S::Cancelled);
        let p = step(submitted(), answered(true, false));
        assert_eq!(step(p, Event::Cancelled), p, "an answered person keeps its answer");
        assert_eq!(step(p, Event::Failed), p);
        let cancelled = step(Life::QUEUED, Event::Cancelled);
        assert_eq!(step(cancelled, Event::Claimed), cancelled, "a cancelled person is never claimed");
        let invalid = Life { state: S::Invalid, ..Life::QUEUED };
        for e in [Event::Claimed, Event::Failed, Event::Cancelled, Event::Deadline, answered(true, true)] {
            assert_eq!(step(invalid, e), invalid);
        }
    }

    #[test]
    fn only_a_queued_person_is_skipped_for_budget() {
        let skipped = step(Life::QUEUED, Event::OverBudget);
        assert_eq!(skipped.state, S::SkippedBudget);
        assert_eq!(step(submitted(), Event::OverBudget), submitted(), "a person in a call keeps going");
        assert_eq!(step(Life::QUEUED, Event::Reused).state, S::Complete);
        assert_eq!(step(submitted(), Event::Reused), submitted(), "only a person never sent is reused");
        let waiting = step(submitted(), answered(true, false));
        assert_eq!(step(waiting, Event::OverBudget), waiting);
        for e in [Event::Claimed, Event::Failed, Event::Cancelled, Event::Deadline, answered(true, true)] {
            assert_eq!(step(skipped, e), skipped, "{e:?} after skipped_budget");
        }
        let c = Counts { complete: 2, skipped_budget: 3, ..Counts::default() };
        assert_eq!(job_outcome(&c, 5, false), Some(JobState::Completed));
    }

    #[test]
    fn only_a_person_outside_a_call_is_suppressed_and_it_stays_so() {
        assert_eq!(step(Life::QUEUED, Event::Suppressed).state, S::Suppressed);
        // Waiting in a batch for a retry: not in a call, so it is not sent again.
        assert_eq!(step(submitted(), Event::Suppressed).state, S::Suppressed);
        let answered = step(submitted(), answered(true, true));
        assert_eq!(step(answered, Event::Suppressed), answered, "an answered person keeps its answer");
        let suppressed = step(Life::QUEUED, Event::Suppressed);
        for e in [Event::Claimed, Event::Reused, Event::OverBudget, Event::Cancelled, Event::Failed, Event::Deadline] {
            assert_eq!(step(suppressed, e), suppressed, "{e:?} after suppressed");
        }
        let c = Counts { suppressed: 4, ..Counts::default() };
        assert_eq!(c.open(), 0);
        assert_eq!(job_outcome(&c, 4, false), Some(JobState::Completed), "nobody to send is not a failure");
    }

    #[test]
    fn job_outcome_waits_for_every_person() {
        let mut c = Counts { complete: 3, awaiting_async: 1, ..Counts::default() };
        assert_eq!(job_outcome(&c, 4, false), None);
        c.awaiting_async = 0;
        c.partial = 1;
        assert_eq!(job_outcome(&c, 4, false), Some(JobState::Completed));
        assert_eq!(job_outcome(&c, 4, true), Some(JobState::Cancelled));
        let failed = Counts { failed: 2, invalid: 1, ..Counts::default() };
        assert_eq!(job_outcome(&failed, 3, false), Some(JobState::Failed));
        let all_invalid = Counts { invalid: 3, ..Counts::default() };
        assert_eq!(job_outcome(&all_invalid, 3, false), Some(JobState::Completed));
        let mixed = Counts { failed: 2, not_found: 1, ..Counts::default() };
        assert_eq!(job_outcome(&mixed, 3, false), Some(JobState::Completed));
    }

    #[test]
    fn a_request_part_is_charged_once() {
        assert_eq!(delivery_charge(8_000_000, false), 8_000_000);
        assert_eq!(delivery_charge(8_000_000, true), 0);
        assert_eq!(delivery_charge(-5, false), 0, "a negative report never refunds");
    }

    #[test]
    fn rejections_split_then_fail_one_or_pause() {
        assert_eq!(on_rejection(10, true), Rejection::Split);
        assert_eq!(on_rejection(2, true), Rejection::Split);
        assert_eq!(on_rejection(1, true), Rejection::FailPerson);
        assert_eq!(on_rejection(1, false), Rejection::Pause);
        assert_eq!(on_rejection(10, false), Rejection::Pause);
    }

    #[test]
    fn a_failed_call_is_retried_until_max_attempts_calls_failed() {
        // Six attempts allowed: the first five failures are retried, the sixth is final.
        assert!(retry_after_failure(0, 6));
        assert!(retry_after_failure(4, 6));
        assert!(!retry_after_failure(5, 6));
        assert!(!retry_after_failure(0, 1), "one attempt allowed: no retry");
        assert!(!retry_after_failure(-1, 6), "a corrupt count does not retry forever");
    }

    #[test]
    fn leases_are_released_only_a_lease_after_the_database_came_back() {
        let (lease, t0) = (Duration::from_secs(10), Instant::now());
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(Reach::Steady.may_release_leases());
        assert!(Reach::Steady.after_probe(true, at(0), lease).may_release_leases());
        let lost = Reach::Steady.after_probe(false, at(0), lease);
        assert_eq!(lost, Reach::Lost);
        assert!(!lost.may_release_leases());
        // The probe after the last failure waited out the rest of the outage and reached the
        // database 9 s later: the lease counts from then, not from the failure.
        let back = lost.after_probe(true, at(9_000), lease);
        assert_eq!(back, Reach::Back(at(9_000)));
        assert!(!back.may_release_leases());
        assert!(!back.after_probe(true, at(18_999), lease).may_release_leases());
        assert!(back.after_probe(true, at(19_000), lease).may_release_leases());
        // Lost again before the lease passed: the count starts over.
        let again = back.after_probe(false, at(15_000), lease).after_probe(true, at(16_000), lease);
        assert!(!again.after_probe(true, at(25_999), lease).may_release_leases());
        assert!(again.after_probe(true, at(26_000), lease).may_release_leases());
    }

    #[test]
    fn a_failed_calls_wait_doubles_up_to_five_minutes() {
        let base = Duration::from_secs(2);
        assert_eq!(retry_backoff(base, 0), Duration::from_secs(2));
        assert_eq!(retry_backoff(base, 3), Duration::from_secs(16));
        assert_eq!(retry_backoff(base, 7), Duration::from_secs(256));
        assert_eq!(retry_backoff(base, 8), MAX_RETRY_BACKOFF);
        assert_eq!(retry_backoff(base, 40), MAX_RETRY_BACKOFF);
        assert_eq!(retry_backoff(base, -3), base, "a corrupt count waits the base");
        // The default ten attempts: nine waits add up to about 13.5 minutes.
        let total: Duration = (0..9).map(|f| retry_backoff(base, f)).sum();
        assert_eq!(total, Duration::from_secs(810));
    }

    /// One batch's events, applied the way the store applies them: deliveries that come before
    /// the answer wait for it; a part is charged once per (request, part).
    #[derive(Clone, Copy, Debug)]
    enum BatchEvent {
        Sync,
        Delivery { claim: u8, part: Part, micros: i64 },
    }

    struct Model {
        people: Vec<Life>,
        answers: Vec<Answer>,
        answered: bool,
        pending: Vec<BatchEvent>,
        charged: std::collections::BTreeSet<(u8, Part)>,
        credits: i64,
        counts: Counts,
    }

    impl Model {
        fn new(answers: Vec<Answer>) -> Model {
            let mut counts = Counts::default();
            let people: Vec<Life> = answers.iter().map(|_| step(Life::QUEUED, Event::Claimed)).collect();
            counts.add(S::Submitted, people.len() as i64);
            Model {
                people,
                answers,
                answered: false,
                pending: Vec::new(),
                charged: Default::default(),
                credits: 0,
                counts,
            }
        }

        fn each(&mut self, event: impl Fn(usize) -> Event) {
            for i in 0..self.people.len() {
                let before = self.people[i];
                let after = step(before, event(i));
                self.counts.add(before.state, -1);
                self.counts.add(after.state, 1);
                self.people[i] = after;
            }
        }

        fn apply(&mut self, e: BatchEvent) {
            match e {
                BatchEvent::Sync if !self.answered => {
                    self.answered = true;
                    let answers = self.answers.clone();
                    self.each(|i| Event::Answered(answers[i]));
                    for held in std::mem::take(&mut self.pending) {
                        self.apply(held);
                    }
                }
                BatchEvent::Sync => {}
                BatchEvent::Delivery { .. } if !self.answered => self.pending.push(e),
                BatchEvent::Delivery { claim, part, micros } => {
                    let first = self.charged.insert((claim, part));
                    self.credits += delivery_charge(micros, !first);
                    self.each(|_| Event::PartArrived(part));
                }
            }
        }

        fn recount(&self) -> Counts {
            let mut c = Counts::default();
            for p in &self.people {
                c.add(p.state, 1);
            }
            c
        }
    }

    #[test]
    fn any_order_and_repetition_of_events_ends_the_same() {
        let mut rng = fastrand::Rng::with_seed(20261130);
        for round in 0..300 {
            let n = rng.usize(1..=10);
            let answers: Vec<Answer> = (0..n)
                .map(|_| Answer {
                    matched: rng.u8(..4) != 0,
                    expect_phone: rng.bool(),
                    expect_waterfall: rng.bool(),
                    phone_elsewhere: rng.u8(..4) == 0,
                })
                .collect();
            // The distinct deliveries of the batch: up to two requests (a retried call Apollo ran
            // twice), each with its parts and their charges.
            let mut distinct = vec![BatchEvent::Sync];
            let mut expected_credits = 0;
            for claim in 1..=rng.u8(1..=2) {
                for part in [Part::Phone, Part::Waterfall] {
                    if rng.bool() {
                        let micros = rng.i64(0..30_000_000);
                        expected_credits += micros;
                        distinct.push(BatchEvent::Delivery { claim, part, micros });
                    }
                }
            }
            let mut finals = None;
            for _ in 0..12 {
                // Every distinct event at least once, some repeated (duplicates, push and poll).
                let mut events = distinct.clone();
                for _ in 0..rng.usize(0..6) {
                    events.push(distinct[rng.usize(..distinct.len())]);
                }
                rng.shuffle(&mut events);
                let mut m = Model::new(answers.clone());
                for e in events {
                    m.apply(e);
                }
                assert_eq!(m.counts, m.recount(), "round {round}: counters equal a recount");
                assert_eq!(m.credits, expected_credits, "round {round}: each request's part charged once");
                for (p, a) in m.people.iter().zip(&answers) {
                    let arrived =
                        |part| distinct.iter().any(|e| matches!(e, BatchEvent::Delivery { part: q, .. } if *q == part));
                    let want = if !a.matched {
                        S::NotFound
                    } else if (a.expect_phone && !arrived(Part::Phone))
                        || (a.expect_waterfall && !arrived(Part::Waterfall))
                    {
                        S::AwaitingAsync
                    } else {
                        S::Complete
                    };
                    assert_eq!(p.state, want, "round {round}: {a:?}");
                }
                // The deadline after everything: only people still waiting become partial.
                let before = m.people.clone();
                m.each(|_| Event::Deadline);
                for (b, a) in before.iter().zip(&m.people) {
                    let want = if b.state == S::AwaitingAsync { S::Partial } else { b.state };
                    assert_eq!(a.state, want);
                }
                match &finals {
                    None => finals = Some(m.people.clone()),
                    Some(f) => assert_eq!(f, &m.people, "round {round}: the order of events does not matter"),
                }
            }
        }
    }
}
