//! All configuration, from the environment (docs/DESIGN.md §6) or the matching command-line flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use rules::ratelimit::Limits;
use secrecy::SecretString;

use crate::core::callback_url::CallbackPolicy;
pub use crate::core::duration::parse_duration;

/// The service's settings. Secrets are `SecretString`: they never print in `Debug`.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Database: `sqlite://path?mode=rwc` (embedded default) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://enrichd.db?mode=rwc")]
    pub database_url: String,

    /// Listen address of the HTTP API.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Serve `/metrics` on this address only (unset: on the API's address).
    #[arg(long, env = "METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Apollo API key (required).
    #[arg(long, env = "APOLLO_API_KEY", hide_env_values = true)]
    pub apollo_api_key: Option<SecretString>,

    /// Apollo base URL (the simulator's URL in tests and the demo).
    #[arg(long, env = "APOLLO_BASE_URL", default_value = "https://api.apollo.io")]
    pub apollo_base_url: String,

    /// How Apollo reaches our webhook route; without it, asynchronous results are polled.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Client API keys (required), comma-separated entries: a bare key (`openssl rand -base64 24`,
    /// trailing `=` included) or `name=key`. An entry is named only when a `=` is followed by
    /// something other than `=` (base64 padding only ends a key). Each key at least 16 characters
    /// and used once; a name may have several keys (rotation).
    #[arg(long, env = "ENRICHD_API_KEYS", hide_env_values = true, verbatim_doc_comment)]
    pub api_keys: Option<SecretString>,

    /// Operator keys for `/v1/admin/*` (e.g. resume dispatch), same format as ENRICHD_API_KEYS and
    /// distinct from every client key. Unset: admin routes answer 403 (a restart also resumes).
    #[arg(long, env = "ENRICHD_ADMIN_KEYS", hide_env_values = true, verbatim_doc_comment)]
    pub admin_keys: Option<SecretString>,

    /// `whsec_<base64>` secret that signs every callback (Standard Webhooks); required, at least
    /// 24 bytes once decoded (`echo whsec_$(openssl rand -base64 32)`).
    #[arg(long, env = "CALLBACK_SIGNING_SECRET", hide_env_values = true, verbatim_doc_comment)]
    pub callback_signing_secret: Option<SecretString>,

    /// Secret (at least 16 bytes) that keys the hashes of the do-not-enrich list
    /// (`/v1/suppressions`): the list holds HMAC-SHA256 hashes only. Changing it orphans every
    /// entry (they no longer match anyone): re-import the list after a rotation. Unset: the list
    /// is off (its routes answer 409) and nobody is checked.
    #[arg(long, env = "SUPPRESSION_KEY", hide_env_values = true, verbatim_doc_comment)]
    pub suppression_key: Option<SecretString>,

    /// Bulk-match calls per minute; unset: learned from Apollo's rate-limit headers. Headers only ever tighten it.
    #[arg(long, env = "APOLLO_RATE_PER_MINUTE")]
    pub rate_per_minute: Option<u32>,

    /// Bulk-match calls per hour; unset: learned from the headers.
    #[arg(long, env = "APOLLO_RATE_PER_HOUR")]
    pub rate_per_hour: Option<u32>,

    /// Bulk-match calls per day; unset: learned from the headers.
    #[arg(long, env = "APOLLO_RATE_PER_DAY")]
    pub rate_per_day: Option<u32>,

    /// Append, per Apollo call, only what the rate limiter sees of it (send and answer times,
    /// status, rate-limit headers, `retry-after`; no key, body or personal data) to this file as
    /// JSON lines, for `apollo-sim --replay-trace` [default: no trace].
    #[arg(long, env = "APOLLO_TRACE_FILE")]
    pub apollo_trace_file: Option<std::path::PathBuf>,

    /// Length of a rate-limit "minute" (tests and benchmarks shorten it to match the simulator).
    #[arg(long, env = "APOLLO_MINUTE", default_value = "60s", value_parser = parse_duration)]
    pub rate_minute: Duration,

    /// Longest wait after a 429, whatever its `retry-after` says (`inf`, `1e20`, a far date): a
    /// longer wait is cut to this, and the next call simply asks again.
    #[arg(long, env = "APOLLO_MAX_RETRY_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub max_retry_after: Duration,

    /// Apollo calls in flight at once.
    #[arg(long, env = "DISPATCH_CONCURRENCY", default_value_t = 8)]
    pub dispatch_concurrency: usize,

    /// Calls per batch that Apollo fails (5xx, timeouts) before its people fail; 429s and
    /// restarts of this service do not count. Ten, with the retry waits, ride out a burst of
    /// Apollo errors lasting minutes.
    #[arg(long, env = "APOLLO_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,

    /// First retry delay after a 5xx or timeout; doubles per attempt up to 5 minutes, with jitter.
    #[arg(long, env = "APOLLO_RETRY_BASE", default_value = "2s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Timeout of one Apollo call.
    #[arg(long, env = "APOLLO_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub apollo_timeout: Duration,

    /// Lease on claimed work (a batch in its call, a callback being sent, a one-replica task),
    /// renewed every third of it while the work runs: a replica that dies loses its work to the
    /// others this long after its last renewal. A batch's lease that runs out means an unknown outcome.
    #[arg(long, env = "DISPATCH_LEASE", default_value = "10s", value_parser = parse_duration, verbatim_doc_comment)]
    pub lease: Duration,

    /// On SIGTERM or SIGINT, how long calls already sent may take to be answered and recorded
    /// before the process exits anyway (inside Kubernetes' default 30 s grace).
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Poll `webhook_result` for batches whose deliveries are this late.
    #[arg(long, env = "RECONCILE_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub reconcile_after: Duration,

    /// How often the reconciler looks for late batches.
    #[arg(long, env = "RECONCILE_EVERY", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_every: Duration,

    /// While Apollo's refusal (a key rejected, credits exhausted) pauses dispatch, a call costing
    /// nothing probes this often; an accepted probe resumes dispatch (0s: only an operator does).
    #[arg(long, env = "PAUSE_PROBE_EVERY", default_value = "1m", value_parser = parse_duration)]
    pub pause_probe_every: Duration,

    /// People whose asynchronous parts have not come after this become `partial`.
    #[arg(long, env = "ASYNC_DEADLINE", default_value = "2h", value_parser = parse_duration)]
    pub async_deadline: Duration,

    /// People inlined in the final callback; beyond it the body links to the people endpoint.
    #[arg(long, env = "CALLBACK_INLINE_LIMIT", default_value_t = 1000)]
    pub callback_inline_limit: usize,

    /// Callback retry delays, comma-separated (a bounded schedule; jitter is added).
    #[arg(long, env = "CALLBACK_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h", value_parser = parse_schedule)]
    pub callback_schedule: Schedule,

    /// Timeout of one callback POST.
    #[arg(long, env = "CALLBACK_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub callback_timeout: Duration,

    /// Most people in one `person.completed` / `person.updated` event (1 to 1,000).
    #[arg(long, env = "PERSON_EVENTS_MAX_PEOPLE", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub person_events_max_people: u64,

    /// Longest a final person waits for its event to fill up before it is sealed anyway
    /// (100ms to 1h).
    #[arg(long, env = "PERSON_EVENTS_MAX_WAIT", default_value = "5s", value_parser = parse_event_wait)]
    pub person_events_max_wait: Duration,

    /// Allow plain-http callback URLs.
    #[arg(long, env = "CALLBACK_ALLOW_HTTP", default_value_t = false)]
    pub callback_allow_http: bool,

    /// Hosts allowed as callback targets even when loopback or private, comma-separated.
    #[arg(long, env = "CALLBACK_ALLOW_HOSTS", value_delimiter = ',')]
    pub callback_allow_hosts: Vec<String>,

    /// Credit budget of a job that gives no `max_credits` (decimal credits; unset = none).
    #[arg(long, env = "DEFAULT_MAX_CREDITS")]
    pub default_max_credits: Option<f64>,

    /// Credits each client may commit per UTC day: every job gets a budget within what remains,
    /// and a job submitted with nothing left is refused with 429 (unset = no cap).
    #[arg(long, env = "CLIENT_DAILY_CREDITS")]
    pub client_daily_credits: Option<f64>,

    /// Reuse window of jobs that give no `reuse_within` (e.g. `30d`): a person enriched this
    /// recently, with the same or more flags, is answered from the store (no call, no credit).
    /// Unset: off. Never longer than `RETENTION_DAYS`.
    #[arg(long, env = "REUSE_WITHIN", value_parser = parse_duration)]
    pub reuse_within: Option<Duration>,

    /// Whose earlier lookups reuse may answer from: `client` (the job's own client's) or `shared`
    /// (every client's).
    #[arg(long, env = "REUSE_SCOPE", value_enum, default_value_t = ReuseScope::Client)]
    pub reuse_scope: ReuseScope,

    /// Most people in one job.
    #[arg(long, env = "MAX_JOB_PEOPLE", default_value_t = 100_000)]
    pub max_job_people: usize,

    /// Largest accepted request body, in bytes (jobs and webhook deliveries).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Do not apply migrations at start-up.
    #[arg(long, env = "SKIP_MIGRATIONS", default_value_t = false)]
    pub skip_migrations: bool,

    /// Days a finished job is kept before it is purged with all its data; unset: kept forever;
    /// 0: purged at the first pass after it finishes. Fractions count (`0.25`: six hours), so a
    /// time-scaled run can purge.
    #[arg(long, env = "RETENTION_DAYS", value_parser = parse_days)]
    pub retention_days: Option<f64>,

    /// How often the retention pass runs (when `RETENTION_DAYS` is set).
    #[arg(long, env = "RETENTION_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub retention_every: Duration,
}

/// Whose earlier lookups a job's reuse window may answer from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReuseScope {
    /// Only the job's own client's.
    Client,
    /// Every client's.
    Shared,
}

/// A bounded list of retry delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

/// A credits setting (decimal) as micro-credits; negative or unreadable is no setting.
fn credits_setting(v: f64) -> Option<apollo_client::Credits> {
    apollo_client::Credits::parse_decimal(&v.to_string()).filter(|c| c.micros() >= 0)
}

impl Config {
    /// The server's credit settings on a job to store: `DEFAULT_MAX_CREDITS` when it gives no
    /// budget, and the client's `CLIENT_DAILY_CREDITS`.
    pub fn apply_credit_limits(&self, new: &mut job_store::NewJob) {
        new.max_credits = new.max_credits.or(self.default_max_credits.and_then(credits_setting));
        new.daily_cap = self.client_daily_credits.and_then(credits_setting);
    }
}

impl Config {
    /// The reuse window of a job to store: the one it asks for (`0s`: none), else `REUSE_WITHIN`,
    /// cut to `RETENTION_DAYS` (a purged job cannot answer), with `REUSE_SCOPE`.
    pub fn apply_reuse(&self, new: &mut job_store::NewJob, asked: Option<Duration>) {
        new.reuse = self.reuse_policy(asked);
    }

    /// How long a finished job is kept (`RETENTION_DAYS`), unset: forever.
    pub fn retention(&self) -> Option<Duration> {
        self.retention_days.map(|d| Duration::from_secs_f64(d * 86_400.0))
    }

    /// The reuse policy of a job asking for `asked` (see [`Config::apply_reuse`]).
    pub fn reuse_policy(&self, asked: Option<Duration>) -> Option<rules::reuse::ReusePolicy> {
        let retention = self.retention();
        let within = asked.or(self.reuse_within).map(|w| retention.map_or(w, |r| w.min(r)));
        within.map(|w| w.as_secs() as i64).filter(|s| *s > 0).map(|within_secs| rules::reuse::ReusePolicy {
            within_secs,
            shared: self.reuse_scope == ReuseScope::Shared,
        })
    }
}

impl Config {
    /// The configured limits.
    pub fn limits(&self) -> Limits {
        Limits { per_minute: self.rate_per_minute, per_hour: self.rate_per_hour, per_day: self.rate_per_day }
    }

    /// The callback URL policy.
    pub fn callback_policy(&self) -> CallbackPolicy {
        CallbackPolicy { allow_http: self.callback_allow_http, allow_hosts: self.callback_allow_hosts.clone() }
    }
}

/// A number of days: finite and not negative.
pub fn parse_days(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && d >= 0.0 && d * 86_400.0 < 1e15 => Ok(d),
        _ => Err(format!("{s:?} is not a number of days (0 or more, e.g. 30 or 0.5)")),
    }
}

/// A [`Config::person_events_max_wait`]: a duration from 100 ms to one hour.
pub fn parse_event_wait(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{s}: the wait for a person event must be between 100ms and 1h"));
    }
    Ok(d)
}

impl Config {
    /// How person events are batched.
    pub fn batching(&self) -> rules::events::Batching {
        rules::events::Batching { max_people: self.person_events_max_people, max_wait: self.person_events_max_wait }
    }
}

/// Parses a comma-separated list of durations.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let delays = s.split(',').filter(|p| !p.trim().is_empty()).map(parse_duration).collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("the retry schedule needs at least one delay".into());
    }
    Ok(Schedule(delays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_days_may_be_fractions_but_not_negative() {
        assert_eq!(parse_days("30").unwrap(), 30.0);
        assert_eq!(parse_days("0.25").unwrap(), 0.25);
        for bad in ["-1", "NaN", "inf", "1e20", "week"] {
            assert!(parse_days(bad).unwrap_err().contains("not a number of days"), "{bad}");
        }
    }

    #[test]
    fn durations_and_schedules() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        let s = parse_schedule("5s,5m,30m,2h,5h,10h").unwrap();
        assert_eq!(s.0.len(), 6);
        assert_eq!(s.0[5], Duration::from_secs(36000));
        assert!(parse_schedule(" , ").is_err());
    }

    #[test]
    fn a_duration_too_long_for_the_clock_is_an_error_not_a_panic() {
        for huge in ["99999999999999999999999d", "1".repeat(400).as_str(), "18446744073709551616"] {
            let got = std::panic::catch_unwind(|| parse_duration(huge));
            assert!(matches!(got, Ok(Err(_))), "{huge}: {got:?}");
        }
        assert_eq!(parse_duration("100000d").unwrap(), Duration::from_secs(8_640_000_000));
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut c = Config::defaults();
        c.apollo_api_key = Some("apollo-key-1234567890".to_string().into());
        c.api_keys = Some("crm=client-key-1234567890".to_string().into());
        c.admin_keys = Some("ops=admin-key-1234567890".to_string().into());
        c.callback_signing_secret = Some("whsec_c2lnbmluZy1zZWNyZXQtMTIzNDU2Nzg5MA==".to_string().into());
        c.suppression_key = Some("suppression-key-1234567890".to_string().into());
        let shown = format!("{c:?}");
        for secret in ["apollo-key", "client-key", "admin-key", "whsec_", "c2lnbmluZy1zZWNyZXQ", "suppression-key"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

/// Parses a [`Config`] on its own (for `defaults`).
#[derive(clap::Parser)]
struct Standalone {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// The documented defaults, ignoring the environment's values for required secrets.
    pub fn defaults() -> Config {
        use clap::Parser;
        Standalone::parse_from(["enrichd"]).config
    }
}
