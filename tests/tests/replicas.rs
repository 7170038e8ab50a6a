//! Several replicas on one PostgreSQL database sharing one Apollo key: three real `enrichd serve`
//! processes started together, behind a small load balancer that is their shared
//! `PUBLIC_BASE_URL`, against the simulator with a fixed-window limit. Jobs are submitted to
//! different replicas. The replicas must together keep under the key's limit (429s at most 1 % of
//! calls), send nobody twice, get every record right, report exactly the credits the simulator
//! charged, and send one callback per job; with their clocks set apart (libfaketime, an offset per
//! process) they still never claim a batch twice, since leases and retry times use the database's
//! clock; and when one replica is SIGKILLed mid-run the others finish its leased work.
//!
//! Rates (calls per second against the allowed rate, submit to first call) are printed here and
//! measured in the benchmark; the test asserts only bounds that hold on a slow machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use apollo_sim::{SimConfig, SimHandle};
use e2e_tests::stand::{Stand, StandSpec};
use e2e_tests::truth::assert_records_match;
use e2e_tests::{Backend, fast_sim};
use enrichd::demo::receiver::CallbackReceiver;
use job_store::{Store, StoreOptions};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const APOLLO_KEY: &str = "apollo-replicas-key-77c1e0";
/// The length of the test's "minute": 2 s, so the limiter's margin, measured from its answer times
/// (the simulator's 40 ms latency and the jitter of three processes on two cores), is a small
/// part of it.
const MINUTE: Duration = Duration::from_secs(2);
/// Calls per minute the simulator allows the key (20 a second).
const LIMIT: u32 = 40;
/// The two stands run one after the other: each picks free ports by binding port 0 and letting go,
/// and a replica killed and restarted leaves its port free meanwhile, so two stands at once could
/// take each other's ports (seen once: a job submitted to the other stand, a callback signed by it).
static ONE_STAND_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Three jobs of 400: 120 calls, so that the "at most 1 % answered 429" bound is not one call.
const PEOPLE_PER_JOB: usize = 400;

/// libfaketime's multi-threaded build, installed by `scripts/ensure-faketime.sh`.
fn faketime_library() -> PathBuf {
    let candidates = ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime"];
    candidates
        .iter()
        .map(|d| PathBuf::from(d).join("libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing: run scripts/ensure-faketime.sh (scripts/test.sh does)")
}

/// Settings of every replica here.
const SETTINGS: &[(&str, &str)] = &[
    ("APOLLO_MINUTE", "2s"),
    ("APOLLO_TIMEOUT", "2s"),
    ("DISPATCH_CONCURRENCY", "4"),
    ("APOLLO_RETRY_BASE", "100ms"),
    // Over the call's timeout with room to record its answer on a loaded CI machine: a
    // survivor's lease that ran out would count as the killed replica's unknown outcome.
    ("DISPATCH_LEASE", "5s"),
    ("RECONCILE_AFTER", "3s"),
    ("RECONCILE_EVERY", "500ms"),
    ("CALLBACK_RETRY_SCHEDULE", "200ms,200ms,500ms,1s,1s,2s"),
    ("RUST_LOG", "info,sqlx=warn,sea_orm=warn"),
];

/// Starts the simulator, the receiver, the balancer and one replica per clock offset (seconds;
/// 0 runs the process on the real clock), all at the same moment.
async fn stand(offsets: &[i64]) -> Stand {
    let sim = SimConfig {
        api_key: APOLLO_KEY.into(),
        minute_limit: Some(LIMIT),
        minute_ms: MINUTE.as_millis() as u64,
        latency_ms: 40,
        ..fast_sim()
    };
    let clock = |i: usize| -> Vec<(String, String)> {
        if offsets[i] == 0 {
            return Vec::new();
        }
        vec![
            ("LD_PRELOAD".into(), faketime_library().display().to_string()),
            ("FAKETIME".into(), format!("{:+}s", offsets[i])),
            // Only the wall clock is off, as on a host whose NTP failed; timers run true.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_DONT_RESET".into(), "1".into()),
        ]
    };
    let spec = StandSpec {
        name: "replicas",
        backend: Backend::Postgres,
        replicas: offsets.len(),
        sim,
        env: SETTINGS,
        replica_env: &clock,
    };
    Stand::start(spec).await
}

fn body(tag: &str, n: usize, receiver: &CallbackReceiver) -> Value {
    json!({
        "people": (0..n).map(|i| json!({"email": format!("{tag}{i}@replica-{}.io", i % 5)})).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": receiver.url(),
    })
}

/// Submits one job to each replica in turn; returns the job ids.
async fn submit_to_each(s: &Stand, jobs: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for j in 0..jobs {
        let api = &s.services[j % s.services.len()].api;
        let resp = api.submit(&body(&format!("job{j}-"), PEOPLE_PER_JOB, &s.receiver)).await;
        assert_eq!(resp.status(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    ids
}

/// Batches Apollo answered 200, with how often each was answered (a batch is named by its webhook URL).
fn answered_batches(sim: &SimHandle) -> BTreeMap<String, u64> {
    let mut answered = BTreeMap::new();
    for call in sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200) {
        let url = call.webhook_url.as_deref().expect("webhook url");
        let batch = url.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
        *answered.entry(batch).or_default() += 1;
    }
    answered
}

struct Checked {
    calls: usize,
    rate_limited: usize,
    charged_twice: u64,
    possible_double: u64,
}

/// The ids of the batches matching `filter`, read straight from the database.
async fn batch_ids(store: &Store, filter: &str) -> BTreeSet<String> {
    let db = store.connection();
    let sql = format!("SELECT CAST(id AS TEXT) FROM batches WHERE {filter}");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("query");
    rows.iter().map(|r| r.try_get_by_index::<String>(0).expect("id")).collect()
}

/// What every run must show: jobs complete, records true, credits and callbacks right.
async fn check_outcome(s: &Stand, ids: &[String]) -> Checked {
    let lb = s.api();
    let mut possible_double = 0;
    let mut job_credits = apollo_client::Credits::default();
    let store =
        Store::connect_with(&s.db.url, StoreOptions { run_migrations: false, ..Default::default() }).await.unwrap();
    for id in ids {
        let job = lb.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "completed", "{job:#}");
        assert_eq!(job["counts"]["failed"], 0, "{job:#}");
        assert_eq!(job["counts"]["partial"], 0, "{job:#}");
        possible_double += job["possible_double_charges"].as_u64().unwrap();
        job_credits += serde_json::from_value::<apollo_client::Credits>(job["credits_consumed"].clone()).unwrap();
        let people = lb.all_people(id).await;
        assert_eq!(people.len(), PEOPLE_PER_JOB);
        assert_records_match(&s.sim, &people);
    }
    let bulk: Vec<_> = s.sim.calls().into_iter().filter(|c| c.route.ends_with("bulk_match")).collect();
    let rate_limited = bulk.iter().filter(|c| c.status == 429).count();
    let answered = answered_batches(&s.sim);
    let charged_twice: u64 = answered.values().map(|n| n - 1).sum();
    let sent: usize = bulk.iter().filter(|c| c.status == 200).map(|c| c.details).sum();
    assert!(charged_twice <= possible_double, "{charged_twice} batches charged twice, {possible_double} reported");
    if possible_double == 0 {
        assert_eq!(charged_twice, 0);
        assert_eq!(sent, ids.len() * PEOPLE_PER_JOB, "every person sent exactly once");
        assert_eq!(job_credits, s.sim.ledger().total, "the jobs' credits are the simulator's ledger");
    } else {
        assert!(job_credits <= s.sim.ledger().total, "never more than Apollo charged");
    }
    // One callback per job: one event id each, every attempt signed.
    let got = s.receiver.wait_for(ids.len(), Duration::from_secs(30)).await;
    let mut events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in got.iter().filter(|r| r.answered < 300) {
        assert!(r.verified, "an unsigned callback");
        events.entry(r.json()["data"]["id"].as_str().unwrap().to_string()).or_default().insert(r.id.clone());
    }
    for id in ids {
        assert_eq!(events.get(id).map(BTreeSet::len), Some(1), "one callback event for job {id}: {events:?}");
    }
    store.close().await.unwrap();
    Checked { calls: bulk.len(), rate_limited, charged_twice, possible_double }
}

/// Calls per second after the first window, against the allowed rate; and submit → first call.
fn print_rates(sim: &SimHandle, label: &str, submitted: SystemTime) {
    let mut at: Vec<SystemTime> =
        sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200).map(|c| c.at).collect();
    at.sort();
    let (first, last) = (at[0], *at.last().unwrap());
    // The first window's allowance goes at once; the rest is spread over the time to the last call.
    let span = last.duration_since(first).unwrap_or_default().as_secs_f64();
    let beyond_first = at.len().saturating_sub(LIMIT as usize);
    let rate = if span > 0.0 { beyond_first as f64 / span } else { 0.0 };
    let allowed = f64::from(LIMIT) / MINUTE.as_secs_f64();
    eprintln!(
        "{label}: {} calls, {rate:.1} calls/s after the first window ({:.2} of the allowed {}/s), \
         first call {:?} after the first submit",
        at.len(),
        rate / allowed,
        allowed,
        first.duration_since(submitted).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_clocks_apart_share_one_key() {
    let _alone = ONE_STAND_AT_A_TIME.lock().await;
    // One replica's clock 15 s behind, one 15 s ahead: longer than a lease (5 s), so a replica
    // that trusted its own clock would take live leases from the others, or keep dead ones.
    let s = stand(&[-15, 0, 15]).await;
    let submitted = SystemTime::now();
    let ids = submit_to_each(&s, 3).await;
    let c = check_outcome(&s, &ids).await;
    print_rates(&s.sim, "3 replicas, clocks -15 s / 0 / +15 s", submitted);
    eprintln!("429s: {} of {} calls", c.rate_limited, c.calls);
    assert!(c.rate_limited * 100 <= c.calls, "{} of {} calls answered 429", c.rate_limited, c.calls);
    assert_eq!(c.possible_double, 0, "no lease expired, so no call's outcome was ever unknown");
    assert_eq!(c.charged_twice, 0, "no batch claimed twice");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_work_is_finished_by_the_others() {
    let _alone = ONE_STAND_AT_A_TIME.lock().await;
    let mut s = stand(&[0, 0, 0]).await;
    let ids = submit_to_each(&s, 3).await;
    // Mid-run: some of the first replica's calls are in flight or leased.
    while s.sim.calls().iter().filter(|c| c.status == 200).count() < 15 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = s.services[0].child.as_ref().and_then(|c| c.id()).expect("running");
    s.services[0].kill().await;
    let store =
        Store::connect_with(&s.db.url, StoreOptions { run_migrations: false, ..Default::default() }).await.unwrap();
    // The batches on a lease when the replica died: the killed replica's calls in flight and the
    // answers it had not recorded yet are among them (with the survivors' calls of that moment).
    let leased_at_kill = batch_ids(&store, "state = 'submitting'").await;
    let c = check_outcome(&s, &ids).await;
    eprintln!(
        "one of 3 replicas killed: {} calls, {} answered 429, {} possibly charged twice, {} really were, \
         {} batches leased at the kill",
        c.calls,
        c.rate_limited,
        c.possible_double,
        c.charged_twice,
        leased_at_kill.len()
    );
    // Only batches leased at the kill may have an unknown outcome: a survivor's lease that ran out
    // later (a call slower than its lease, a renewal missed) would show up here.
    let unknown = batch_ids(&store, "unknown_outcomes > 0").await;
    assert!(
        unknown.is_subset(&leased_at_kill),
        "unknown outcomes {unknown:?} not leased at the kill {leased_at_kill:?}"
    );
    // A batch may carry several jobs' people: each of them counts its unknown outcomes.
    assert_eq!(c.possible_double == 0, unknown.is_empty(), "jobs report {} unknown outcomes", c.possible_double);
    assert!(c.possible_double as usize >= unknown.len());
    let twice: BTreeSet<String> =
        answered_batches(&s.sim).into_iter().filter(|(_, n)| *n > 1).map(|(b, _)| b).collect();
    assert!(twice.is_subset(&unknown), "batches charged twice {twice:?}, reported unknown {unknown:?}");
    // The replicas seen (the system page's list): the survivors beat on, the killed one goes stale.
    let every = Duration::from_millis(500);
    let started = std::time::Instant::now();
    loop {
        let (now, seen) = store.replicas().await.unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let live: Vec<bool> = seen.iter().map(|r| job_store::system::is_live(r.last_seen_at, now, every)).collect();
        let dead = seen.iter().position(|r| r.label.ends_with(&format!("pid {killed}"))).expect("the killed one");
        if live.iter().enumerate().all(|(i, l)| *l == (i != dead)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "live/stale not as expected: {seen:?} at {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await.unwrap();
    s.finish().await;
}
