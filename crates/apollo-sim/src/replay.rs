//! Replaying a rate-limit trace (`APOLLO_TRACE_FILE` of the service, [`TraceLine`]s): the way of
//! counting its answers show becomes the simulator's knobs. Pure: the trace's lines in, the knobs
//! out. A trace does not show the window's length (the simulator's `minute_ms` stays) nor whether
//! a window is fixed, sliding or a bucket (the configured shape stays).

use apollo_client::trace::{TraceLimit, TraceLine};

use crate::config::SimConfig;

/// How a trace's answers counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Per window, the largest limit stated, else the largest usage seen (none when stated
    /// unlimited).
    pub limits: [Option<u32>; 3],
    /// No answer had rate-limit headers.
    pub no_headers: bool,
    /// An accepted call's usage header did not count it (a minute usage of 0 was seen).
    pub usage_excludes_call: bool,
    /// Requests-left was what was left before the call.
    pub left_excludes_call: bool,
    /// Every 429's wait was whole seconds.
    pub whole_seconds: bool,
    /// The spread of the answer times: how late Apollo may have counted a call.
    pub count_delay_ms: u64,
}

/// What a trace shows of Apollo's counting.
pub fn behaviour(lines: &[TraceLine]) -> Behaviour {
    let limits = std::array::from_fn(|i| {
        let stated = lines
            .iter()
            .filter_map(|l| match l.windows[i].limit {
                TraceLimit::Max(n) => Some(n),
                _ => None,
            })
            .max();
        // A usage without a stated limit bounds the limit from below: taken as the limit, it errs
        // low. A window stated unlimited has none.
        let unlimited = lines.iter().any(|l| l.windows[i].limit == TraceLimit::Unlimited);
        let used = lines.iter().filter_map(|l| l.windows[i].used).max().filter(|_| !unlimited);
        stated.or(used).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    });
    let accepted: Vec<&TraceLine> = lines.iter().filter(|l| l.status != 429).collect();
    let usage_excludes_call = accepted.iter().any(|l| l.windows[0].used == Some(0));
    // With the usage counting the call, used + left is the limit when left counts it too; one
    // more when left is what was left before.
    let before = usize::from(usage_excludes_call);
    let left_excludes_call = accepted.iter().any(|l| match l.windows[0] {
        w @ apollo_client::trace::TraceWindow { limit: TraceLimit::Max(n), .. } => {
            w.used.zip(w.left).is_some_and(|(u, r)| u + r + before as u64 == n + 1)
        }
        _ => false,
    });
    let no_headers = lines.iter().all(|l| l.windows.iter().all(|w| w.limit == TraceLimit::Unknown && w.used.is_none()));
    let waits: Vec<u64> = lines.iter().filter_map(|l| l.retry_after_ms).collect();
    let whole_seconds = !waits.is_empty() && waits.iter().all(|ms| ms % 1_000 == 0);
    let took = lines.iter().map(|l| l.answered_ms.saturating_sub(l.sent_ms));
    let (fastest, slowest) = took.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    Behaviour {
        limits,
        no_headers,
        usage_excludes_call,
        left_excludes_call,
        whole_seconds,
        count_delay_ms: slowest.saturating_sub(fastest.min(slowest)),
    }
}

/// Sets the knobs a behaviour shows; limits the trace says nothing of stay as configured.
pub fn apply(config: &mut SimConfig, b: &Behaviour) {
    let [m, h, d] = b.limits;
    config.minute_limit = m.or(config.minute_limit);
    config.hour_limit = h.or(config.hour_limit);
    config.day_limit = d.or(config.day_limit);
    config.no_rate_headers = b.no_headers;
    config.usage_header_excludes_call = b.usage_excludes_call;
    config.left_header_excludes_call = b.left_excludes_call;
    config.retry_after_whole_seconds = b.whole_seconds;
    config.count_delay_ms = b.count_delay_ms;
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_client::trace::TraceWindow;

    fn line(sent: u64, took: u64, status: u16, used: u64, left: u64, retry: Option<u64>) -> TraceLine {
        let minute = TraceWindow { limit: TraceLimit::Max(20), used: Some(used), left: Some(left) };
        let hour = TraceWindow { limit: TraceLimit::Unlimited, used: Some(used), left: None };
        TraceLine {
            sent_ms: sent,
            answered_ms: sent + took,
            status,
            windows: [minute, hour, TraceWindow::default()],
            retry_after_ms: retry,
        }
    }

    #[test]
    fn a_trace_shows_how_its_answers_counted() {
        // Usage before the call (0 on a first call), left after it (19 + 0 = 20 - 1).
        let trace = [line(0, 8, 200, 0, 19, None), line(5, 48, 200, 1, 18, None), line(9, 20, 429, 20, 0, Some(3_000))];
        let b = behaviour(&trace);
        assert_eq!(b.limits, [Some(20), None, None]);
        assert!(b.usage_excludes_call && !b.left_excludes_call && b.whole_seconds && !b.no_headers);
        assert_eq!(b.count_delay_ms, 40);
        // Usage counting the call, left before it: 1 + 20 = 20 + 1.
        let b = behaviour(&[line(0, 5, 200, 1, 20, None), line(10, 5, 429, 20, 0, Some(1_250))]);
        assert!(!b.usage_excludes_call && b.left_excludes_call && !b.whole_seconds);
        // No headers at all: nothing to say of the limits.
        let bare = TraceLine { sent_ms: 0, answered_ms: 3, status: 200, ..TraceLine::default() };
        let b = behaviour(&[bare]);
        assert!(b.no_headers && b.limits == [None; 3]);
        let mut c = SimConfig { minute_limit: Some(7), ..SimConfig::default() };
        apply(&mut c, &b);
        assert_eq!((c.minute_limit, c.no_rate_headers, c.count_delay_ms), (Some(7), true, 0));
    }
}
