//! Store benchmark (not a test): for SQLite (file, WAL) and PostgreSQL, prints
//! - `create_job` of 100,000 people: time and peak memory (VmHWM, reset before the call);
//! - claims + recorded sync results per second (one worker, then four concurrent workers);
//! - deliveries stored per second (and applied per second, for information).
//!
//! Run: `cargo bench -p job-store --bench store_bench` (PostgreSQL at `TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each backend runs in its own child process so
//! that peak-memory figures do not mix.

use std::time::{Duration, Instant};

use apollo_client::{Credits, EnrichFlags, PersonFacts, parse_delivery};
use chrono::Utc;
use job_store::{NewJob, Store, StoreOptions, SyncOutcome};
use rules::records::{SyncMatch, SyncPerson};
use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use serde_json::json;

const DEFAULT_PEOPLE: usize = 100_000;
const CLAIMS: usize = 1_000;
const DELIVERIES: usize = 5_000;
const LEASE: Duration = Duration::from_secs(300);

fn main() {
    match std::env::var("STORE_BENCH_BACKEND") {
        Ok(backend) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(&backend));
        }
        Err(_) => {
            let exe = std::env::current_exe().expect("own path");
            // `STORE_BENCH_BACKENDS=sqlite` (or `postgres`) runs only one.
            let only = std::env::var("STORE_BENCH_BACKENDS").unwrap_or_default();
            for backend in ["sqlite", "postgres"].into_iter().filter(|b| only.is_empty() || only.contains(b)) {
                let status = std::process::Command::new(&exe)
                    .env("STORE_BENCH_BACKEND", backend)
                    .status()
                    .expect("run benchmark child");
                assert!(status.success(), "{backend} benchmark failed");
            }
        }
    }
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn run(backend: &str) {
    // `STORE_BENCH_PEOPLE` shrinks the big job for quick runs; `STORE_BENCH_KEEP=1` keeps the
    // database for inspection (its URL is printed).
    let people_n: usize =
        std::env::var("STORE_BENCH_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PEOPLE);
    let keep = std::env::var("STORE_BENCH_KEEP").is_ok_and(|v| v == "1");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (url, cleanup): (String, Box<dyn FnOnce() -> Option<String>>) = if backend == "sqlite" {
        let path = std::env::temp_dir().join(format!("enrichd_bench_{tag}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        (
            url,
            Box::new(move || {
                for s in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{s}", path.display()));
                }
                None
            }),
        )
    } else {
        let admin_url =
            std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("enrichd_bench_{tag}");
        let admin = Database::connect(ConnectOptions::new(admin_url.clone()).sqlx_logging(false).to_owned())
            .await
            .expect("PostgreSQL reachable");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        admin.close().await.ok();
        let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin_url.clone());
        (format!("{base}/{name}"), Box::new(move || Some(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))))
    };
    let store = Store::connect_with(&url, StoreOptions { max_connections: Some(8), ..Default::default() })
        .await
        .expect("connect");
    println!("== {backend} ==");

    // 1. create_job of 100,000 people.
    let people: Vec<_> = (0..people_n)
        .map(|i| {
            json!({
                "first_name": "Dana", "last_name": format!("Okafor{i}"),
                "email": format!("dana.okafor{i}@northwind-labs.com"),
                "organization_name": "Northwind Labs", "domain": "northwind-labs.com",
                "external_id": format!("crm-{i}")
            })
        })
        .collect();
    let people = people.iter().map(job_store::NewPerson::new).collect();
    let new = NewJob { client: "bench".into(), flags: EnrichFlags::default(), people, ..NewJob::default() };
    let rss_before = proc_status_kib("VmRSS:");
    // Reset the peak (VmHWM) to the current RSS, so the peak below is the create_job call's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let job = store.create_job(new).await.expect("create_job").job;
    let took = t.elapsed();
    let hwm = proc_status_kib("VmHWM:");
    assert_eq!(job.total, people_n as i64);
    println!(
        "create_job {people_n} people: {:.2} s ({:.0} people/s); RSS before {:.0} MiB (input built), peak during {:.0} MiB (+{:.0} MiB)",
        took.as_secs_f64(),
        people_n as f64 / took.as_secs_f64(),
        mib(rss_before),
        mib(hwm),
        mib(hwm.saturating_sub(rss_before)),
    );

    // 2. Claims + recorded sync results.
    let t = Instant::now();
    for _ in 0..CLAIMS {
        claim_and_record(&store, "solo").await;
    }
    let took = t.elapsed();
    println!(
        "claim + record_sync, 1 worker: {CLAIMS} batches in {:.2} s = {:.0} batches/s ({:.0} people/s)",
        took.as_secs_f64(),
        CLAIMS as f64 / took.as_secs_f64(),
        (CLAIMS * 10) as f64 / took.as_secs_f64()
    );
    let t = Instant::now();
    let mut workers = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..CLAIMS / 4 {
                claim_and_record(&s, &format!("w{w}")).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let took = t.elapsed();
    println!(
        "claim + record_sync, 4 concurrent workers: {CLAIMS} batches in {:.2} s = {:.0} batches/s",
        took.as_secs_f64(),
        CLAIMS as f64 / took.as_secs_f64()
    );

    // 3. Deliveries stored (distinct bodies, one batch), then applied.
    let b = store.claim_batch("deliveries", LEASE, Utc::now()).await.unwrap().unwrap();
    let ids: Vec<String> = b.people.iter().map(|p| format!("ap_{}", p.person_id.simple())).collect();
    store.record_sync(outcome(&b, true)).await.unwrap();
    let t = Instant::now();
    let mut stored = Vec::with_capacity(DELIVERIES);
    for i in 0..DELIVERIES {
        let body = serde_json::to_vec(&json!({
            "status": "success", "credits_consumed": 8, "seq": i,
            "people": ids.iter().map(|id| json!({"id": id, "phone_numbers": [{"sanitized_number": "+15125550142", "type_cd": "mobile"}]})).collect::<Vec<_>>()
        }))
        .unwrap();
        stored.push(store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id());
    }
    let took = t.elapsed();
    println!(
        "store_delivery: {DELIVERIES} in {:.2} s = {:.0} deliveries/s",
        took.as_secs_f64(),
        DELIVERIES as f64 / took.as_secs_f64()
    );
    let t = Instant::now();
    let n = 500;
    for d in store.pending_deliveries(n).await.unwrap() {
        store.apply_delivery(d.id, &parse_delivery(&d.body).unwrap()).await.unwrap();
    }
    let took = t.elapsed();
    println!(
        "pending_deliveries + apply_delivery (10-person batch): {n} in {:.2} s = {:.0} deliveries/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    let get = Instant::now();
    let j = store.get_job(job.id).await.unwrap().unwrap();
    println!(
        "get_job of the {people_n}-person job: {:.2} ms (counters from the row: {} complete, {} queued)",
        get.elapsed().as_secs_f64() * 1000.0,
        j.counts.complete,
        j.counts.queued
    );

    store.close().await.ok();
    if keep {
        println!("kept: {url}");
        return;
    }
    if let Some(drop_sql) = cleanup() {
        let admin_url =
            std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = Database::connect(ConnectOptions::new(admin_url).sqlx_logging(false).to_owned()).await.unwrap();
        admin.execute_unprepared(&drop_sql).await.unwrap();
    }
}

fn outcome(b: &job_store::ClaimedBatch, expect_phone: bool) -> SyncOutcome {
    SyncOutcome {
        batch_id: b.batch_id,
        claim: b.claims,
        http_status: 200,
        request_id: Some(42),
        phone_request_id: None,
        response: json!({"status": "success"}),
        credits: Credits::whole(b.people.len() as i64),
        people: b
            .people
            .iter()
            .map(|p| SyncPerson {
                person_id: p.person_id,
                outcome: SyncMatch::Matched,
                apollo_id: Some(format!("ap_{}", p.person_id.simple())),
                facts: PersonFacts::default(),
                fields: json!({"title": "CTO", "city": "Austin"}),
                expect_phone,
                phone_elsewhere: false,
                expect_waterfall: false,
                credits: Credits::whole(1),
            })
            .collect(),
    }
}

async fn claim_and_record(store: &Store, owner: &str) {
    let b = store.claim_batch(owner, LEASE, Utc::now()).await.unwrap().expect("work left");
    store.record_sync(outcome(&b, false)).await.unwrap();
}
