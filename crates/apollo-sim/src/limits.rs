//! Fixed-window rate limits (minute, hour, day at once), on a scaled clock given by the caller.
//!
//! Pure arithmetic: the caller passes "now" in milliseconds since the simulator started, so tests
//! inject any clock they like.

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

/// The state of one window as reported to the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowUsage {
    /// The limit, `None` when unlimited.
    pub limit: Option<u32>,
    /// Calls counted in the current window.
    pub used: u32,
    /// Calls left, `None` when unlimited.
    pub left: Option<u32>,
    /// Milliseconds until the current window ends.
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
        /// Milliseconds until every exhausted window has reset.
        retry_after_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    index: u64,
    count: u32,
}

/// Counters for the three fixed windows.
#[derive(Clone, Debug, Default)]
pub struct FixedWindows {
    counters: [Counter; 3],
}

impl FixedWindows {
    /// Counts a call at `now_ms` unless a window is full. `lengths_ms` are the window lengths
    /// (minute, hour, day), `limits` their limits (`None` = unlimited).
    pub fn admit(&mut self, now_ms: u64, lengths_ms: [u64; 3], limits: [Option<u32>; 3]) -> Admission {
        self.roll(now_ms, lengths_ms);
        let usage = self.usage(now_ms, lengths_ms, limits);
        let exhausted = usage
            .iter()
            .zip(WindowKind::ALL)
            .filter_map(|(u, kind)| u.limit.filter(|l| u.used >= *l).map(|l| (kind, l, u.resets_in_ms)))
            .max_by_key(|(_, _, wait)| *wait);
        if let Some((window, limit, wait)) = exhausted {
            return Admission::Limited { usage, window, limit, retry_after_ms: wait.max(1) };
        }
        for c in &mut self.counters {
            c.count = c.count.saturating_add(1);
        }
        Admission::Allowed(self.usage(now_ms, lengths_ms, limits))
    }

    /// The usage at `now_ms` without counting anything.
    pub fn usage(&self, now_ms: u64, lengths_ms: [u64; 3], limits: [Option<u32>; 3]) -> Usage {
        let mut out = [WindowUsage::default(); 3];
        for i in 0..3 {
            let len = lengths_ms[i].max(1);
            let c = self.counters[i];
            let used = if c.index == now_ms / len { c.count } else { 0 };
            out[i] = WindowUsage {
                limit: limits[i],
                used,
                left: limits[i].map(|l| l.saturating_sub(used)),
                resets_in_ms: len - now_ms % len,
            };
        }
        out
    }

    fn roll(&mut self, now_ms: u64, lengths_ms: [u64; 3]) {
        for (c, len) in self.counters.iter_mut().zip(lengths_ms) {
            let index = now_ms / len.max(1);
            if c.index != index {
                *c = Counter { index, count: 0 };
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

    #[test]
    fn minute_window_fills_and_resets_at_its_boundary() {
        let mut w = FixedWindows::default();
        let limits = [Some(3), None, None];
        for (i, t) in [100, 200, 300].into_iter().enumerate() {
            match w.admit(t, LEN, limits) {
                Admission::Allowed(u) => {
                    assert_eq!(u[0].used, i as u32 + 1);
                    assert_eq!(u[0].left, Some(2 - i as u32));
                    assert_eq!(u[1].limit, None);
                }
                other => panic!("call {i} refused: {other:?}"),
            }
        }
        match w.admit(400, LEN, limits) {
            Admission::Limited { window, limit, retry_after_ms, usage } => {
                assert_eq!((window, limit, retry_after_ms), (WindowKind::Minute, 3, 600));
                assert_eq!(usage[0].used, 3);
            }
            other => panic!("4th call admitted: {other:?}"),
        }
        // Refused calls are not counted; the next window starts empty.
        assert!(matches!(w.admit(999, LEN, limits), Admission::Limited { retry_after_ms: 1, .. }));
        match w.admit(1_000, LEN, limits) {
            Admission::Allowed(u) => assert_eq!((u[0].used, u[0].left, u[1].used), (1, Some(2), 4)),
            other => panic!("new window refused: {other:?}"),
        }
    }

    #[test]
    fn the_longest_exhausted_window_decides_the_wait() {
        let mut w = FixedWindows::default();
        let limits = [Some(10), Some(2), None];
        assert!(matches!(w.admit(0, LEN, limits), Admission::Allowed(_)));
        assert!(matches!(w.admit(5_000, LEN, limits), Admission::Allowed(_)));
        match w.admit(10_000, LEN, limits) {
            Admission::Limited { window, retry_after_ms, .. } => {
                assert_eq!((window, retry_after_ms), (WindowKind::Hour, 50_000));
            }
            other => panic!("hour limit ignored: {other:?}"),
        }
        assert!(matches!(w.admit(60_000, LEN, limits), Admission::Allowed(_)));
    }

    #[test]
    fn headers_leave_unlimited_windows_empty() {
        let mut w = FixedWindows::default();
        let Admission::Allowed(u) = w.admit(5, LEN, [Some(20), None, Some(600)]) else { panic!() };
        let h = headers(&u);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-rate-limit-minute"), Some("20"));
        assert_eq!(get("x-minute-requests-left"), Some("19"));
        assert_eq!(get("x-rate-limit-hourly"), Some(""));
        assert_eq!(get("x-hourly-usage"), Some("1"));
        assert_eq!(get("x-24-hour-requests-left"), Some("599"));
        assert_eq!(h.len(), 9);
        assert_eq!((retry_after_secs(1), retry_after_secs(1_000), retry_after_secs(1_001)), (1, 1, 2));
    }
}
