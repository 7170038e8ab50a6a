//! The rate-limit arithmetic of the dispatcher: minute, hour and day windows at once, from
//! configuration, corrected by what Apollo's headers say. Pure: the caller passes the clock.
//!
//! Each window keeps a log of our own call times and allows a call while fewer than `limit` fall in
//! the last window length. A sliding window never puts more than `limit` calls into any of Apollo's
//! fixed windows, yet sustains the full rate, so the allowance is used without drawing 429s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use apollo_client::{RateLimit, Window, WindowLimit};
use chrono::{DateTime, TimeDelta, Utc};
use job_store::Allowance;
use job_store::limiter::window_allowance;

/// One window's state.
#[derive(Debug, Clone)]
struct WindowState {
    len: Duration,
    configured: Option<u32>,
    /// The limit Apollo's headers last stated, when they stated one.
    learned: Option<u32>,
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

    fn prune(&mut self, now: Instant) {
        while self.log.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.len) {
            self.log.pop_front();
        }
    }

    /// When the next call may go, or `None` for now.
    fn next_slot(&self, now: Instant) -> Option<Instant> {
        let closed = self.closed_until.filter(|t| *t > now);
        let by_log = self.limit().and_then(|limit| {
            let in_window = self.log.iter().filter(|t| now.saturating_duration_since(**t) < self.len).count();
            if in_window < limit as usize {
                return None;
            }
            // The call that frees a slot is the one `limit` places from the newest. With a limit
            // of 0 (a 429's headers) that time may be past: then one call may probe again, rather
            // than the dispatch loop spinning on a slot in the past.
            let idx = self.log.len().checked_sub(limit.max(1) as usize)?;
            Some(self.log[idx] + self.len).filter(|t| *t > now)
        });
        match (closed, by_log) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn observe(&mut self, now: Instant, w: &Window) {
        match w.limit {
            WindowLimit::Max(n) => self.learned = Some(u32::try_from(n).unwrap_or(u32::MAX)),
            WindowLimit::Unlimited => self.learned = None,
            WindowLimit::Unknown => {}
        }
        if w.left == Some(0) {
            // Apollo's windows are fixed and we do not know where they start: wait until our own
            // oldest call in the window ages out, which is never later than Apollo's reset.
            let until = self.log.front().map(|t| *t + self.len).unwrap_or(now + self.len);
            self.closed_until = Some(self.closed_until.map_or(until, |c| c.max(until)));
        }
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
        let margin = window_margin(minute);
        let w = |len: Duration, configured| WindowState {
            len: len + margin,
            configured,
            learned: None,
            log: VecDeque::new(),
            closed_until: None,
        };
        Limiter {
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
        self.windows.iter().filter_map(|w| w.next_slot(now)).chain(blocked).max()
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

    /// Corrects the windows from an answer's rate-limit headers.
    pub fn observe(&mut self, now: Instant, headers: &RateLimit) {
        self.windows[0].observe(now, &headers.minute);
        self.windows[1].observe(now, &headers.hour);
        self.windows[2].observe(now, &headers.day);
    }

    /// A 429: nothing goes before `retry_after` (a minute's length when Apollo gave none).
    pub fn on_rate_limited(&mut self, now: Instant, headers: &RateLimit) {
        self.rate_limited += 1;
        self.observe(now, headers);
        let wait = headers.retry_after.unwrap_or(self.windows[0].len);
        let until = now + wait;
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
        l.on_rate_limited(t0, &RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() });
        let a = l.allowance(t0 + Duration::from_secs(2), wall);
        assert_eq!(a.blocked_until, Some(wall + TimeDelta::seconds(15)));
        assert_eq!(a.rate_limited, 1);
        // At the instant the block ends nothing is blocked; a call exactly one window old has left.
        assert_eq!(l.allowance(t0 + Duration::from_secs(17), wall).blocked_until, None);
        let minute = MINUTE + Duration::from_millis(10);
        let at_edge = l.allowance(t0 + Duration::from_millis(500) + minute, wall);
        assert_eq!(at_edge.windows[0].used, 0);
        l.on_rate_limited(t0, &RateLimit::default());
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
        l.observe(t0, &h);
        assert_eq!(l.effective(), Limits { per_minute: Some(20), per_hour: None, per_day: None });
        // Headers without a stated limit (401/403) leave what we learned.
        l.observe(t0, &RateLimit::default());
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
        l.observe(t0, &h);
        let hour = MINUTE * 60 + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + hour));
        assert_eq!(l.next_slot(t0 + hour), None, "open again at that instant");
        // Used up by another client before any call of ours: closed for a whole window from now.
        let mut fresh = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        fresh.observe(t0, &h);
        assert_eq!(fresh.next_slot(t0), Some(t0 + hour));
        // Closed from our oldest call still in the window, not from one that aged out.
        let mut l2 = Limiter::new(Limits { per_minute: None, per_hour: None, per_day: None }, MINUTE);
        let minute_used = RateLimit {
            minute: Window { limit: WindowLimit::Max(5), used: Some(5), left: Some(0) },
            ..Default::default()
        };
        l2.try_acquire(t0).unwrap();
        l2.try_acquire(t0 + Duration::from_millis(1500)).unwrap();
        l2.observe(t0 + Duration::from_millis(1600), &minute_used);
        assert_eq!(l2.next_slot(t0 + Duration::from_millis(1600)), Some(t0 + Duration::from_millis(2510)));

        let mut l = limiter(100);
        let h = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
        l.on_rate_limited(t0, &h);
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
            &RateLimit { minute: Window { limit: WindowLimit::Max(0), used: None, left: None }, ..Default::default() },
        );
        let window = MINUTE + Duration::from_millis(10);
        assert_eq!(l.next_slot(t0 + Duration::from_millis(1)), Some(t0 + window));
        assert_eq!(l.next_slot(t0 + window), None, "free at the instant the call ages out");
        assert_eq!(l.next_slot(t0 + window * 2), None, "without pruning first, the slot is free, not in the past");
    }
}
