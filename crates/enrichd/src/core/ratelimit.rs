//! The rate-limit arithmetic of the dispatcher: minute, hour and day windows at once, from
//! configuration, corrected by what Apollo's headers say. Pure: the caller passes the clock.
//!
//! Each window keeps a log of our own call times and allows a call while fewer than `limit` fall in
//! the last window length. A sliding window never puts more than `limit` calls into any of Apollo's
//! fixed windows, yet sustains the full rate, so the allowance is used without drawing 429s. But it
//! restarts a window's allowance one window after our first call in it, up to a window later than
//! Apollo does. So the usage counts of Apollo's answers (and of its usage-stats endpoint) are read
//! for where Apollo's window restarts ([`job_store::limiter::restart_between`]); once that is known
//! to a quarter window, a call may also go while fewer than `limit` calls can share its fixed
//! window, so each window's whole allowance is taken as soon as Apollo grants it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use apollo_client::{RateLimit, Window, WindowLimit};
use chrono::{DateTime, TimeDelta, Utc};
use job_store::Allowance;
use job_store::limiter::{
    Restart, RestartFinder, UsageReading, fixed_window, fixed_window_slot, narrow, reading_ms, usable, window_allowance,
};

/// One window's state.
#[derive(Debug, Clone)]
struct WindowState {
    /// Apollo's window length plus the margin: the span of the sliding log.
    len: Duration,
    /// Apollo's window length.
    period: Duration,
    /// The longest a call is taken to need to reach Apollo.
    margin: Duration,
    configured: Option<u32>,
    /// The limit Apollo's headers last stated, when they stated one.
    learned: Option<u32>,
    /// Our calls, oldest first, kept two windows (counting by Apollo's fixed window looks back
    /// up to a window and a quarter).
    log: VecDeque<Instant>,
    /// No call before this instant (Apollo said none are left in this window).
    closed_until: Option<Instant>,
    /// Where Apollo's fixed window restarts, on the limiter's millisecond clock, once its usage
    /// counts have shown it.
    restart: Option<Restart>,
    finder: RestartFinder,
}

/// Milliseconds as the pure rules count them.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WindowState {
    fn limit(&self) -> Option<u32> {
        match (self.configured, self.learned) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        }
    }

    fn prune(&mut self, now: Instant) {
        while self.log.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.len * 2) {
            self.log.pop_front();
        }
    }

    /// The restart, when known precisely enough to count calls by Apollo's windows.
    fn known_restart(&self) -> Option<Restart> {
        self.restart.filter(|r| usable(*r, millis(self.period)))
    }

    /// When the next call may go, or `None` for now: when the sliding log or, once the restart
    /// is known, Apollo's fixed window has room (each alone keeps every window within its limit).
    fn next_slot(&self, clock: &Clock, now: Instant) -> Option<Instant> {
        let closed = self.closed_until.filter(|t| *t > now);
        let by_limit = self.limit().and_then(|limit| {
            let by_log = self.sliding_slot(now, limit)?;
            let Some(restart) = self.known_restart() else { return Some(by_log) };
            let (from, next) = fixed_window(restart, millis(self.period), millis(self.margin), clock.ms(now));
            let counted = self.log.iter().filter(|t| clock.ms(**t) > from).count() as u64;
            let by_window = clock.instant(fixed_window_slot(next, counted, limit)?);
            Some(by_log.min(by_window))
        });
        match (closed, by_limit) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn sliding_slot(&self, now: Instant, limit: u32) -> Option<Instant> {
        let in_window = self.log.iter().filter(|t| now.saturating_duration_since(**t) < self.len).count();
        if in_window < limit as usize {
            return None;
        }
        // The call that frees a slot is the one `limit` places from the newest. With a limit
        // of 0 (a 429's headers) that time may be past: then one call may probe again, rather
        // than the dispatch loop spinning on a slot in the past.
        let idx = self.log.len().checked_sub(limit.max(1) as usize)?;
        Some(self.log[idx] + self.len).filter(|t| *t > now)
    }

    fn observe(&mut self, clock: &Clock, sent: Instant, answered: Instant, w: &Window, counted: bool) {
        match w.limit {
            WindowLimit::Max(n) => self.learned = Some(u32::try_from(n).unwrap_or(u32::MAX)),
            WindowLimit::Unlimited => self.learned = None,
            WindowLimit::Unknown => {}
        }
        if let Some(used) = w.used {
            let (s, a) = clock.reading(sent, answered);
            self.learn(UsageReading::of(s, a, used, counted));
        }
        let ours = self.log.iter().filter(|t| answered.saturating_duration_since(**t) < self.len).count();
        // None left though our own calls leave room: another client uses the key. (When our
        // calls fill the window, the limit already holds them back, until a restart learned
        // later frees it.)
        if w.left == Some(0) && self.limit().is_none_or(|l| ours < l as usize) {
            // Closed until our own oldest call in the window ages out, which is never later than
            // Apollo's reset; or, once the restart is known, until the next restart after the answer.
            let oldest = self.log.iter().find(|t| answered.saturating_duration_since(**t) < self.len);
            let mut until = oldest.map(|t| *t + self.len).unwrap_or(answered + self.len);
            if let Some(r) = self.known_restart() {
                let (_, next) = fixed_window(r, millis(self.period), millis(self.margin), clock.ms(answered));
                until = until.min(clock.instant(next));
            }
            self.closed_until = Some(self.closed_until.map_or(until, |c| c.max(until)));
        }
    }

    fn learn(&mut self, reading: UsageReading) {
        if let Some(seen) = self.finder.add(reading) {
            self.restart = narrow(self.restart, seen, millis(self.period));
        }
    }
}

/// The millisecond clock the restart rules count on: an instant of this process and its time
/// then in microseconds (0 for the local limiter; the database's clock for the shared one), from
/// which other instants are timed with this process's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_micros: i64,
}

impl Clock {
    /// A clock on which `origin` is `origin_micros`.
    pub fn new(origin: Instant, origin_micros: i64) -> Clock {
        Clock { origin, origin_micros }
    }

    /// How long ago its origin was.
    pub fn age(&self) -> Duration {
        self.origin.elapsed()
    }

    fn micros(&self, t: Instant) -> i64 {
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let since = match t.checked_duration_since(self.origin) {
            Some(d) => us(d),
            None => -us(self.origin.duration_since(t)),
        };
        self.origin_micros.saturating_add(since)
    }

    fn ms(&self, t: Instant) -> i64 {
        self.micros(t).div_euclid(1000)
    }

    /// A reading's sending and answer, rounded outwards ([`reading_ms`]).
    pub fn reading(&self, sent: Instant, answered: Instant) -> (i64, i64) {
        (reading_ms(self.micros(sent), false), reading_ms(self.micros(answered), true))
    }

    /// The instant of a millisecond; before the origin it is the origin (only ever a past slot).
    fn instant(&self, ms: i64) -> Instant {
        let after = ms.saturating_mul(1000).saturating_sub(self.origin_micros);
        self.origin + Duration::from_micros(u64::try_from(after).unwrap_or(0))
    }
}

/// What each window adds to its length: a small margin absorbs the delay between our send and
/// Apollo's receipt.
pub fn window_margin(minute: Duration) -> Duration {
    (minute / 100).max(Duration::from_millis(5))
}

/// The dispatcher's limiter for one Apollo key.
#[derive(Debug, Clone)]
pub struct Limiter {
    clock: Clock,
    windows: [WindowState; 3],
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
        Limiter::with_origin(limits, minute, Instant::now())
    }

    /// The same on a clock counted from `origin` (tests pass instants around it).
    pub fn with_origin(limits: Limits, minute: Duration, origin: Instant) -> Limiter {
        let margin = window_margin(minute);
        let w = |period: Duration, configured| WindowState {
            len: period + margin,
            period,
            margin,
            configured,
            learned: None,
            log: VecDeque::new(),
            closed_until: None,
            restart: None,
            finder: RestartFinder::default(),
        };
        Limiter {
            clock: Clock::new(origin, 0),
            windows: [
                w(minute, limits.per_minute),
                w(minute * 60, limits.per_hour),
                w(minute * 60 * 24, limits.per_day),
            ],
            blocked_until: None,
            rate_limited: 0,
        }
    }

    /// When the next call may go; `None` means now.
    pub fn next_slot(&self, now: Instant) -> Option<Instant> {
        let blocked = self.blocked_until.filter(|t| *t > now);
        self.windows.iter().filter_map(|w| w.next_slot(&self.clock, now)).chain(blocked).max()
    }

    /// Takes a slot if one is free now (recording the call); otherwise says when to come back.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        for w in &mut self.windows {
            w.prune(now);
        }
        if let Some(at) = self.next_slot(now) {
            return Err(at);
        }
        for w in &mut self.windows {
            w.log.push_back(now);
        }
        Ok(())
    }

    /// How many of up to `max` calls could go together now: counted by taking their slots and
    /// giving them back, so the count follows [`Limiter::try_acquire`]'s rules exactly.
    pub fn free_slots(&mut self, now: Instant, max: usize) -> usize {
        let free = (0..max).take_while(|_| self.try_acquire(now).is_ok()).count();
        for w in &mut self.windows {
            w.log.truncate(w.log.len() - free);
        }
        free
    }

    /// Corrects the windows from the rate-limit headers of a call sent at `sent` and answered
    /// at `answered` (`counted`: Apollo counted it, i.e. it was not refused with a 429).
    pub fn observe(&mut self, sent: Instant, answered: Instant, headers: &RateLimit, counted: bool) {
        let clock = self.clock;
        for (w, stated) in self.windows.iter_mut().zip(headers.windows()) {
            w.observe(&clock, sent, answered, stated, counted);
        }
    }

    /// Learns from the usage-stats endpoint's counts (minute, hour, day), read between `sent`
    /// and `answered`.
    pub fn observe_usage(&mut self, sent: Instant, answered: Instant, used: [Option<u64>; 3]) {
        let (s, a) = self.clock.reading(sent, answered);
        for (w, used) in self.windows.iter_mut().zip(used) {
            if let Some(used) = used {
                w.learn(UsageReading::of_probe(s, a, used));
            }
        }
    }

    /// A 429: nothing goes before `retry_after` (a minute's length when Apollo gave none). What
    /// was known of Apollo's restarts is forgotten: the refusal says our count was wrong.
    pub fn on_rate_limited(&mut self, sent: Instant, answered: Instant, headers: &RateLimit) {
        self.rate_limited += 1;
        for w in &mut self.windows {
            w.restart = None;
        }
        self.observe(sent, answered, headers, false);
        let wait = headers.retry_after.unwrap_or(self.windows[0].len);
        let until = answered + wait;
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Whether the minute window's restart is known (its allowance then restarts with Apollo's).
    pub fn restart_known(&self) -> bool {
        self.windows[0].known_restart().is_some()
    }

    /// How many 429s this limiter has seen.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited
    }

    /// The allowance at `now` for the system page: per window the limits and the calls of the
    /// log still inside it (the same sliding windows [`Limiter::try_acquire`] decides with), and
    /// until when no call may go, as the wall-clock instant `wall_now` + the wait.
    pub fn allowance(&self, now: Instant, wall_now: DateTime<Utc>) -> Allowance {
        let windows = self.windows.each_ref().map(|w| {
            let used = w.log.iter().filter(|t| now.saturating_duration_since(**t) < w.len).count() as u64;
            window_allowance(w.len, w.configured, w.learned.map(i64::from), used)
        });
        let blocked = self.windows.iter().filter_map(|w| w.closed_until).chain(self.blocked_until).max();
        let blocked_until =
            blocked.filter(|t| *t > now).map(|t| wall_now + TimeDelta::from_std(t - now).unwrap_or(TimeDelta::MAX));
        Allowance { windows, blocked_until, rate_limited: i64::try_from(self.rate_limited).unwrap_or(i64::MAX) }
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

    fn limiter(per_minute: u32) -> Limiter {
        Limiter::new(Limits { per_minute: Some(per_minute), per_hour: None, per_day: None }, MINUTE)
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
    fn free_slots_counts_without_taking() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Limits { per_minute: Some(4), per_hour: None, per_day: Some(3) }, MINUTE);
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
        let mut l = Limiter::new(Limits { per_minute: Some(3), per_hour: None, per_day: Some(100) }, MINUTE);
        l.try_acquire(t0).unwrap();
        l.try_acquire(t0 + Duration::from_millis(500)).unwrap();
        // Past the minute (1 s and its 10 ms margin) the first call has left it, not the day.
        let a = l.allowance(t0 + Duration::from_millis(1015), wall);
        assert_eq!((a.windows[0].used, a.windows[0].left), (1, Some(2)));
        assert_eq!((a.windows[1].used, a.windows[1].left), (2, None));
        assert_eq!((a.windows[2].used, a.windows[2].left), (2, Some(98)));
        assert_eq!(a.blocked_until, None);
        // A 429 blocks until its retry-after, shown on the wall clock.
        l.on_rate_limited(t0, t0, &RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() });
        let a = l.allowance(t0 + Duration::from_secs(2), wall);
        assert_eq!(a.blocked_until, Some(wall + TimeDelta::seconds(15)));
        assert_eq!(a.rate_limited, 1);
        // At the instant the block ends nothing is blocked; a call exactly one window old has left.
        assert_eq!(l.allowance(t0 + Duration::from_secs(17), wall).blocked_until, None);
        let minute = MINUTE + Duration::from_millis(10);
        let at_edge = l.allowance(t0 + Duration::from_millis(500) + minute, wall);
        assert_eq!(at_edge.windows[0].used, 0);
        l.on_rate_limited(t0, t0, &RateLimit::default());
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
        l.observe(t0, t0, &h, true);
        assert_eq!(l.effective(), Limits { per_minute: Some(20), per_hour: None, per_day: None });
        // Headers without a stated limit (401/403) leave what we learned.
        l.observe(t0, t0, &RateLimit::default(), true);
        assert_eq!(l.effective().per_minute, Some(20));
    }

    #[test]
    fn zero_left_closes_the_window_and_429_blocks_for_retry_after() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        l.try_acquire(t0).unwrap();
        let h = RateLimit {
            hour: Window { limit: WindowLimit::Max(100), used: Some(100), left: Some(0) },
            ..Default::default()
        };
        l.observe(t0, t0, &h, true);
        let hour = MINUTE * 60 + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + hour));
        assert_eq!(l.next_slot(t0 + hour), None, "open again at that instant");
        // Used up by another client before any call of ours: closed for a whole window from now.
        let mut fresh = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        fresh.observe(t0, t0, &h, true);
        assert_eq!(fresh.next_slot(t0), Some(t0 + hour));
        // Closed from our oldest call still in the window, not from one that aged out.
        let mut l2 = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        let minute_used = RateLimit {
            minute: Window { limit: WindowLimit::Max(5), used: Some(5), left: Some(0) },
            ..Default::default()
        };
        l2.try_acquire(t0).unwrap();
        l2.try_acquire(t0 + Duration::from_millis(1500)).unwrap();
        l2.observe(t0 + Duration::from_millis(1600), t0 + Duration::from_millis(1600), &minute_used, true);
        assert_eq!(l2.next_slot(t0 + Duration::from_millis(1600)), Some(t0 + Duration::from_millis(2510)));

        let mut l = limiter(100);
        let h = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
        l.on_rate_limited(t0, t0, &h);
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_secs(17)));
        assert_eq!(l.rate_limited_count(), 1);
        assert!(l.try_acquire(t0 + Duration::from_secs(17)).is_ok());
    }

    #[test]
    fn a_learned_limit_of_zero_waits_one_window_and_never_points_to_the_past() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        l.try_acquire(t0).unwrap();
        l.observe(
            t0,
            t0,
            &RateLimit { minute: Window { limit: WindowLimit::Max(0), used: None, left: None }, ..Default::default() },
            true,
        );
        let window = MINUTE + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + window));
        assert_eq!(l.next_slot(t0 + window), None, "free at the instant the call ages out");
        assert_eq!(l.next_slot(t0 + window * 2), None, "without pruning first, the slot is free, not in the past");
    }

    /// Drives the limiter against the simulator's fixed windows (phase unknown to the limiter),
    /// asking every millisecond; a call reaches Apollo 1 ms after it is sent and is answered 1 ms
    /// later; while it waits for a slot it reads the usage-stats counts every 10 ms, as the
    /// dispatcher does. Returns Apollo's receipt times of accepted calls and the refusals.
    fn against_fixed_windows(offset_ms: u64, limit: u32, windows: u64) -> (Vec<u64>, usize) {
        use apollo_sim::limits::{Admission as Apollo, Alignment, Counters, Rule, Shape};
        let lengths = [1_000, 60_000, 1_440_000];
        let limits = [Some(limit), None, None];
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut l = Limiter::with_origin(
            Limits { per_minute: Some(limit), per_hour: None, per_day: None },
            MINUTE,
            t0 + Duration::from_millis(777),
        );
        let mut apollo = Counters::default();
        let rule = Rule { lengths_ms: lengths, limits, shape: Shape::Fixed, align: Alignment::Clock };
        let (mut received, mut refused) = (Vec::new(), 0);
        for ms in 0..windows * 1_000 {
            let mut sent = false;
            while l.try_acquire(at(ms)).is_ok() {
                sent = true;
                let apollo_ms = ms + 1 + offset_ms;
                match apollo.admit(apollo_ms, &rule) {
                    Apollo::Allowed(u) => {
                        received.push(ms + 1);
                        let h = RateLimit {
                            minute: Window {
                                limit: WindowLimit::Max(u64::from(limit)),
                                used: Some(u64::from(u[0].used)),
                                left: u[0].left.map(u64::from),
                            },
                            ..Default::default()
                        };
                        l.observe(at(ms), at(ms + 2), &h, true);
                    }
                    Apollo::Limited { .. } => refused += 1,
                }
            }
            if !sent && ms % 10 == 0 && !l.restart_known() {
                let used = apollo.usage(ms + 1 + offset_ms, &rule)[0].used;
                l.observe_usage(at(ms), at(ms + 2), [Some(u64::from(used)), None, None]);
            }
        }
        (received, refused)
    }

    #[test]
    fn learns_where_apollos_window_restarts_and_then_takes_each_allowance_at_once() {
        for offset in [0, 1, 250, 500, 999, 1_337] {
            let (received, refused) = against_fixed_windows(offset, 5, 10);
            assert_eq!(refused, 0, "offset {offset}: a call refused");
            // Never more than the limit in one of Apollo's windows.
            let window_of = |ms: u64| (ms + offset) / 1_000;
            for w in received.iter().map(|t| window_of(*t)) {
                let n = received.iter().filter(|t| window_of(**t) == w).count();
                assert!(n <= 5, "offset {offset}: {n} calls in Apollo's window {w}");
            }
            // From the second window on, each window's whole allowance goes within 15 ms of
            // Apollo's restart (the sliding log alone would wait for our first call's age).
            let first_full = window_of(0) + 1;
            for w in first_full..window_of(9_000) {
                let start = w * 1_000 - offset;
                let in_w: Vec<u64> = received.iter().copied().filter(|t| window_of(*t) == w).collect();
                assert_eq!(in_w.len(), 5, "offset {offset}: window {w} got {in_w:?}");
                assert!(in_w[4] <= start + 15, "offset {offset}: window {w} starts {start}, calls {in_w:?}");
            }
        }
    }

    #[test]
    fn a_429_forgets_the_restart() {
        let t0 = Instant::now();
        let mut l = Limiter::with_origin(Limits { per_minute: Some(5), per_hour: None, per_day: None }, MINUTE, t0);
        let reading = |used| RateLimit {
            minute: Window { limit: WindowLimit::Max(5), used: Some(used), left: Some(5 - used) },
            ..Default::default()
        };
        // Usage 3 at 100 ms, then 1 at 120 ms: Apollo restarted between 100 and 122 ms.
        l.observe(t0 + Duration::from_millis(100), t0 + Duration::from_millis(102), &reading(3), true);
        l.observe(t0 + Duration::from_millis(120), t0 + Duration::from_millis(122), &reading(1), true);
        assert!(l.restart_known());
        l.on_rate_limited(t0 + Duration::from_millis(130), t0 + Duration::from_millis(131), &RateLimit::default());
        assert!(!l.restart_known());
    }
}
