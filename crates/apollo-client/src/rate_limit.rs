//! Apollo's rate-limit response headers, read into one value.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// The longest wait a `retry-after` is taken to ask for: no Apollo window is longer than a day.
/// Longer values (`1e20`, `inf`) are cut to it, so no wait overflows a clock.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A wait of `secs` seconds, cut to [`MAX_RETRY_AFTER`]; `None` when it is not a wait at all
/// (NaN or negative), so that the caller falls back to its own default.
pub fn wait_from_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

/// Reads a `retry-after` value: seconds (decimals tolerated) or an HTTP date, which gives the time
/// left until then (zero when it is past). Empty or unreadable values give `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return wait_from_secs(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// The limit of one window as the headers state it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowLimit {
    /// The header was absent (401/403 answers carry none).
    #[default]
    Unknown,
    /// The header was present and empty: no limit for this window.
    Unlimited,
    /// At most this many calls in the window.
    Max(u64),
}

/// One fixed window (minute, hour or day).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The window's limit.
    pub limit: WindowLimit,
    /// Calls used in the current window.
    pub used: Option<u64>,
    /// Calls left in the current window.
    pub left: Option<u64>,
}

/// All rate-limit information of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// The per-minute window.
    pub minute: Window,
    /// The hourly window.
    pub hour: Window,
    /// The 24-hour window (either spelling).
    pub day: Window,
    /// `retry-after` on a 429; the simulator's `x-retry-after-ms` when present (finer than seconds).
    /// Never longer than [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
}

impl RateLimit {
    /// Reads the headers of any answer; absent headers leave their fields unknown.
    pub fn from_headers(h: &HeaderMap) -> RateLimit {
        let get = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("").trim().to_string());
        let window = |limit: &str, used: &str, left: &str| Window {
            limit: match get(limit) {
                None => WindowLimit::Unknown,
                Some(v) if v.is_empty() => WindowLimit::Unlimited,
                Some(v) => v.parse().map(WindowLimit::Max).unwrap_or(WindowLimit::Unknown),
            },
            used: get(used).and_then(|v| v.parse().ok()),
            left: get(left).and_then(|v| v.parse().ok()),
        };
        let mut day = window("x-rate-limit-24-hour", "x-24-hour-usage", "x-24-hour-requests-left");
        if day.limit == WindowLimit::Unknown {
            day = window("x-rate-limit-daily", "x-daily-usage", "x-daily-requests-left");
        }
        let retry_after = get("x-retry-after-ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| Duration::from_millis(ms).min(MAX_RETRY_AFTER))
            .or_else(|| get("retry-after").and_then(|v| parse_retry_after(&v, SystemTime::now())));
        RateLimit {
            minute: window("x-rate-limit-minute", "x-minute-usage", "x-minute-requests-left"),
            hour: window("x-rate-limit-hourly", "x-hourly-usage", "x-hourly-requests-left"),
            day,
            retry_after,
        }
    }

    /// The minute, hour and day windows, in that order.
    pub fn windows(&self) -> [&Window; 3] {
        [&self.minute, &self.hour, &self.day]
    }

    /// Whether any limit header was present at all.
    pub fn is_known(&self) -> bool {
        self.windows().iter().any(|w| w.limit != WindowLimit::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    /// Reads `name: value` lines of the shared example file into header maps, one per blank-line block.
    fn blocks() -> Vec<HeaderMap> {
        let text = include_str!("../tests/fixtures/headers_rate_limit.txt");
        text.split("\n\n")
            .map(|block| {
                let mut h = HeaderMap::new();
                for line in block.lines().filter(|l| !l.starts_with('#')) {
                    if let Some((k, v)) = line.split_once(':') {
                        h.insert(
                            HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                            HeaderValue::from_str(v.trim()).unwrap(),
                        );
                    }
                }
                h
            })
            .collect()
    }

    #[test]
    fn example_headers_parse() {
        let b = blocks();
        let current = RateLimit::from_headers(&b[0]);
        assert_eq!(current.minute, Window { limit: WindowLimit::Max(20), used: Some(7), left: Some(13) });
        assert_eq!(current.hour, Window { limit: WindowLimit::Max(100), used: Some(41), left: Some(59) });
        assert_eq!(current.day, Window { limit: WindowLimit::Max(600), used: Some(212), left: Some(388) });
        assert_eq!(current.retry_after, None);

        let older = RateLimit::from_headers(&b[1]);
        assert_eq!(older.day, Window { limit: WindowLimit::Max(600), used: Some(212), left: Some(388) });
        assert_eq!(older.minute.limit, WindowLimit::Unknown);

        let paid = RateLimit::from_headers(&b[2]);
        assert_eq!(paid.minute.limit, WindowLimit::Max(1000));
        assert_eq!(paid.minute.left, Some(997));
        assert_eq!(paid.hour.limit, WindowLimit::Unlimited);
        assert_eq!(paid.day.limit, WindowLimit::Unlimited);

        let on_429 = RateLimit::from_headers(&b[3]);
        assert_eq!(on_429.retry_after, Some(Duration::from_secs(17)));
        assert!(!on_429.is_known());
    }

    #[test]
    fn hostile_retry_after_values_never_panic_and_are_clamped() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let cases: &[(&str, Option<Duration>)] = &[
            ("17", Some(Duration::from_secs(17))),
            (" 1.5 ", Some(Duration::from_millis(1500))),
            ("0", Some(Duration::ZERO)),
            ("inf", Some(MAX_RETRY_AFTER)),
            ("+Infinity", Some(MAX_RETRY_AFTER)),
            ("1e20", Some(MAX_RETRY_AFTER)),
            ("1e300", Some(MAX_RETRY_AFTER)),
            ("86401", Some(MAX_RETRY_AFTER)),
            ("NaN", None),
            ("-1", None),
            ("-inf", None),
            ("", None),
            ("soon", None),
            ("Sun, 06 Nov 1994 08:50:37 GMT", Some(Duration::from_secs(60))),
            ("Sunday, 06-Nov-94 08:49:47 GMT", Some(Duration::from_secs(10))),
            ("Sun, 06 Nov 1994 08:49:36 GMT", Some(Duration::ZERO)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(Duration::ZERO)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(MAX_RETRY_AFTER)),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), *want, "{value:?}");
        }
        for (header, value, want) in [
            ("retry-after", "inf", Some(MAX_RETRY_AFTER)),
            ("retry-after", "-5", None),
            ("x-retry-after-ms", "18446744073709551615", Some(MAX_RETRY_AFTER)),
            ("x-retry-after-ms", "250", Some(Duration::from_millis(250))),
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(header), HeaderValue::from_static(value));
            assert_eq!(RateLimit::from_headers(&h).retry_after, want, "{header}: {value}");
        }
    }
}
