//! A rate-limit trace: per Apollo call, only what a rate limiter sees of it (when it was sent
//! and answered, relative to the first call, whether Apollo refused it, the rate-limit headers
//! and the wait a 429 asked for), one JSON object a line. No key, no body, nothing about people:
//! a user who meets 429s can hand a trace over, and the simulator replays its behaviour.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rate_limit::{RateLimit, Window, WindowLimit};

/// One window as the answer's headers stated it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceWindow {
    /// `"unknown"` (no header), `"unlimited"` (empty header) or the stated limit.
    pub limit: TraceLimit,
    /// The usage header, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// The requests-left header, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<u64>,
}

/// A window's stated limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceLimit {
    /// No header.
    #[default]
    Unknown,
    /// An empty header: no limit.
    Unlimited,
    /// At most this many calls.
    #[serde(untagged)]
    Max(u64),
}

/// One call of a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLine {
    /// Sent, in ms after the trace's first call was sent.
    pub sent_ms: u64,
    /// Answered, in ms after the same instant.
    pub answered_ms: u64,
    /// 429 when Apollo refused the call for its rate limit, else the answer's status.
    pub status: u16,
    /// Minute, hour and day.
    pub windows: [TraceWindow; 3],
    /// The wait a 429 asked for, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl TraceLine {
    /// The line of a call sent `sent` and answered `answered` after the trace's origin.
    pub fn new(sent: Duration, answered: Duration, status: u16, headers: &RateLimit) -> TraceLine {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let window = |w: &Window| TraceWindow {
            limit: match w.limit {
                WindowLimit::Unknown => TraceLimit::Unknown,
                WindowLimit::Unlimited => TraceLimit::Unlimited,
                WindowLimit::Max(n) => TraceLimit::Max(n),
            },
            used: w.used,
            left: w.left,
        };
        TraceLine {
            sent_ms: ms(sent),
            answered_ms: ms(answered),
            status,
            windows: headers.windows().map(window),
            retry_after_ms: headers.retry_after.map(ms),
        }
    }
}

/// Reads a trace: one [`TraceLine`] per non-empty line.
pub fn parse_trace(text: &str) -> Result<Vec<TraceLine>, serde_json::Error> {
    text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_only_what_the_limiter_sees_and_reads_back() {
        let h = RateLimit {
            minute: Window { limit: WindowLimit::Max(20), used: Some(3), left: Some(17) },
            hour: Window { limit: WindowLimit::Unlimited, used: Some(3), left: None },
            retry_after: Some(Duration::from_millis(1_500)),
            ..Default::default()
        };
        let line = TraceLine::new(Duration::from_millis(12), Duration::from_millis(40), 429, &h);
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"sent_ms":12,"answered_ms":40,"status":429,"windows":[{"limit":20,"used":3,"left":17},{"limit":"unlimited","used":3},{"limit":"unknown"}],"retry_after_ms":1500}"#
        );
        assert_eq!(parse_trace(&format!("{text}\n\n{text}\n")).unwrap(), vec![line.clone(), line]);
        assert!(parse_trace("{\"sent_ms\": \"soon\"}").is_err());
    }
}
