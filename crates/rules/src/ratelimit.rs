//! The rate-limit arithmetic of the dispatcher: minute, hour and day windows at once, from
//! configuration, corrected by what Apollo's headers say. Pure: the caller passes the clock.
//!
//! Each window keeps a log of our own call times and allows a call while fewer than `limit` fall in
//! the last window length plus a margin. Apollo counts a call somewhere between our sending it and
//! its answer, so the margin is measured from recent send-to-answer times
//! ([`crate::window::measured_margin`]); with it, no span of Apollo's window length holds more
//! than `limit` calls as Apollo counts them, whether its limit is a fixed window (wherever it
//! starts), a sliding window or a token bucket refilled at the same rate. A window's whole
//! allowance is usable at once, and the full rate is sustained less the margin.
//!
//! Headers only ever hold calls back (a lower stated limit, a window said to be used up): none
//! can make a call go earlier than the log allows, so a wrong or stale reading cannot cause 429s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::window::{Allowance, AnswerTimes, window_allowance};
use apollo_client::{RateLimit, Window, WindowLimit};
use chrono::{DateTime, TimeDelta, Utc};

/// One window's state.
#[derive(Debug, Clone)]
struct WindowState {
    /// Apollo's window length.
    period: Duration,
    configured: Option<u32>,
    /// The limit Apollo's headers last stated, when they stated one.
    learned: Option<u32>,
    /// Our calls, oldest first, kept two spans (room for a margin grown since).
    log: VecDeque<Instant>,
    /// No call before this instant (Apollo said none are left in this window).
    closed_until: Option<Instant>,
}

impl WindowState {
    fn limit(&self) -> Option<u32> {
        match (self.configured, self.learned) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        }
    }

    fn prune(&mut self, now: Instant, span: Duration) {
        while self.log.front().is_some_and(|t| now.saturating_duration_since(*t) >= span * 2) {
            self.log.pop_front();
        }
    }

    /// When the next call may go, or `None` for now: when the sliding log has room.
    fn next_slot(&self, now: Instant, span: Duration) -> Option<Instant> {
        let closed = self.closed_until.filter(|t| *t > now);
        let by_limit = self.limit().and_then(|limit| self.sliding_slot(now, limit, span));
        match (closed, by_limit) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn sliding_slot(&self, now: Instant, limit: u32, span: Duration) -> Option<Instant> {
        let in_window = self.log.iter().filter(|t| now.saturating_duration_since(**t) < span).count();
        if in_window < limit as usize {
            return None;
        }
        // The call that frees a slot is the one `limit` places from the newest. With a limit
        // of 0 (a 429's headers) that time may be past: then one call may probe again, rather
        // than the dispatch loop spinning on a slot in the past.
        let idx = self.log.len().checked_sub(limit.max(1) as usize)?;
        Some(self.log[idx] + span).filter(|t| *t > now)
    }

    fn observe(&mut self, answered: Instant, w: &Window, span: Duration) {
        match w.limit {
            WindowLimit::Max(n) => self.learned = Some(u32::try_from(n).unwrap_or(u32::MAX)),
            WindowLimit::Unlimited => self.learned = None,
            WindowLimit::Unknown => {}
        }
        let ours = self.log.iter().filter(|t| answered.saturating_duration_since(**t) < span).count();
        // None left though our own calls leave room: another client uses the key. (When our
        // calls fill the window, the limit already holds them back.)
        if w.left == Some(0) && self.limit().is_none_or(|l| ours < l as usize) {
            // Closed until our own oldest call in the window ages out, which is never later than
            // Apollo's reset.
            let oldest = self.log.iter().find(|t| answered.saturating_duration_since(**t) < span);
            let until = oldest.map(|t| *t + span).unwrap_or(answered + span);
            self.closed_until = Some(self.closed_until.map_or(until, |c| c.max(until)));
        }
    }
}

/// The dispatcher's limiter for one Apollo key.
#[derive(Debug, Clone)]
pub struct Limiter {
    minute: Duration,
    windows: [WindowState; 3],
    answers: AnswerTimes,
    blocked_until: Option<Instant>,
    rate_limited: u64,
}

/// Configured limits per window; `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls per minute.
    pub per_minute: Option<u32>,
    /// Calls per hour.
    pub per_hour: Option<u32>,
    /// Calls per day.
    pub per_day: Option<u32>,
}

impl Limiter {
    /// A limiter whose "minute" lasts `minute` (60 s in production, less in tests and benchmarks).
    pub fn new(limits: Limits, minute: Duration) -> Limiter {
        let w = |period: Duration, configured| WindowState {
            period,
            configured,
            learned: None,
            log: VecDeque::new(),
            closed_until: None,
        };
        Limiter {
            minute,
            windows: [
                w(minute, limits.per_minute),
                w(minute * 60, limits.per_hour),
                w(minute * 60 * 24, limits.per_day),
            ],
            answers: AnswerTimes::default(),
            blocked_until: None,
            rate_limited: 0,
        }
    }

    /// The margin each window adds to Apollo's length now, measured from recent answers.
    pub fn margin(&self) -> Duration {
        self.answers.margin(self.minute)
    }

    /// When the next call may go; `None` means now.
    pub fn next_slot(&self, now: Instant) -> Option<Instant> {
        let margin = self.margin();
        let blocked = self.blocked_until.filter(|t| *t > now);
        self.windows.iter().filter_map(|w| w.next_slot(now, w.period + margin)).chain(blocked).max()
    }

    /// Takes a slot if one is free now (recording the call); otherwise says when to come back.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        let margin = self.margin();
        for w in &mut self.windows {
            w.prune(now, w.period + margin);
        }
        if let Some(at) = self.next_slot(now) {
            return Err(at);
        }
        for w in &mut self.windows {
            w.log.push_back(now);
        }
        self.answers.admit(now);
        Ok(())
    }

    /// How many of up to `max` calls could go together now: counted by taking their slots and
    /// giving them back, so the count follows [`Limiter::try_acquire`]'s rules exactly.
    pub fn free_slots(&mut self, now: Instant, max: usize) -> usize {
        let free = (0..max).take_while(|_| self.try_acquire(now).is_ok()).count();
        for w in &mut self.windows {
            w.log.truncate(w.log.len() - free);
        }
        self.answers.give_back(free);
        free
    }

    /// Learns from the answer to a call sent at `sent` and answered at `answered`: its time from
    /// admission (the margin) and its rate-limit headers.
    pub fn observe(&mut self, sent: Instant, answered: Instant, headers: &RateLimit) {
        self.answers.record(sent, answered);
        let margin = self.margin();
        for (w, stated) in self.windows.iter_mut().zip(headers.windows()) {
            let span = w.period + margin;
            w.observe(answered, stated, span);
        }
    }

    /// A 429: nothing goes before `retry_after` (a minute's length when Apollo gave none).
    pub fn on_rate_limited(&mut self, sent: Instant, answered: Instant, headers: &RateLimit) {
        self.rate_limited += 1;
        self.observe(sent, answered, headers);
        let wait = headers.retry_after.unwrap_or(self.minute + self.margin());
        let until = answered + wait;
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// How many 429s this limiter has seen.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited
    }

    /// The allowance at `now` for the system page: per window the limits and the calls of the
    /// log still inside it (the same sliding windows [`Limiter::try_acquire`] decides with), and
    /// until when no call may go, as the wall-clock instant `wall_now` + the wait.
    pub fn allowance(&self, now: Instant, wall_now: DateTime<Utc>) -> Allowance {
        let margin = self.margin();
        let windows = self.windows.each_ref().map(|w| {
            let span = w.period + margin;
            let used = w.log.iter().filter(|t| now.saturating_duration_since(**t) < span).count() as u64;
            window_allowance(span, w.configured, w.learned.map(i64::from), used)
        });
        let blocked = self.windows.iter().filter_map(|w| w.closed_until).chain(self.blocked_until).max();
        let blocked_until =
            blocked.filter(|t| *t > now).map(|t| wall_now + TimeDelta::from_std(t - now).unwrap_or(TimeDelta::MAX));
        Allowance { windows, blocked_until, rate_limited: i64::try_from(self.rate_limited).unwrap_or(i64::MAX), margin }
    }

    /// The limits in force now (configured, tightened by headers).
    pub fn effective(&self) -> Limits {
        Limits {
            per_minute: self.windows[0].limit(),
            per_hour: self.windows[1].limit(),
            per_day: self.windows[2].limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_millis(1000);

    /// A limiter whose answers so far took 5 ms: a margin of 10 ms (5, and 5).
    fn primed(limits: Limits) -> Limiter {
        let mut l = Limiter::new(limits, MINUTE);
        let t = Instant::now();
        l.observe(t, t + Duration::from_millis(5), &RateLimit::default());
        assert_eq!(l.margin(), Duration::from_millis(10));
        l
    }

    fn limiter(per_minute: u32) -> Limiter {
        primed(Limits { per_minute: Some(per_minute), per_hour: None, per_day: None })
    }

    fn unlimited() -> Limiter {
        primed(Limits { per_minute: None, per_hour: None, per_day: None })
    }

    #[test]
    fn never_more_than_the_limit_in_any_window_and_full_rate_sustained() {
        let t0 = Instant::now();
        let mut l = limiter(5);
        let mut sent = Vec::new();
        // Ask every millisecond for ten simulated minutes.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if l.try_acquire(now).is_ok() {
                sent.push(ms);
            }
        }
        for (i, &start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&t| t < start + 1000).count();
            assert!(in_window <= 5, "{in_window} calls in the minute from {start} ms");
        }
        // 10 windows of 1 s with a 10 ms margin each: at least 49 of the 50 allowed.
        assert!(sent.len() >= 49, "only {} calls sent", sent.len());
    }

    #[test]
    fn next_slot_is_when_the_oldest_call_ages_out() {
        let t0 = Instant::now();
        let mut l = limiter(2);
        l.try_acquire(t0).unwrap();
        l.try_acquire(t0 + Duration::from_millis(100)).unwrap();
        let at = l.try_acquire(t0 + Duration::from_millis(200)).unwrap_err();
        assert_eq!(at, t0 + Duration::from_millis(1010));
        assert!(l.try_acquire(at).is_ok());
    }

    #[test]
    fn the_margin_follows_the_answers() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Limits { per_minute: Some(1), per_hour: None, per_day: None }, MINUTE);
        // No answer yet: a twentieth of a minute.
        l.try_acquire(t0).unwrap();
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_millis(1050)));
        // An answer that took 60 ms (Apollo counted the call up to then): a margin of 65 ms.
        l.observe(t0, t0 + Duration::from_millis(60), &RateLimit::default());
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_millis(1065)));
        // Never over a tenth of a minute.
        l.observe(t0, t0 + Duration::from_millis(900), &RateLimit::default());
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_millis(1100)));
    }

    #[test]
    fn free_slots_counts_without_taking() {
        let t0 = Instant::now();
        let mut l = primed(Limits { per_minute: Some(4), per_hour: None, per_day: Some(3) });
        l.try_acquire(t0).unwrap();
        let now = t0 + Duration::from_millis(100);
        // The day's limit is the tighter one; and asking for fewer gives fewer.
        assert_eq!(l.free_slots(now, 10), 2);
        assert_eq!(l.free_slots(now, 1), 1);
        // Nothing was taken: both slots are still there, then none.
        assert!(l.try_acquire(now).is_ok() && l.try_acquire(now).is_ok());
        assert!(l.try_acquire(now).is_err());
        assert_eq!(l.free_slots(now, 10), 0);
    }

    #[test]
    fn the_allowance_counts_the_calls_inside_each_window() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut l = primed(Limits { per_minute: Some(3), per_hour: None, per_day: Some(100) });
        l.try_acquire(t0).unwrap();
        l.try_acquire(t0 + Duration::from_millis(500)).unwrap();
        // Past the minute (1 s and its 10 ms margin) the first call has left it, not the day.
        let a = l.allowance(t0 + Duration::from_millis(1015), wall);
        assert_eq!((a.windows[0].used, a.windows[0].left), (1, Some(2)));
        assert_eq!((a.windows[1].used, a.windows[1].left), (2, None));
        assert_eq!((a.windows[2].used, a.windows[2].left), (2, Some(98)));
        assert_eq!((a.blocked_until, a.margin), (None, Duration::from_millis(10)));
        // A 429 blocks until its retry-after, shown on the wall clock.
        let h = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
        l.on_rate_limited(t0 - Duration::from_millis(4), t0, &h);
        let a = l.allowance(t0 + Duration::from_secs(2), wall);
        assert_eq!(a.blocked_until, Some(wall + TimeDelta::seconds(15)));
        assert_eq!(a.rate_limited, 1);
        // At the instant the block ends nothing is blocked; a call exactly one window old has left.
        assert_eq!(l.allowance(t0 + Duration::from_secs(17), wall).blocked_until, None);
        let minute = MINUTE + Duration::from_millis(10);
        let at_edge = l.allowance(t0 + Duration::from_millis(500) + minute, wall);
        assert_eq!(at_edge.windows[0].used, 0);
        l.on_rate_limited(t0 - Duration::from_millis(4), t0, &RateLimit::default());
        assert_eq!((l.rate_limited_count(), l.allowance(t0, wall).rate_limited), (2, 2));
    }

    #[test]
    fn headers_tighten_a_limit_configured_too_high() {
        let t0 = Instant::now();
        let mut l = limiter(40);
        let h = RateLimit {
            minute: Window { limit: WindowLimit::Max(20), used: Some(1), left: Some(19) },
            hour: Window { limit: WindowLimit::Unlimited, used: None, left: None },
            ..Default::default()
        };
        l.observe(t0, t0, &h);
        assert_eq!(l.effective(), Limits { per_minute: Some(20), per_hour: None, per_day: None });
        // Headers without a stated limit (401/403) leave what we learned.
        l.observe(t0, t0, &RateLimit::default());
        assert_eq!(l.effective().per_minute, Some(20));
    }

    #[test]
    fn zero_left_closes_the_window_and_429_blocks_for_retry_after() {
        let t0 = Instant::now();
        let mut l = unlimited();
        l.try_acquire(t0).unwrap();
        let h = RateLimit {
            hour: Window { limit: WindowLimit::Max(100), used: Some(100), left: Some(0) },
            ..Default::default()
        };
        l.observe(t0, t0, &h);
        let hour = MINUTE * 60 + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + hour));
        assert_eq!(l.next_slot(t0 + hour), None, "open again at that instant");
        // Used up by another client before any call of ours: closed for a whole window from now.
        let mut fresh = unlimited();
        fresh.observe(t0, t0, &h);
        assert_eq!(fresh.next_slot(t0), Some(t0 + hour));
        // Closed from our oldest call still in the window, not from one that aged out.
        let mut l2 = unlimited();
        let minute_used = RateLimit {
            minute: Window { limit: WindowLimit::Max(5), used: Some(5), left: Some(0) },
            ..Default::default()
        };
        l2.try_acquire(t0).unwrap();
        l2.try_acquire(t0 + Duration::from_millis(1500)).unwrap();
        // Answered 5 ms after the second call was admitted (the margin stays 10 ms).
        let second = t0 + Duration::from_millis(1500);
        l2.observe(second, second + Duration::from_millis(5), &minute_used);
        assert_eq!(l2.next_slot(t0 + Duration::from_millis(1600)), Some(t0 + Duration::from_millis(2510)));

        let mut l = limiter(100);
        let h = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
        l.on_rate_limited(t0 - Duration::from_millis(4), t0, &h);
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_secs(17)));
        assert_eq!(l.rate_limited_count(), 1);
        assert!(l.try_acquire(t0 + Duration::from_secs(17)).is_ok());
    }

    #[test]
    fn no_reading_lets_a_call_go_before_the_log_does() {
        let t0 = Instant::now();
        let mut l = limiter(3);
        for _ in 0..3 {
            l.try_acquire(t0).unwrap();
        }
        let free_at = t0 + Duration::from_millis(1010);
        assert_eq!(l.next_slot(t0), Some(free_at));
        // What once taught a restart: usage falling to 1 or 0 (a stale usage-stats endpoint, a
        // sliding window or a token bucket reports so), calls said to be left, the window said used
        // up by our own calls. None of it frees a slot early, again and again.
        let at = t0 + Duration::from_millis(100);
        for round in 0..3 {
            for (used, left) in [(1, 2), (0, 3), (3, 0)] {
                let w = Window { limit: WindowLimit::Max(3), used: Some(used), left: Some(left) };
                // Answered 5 ms after admission (the margin stays 10 ms), read at `at`.
                l.observe(t0, t0 + Duration::from_millis(5), &RateLimit { minute: w, ..Default::default() });
                assert_eq!(l.next_slot(at), Some(free_at), "round {round}: used {used}, left {left}");
                assert!(l.try_acquire(at).is_err());
            }
        }
        assert!(l.try_acquire(free_at).is_ok());
    }

    #[test]
    fn a_learned_limit_of_zero_waits_one_window_and_never_points_to_the_past() {
        let t0 = Instant::now();
        let mut l = unlimited();
        l.try_acquire(t0).unwrap();
        let zero = Window { limit: WindowLimit::Max(0), used: None, left: None };
        l.observe(t0 - Duration::from_millis(4), t0, &RateLimit { minute: zero, ..Default::default() });
        let window = MINUTE + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + window));
        assert_eq!(l.next_slot(t0 + window), None, "free at the instant the call ages out");
        assert_eq!(l.next_slot(t0 + window * 2), None, "without pruning first, the slot is free, not in the past");
    }

    /// Drives the limiter against each shape of Apollo's limit, asking every millisecond. Each
    /// call is counted after a random delay of up to `delay_ms` (seeded) and answered 1 ms after
    /// that; the limiter learns from each answer. Returns the calls counted and refused.
    fn against(rule: apollo_sim::limits::Rule, delay_ms: u64, seed: u64) -> (usize, usize) {
        use apollo_sim::limits::{Admission as Apollo, Counters};
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let limit = rule.limits[0].expect("a minute limit");
        let mut l = Limiter::new(Limits { per_minute: Some(limit), per_hour: None, per_day: None }, MINUTE);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut apollo = Counters::default();
        // Calls in flight: (counted at, sent at), counted and answered in order of their count.
        let mut in_flight: Vec<(u64, u64)> = Vec::new();
        let (mut counted, mut refused) = (0, 0);
        for ms in 0..12_000 {
            while l.try_acquire(at(ms)).is_ok() {
                in_flight.push((ms + rng.u64(0..=delay_ms), ms));
            }
            in_flight.sort_unstable();
            while in_flight.first().is_some_and(|(c, _)| *c <= ms) {
                let (count_at, sent) = in_flight.remove(0);
                match apollo.admit(count_at, &rule) {
                    Apollo::Allowed(_) => {
                        counted += 1;
                        l.observe(at(sent), at(count_at + 1), &RateLimit::default());
                    }
                    Apollo::Limited { retry_after_ms, .. } => {
                        refused += 1;
                        let h = RateLimit {
                            retry_after: Some(Duration::from_millis(retry_after_ms)),
                            ..Default::default()
                        };
                        l.on_rate_limited(at(sent), at(count_at + 1), &h);
                    }
                }
            }
        }
        (counted, refused)
    }

    #[test]
    fn no_429_from_any_shape_of_limit_with_delays_up_to_the_answer() {
        use apollo_sim::limits::{Alignment, Rule, Shape};
        for shape in [Shape::Fixed, Shape::Sliding, Shape::Bucket] {
            for align in [Alignment::Clock, Alignment::FirstCall] {
                for (delay, seed) in [(0, 1), (40, 2), (80, 3)] {
                    let rule =
                        Rule { lengths_ms: [1_000, 60_000, 1_440_000], limits: [Some(20), None, None], shape, align };
                    let (counted, refused) = against(rule, delay, seed);
                    assert_eq!(refused, 0, "{shape:?} {align:?}, delays up to {delay} ms: {refused} refused");
                    // 12 windows of 20 calls, each window's span longer by the margin.
                    let margin = (delay + 6).min(100);
                    let floor = 240.0 * 1_000.0 / (1_000 + margin) as f64 - 20.0;
                    assert!(counted as f64 >= floor, "{shape:?} {align:?} {delay} ms: only {counted} calls");
                }
            }
        }
    }
}
