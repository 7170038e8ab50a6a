//! The run's parameters: its length, the time scale, the service's and the simulator's settings,
//! and the chaos timetable, all derived from `--minutes` and `--seed`.

use std::time::Duration;

use apollo_sim::SimConfig;

/// Apollo's "minute" in the run: one hour of wall time is a day (60 s / 24).
pub const MINUTE_MS: u64 = 2_500;
/// Calls per (scaled) minute and hour Apollo allows the key.
pub const PER_MINUTE: u32 = 40;
/// Calls per scaled hour (150 s): under 60 minutes' worth, so the hour window binds when busy.
pub const PER_HOUR: u32 = 2_000;
/// A detail whose email has this domain is refused by Apollo (422 naming it): the person fails.
pub const REFUSED_DOMAIN: &str = "refuse-me.example";
/// The service's lease on a claimed batch.
pub const LEASE: Duration = Duration::from_secs(10);
/// Replicas on PostgreSQL (the SQLite variant runs one process).
pub const REPLICAS: usize = 3;

/// What `scripts/soak.sh` asked for.
#[derive(Clone, Debug)]
pub struct Args {
    /// Wall minutes of traffic (the drain comes after).
    pub minutes: f64,
    /// Seeds the traffic, the simulator and the chaos timetable.
    pub seed: u64,
    /// One process on SQLite instead of three replicas on PostgreSQL.
    pub sqlite: bool,
    /// A property broken on purpose, to show its check fails.
    pub sabotage: Option<Sabotage>,
    /// Where to write the report (markdown) besides stdout.
    pub out: Option<String>,
}

/// Ways to break a property on purpose from outside the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Apollo loses some deliveries for good: never POSTed, and `webhook_result` answers 410.
    LostWebhook,
    /// Someone else sends a copy of some of the service's calls with its key: people sent and
    /// charged twice.
    DoubleSend,
    /// Someone else spends the key's rate limit: 429s.
    KeyShared,
    /// Someone else sends people of dry runs to Apollo with the key.
    DryRunSent,
    /// Someone replays a signed callback the receiver already accepted.
    ReplayedCallback,
    /// Someone else sends people after their suppression to Apollo with the key.
    SuppressedSent,
    /// The replicas run without `RETENTION_DAYS`: nothing is purged and the database grows.
    NoRetention,
}

impl Sabotage {
    const ALL: [Sabotage; 7] = [
        Sabotage::LostWebhook,
        Sabotage::DoubleSend,
        Sabotage::KeyShared,
        Sabotage::DryRunSent,
        Sabotage::ReplayedCallback,
        Sabotage::SuppressedSent,
        Sabotage::NoRetention,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::LostWebhook => "lost-webhook",
            Sabotage::DoubleSend => "double-send",
            Sabotage::KeyShared => "key-shared",
            Sabotage::DryRunSent => "dry-run-sent",
            Sabotage::ReplayedCallback => "replayed-callback",
            Sabotage::SuppressedSent => "suppressed-sent",
            Sabotage::NoRetention => "no-retention",
        }
    }

    fn parse(s: &str) -> Result<Sabotage, String> {
        Sabotage::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Sabotage::ALL.iter().map(|b| b.name()).collect();
            format!("--break {s:?}: one of {}", names.join(", "))
        })
    }
}

impl Args {
    /// From the command line: `--minutes N --seed S [--sqlite] [--break WHAT] [--out PATH]`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args { minutes: 60.0, seed: 1, sqlite: false, sabotage: None, out: None };
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--minutes" => {
                    a.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?;
                    if !(a.minutes >= 1.0 && a.minutes <= 24.0 * 60.0) {
                        return Err("--minutes: from 1 to 1440".into());
                    }
                }
                "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
                "--sqlite" => a.sqlite = true,
                "--break" => a.sabotage = Some(Sabotage::parse(&value()?)?),
                "--out" => a.out = Some(value()?),
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }
        Ok(a)
    }

    /// Wall time of traffic.
    pub fn run(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// How much of a full day's traffic this run is (1.0 for an hour).
    pub fn day_share(&self) -> f64 {
        (self.minutes / 60.0).min(1.0)
    }

    /// How long a finished job is kept: a quarter of the run (six scaled hours of an hour's run),
    /// at least 45 s, so purging runs during the run.
    pub fn retention(&self) -> Duration {
        (self.run() / 4).max(Duration::from_secs(45))
    }

    /// The reuse window the reuse client asks for: half the retention.
    pub fn reuse_window(&self) -> Duration {
        self.retention() / 2
    }

    /// `CLIENT_DAILY_CREDITS`: binding for the bulk client's concurrent big jobs, not for the others.
    pub fn daily_cap(&self) -> u64 {
        (400_000.0 * self.day_share()).max(20_000.0) as u64
    }

    /// The largest job of the bulk client: 20,000 in an hour's run, fewer in shorter ones.
    pub fn biggest_job(&self) -> usize {
        (20_000.0 * self.day_share()).clamp(600.0, 20_000.0) as usize
    }
}

/// The simulator at the start of the run (the timetable changes it as the run goes).
pub fn simulator(args: &Args, api_key: &str) -> SimConfig {
    let mut sim = SimConfig {
        api_key: api_key.into(),
        seed: args.seed,
        minute_ms: MINUTE_MS,
        minute_limit: Some(PER_MINUTE),
        hour_limit: Some(PER_HOUR),
        latency_ms: 30,
        // Apollo's "minutes later", scaled.
        delivery_delay_ms: 3_000,
        delivery_jitter_ms: 9_000,
        max_delivery_retries: 8,
        retry_backoff_ms: 1_000,
        fault_duplicate: 0.03,
        fault_reorder: 0.03,
        fault_drop: 0.02,
        fault_early: 0.01,
        fault_5xx: 0.003,
        fault_slow: 0.01,
        slow_ms: 1_500,
        reject_marker: Some(REFUSED_DOMAIN.into()),
        workers: 2,
        ..SimConfig::default()
    };
    if args.sabotage == Some(Sabotage::LostWebhook) {
        sim.fault_drop = 0.05;
        sim.fault_result_expired = 1.0;
    }
    sim
}

/// The Dockerfile's `GLIBC_TUNABLES`, so the replicas' memory is measured as deployed.
pub const GLIBC_TUNABLES: &str =
    "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144:glibc.malloc.trim_threshold=262144";

/// The service's settings, every duration scaled by 24 (one wall hour is a day).
pub fn service_env(args: &Args, keys: &str, admin_keys: &str) -> Vec<(String, String)> {
    let retention_days = args.retention().as_secs_f64() / 86_400.0;
    let fixed: &[(&str, &str)] = &[
        ("APOLLO_MINUTE", "2500ms"),
        ("APOLLO_RATE_PER_MINUTE", "40"),
        ("APOLLO_RATE_PER_HOUR", "2000"),
        ("APOLLO_TIMEOUT", "5s"),
        ("APOLLO_RETRY_BASE", "200ms"),
        ("DISPATCH_CONCURRENCY", "4"),
        ("DISPATCH_LEASE", "10s"),
        ("RECONCILE_AFTER", "25s"),
        ("RECONCILE_EVERY", "2s"),
        ("ASYNC_DEADLINE", "300s"),
        ("PAUSE_PROBE_EVERY", "2500ms"),
        ("CALLBACK_RETRY_SCHEDULE", "1s,12s,75s,5m,12m,25m"),
        ("RETENTION_EVERY", "10s"),
        ("SUPPRESSION_KEY", "soak-suppression-key-5d1f0c9a7b"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,sqlx=warn,sea_orm=warn"),
        // The allocator settings the Dockerfile deploys with.
        ("GLIBC_TUNABLES", GLIBC_TUNABLES),
    ];
    let mut env: Vec<(String, String)> = fixed.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if args.sabotage != Some(Sabotage::NoRetention) {
        env.push(("RETENTION_DAYS".into(), format!("{retention_days:.9}")));
    }
    env.push(("CLIENT_DAILY_CREDITS".into(), args.daily_cap().to_string()));
    env.push(("ENRICHD_API_KEYS".into(), keys.into()));
    env.push(("ENRICHD_ADMIN_KEYS".into(), admin_keys.into()));
    env
}

/// One thing the timetable does to the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Chaos {
    /// SIGTERM each replica but the first in turn, waiting for each to come back (a deploy).
    RollingRestart,
    /// SIGKILL one replica; it is started again after a few seconds.
    Kill(usize),
    /// PostgreSQL stopped (immediate) for this long, then started.
    DatabaseDown(Duration),
    /// The callback receiver refuses connections for this long.
    ReceiverDown(Duration),
    /// Apollo answers 5xx to this share of calls for this long.
    ServerErrors(f64, Duration),
    /// Apollo lowers the key's minute limit to this for this long: a storm of 429s.
    RateStorm(u32, Duration),
    /// Apollo says the credits are exhausted (422) for this long: the service pauses.
    CreditsOut(Duration),
    /// Apollo's deliveries come this late for this long.
    LateWebhooks(u64, Duration),
    /// Apollo starts counting its limit another way (index into [`LIMIT_WAYS`]).
    LimitWay(usize),
}

/// The ways Apollo may count its limits that the timetable goes through.
pub const LIMIT_WAYS: &[&str] = &[
    "fixed windows on the clock",
    "a sliding window",
    "a token bucket",
    "fixed windows from the first call, headers not counting the call",
    "fixed windows, usage counter stale, counted late",
];

/// Applies limit way `i` to the simulator's settings.
pub fn limit_way(c: &mut SimConfig, i: usize) {
    use apollo_sim::limits::{Alignment, Shape, UsageStats};
    c.limit_shape = Shape::Fixed;
    c.window_alignment = Alignment::Clock;
    c.usage_header_excludes_call = false;
    c.usage_stats = UsageStats::Live;
    c.count_delay_ms = 0;
    match i {
        1 => c.limit_shape = Shape::Sliding,
        2 => c.limit_shape = Shape::Bucket,
        3 => {
            c.window_alignment = Alignment::FirstCall;
            c.usage_header_excludes_call = true;
        }
        4 => {
            c.usage_stats = UsageStats::Stale;
            c.count_delay_ms = 150;
        }
        _ => {}
    }
}

/// The timetable: (fraction of the run, what happens). Replica 0 is never stopped, so its memory
/// is measured over the whole run.
pub fn timetable(args: &Args) -> Vec<(f64, Chaos)> {
    let run = args.run();
    let minute_of_run = run / 60;
    let mut t: Vec<(f64, Chaos)> = vec![
        (0.10, Chaos::ServerErrors(0.3, minute_of_run)),
        (0.20, Chaos::LimitWay(1)),
        (0.22, Chaos::RollingRestart),
        (0.28, Chaos::ReceiverDown(run / 30)),
        (0.33, Chaos::Kill(1)),
        (0.40, Chaos::LimitWay(2)),
        (0.42, Chaos::RateStorm(2, minute_of_run)),
        (0.50, Chaos::RollingRestart),
        (0.58, Chaos::Kill(2)),
        (0.60, Chaos::LimitWay(3)),
        (0.65, Chaos::CreditsOut(minute_of_run)),
        (0.72, Chaos::LateWebhooks(30_000, run / 30)),
        (0.75, Chaos::RollingRestart),
        (0.80, Chaos::LimitWay(4)),
        (0.83, Chaos::Kill(1)),
        (0.90, Chaos::LimitWay(0)),
    ];
    if !args.sqlite {
        t.push((0.46, Chaos::DatabaseDown(Duration::from_secs(15))));
    } else {
        // One process: its restarts are the whole service's.
        t.retain(|(_, c)| !matches!(c, Chaos::Kill(2)));
    }
    t.sort_by(|a, b| a.0.total_cmp(&b.0));
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_replicas_run_with_the_images_allocator_settings() {
        let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).unwrap();
        assert!(dockerfile.contains(&format!("ENV GLIBC_TUNABLES={}\n", super::GLIBC_TUNABLES)), "{dockerfile}");
    }
}
