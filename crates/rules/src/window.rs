//! The arithmetic of Apollo's rate windows: the limit in force, when the shared sliding log lets
//! the next call go, the allowance operators see, and the margin measured from answer times. The
//! store keeps the log and decides under the key's row lock with these rules.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use apollo_client::WindowLimit;
use chrono::{DateTime, TimeDelta, Utc};

/// One window's length and configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRule {
    /// Apollo's length of the window.
    pub len: Duration,
    /// The configured limit; `None`: only what Apollo's headers state.
    pub limit: Option<u32>,
}

/// The shared limiter's rules for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRules {
    /// The key's fingerprint (the store names a key by a hash of it).
    pub key: String,
    /// Minute, hour and day.
    pub windows: [WindowRule; 3],
    /// The margin this replica measured ([`measured_margin`]).
    pub margin: Duration,
}

impl RateRules {
    /// The margin decided with: this replica's, or the larger one another replica stored.
    pub fn margin_with(&self, stored: Option<Duration>) -> Duration {
        self.margin.max(stored.unwrap_or_default())
    }

    /// The sliding log's span of window `i`: Apollo's length plus the margin.
    pub fn span(&self, i: usize, margin: Duration) -> Duration {
        self.windows[i].len + margin
    }
}

/// The limit in force: the configured one, tightened (never loosened) by the stated one.
pub fn effective_limit(configured: Option<u32>, learned: Option<i64>) -> Option<u32> {
    let learned = learned.map(|l| u32::try_from(l.max(0)).unwrap_or(u32::MAX));
    match (configured, learned) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

/// One window's allowance as the system page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowAllowance {
    /// The window's length (margin included).
    pub len: Duration,
    /// The configured limit.
    pub configured: Option<u32>,
    /// The limit Apollo's headers stated.
    pub learned: Option<i64>,
    /// The limit in force ([`effective_limit`]); `None`: no limit.
    pub limit: Option<u32>,
    /// Calls admitted in the last `len` (the shared log keeps calls only as long as the longest
    /// limited window, so a longer window without a limit counts only those).
    pub used: u64,
    /// Calls still allowed now (0 when over a limit lowered since); `None`: no limit.
    pub left: Option<u64>,
}

/// A window's allowance from its limits and the calls counted in it.
pub fn window_allowance(len: Duration, configured: Option<u32>, learned: Option<i64>, used: u64) -> WindowAllowance {
    let limit = effective_limit(configured, learned);
    WindowAllowance { len, configured, learned, limit, used, left: limit.map(|l| u64::from(l).saturating_sub(used)) }
}

/// The limiter's state for operators: each window's allowance, and until when no call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Minute, hour and day.
    pub windows: [WindowAllowance; 3],
    /// No call before this (a 429's retry-after, a window Apollo said is used up), if later than now.
    pub blocked_until: Option<DateTime<Utc>>,
    /// 429s drawn.
    pub rate_limited: i64,
    /// The margin each window's span adds to Apollo's length ([`measured_margin`]).
    pub margin: Duration,
}

/// When one window lets the next call go, or `None` for now: a span after `nth`, the `limit`-th
/// newest admitted call inside it (`None` while it holds fewer).
pub fn window_slot(now: DateTime<Utc>, len: Duration, nth: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    nth.map(|t| t + delta(len)).filter(|t| *t > now)
}

/// When the next call may go, or `None` for now: the latest of every window's slot and a block.
pub fn next_slot(
    now: DateTime<Utc>,
    blocked_until: Option<DateTime<Utc>>,
    slots: &[Option<DateTime<Utc>>],
) -> Option<DateTime<Utc>> {
    slots.iter().flatten().copied().chain(blocked_until).filter(|t| *t > now).max()
}

/// Until when a window the headers say is used up stays closed: our oldest call still inside it
/// plus the window's length, which is never later than Apollo's own reset of that fixed window;
/// a whole window from now when we have no call in it (another client used the key).
pub fn closed_until(now: DateTime<Utc>, len: Duration, oldest_in_window: Option<DateTime<Utc>>) -> DateTime<Utc> {
    oldest_in_window.unwrap_or(now) + delta(len)
}

/// The learned limit after an answer: stated limits replace it, an empty header clears it, and an
/// absent header (401/403 answers) leaves it.
pub fn learn(previous: Option<i64>, stated: WindowLimit) -> Option<i64> {
    match stated {
        WindowLimit::Max(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        WindowLimit::Unlimited => None,
        WindowLimit::Unknown => previous,
    }
}

/// The times from admitting a key's recent calls to their answers, from which the margin is
/// measured.
#[derive(Clone, Debug, Default)]
pub struct AnswerTimes {
    recent: VecDeque<Duration>,
    /// When recent calls were admitted (a slot taken), oldest first.
    admitted: VecDeque<Instant>,
}

/// How many recent answers the margin is measured over.
const ANSWERS_KEPT: usize = 200;

impl AnswerTimes {
    /// A call was admitted at `at`.
    pub fn admit(&mut self, at: Instant) {
        if self.admitted.len() == ANSWERS_KEPT {
            self.admitted.pop_front();
        }
        self.admitted.push_back(at);
    }

    /// The last `n` admissions were given back (slots counted, not taken).
    pub fn give_back(&mut self, n: usize) {
        self.admitted.truncate(self.admitted.len().saturating_sub(n));
    }

    /// Adds one call's time from its admission to its answer: the call sent at `sent` was
    /// admitted at the latest admission no later than that (or at `sent`, when none is kept), so
    /// the wait between a slot and the send (a claim, a task waiting for a busy CPU) counts too.
    pub fn record(&mut self, sent: Instant, answered: Instant) {
        let admitted = self.admitted.iter().rev().find(|t| **t <= sent).copied().unwrap_or(sent);
        if self.recent.len() == ANSWERS_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(answered.saturating_duration_since(admitted));
    }

    /// The margin these answers call for ([`measured_margin`]).
    pub fn margin(&self, minute: Duration) -> Duration {
        measured_margin(self.recent.iter().copied(), minute)
    }
}

/// The margin each window adds to Apollo's length: the longest a call may take from our
/// decision to Apollo's count. Apollo counts a call before it answers it, so that is at most the
/// time from admitting it to its answer: the 99th percentile of recent ones, and 5 ms. Before any answer, a twentieth of a minute; never over a tenth of one
/// (slow answers must not stall dispatch).
pub fn measured_margin(recent: impl Iterator<Item = Duration>, minute: Duration) -> Duration {
    let mut times: Vec<Duration> = recent.collect();
    if times.is_empty() {
        return minute / 20;
    }
    times.sort_unstable();
    // Nearest rank: with fewer than 100 answers, the longest.
    let rank = (times.len() * 99).div_ceil(100).max(1);
    let p99 = times[rank - 1];
    (p99 + Duration::from_millis(5)).min(minute / 10)
}

/// The margin to store for every replica, or `None` to leave the stored one: a replica's own
/// replaces it when larger, or when the stored one is older than `hold` (the replica that
/// measured it has not confirmed it since), so a margin falls again once nobody measures it.
pub fn shared_margin(
    stored: Option<(i64, DateTime<Utc>)>,
    mine_ms: i64,
    now: DateTime<Utc>,
    hold: Duration,
) -> Option<i64> {
    match stored {
        Some((ms, at)) if mine_ms <= ms && now - at < delta(hold) => None,
        _ => Some(mine_ms),
    }
}

/// A duration as chrono's, saturating.
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_slot_frees_when_the_limit_th_newest_call_ages_out() {
        let slot = |now, nth| window_slot(now, SEC, nth);
        // Under the limit in every window: now.
        assert_eq!(next_slot(at(0), None, &[slot(at(0), None), slot(at(0), None)]), None);
        // The minute window is full since its limit-th newest call at 200 ms.
        assert_eq!(next_slot(at(500), None, &[slot(at(500), Some(at(200))), None]), Some(at(1200)));
        // Already aged out: now.
        assert_eq!(next_slot(at(1200), None, &[slot(at(1200), Some(at(200)))]), None);
        // The latest of all constraints wins, a block included; a past block is ignored.
        assert_eq!(next_slot(at(500), Some(at(9000)), &[slot(at(500), Some(at(200)))]), Some(at(9000)));
        assert_eq!(next_slot(at(500), Some(at(400)), &[slot(at(500), Some(at(200)))]), Some(at(1200)));
        assert_eq!(next_slot(at(500), None, &[Some(at(700)), Some(at(1200))]), Some(at(1200)));
    }

    #[test]
    fn allowance_is_the_limit_in_force_less_the_calls_used() {
        let w = window_allowance(SEC, Some(40), Some(20), 7);
        assert_eq!((w.limit, w.used, w.left), (Some(20), 7, Some(13)));
        // Configured only, and used up exactly.
        assert_eq!(window_allowance(SEC, Some(5), None, 5).left, Some(0));
        // More used than a limit learned since: none left, never negative.
        assert_eq!(window_allowance(SEC, None, Some(3), 9).left, Some(0));
        // No limit at all: nothing to run out of.
        let free = window_allowance(SEC, None, None, 12);
        assert_eq!((free.limit, free.used, free.left), (None, 12, None));
        // A negative stated limit counts as zero.
        assert_eq!(window_allowance(SEC, None, Some(-1), 0).left, Some(0));
    }

    #[test]
    fn headers_only_tighten_and_absent_headers_keep_what_was_learned() {
        assert_eq!(effective_limit(Some(40), Some(20)), Some(20));
        assert_eq!(effective_limit(Some(10), Some(20)), Some(10));
        assert_eq!(effective_limit(None, Some(20)), Some(20));
        assert_eq!(effective_limit(Some(5), None), Some(5));
        assert_eq!(effective_limit(None, None), None);
        assert_eq!(learn(Some(20), WindowLimit::Unknown), Some(20));
        assert_eq!(learn(Some(20), WindowLimit::Unlimited), None);
        assert_eq!(learn(None, WindowLimit::Max(50)), Some(50));
    }

    #[test]
    fn a_used_up_window_closes_until_our_oldest_call_in_it_ages_out() {
        assert_eq!(closed_until(at(700), SEC, Some(at(100))), at(1100));
        assert_eq!(closed_until(at(700), SEC, None), at(1700));
    }

    /// The sliding log's guarantee, simulated with the pure rule: asking every millisecond for
    /// ten windows, no window-length span holds more than the limit, and the full rate is used.
    #[test]
    fn never_more_than_the_limit_in_any_span_and_full_rate_sustained() {
        let limit = 5usize;
        let mut log: Vec<DateTime<Utc>> = Vec::new();
        for ms in 0..10_000 {
            let now = at(ms);
            // Take every slot free at this instant.
            loop {
                let nth = log.iter().rev().filter(|t| now - **t < delta(SEC)).nth(limit - 1).copied();
                if next_slot(now, None, &[window_slot(now, SEC, nth)]).is_some() {
                    break;
                }
                log.push(now);
            }
        }
        for (i, start) in log.iter().enumerate() {
            let n = log[i..].iter().take_while(|t| **t - *start < delta(SEC)).count();
            assert!(n <= limit, "{n} calls in the second from {start}");
        }
        assert_eq!(log.len(), 50, "the whole allowance of each of ten windows");
        assert_eq!(log[4], at(0), "a window's allowance is usable at once");
    }

    #[test]
    fn the_margin_is_a_high_percentile_of_answer_times() {
        let minute = Duration::from_secs(60);
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let took = |t: &mut AnswerTimes, d: Duration| t.record(t0, t0 + d);
        // Before any answer: a twentieth of a minute.
        assert_eq!(AnswerTimes::default().margin(minute), ms(3_000));
        // Fewer than 100 answers: the longest, and 5 ms.
        let mut t = AnswerTimes::default();
        for d in [10, 40, 20] {
            took(&mut t, ms(d));
        }
        assert_eq!(t.margin(minute), ms(45));
        // 200 answers, two of them slow: the 99th percentile leaves the slowest out.
        let mut t = AnswerTimes::default();
        for i in 0..200 {
            took(&mut t, ms(if i % 100 == 7 { 900 } else { 8 + i % 5 }));
        }
        assert_eq!(t.margin(minute), ms(12 + 5));
        // Only the last 200 count: old slow answers are forgotten.
        for _ in 0..200 {
            took(&mut t, ms(4));
        }
        assert_eq!(t.margin(minute), ms(9));
        // Never more than a tenth of a minute.
        for _ in 0..3 {
            took(&mut t, ms(50_000));
        }
        assert_eq!(t.margin(minute), ms(6_000));
        // From the latest admission before the send: the wait for the send counts.
        let mut t = AnswerTimes::default();
        t.admit(t0);
        t.admit(t0 + ms(30));
        t.give_back(1);
        t.record(t0 + ms(20), t0 + ms(25));
        assert_eq!(t.margin(minute), ms(30));
    }

    #[test]
    fn the_shared_margin_is_the_largest_measured_lately() {
        let hold = SEC;
        // Nothing stored: store mine.
        assert_eq!(shared_margin(None, 30, at(0), hold), Some(30));
        // A larger one stored and fresh: leave it; mine larger: replace it.
        assert_eq!(shared_margin(Some((50, at(0))), 30, at(500), hold), None);
        assert_eq!(shared_margin(Some((50, at(0))), 50, at(500), hold), None);
        assert_eq!(shared_margin(Some((50, at(0))), 70, at(500), hold), Some(70));
        // Unconfirmed for a window: it falls to mine.
        assert_eq!(shared_margin(Some((50, at(0))), 30, at(1_000), hold), Some(30));
    }
}
