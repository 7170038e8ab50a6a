//! The simulator's knobs: one struct, usable as clap flags and changeable at run time.

use apollo_client::Credits;
use clap::Parser;

use crate::limits::{Alignment, HeaderStyle, Rule, Shape, UsageStats};

/// Every knob of the simulator. Each field is a `--flag` of the binary; `Default` gives the same
/// values as the flags' defaults.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// API key accepted in the `x-api-key` header (or `Authorization: Bearer`).
    #[arg(long, default_value = "sim-key")]
    pub api_key: String,

    /// Seed of the random choices (request ids, faults, delivery jitter). The synthetic population
    /// does not depend on it: the same identifiers always give the same person.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Share of identifiable people that match (decided by a hash of the identifiers, so stable).
    #[arg(long, default_value_t = 0.85, value_parser = probability)]
    pub match_rate: f64,

    /// Share of matched people whose work email comes back as the locked placeholder.
    #[arg(long, default_value_t = 0.05, value_parser = probability)]
    pub placeholder_email_rate: f64,

    /// Share of matched people with a mobile number for the phone-reveal webhook.
    #[arg(long, default_value_t = 0.7, value_parser = probability)]
    pub mobile_rate: f64,

    /// Share of matched people with a personal email (shown with `reveal_personal_emails`).
    #[arg(long, default_value_t = 0.4, value_parser = probability)]
    pub personal_email_rate: f64,

    /// Share of matched people for whom the email waterfall finds an address.
    #[arg(long, default_value_t = 0.6, value_parser = probability)]
    pub waterfall_email_rate: f64,

    /// Share of matched people for whom the phone waterfall finds a number.
    #[arg(long, default_value_t = 0.5, value_parser = probability)]
    pub waterfall_phone_rate: f64,

    /// bulk_match calls allowed per simulated minute [default: unlimited].
    #[arg(long)]
    pub minute_limit: Option<u32>,

    /// bulk_match calls allowed per simulated hour [default: unlimited].
    #[arg(long)]
    pub hour_limit: Option<u32>,

    /// bulk_match calls allowed per simulated 24 hours [default: unlimited].
    #[arg(long)]
    pub day_limit: Option<u32>,

    /// How the limits count: `fixed` windows, a `sliding` window (N calls in any span of the
    /// window's length) or a token `bucket` (N tokens, refilled evenly at N per window length).
    #[arg(long, value_enum, default_value_t = Shape::Fixed)]
    pub limit_shape: Shape,

    /// Where a fixed window starts: at the multiples of its length on the simulator's `clock`, or
    /// at the `first-call` after the previous window ended.
    #[arg(long, value_enum, default_value_t = Alignment::Clock)]
    pub window_alignment: Alignment,

    /// What the usage-stats endpoint reports: the `live` count, the count `lag:MS` milliseconds
    /// ago, or `stale` (always 1 used).
    #[arg(long, default_value = "live")]
    pub usage_stats: UsageStats,

    /// `x-*-usage` counts only the calls before the one it answers [default: it counts that call].
    #[arg(long)]
    pub usage_header_excludes_call: bool,

    /// `x-*-requests-left` is what was left before the call it answers [default: after it].
    #[arg(long)]
    pub left_header_excludes_call: bool,

    /// No rate-limit headers on any answer (a 429 still has `retry-after`).
    #[arg(long)]
    pub no_rate_headers: bool,

    /// A 429's wait only as `retry-after` in whole seconds, rounded up, as Apollo sends it
    /// [default: also the exact `x-retry-after-ms`].
    #[arg(long)]
    pub retry_after_whole_seconds: bool,

    /// A loaded Apollo: a random delay of up to this many ms (seeded) between receiving a call and
    /// counting it against the limits; the answer comes after the count.
    #[arg(long, default_value_t = 0)]
    pub count_delay_ms: u64,

    /// Count as a rate-limit trace of the service (`APOLLO_TRACE_FILE`) shows Apollo counted: its
    /// limits, header semantics, `retry-after` form and answer-time spread override the knobs
    /// above (see `replay`) [default: none].
    #[arg(long)]
    pub replay_trace: Option<std::path::PathBuf>,

    /// Fault: the `retry-after` of every 429, sent verbatim instead of the real wait (e.g. `inf`,
    /// `-1`, an HTTP date), with no `x-retry-after-ms` [default: the real wait].
    #[arg(long)]
    pub retry_after_header: Option<String>,

    /// Length of a simulated minute in milliseconds; an hour is 60 of them, a day 24 hours.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub minute_ms: u64,

    /// Remaining credit balance, decimal; every charge lowers it and asynchronous charges are
    /// reserved when the request is accepted. A call that would overdraw it gets the 422
    /// credits-exhausted answer [default: unlimited].
    #[arg(long, value_parser = parse_credits)]
    pub credit_balance: Option<Credits>,

    /// Delay before an asynchronous delivery is POSTed (and becomes pollable), in ms.
    #[arg(long, default_value_t = 2_000)]
    pub delivery_delay_ms: u64,

    /// Random extra delay added to each delivery, 0..=this many ms.
    #[arg(long, default_value_t = 1_000)]
    pub delivery_jitter_ms: u64,

    /// Retries after a failed delivery attempt (receiver non-2xx or connection error).
    #[arg(long, default_value_t = 5)]
    pub max_delivery_retries: u32,

    /// Wait before the first retry of a delivery, in ms; doubles for each further retry.
    #[arg(long, default_value_t = 500)]
    pub retry_backoff_ms: u64,

    /// Timeout of one delivery POST, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub delivery_timeout_ms: u64,

    /// Delay of every synchronous bulk_match answer, in ms. The call is charged (and its
    /// deliveries scheduled) before the wait, so a caller that hangs up meanwhile still pays, as
    /// with Apollo.
    #[arg(long, visible_alias = "answer-delay", default_value_t = 0)]
    pub latency_ms: u64,

    /// Delay of a bulk_match answer hit by the `slow` fault, in ms.
    #[arg(long, default_value_t = 3_000)]
    pub slow_ms: u64,

    /// How long a delivery picked for reordering waits for a later one to overtake it, in ms;
    /// it is sent anyway when none comes.
    #[arg(long, default_value_t = 5_000)]
    pub reorder_window_ms: u64,

    /// HTTP worker threads of the simulator's server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,

    /// Fault: probability that a delivery is POSTed twice (identical bodies).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_duplicate: f64,

    /// Fault: probability that a delivery is held back until a later delivery of another
    /// request has been sent (the two arrive swapped).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_reorder: f64,

    /// Fault: probability that a delivery is POSTed before the synchronous answer is returned.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_early: f64,

    /// Fault: probability that a delivery is never POSTed (still pollable with webhook_result).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_drop: f64,

    /// Fault: probability that bulk_match answers 500, 502 or 503 (no charge, no async work).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_5xx: f64,

    /// Fault: probability that bulk_match answers only after `slow_ms`.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_slow: f64,

    /// Fault: probability that bulk_match is charged and its webhooks scheduled as usual, but the
    /// answer comes only after `charge_then_timeout_ms` (longer than a client's timeout), so the
    /// client never sees the 200 while the deliveries still arrive.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_charge_then_timeout: f64,

    /// Delay of a bulk_match answer hit by the `charge_then_timeout` fault, in ms.
    #[arg(long, default_value_t = 60_000)]
    pub charge_then_timeout_ms: u64,

    /// Fault: a bulk_match whose details include one carrying this value (any field equal to it,
    /// ignoring case, or an email at this domain) is refused with 422 naming that detail, with no
    /// charge, as Apollo refuses a detail it cannot process [default: none].
    #[arg(long)]
    pub reject_marker: Option<String>,

    /// The API key is valid but may not use bulk_match: every bulk_match answers 403
    /// `API_INACCESSIBLE`, as Apollo does for a key of a plan without the endpoint.
    #[arg(long)]
    pub forbidden: bool,

    /// Fault: probability that `webhook_result` answers 410 `request_id_expired` for a result
    /// that exists (as Apollo does once a result has expired).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_result_expired: f64,

    /// Two identifiers of one person, `FROM=TO` (repeatable): a detail whose identity is FROM is
    /// answered as the person TO identifies. Identities are written as `email:ADDRESS`,
    /// `linkedin:SLUG`, `id:APOLLO_ID` or `name:FIRST LAST|org:DOMAIN`, e.g.
    /// `--same-person linkedin:dana-okafor=email:dana@northwind-labs.com`.
    #[arg(long = "same-person", value_parser = same_person)]
    pub same_person: Vec<(String, String)>,

    /// Fault: probability that a waterfall request is answered with `waterfall.status` "failed"
    /// (no webhook, no charge).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_waterfall_failed: f64,

    /// Fault: probability that a phone reveal is answered with `phone_enrichment.status`
    /// "skipped" (no webhook, no phone charge).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fault_phone_skipped: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        // Parsing an empty command line keeps `Default` and the documented flag defaults identical.
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: SimConfig,
        }
        Defaults::parse_from(["apollo-sim"]).config
    }
}

impl SimConfig {
    /// Length of the simulated minute, hour and day windows in ms.
    pub fn window_lengths_ms(&self) -> [u64; 3] {
        let minute = self.minute_ms.max(1);
        [minute, minute * 60, minute * 60 * 24]
    }

    /// The rule the rate limits count by.
    pub fn limit_rule(&self) -> Rule {
        Rule {
            lengths_ms: self.window_lengths_ms(),
            limits: [self.minute_limit, self.hour_limit, self.day_limit],
            shape: self.limit_shape,
            align: self.window_alignment,
        }
    }

    /// What the rate-limit headers state.
    pub fn header_style(&self) -> HeaderStyle {
        HeaderStyle {
            present: !self.no_rate_headers,
            usage_counts_call: !self.usage_header_excludes_call,
            left_counts_call: !self.left_header_excludes_call,
        }
    }
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(format!("{p} is not a probability in 0..=1")) }
}

fn same_person(s: &str) -> Result<(String, String), String> {
    let (from, to) = s.split_once('=').ok_or_else(|| format!("{s:?} is not FROM=TO"))?;
    let key = |k: &str| {
        let k = k.trim().to_lowercase();
        let known = ["email:", "hashed_email:", "linkedin:", "id:", "name:"].iter().any(|p| k.starts_with(p));
        if known && !k.ends_with(':') { Ok(k) } else { Err(format!("{k:?} is not an identity such as email:ADDRESS")) }
    };
    Ok((key(from)?, key(to)?))
}

fn parse_credits(s: &str) -> Result<Credits, String> {
    match Credits::parse_decimal(s) {
        Some(c) if c.micros() >= 0 => Ok(c),
        _ => Err(format!("{s:?} is not a non-negative decimal number of credits")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_flags() {
        let c = SimConfig::default();
        assert_eq!(c.api_key, "sim-key");
        assert_eq!(c.match_rate, 0.85);
        assert_eq!(c.placeholder_email_rate, 0.05);
        assert_eq!(c.mobile_rate, 0.7);
        assert_eq!(c.waterfall_email_rate, 0.6);
        assert_eq!(c.waterfall_phone_rate, 0.5);
        assert_eq!((c.minute_limit, c.hour_limit, c.day_limit), (None, None, None));
        assert_eq!(c.minute_ms, 60_000);
        assert_eq!(c.credit_balance, None);
        assert_eq!(c.delivery_delay_ms, 2_000);
        assert_eq!(c.max_delivery_retries, 5);
        assert_eq!(c.retry_backoff_ms, 500);
        assert_eq!(c.slow_ms, 3_000);
        assert_eq!(c.fault_5xx, 0.0);
        assert_eq!((c.fault_charge_then_timeout, c.charge_then_timeout_ms), (0.0, 60_000));
        assert_eq!((c.reject_marker.clone(), c.same_person.len()), (None, 0));
        assert_eq!((c.forbidden, c.fault_result_expired), (false, 0.0));
        assert_eq!(c.window_lengths_ms(), [60_000, 3_600_000, 86_400_000]);
        assert_eq!(
            (c.limit_shape, c.window_alignment, c.usage_stats),
            (Shape::Fixed, Alignment::Clock, UsageStats::Live)
        );
        assert_eq!(c.header_style(), HeaderStyle { present: true, usage_counts_call: true, left_counts_call: true });
        assert_eq!((c.retry_after_whole_seconds, c.count_delay_ms), (false, 0));
    }

    #[test]
    fn knobs_are_validated() {
        assert_eq!(probability("0.25"), Ok(0.25));
        assert!(probability("1.5").is_err());
        assert!(probability("x").is_err());
        assert_eq!(parse_credits("12.5"), Ok(Credits(12_500_000)));
        assert!(parse_credits("-1").is_err());
        assert_eq!(
            same_person(" linkedin:dana-o = Email:Dana@N.io"),
            Ok(("linkedin:dana-o".into(), "email:dana@n.io".into()))
        );
        assert!(same_person("dana").is_err() && same_person("email:=linkedin:x").is_err());
    }
}
