//! Rate limits (minute, hour and day at once) counted in each way Apollo plausibly counts them,
//! on a scaled clock given by the caller.
//!
//! Pure arithmetic: the caller passes "now" in milliseconds since the simulator started, so tests
//! inject any clock they like. Apollo's docs leave open how its limits count ([`Shape`],
//! [`Alignment`]) and what its headers and usage-stats endpoint report ([`HeaderStyle`],
//! [`UsageStats`]); each reading is a knob.

use std::collections::VecDeque;

/// One of the three windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// The (simulated) minute.
    Minute,
    /// The (simulated) hour.
    Hour,
    /// The (simulated) 24 hours.
    Day,
}

impl WindowKind {
    /// All three, in header order.
    pub const ALL: [WindowKind; 3] = [WindowKind::Minute, WindowKind::Hour, WindowKind::Day];

    /// The word Apollo's 429 message uses (`… times per minute`).
    pub fn word(self) -> &'static str {
        match self {
            WindowKind::Minute => "minute",
            WindowKind::Hour => "hour",
            WindowKind::Day => "day",
        }
    }
}

/// How a limit of N calls per window length counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// At most N calls in each fixed window (the windows follow each other, see [`Alignment`]).
    #[default]
    Fixed,
    /// At most N calls in any span of one window length.
    Sliding,
    /// A bucket of N tokens, refilled evenly at N per window length; a call takes one.
    Bucket,
}

/// Where a fixed window starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Alignment {
    /// At the multiples of its length on the simulator's clock.
    #[default]
    Clock,
    /// At the first call after the previous window ended (a window opens with a team's call).
    FirstCall,
}

/// What the usage-stats endpoint reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageStats {
    /// The count now.
    #[default]
    Live,
    /// The count as it was this many milliseconds ago (a cached dashboard counter).
    Lagging(u64),
    /// Always 1 used, whatever was used (a counter that is never refreshed).
    Stale,
}

impl std::str::FromStr for UsageStats {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "live" => Ok(UsageStats::Live),
            "stale" => Ok(UsageStats::Stale),
            other => other
                .strip_prefix("lag:")
                .and_then(|ms| ms.trim().parse().ok())
                .map(UsageStats::Lagging)
                .ok_or_else(|| format!("{s:?} is not live, stale or lag:MILLISECONDS")),
        }
    }
}

/// What the rate-limit headers of an answer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderStyle {
    /// The headers are sent at all.
    pub present: bool,
    /// `x-*-usage` counts the call it answers (else only the calls before it).
    pub usage_counts_call: bool,
    /// `x-*-requests-left` counts the call it answers (else it is what was left before it).
    pub left_counts_call: bool,
}

/// The state of one window as reported to the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowUsage {
    /// The limit, `None` when unlimited.
    pub limit: Option<u32>,
    /// Calls counted in the current window.
    pub used: u32,
    /// Calls left, `None` when unlimited.
    pub left: Option<u32>,
    /// Milliseconds until a call would be counted again once the window is full.
    pub resets_in_ms: u64,
}

/// Minute, hour and day usage.
pub type Usage = [WindowUsage; 3];

/// The answer to "may this call go through?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted; the usage after counting it.
    Allowed(Usage),
    /// Refused (and not counted).
    Limited {
        /// The usage, unchanged.
        usage: Usage,
        /// The exhausted window with the longest wait.
        window: WindowKind,
        /// That window's limit.
        limit: u32,
        /// Milliseconds until every exhausted window has room again.
        retry_after_ms: u64,
    },
}

/// The rule the counters apply: window lengths, limits and how they count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Minute, hour and day lengths in ms.
    pub lengths_ms: [u64; 3],
    /// Their limits (`None` = unlimited).
    pub limits: [Option<u32>; 3],
    /// How a limit counts.
    pub shape: Shape,
    /// Where fixed windows start.
    pub align: Alignment,
}

/// One window's counts under every shape (only the rule's shape is consulted).
#[derive(Clone, Debug, Default)]
struct Counter {
    /// Fixed: the current window's start and its count.
    start: Option<u64>,
    count: u32,
    /// Sliding: the counted calls of the last window length.
    log: VecDeque<u64>,
    /// Bucket: tokens spent and not yet refilled, in units of 1/len of a token; refilled at
    /// `limit` units a millisecond.
    debt: u64,
    refilled_at: u64,
}

impl Counter {
    /// Brings the counts to `now`.
    fn roll(&mut self, now: u64, len: u64, limit: Option<u32>, rule: &Rule) {
        match rule.shape {
            Shape::Fixed => {
                let start = match (rule.align, self.start) {
                    (Alignment::Clock, _) => Some(now - now % len),
                    (Alignment::FirstCall, Some(s)) if now < s + len => Some(s),
                    (Alignment::FirstCall, _) => None,
                };
                if start != self.start {
                    self.start = start;
                    self.count = 0;
                }
            }
            Shape::Sliding => {
                while self.log.front().is_some_and(|t| *t + len <= now) {
                    self.log.pop_front();
                }
            }
            Shape::Bucket => {
                let refill = now.saturating_sub(self.refilled_at).saturating_mul(u64::from(limit.unwrap_or(0)));
                self.debt = self.debt.saturating_sub(refill);
                self.refilled_at = now;
            }
        }
    }

    fn used(&self, len: u64, shape: Shape) -> u32 {
        match shape {
            Shape::Fixed => self.count,
            Shape::Sliding => u32::try_from(self.log.len()).unwrap_or(u32::MAX),
            Shape::Bucket => u32::try_from(self.debt.div_ceil(len)).unwrap_or(u32::MAX),
        }
    }

    /// Milliseconds until one more call fits, were the window full.
    fn resets_in(&self, now: u64, len: u64, limit: Option<u32>, shape: Shape) -> u64 {
        match shape {
            Shape::Fixed => self.start.map_or(len, |s| s + len - now),
            Shape::Sliding => self.log.front().map_or(len, |t| t + len - now),
            Shape::Bucket => {
                let limit = u64::from(limit.unwrap_or(0));
                // Room for one call once the debt is at most (limit - 1) tokens.
                let over = self.debt.saturating_sub(limit.saturating_sub(1) * len);
                if limit == 0 { len } else { over.div_ceil(limit) }
            }
        }
    }

    fn count(&mut self, now: u64, len: u64, shape: Shape) {
        match shape {
            Shape::Fixed => {
                self.start.get_or_insert(now);
                self.count = self.count.saturating_add(1);
            }
            Shape::Sliding => self.log.push_back(now),
            Shape::Bucket => self.debt = self.debt.saturating_add(len),
        }
    }
}

/// The counters of the three windows.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    windows: [Counter; 3],
}

impl Counters {
    /// Counts a call at `now_ms` unless a window is full.
    pub fn admit(&mut self, now_ms: u64, rule: &Rule) -> Admission {
        self.roll(now_ms, rule);
        let usage = self.usage(now_ms, rule);
        let exhausted = usage
            .iter()
            .zip(WindowKind::ALL)
            .filter_map(|(u, kind)| u.limit.filter(|l| u.used >= *l).map(|l| (kind, l, u.resets_in_ms)))
            .max_by_key(|(_, _, wait)| *wait);
        if let Some((window, limit, wait)) = exhausted {
            return Admission::Limited { usage, window, limit, retry_after_ms: wait.max(1) };
        }
        for (c, len) in self.windows.iter_mut().zip(rule.lengths_ms) {
            c.count(now_ms, len.max(1), rule.shape);
        }
        Admission::Allowed(self.usage(now_ms, rule))
    }

    /// The usage at `now_ms` without counting anything.
    pub fn usage(&self, now_ms: u64, rule: &Rule) -> Usage {
        let mut rolled = self.clone();
        rolled.roll(now_ms, rule);
        std::array::from_fn(|i| {
            let (c, len, limit) = (&rolled.windows[i], rule.lengths_ms[i].max(1), rule.limits[i]);
            let used = c.used(len, rule.shape);
            WindowUsage {
                limit,
                used,
                left: limit.map(|l| l.saturating_sub(used)),
                resets_in_ms: c.resets_in(now_ms, len, limit, rule.shape),
            }
        })
    }

    fn roll(&mut self, now_ms: u64, rule: &Rule) {
        for i in 0..3 {
            self.windows[i].roll(now_ms, rule.lengths_ms[i].max(1), rule.limits[i], rule);
        }
    }
}

/// The usage as the answer to an accepted call states it: without the call itself in the usage
/// or in what is left, when the style says so.
pub fn stated(usage: &Usage, style: HeaderStyle) -> Usage {
    usage.map(|u| WindowUsage {
        used: if style.usage_counts_call { u.used } else { u.used.saturating_sub(1) },
        left: if style.left_counts_call { u.left } else { u.limit.map(|l| l.saturating_sub(u.used.saturating_sub(1))) },
        ..u
    })
}

/// The usage counts seen recently, for a usage-stats endpoint that lags.
#[derive(Clone, Debug, Default)]
pub struct UsageHistory {
    seen: VecDeque<(u64, Usage)>,
}

impl UsageHistory {
    /// Keeps the usage after a call counted at `now_ms`, as long as a `lag_ms` reader needs it.
    pub fn record(&mut self, now_ms: u64, usage: Usage, lag_ms: u64) {
        self.seen.push_back((now_ms, usage));
        // The newest snapshot at least `lag_ms` old is the one read: older ones can go.
        while self.seen.get(1).is_some_and(|(t, _)| *t + lag_ms <= now_ms) {
            self.seen.pop_front();
        }
    }

    /// What a usage-stats endpoint of this kind reports at `now_ms`, given the live usage.
    pub fn report(&self, now_ms: u64, live: Usage, kind: UsageStats) -> Usage {
        match kind {
            UsageStats::Live => live,
            UsageStats::Stale => live.map(|u| WindowUsage { used: 1, left: u.limit.map(|l| l.saturating_sub(1)), ..u }),
            UsageStats::Lagging(lag) => {
                let old = self.seen.iter().rev().find(|(t, _)| *t + lag <= now_ms).map(|(_, u)| *u);
                let zero = live.map(|u| WindowUsage { used: 0, left: u.limit, ..u });
                old.map_or(zero, |old| {
                    std::array::from_fn(|i| WindowUsage {
                        used: old[i].used,
                        left: live[i].limit.map(|l| l.saturating_sub(old[i].used)),
                        ..live[i]
                    })
                })
            }
        }
    }
}

/// The rate-limit response headers for a usage; unlimited windows get empty values.
pub fn headers(usage: &Usage) -> Vec<(&'static str, String)> {
    let names = [
        ["x-rate-limit-minute", "x-minute-usage", "x-minute-requests-left"],
        ["x-rate-limit-hourly", "x-hourly-usage", "x-hourly-requests-left"],
        ["x-rate-limit-24-hour", "x-24-hour-usage", "x-24-hour-requests-left"],
    ];
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
    usage
        .iter()
        .zip(names)
        .flat_map(|(u, [limit, used, left])| [(limit, opt(u.limit)), (used, u.used.to_string()), (left, opt(u.left))])
        .collect()
}

/// `retry-after` in whole seconds: rounded up, at least 1.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: [u64; 3] = [1_000, 60_000, 1_440_000];

    fn rule(limits: [Option<u32>; 3], shape: Shape, align: Alignment) -> Rule {
        Rule { lengths_ms: LEN, limits, shape, align }
    }

    fn fixed(limits: [Option<u32>; 3]) -> Rule {
        rule(limits, Shape::Fixed, Alignment::Clock)
    }

    /// The times of `tries` at which a call was counted.
    fn admitted(rule: &Rule, tries: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut c = Counters::default();
        tries.into_iter().filter(|t| matches!(c.admit(*t, rule), Admission::Allowed(_))).collect()
    }

    #[test]
    fn minute_window_fills_and_resets_at_its_boundary() {
        let mut w = Counters::default();
        let limits = fixed([Some(3), None, None]);
        for (i, t) in [100, 200, 300].into_iter().enumerate() {
            match w.admit(t, &limits) {
                Admission::Allowed(u) => {
                    assert_eq!(u[0].used, i as u32 + 1);
                    assert_eq!(u[0].left, Some(2 - i as u32));
                    assert_eq!(u[1].limit, None);
                }
                other => panic!("call {i} refused: {other:?}"),
            }
        }
        match w.admit(400, &limits) {
            Admission::Limited { window, limit, retry_after_ms, usage } => {
                assert_eq!((window, limit, retry_after_ms), (WindowKind::Minute, 3, 600));
                assert_eq!(usage[0].used, 3);
            }
            other => panic!("4th call admitted: {other:?}"),
        }
        // Refused calls are not counted; the next window starts empty.
        assert!(matches!(w.admit(999, &limits), Admission::Limited { retry_after_ms: 1, .. }));
        match w.admit(1_000, &limits) {
            Admission::Allowed(u) => assert_eq!((u[0].used, u[0].left, u[1].used), (1, Some(2), 4)),
            other => panic!("new window refused: {other:?}"),
        }
    }

    #[test]
    fn the_longest_exhausted_window_decides_the_wait() {
        let mut w = Counters::default();
        let limits = fixed([Some(10), Some(2), None]);
        assert!(matches!(w.admit(0, &limits), Admission::Allowed(_)));
        assert!(matches!(w.admit(5_000, &limits), Admission::Allowed(_)));
        match w.admit(10_000, &limits) {
            Admission::Limited { window, retry_after_ms, .. } => {
                assert_eq!((window, retry_after_ms), (WindowKind::Hour, 50_000));
            }
            other => panic!("hour limit ignored: {other:?}"),
        }
        assert!(matches!(w.admit(60_000, &limits), Admission::Allowed(_)));
    }

    #[test]
    fn a_window_aligned_to_the_first_call_opens_with_it() {
        let r = rule([Some(2), None, None], Shape::Fixed, Alignment::FirstCall);
        // The window opens at 700 and ends at 1,700: the clock's restart at 1,000 frees nothing.
        assert_eq!(admitted(&r, [700, 800, 1_000, 1_699, 1_700, 1_701, 1_702]), vec![700, 800, 1_700, 1_701]);
        let mut c = Counters::default();
        c.admit(700, &r);
        c.admit(800, &r);
        assert!(matches!(c.admit(1_200, &r), Admission::Limited { retry_after_ms: 500, .. }));
        // Idle past its end: no window is open until the next call.
        assert_eq!(c.usage(5_000, &r)[0].used, 0);
    }

    #[test]
    fn a_sliding_window_counts_any_span_of_its_length() {
        let r = rule([Some(2), None, None], Shape::Sliding, Alignment::Clock);
        // Calls at 900 and 950: the clock's restart at 1,000 frees nothing until 1,900.
        assert_eq!(admitted(&r, [900, 950, 1_000, 1_899, 1_900, 1_949, 1_950]), vec![900, 950, 1_900, 1_950]);
        let mut c = Counters::default();
        c.admit(900, &r);
        c.admit(950, &r);
        match c.admit(1_000, &r) {
            Admission::Limited { retry_after_ms, usage, .. } => assert_eq!((retry_after_ms, usage[0].used), (900, 2)),
            other => panic!("{other:?}"),
        }
        // The usage falls one call at a time.
        assert_eq!(c.usage(1_920, &r)[0].used, 1);
    }

    #[test]
    fn a_bucket_refills_evenly() {
        // Four tokens, refilled at four a second: one every 250 ms.
        let r = rule([Some(4), None, None], Shape::Bucket, Alignment::Clock);
        let mut c = Counters::default();
        for t in [0, 0, 0, 0] {
            assert!(matches!(c.admit(t, &r), Admission::Allowed(_)));
        }
        match c.admit(100, &r) {
            Admission::Limited { retry_after_ms, .. } => assert_eq!(retry_after_ms, 150),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.admit(250, &r), Admission::Allowed(_)));
        assert!(matches!(c.admit(251, &r), Admission::Limited { .. }));
        // The usage falls gradually, rounded up: 4 tokens spent at 250, 2 at 750.
        assert_eq!(c.usage(749, &r)[0].used, 3);
        assert_eq!(c.usage(750, &r)[0].used, 2);
        // Full again after a window: the whole allowance at once.
        assert_eq!(admitted(&r, [0, 0, 0, 0, 0, 1_000, 1_000, 1_000, 1_000, 1_000]).len(), 8);
    }

    #[test]
    fn every_shape_admits_a_sliding_logs_calls() {
        // N calls in any span of one window: what a sliding log sends. Every shape admits it all.
        let sends: Vec<u64> = (0..5u64).flat_map(|w| (0..3).map(move |i| w * 1_010 + i * 7)).collect();
        for shape in [Shape::Fixed, Shape::Sliding, Shape::Bucket] {
            for align in [Alignment::Clock, Alignment::FirstCall] {
                let r = rule([Some(3), None, None], shape, align);
                assert_eq!(admitted(&r, sends.iter().copied()), sends, "{shape:?} {align:?}");
            }
        }
    }

    #[test]
    fn headers_state_the_usage_as_the_style_says() {
        let mut w = Counters::default();
        let Admission::Allowed(u) = w.admit(5, &fixed([Some(20), None, Some(600)])) else { panic!() };
        let h = headers(&u);
        let get = |h: &[(&str, String)], n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get(&h, "x-rate-limit-minute").as_deref(), Some("20"));
        assert_eq!(get(&h, "x-minute-requests-left").as_deref(), Some("19"));
        assert_eq!(get(&h, "x-rate-limit-hourly").as_deref(), Some(""));
        assert_eq!(get(&h, "x-hourly-usage").as_deref(), Some("1"));
        assert_eq!(get(&h, "x-24-hour-requests-left").as_deref(), Some("599"));
        assert_eq!(h.len(), 9);
        let before = HeaderStyle { present: true, usage_counts_call: false, left_counts_call: false };
        let s = stated(&u, before);
        assert_eq!((s[0].used, s[0].left, s[1].left), (0, Some(20), None));
        let mixed = HeaderStyle { usage_counts_call: true, ..before };
        assert_eq!((stated(&u, mixed)[0].used, stated(&u, mixed)[0].left), (1, Some(20)));
        assert_eq!((retry_after_secs(1), retry_after_secs(1_000), retry_after_secs(1_001)), (1, 1, 2));
    }

    #[test]
    fn usage_stats_report_live_lagging_or_stale() {
        let r = fixed([Some(20), None, None]);
        let mut c = Counters::default();
        let mut seen = UsageHistory::default();
        for t in [0, 100, 200, 300] {
            let Admission::Allowed(u) = c.admit(t, &r) else { panic!() };
            seen.record(t, u, 150);
        }
        let live = c.usage(310, &r);
        assert_eq!(seen.report(310, live, UsageStats::Live)[0].used, 4);
        // 150 ms late: the count after the call at 100.
        let lag = seen.report(310, live, UsageStats::Lagging(150))[0];
        assert_eq!((lag.used, lag.left), (2, Some(18)));
        assert_eq!(seen.report(310, live, UsageStats::Stale)[0].used, 1);
        // Nothing old enough yet: nothing used.
        assert_eq!(UsageHistory::default().report(10, live, UsageStats::Lagging(150))[0].used, 0);
        assert_eq!("lag:250".parse(), Ok(UsageStats::Lagging(250)));
        assert_eq!("stale".parse(), Ok(UsageStats::Stale));
        assert!("lag:x".parse::<UsageStats>().is_err());
    }
}
