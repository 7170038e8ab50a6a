//! The rate-limit matrix: the real `enrichd` binary (one process on SQLite, or replicas on one
//! PostgreSQL database) against the simulator counting its limits in one of the ways Apollo
//! plausibly counts them. A cell is one such way with a fixed seed; it passes with at most 0.5 %
//! of calls refused and at least 0.95 of the allowed rate once the first window has passed. The
//! CI test runs a compact set of cells, the benchmark the whole matrix.

use std::path::Path;
use std::time::{Duration, Instant};

use apollo_sim::limits::{Alignment, Shape, UsageStats};
use apollo_sim::{CallRecord, SimConfig};
use enrichd::core::signing::SigningSecret;
use serde_json::{Value, json};

use crate::process::{Service, free_port};
use crate::{Api, Backend, CLIENT_KEY, TestDb};

const APOLLO_KEY: &str = "apollo-matrix-key-5d2a90";
/// The highest share of calls a cell may see refused.
pub const MAX_REFUSED: f64 = 0.005;
/// The lowest share of the allowed rate a cell must use once the first window has passed.
pub const MIN_RATE_USE: f64 = 0.95;

/// The plan every cell runs under: a time-scaled minute and its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The simulator's and the service's "minute".
    pub minute: Duration,
    /// Calls allowed per minute.
    pub limit: u32,
    /// Minutes of work the job holds (its calls are `limit` per minute, ten people each).
    pub windows: u32,
}

/// The CI plan: 20 calls per 4-s minute, four minutes of work (80 calls). The margin, measured
/// from answer times of a debug build on two busy cores, is up to 130 ms: on a 2-s minute that
/// alone would be 6 % of the rate.
pub const CI_PLAN: Plan = Plan { minute: Duration::from_secs(4), limit: 20, windows: 4 };

/// The benchmark's plan (a release build): 20 calls per 2-s minute, six minutes of work.
pub const BENCH_PLAN: Plan = Plan { minute: Duration::from_secs(2), limit: 20, windows: 6 };

/// One way Apollo may count, and how many replicas send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// How the limit counts.
    pub shape: Shape,
    /// Where a fixed window starts.
    pub align: Alignment,
    /// What the usage-stats endpoint reports.
    pub usage_stats: UsageStats,
    /// `x-*-usage` counts only the calls before the one it answers.
    pub usage_excludes_call: bool,
    /// `x-*-requests-left` is what was left before the call.
    pub left_excludes_call: bool,
    /// No rate-limit headers at all.
    pub no_headers: bool,
    /// `retry-after` alone, in whole seconds.
    pub whole_seconds: bool,
    /// Calls are counted up to this many ms after they arrive (random, seeded).
    pub count_delay_ms: u64,
    /// 1: one process on SQLite; more: replicas on PostgreSQL.
    pub replicas: usize,
    /// The simulator's seed.
    pub seed: u64,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            shape: Shape::Fixed,
            align: Alignment::Clock,
            usage_stats: UsageStats::Live,
            usage_excludes_call: false,
            left_excludes_call: false,
            no_headers: false,
            whole_seconds: false,
            count_delay_ms: 0,
            replicas: 1,
            seed: 1,
        }
    }
}

impl Cell {
    /// A short name of the behaviour, for tables and failure messages.
    pub fn name(&self) -> String {
        let shape = match (self.shape, self.align) {
            (Shape::Fixed, Alignment::Clock) => "fixed (clock)",
            (Shape::Fixed, Alignment::FirstCall) => "fixed (first call)",
            (Shape::Sliding, _) => "sliding",
            (Shape::Bucket, _) => "token bucket",
        };
        let stats = match self.usage_stats {
            UsageStats::Live => "live".to_string(),
            UsageStats::Lagging(ms) => format!("lag {ms} ms"),
            UsageStats::Stale => "stale".to_string(),
        };
        let counts = |excludes: bool| if excludes { "before" } else { "after" };
        let headers = if self.no_headers {
            "no headers".to_string()
        } else {
            format!("usage {}, left {}", counts(self.usage_excludes_call), counts(self.left_excludes_call))
        };
        let retry = if self.whole_seconds { "retry-after s" } else { "retry-after ms" };
        format!(
            "{shape} · stats {stats} · {headers} · {retry} · delay ≤ {} ms · {} process{} · seed {}",
            self.count_delay_ms,
            self.replicas,
            if self.replicas == 1 { "" } else { "es" },
            self.seed
        )
    }

    /// The simulator counting this way under `plan`.
    pub fn sim(&self, plan: Plan) -> SimConfig {
        SimConfig {
            api_key: APOLLO_KEY.into(),
            seed: self.seed,
            minute_ms: u64::try_from(plan.minute.as_millis()).unwrap_or(u64::MAX),
            minute_limit: Some(plan.limit),
            limit_shape: self.shape,
            window_alignment: self.align,
            usage_stats: self.usage_stats,
            usage_header_excludes_call: self.usage_excludes_call,
            left_header_excludes_call: self.left_excludes_call,
            no_rate_headers: self.no_headers,
            retry_after_whole_seconds: self.whole_seconds,
            count_delay_ms: self.count_delay_ms,
            // Apollo answers calls side by side.
            workers: 2,
            ..SimConfig::default()
        }
    }
}

/// What one cell measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CellResult {
    /// Calls Apollo accepted.
    pub accepted: usize,
    /// Calls it refused with a 429.
    pub refused: usize,
    /// Calls per second sustained after the first window ÷ the allowed rate ([`steady_rate`]).
    pub rate_use: f64,
    /// The job's wall time, submit to done.
    pub took: Duration,
    /// The largest margin a process measured ([`rules::window::measured_margin`]), from its
    /// `/metrics`.
    pub margin: Duration,
}

impl CellResult {
    /// Refused calls ÷ all calls.
    pub fn refused_share(&self) -> f64 {
        self.refused as f64 / (self.accepted + self.refused).max(1) as f64
    }

    /// Whether the cell holds the promise: few enough refusals, enough of the rate.
    pub fn passes(&self) -> bool {
        self.refused_share() <= MAX_REFUSED && self.rate_use >= MIN_RATE_USE
    }
}

/// Calls per second sustained after the first window's burst: `limit` ÷ the mean time `limit`
/// consecutive accepted calls took (Apollo's receipt times, in order). A client using every slot
/// takes exactly one window for them.
pub fn steady_rate(accepted: &[&CallRecord], limit: u32) -> f64 {
    let n = limit as usize;
    let reuse: f64 =
        (n..accepted.len()).map(|k| (accepted[k].since_start - accepted[k - n].since_start).as_secs_f64()).sum();
    f64::from(limit) * accepted.len().saturating_sub(n) as f64 / reuse
}

/// Runs one cell with the service binary `bin`: starts the simulator and the service
/// process(es), submits one job of `plan.limit × plan.windows` calls' worth of people, waits for
/// it, and measures Apollo's side.
pub async fn run_cell(cell: &Cell, plan: Plan, bin: &Path) -> anyhow::Result<CellResult> {
    run_against(cell.sim(plan), cell.replicas, plan, bin, None).await.map_err(|e| e.context(cell.name()))
}

/// Runs the service (`replicas` processes: one on SQLite, more on PostgreSQL) against a simulator
/// configured with `sim` (its key and minute are set here), as [`run_cell`] does; the first
/// process writes its rate-limit trace to `trace` when given.
pub async fn run_against(
    sim: SimConfig,
    replicas: usize,
    plan: Plan,
    bin: &Path,
    trace: Option<&Path>,
) -> anyhow::Result<CellResult> {
    enrichd::startup::install_tls();
    let backend = if replicas > 1 { Backend::Postgres } else { Backend::Sqlite };
    let mut db = TestDb::create(backend).await?;
    let sim = apollo_sim::spawn(SimConfig {
        api_key: APOLLO_KEY.into(),
        minute_ms: u64::try_from(plan.minute.as_millis()).unwrap_or(u64::MAX),
        ..sim
    })
    .await?;
    let dir = std::env::temp_dir().join(format!("enrichd-matrix-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let (_, signing) = SigningSecret::generate();
    let minute = format!("{}ms", plan.minute.as_millis());
    let mut services = Vec::new();
    for i in 0..replicas.max(1) {
        let port = free_port();
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("BIND", &format!("127.0.0.1:{port}")),
            ("APOLLO_API_KEY", APOLLO_KEY),
            ("APOLLO_BASE_URL", sim.url()),
            ("ENRICHD_API_KEYS", &format!("matrix={CLIENT_KEY}")),
            ("CALLBACK_SIGNING_SECRET", &signing),
            ("APOLLO_MINUTE", &minute),
            ("APOLLO_RATE_PER_MINUTE", &plan.limit.to_string()),
            ("APOLLO_TIMEOUT", "5s"),
            ("RUST_LOG", "info,sqlx=warn,sea_orm=warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(path) = trace.filter(|_| i == 0) {
            env.push(("APOLLO_TRACE_FILE".into(), path.display().to_string()));
        }
        let api = Api::new(format!("http://127.0.0.1:{port}"));
        services.push(Service {
            bin: bin.to_path_buf(),
            env,
            log: dir.join(format!("enrichd-{i}.log")),
            child: None,
            api,
        });
    }
    // Started together: migrations run once, under the advisory lock.
    let mut set = tokio::task::JoinSet::new();
    for mut s in services {
        set.spawn(async move {
            s.start().await;
            s
        });
    }
    let mut services = set.join_all().await;
    let mut result = measure(plan, &services[0].api, &sim).await;
    if let Ok(r) = &mut result {
        for s in &services {
            r.margin = r.margin.max(margin_of(&s.api).await?.unwrap_or_default());
        }
    }
    for s in &mut services {
        s.kill().await;
    }
    sim.stop().await;
    db.drop_db().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map_err(|e| e.context(format!("logs in {}", dir.display())))
}

async fn measure(plan: Plan, api: &Api, sim: &apollo_sim::SimHandle) -> anyhow::Result<CellResult> {
    let people = plan.limit as usize * plan.windows as usize * 10;
    let body = json!({
        "people": (0..people).map(|i| json!({"email": format!("m{i}@matrix-{}.io", i % 7)})).collect::<Vec<Value>>(),
    });
    let t0 = Instant::now();
    let resp = api.submit(&body).await;
    anyhow::ensure!(resp.status().is_success(), "submit answered {}", resp.status());
    let id = resp.json::<Value>().await?["id"].as_str().unwrap_or_default().to_string();
    let limit_wait = plan.minute * (plan.windows + 2) * 3;
    let job = api.try_wait_done(&id, limit_wait).await?;
    let took = t0.elapsed();
    anyhow::ensure!(job["status"] == "completed", "job ended {}", job["status"]);
    let mut calls: Vec<CallRecord> = sim.calls().into_iter().filter(|c| c.path.ends_with("/bulk_match")).collect();
    calls.sort_by_key(|c| c.since_start);
    let accepted: Vec<&CallRecord> = calls.iter().filter(|c| c.status == 200).collect();
    let refused = calls.iter().filter(|c| c.status == 429).count();
    anyhow::ensure!(accepted.len() * 10 >= people, "only {} calls accepted for {people} people", accepted.len());
    let allowed = f64::from(plan.limit) / plan.minute.as_secs_f64();
    let rate_use = steady_rate(&accepted, plan.limit) / allowed;
    Ok(CellResult { accepted: accepted.len(), refused, rate_use, took, margin: Duration::ZERO })
}

/// The margin a process shows on `/metrics`; `None` when it made no call (a replica the others
/// left no batch to).
async fn margin_of(api: &Api) -> anyhow::Result<Option<Duration>> {
    let text = api.http.get(format!("{}/metrics", api.base)).send().await?.text().await?;
    let secs = text.lines().find_map(|l| l.strip_prefix("enrichd_limiter_margin_seconds "));
    Ok(secs.and_then(|v| v.trim().parse::<f64>().ok()).map(Duration::from_secs_f64))
}

/// The CI cells: every knob's values appear, and among them the cases that drew 429s before (a
/// stale usage-stats endpoint, a sliding window, a token bucket; one process and three).
pub fn ci_cells() -> Vec<Cell> {
    let d = Cell::default;
    vec![
        Cell { usage_stats: UsageStats::Stale, usage_excludes_call: true, seed: 11, ..d() },
        Cell {
            usage_stats: UsageStats::Stale,
            left_excludes_call: true,
            count_delay_ms: 40,
            replicas: 3,
            seed: 12,
            ..d()
        },
        Cell { shape: Shape::Sliding, whole_seconds: true, count_delay_ms: 40, seed: 13, ..d() },
        Cell {
            shape: Shape::Sliding,
            usage_stats: UsageStats::Lagging(500),
            no_headers: true,
            replicas: 3,
            seed: 14,
            ..d()
        },
        Cell { shape: Shape::Bucket, no_headers: true, count_delay_ms: 40, seed: 15, ..d() },
        Cell {
            shape: Shape::Bucket,
            usage_stats: UsageStats::Stale,
            usage_excludes_call: true,
            whole_seconds: true,
            replicas: 3,
            seed: 16,
            ..d()
        },
        Cell {
            align: Alignment::FirstCall,
            usage_stats: UsageStats::Lagging(500),
            left_excludes_call: true,
            whole_seconds: true,
            count_delay_ms: 40,
            seed: 17,
            ..d()
        },
        Cell {
            align: Alignment::FirstCall,
            usage_excludes_call: true,
            left_excludes_call: true,
            replicas: 3,
            seed: 18,
            ..d()
        },
    ]
}

/// The whole matrix of the benchmark: each shape of limit (a fixed window aligned two ways, a
/// sliding window, a token bucket) × one process or three × no counting delay or up to 40 ms ×
/// four ways of reporting usage (the usage-stats endpoint, the headers and `retry-after`), each
/// way paired with every other at least once.
pub fn full_matrix() -> Vec<Cell> {
    let reporting = [
        Cell::default(),
        Cell { usage_stats: UsageStats::Stale, usage_excludes_call: true, whole_seconds: true, ..Cell::default() },
        Cell {
            usage_stats: UsageStats::Lagging(500),
            left_excludes_call: true,
            no_headers: true,
            whole_seconds: true,
            ..Cell::default()
        },
        Cell { usage_stats: UsageStats::Stale, usage_excludes_call: true, left_excludes_call: true, ..Cell::default() },
    ];
    let shapes = [
        (Shape::Fixed, Alignment::Clock),
        (Shape::Fixed, Alignment::FirstCall),
        (Shape::Sliding, Alignment::Clock),
        (Shape::Bucket, Alignment::Clock),
    ];
    let mut cells = Vec::new();
    for (shape, align) in shapes {
        for replicas in [1, 3] {
            for count_delay_ms in [0, 40] {
                for r in &reporting {
                    let seed = 100 + cells.len() as u64;
                    cells.push(Cell { shape, align, replicas, count_delay_ms, seed, ..r.clone() });
                }
            }
        }
    }
    cells
}
