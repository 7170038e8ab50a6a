//! Crash test: the real `enrichd` binary, killed with SIGKILL at random moments during a job with
//! phone and waterfall and restarted each time. Afterwards the job is complete, every record equals
//! the simulator's truth, the callback arrived, the job reports at least every call Apollo really
//! charged twice and at most the calls the kills can have caught in flight, and the complete logs
//! hold no secret.
//!
//! CI runs a short version on SQLite and on PostgreSQL; `scripts/crash-test.sh` runs the full one
//! (2,000 people, 20 kills) on one of them: `CRASH_PEOPLE` and `CRASH_KILLS` set its size.
//! `CRASH_REPLICAS=N` (PostgreSQL) runs N replicas behind a small load balancer and kills them in
//! turn, so the survivors finish the killed one's leased work (SQLite serves one process).

use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::stand::{Stand, StandSpec, same_for_all};
use e2e_tests::truth::assert_records_match;
use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, fast_sim, on_both_backends};
use job_store::{Store, StoreOptions};
use serde_json::{Value, json};

/// Apollo calls in flight at once: the most calls one kill can leave with an unknown outcome.
const CONCURRENCY: u64 = 4;
const APOLLO_KEY: &str = "apollo-secret-key-3f9a1c";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

on_both_backends!(killed_at_random_the_job_still_finishes_correctly);

async fn killed_at_random_the_job_still_finishes_correctly(backend: Backend) {
    let people = env_or("CRASH_PEOPLE", 400);
    let kills = env_or("CRASH_KILLS", 6);
    // Several processes share PostgreSQL only; SQLite is the one-process store.
    let replicas = match backend {
        Backend::Postgres => env_or("CRASH_REPLICAS", 1).max(1),
        Backend::Sqlite => 1,
    };
    // Apollo at 10 calls a (1-second) minute, so the job runs long enough to be killed often.
    let sim = SimConfig {
        api_key: APOLLO_KEY.into(),
        minute_limit: Some(10),
        latency_ms: 80,
        delivery_delay_ms: 300,
        delivery_jitter_ms: 500,
        max_delivery_retries: 8,
        retry_backoff_ms: 200,
        fault_duplicate: 0.1,
        fault_reorder: 0.1,
        fault_early: 0.1,
        fault_drop: 0.05,
        fault_5xx: 0.05,
        ..fast_sim()
    };
    let admin_keys = format!("ops={ADMIN_KEY}");
    let concurrency = CONCURRENCY.to_string();
    let env = [
        ("ENRICHD_ADMIN_KEYS", admin_keys.as_str()),
        ("APOLLO_MINUTE", "1s"),
        ("APOLLO_TIMEOUT", "2s"),
        ("DISPATCH_CONCURRENCY", concurrency.as_str()),
        ("APOLLO_RETRY_BASE", "100ms"),
        ("DISPATCH_LEASE", "3s"),
        ("RECONCILE_AFTER", "3s"),
        ("RECONCILE_EVERY", "500ms"),
        ("ASYNC_DEADLINE", "10m"),
        ("CALLBACK_RETRY_SCHEDULE", "200ms,200ms,500ms,1s,1s,2s,2s,5s"),
        ("RUST_LOG", "debug,sqlx=warn,sea_orm=warn,hyper=info,reqwest=info,h2=info,rustls=info,actix_server=info"),
    ];
    let mut stand =
        Stand::start(StandSpec { name: "crash", backend, replicas, sim, env: &env, replica_env: &same_for_all }).await;
    let (api, receiver, sim) = (stand.api(), &stand.receiver, &stand.sim);

    let body = json!({
        "people": (0..people).map(|i| json!({"email": format!("crash{i}@kill-{}.io", i % 7)})).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": receiver.url(),
    });
    let resp = api.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let mut rng = fastrand::Rng::with_seed(people as u64 * 31 + kills as u64);
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(150..900))).await;
        // Replicas are killed in turn; the others go on meanwhile.
        let service = &mut stand.services[k % replicas];
        service.kill().await;
        // Sometimes stay down long enough for Apollo's deliveries to fail and be retried.
        tokio::time::sleep(Duration::from_millis(if k % 3 == 0 { 600 } else { 20 })).await;
        service.start().await;
    }
    let kills_done = Instant::now();
    let job = api.wait_done(&id, Duration::from_secs(300)).await;
    eprintln!(
        "job done {:?} after the last restart: created {} completed {}",
        kills_done.elapsed(),
        job["created_at"],
        job["completed_at"]
    );
    assert_eq!(job["status"], "completed", "{job:#}");
    let c = &job["counts"];
    assert_eq!(c["failed"], 0, "{job:#}");
    assert_eq!(c["partial"], 0, "no part may be lost: {job:#}");

    let store =
        Store::connect_with(&stand.db.url, StoreOptions { run_migrations: false, ..Default::default() }).await.unwrap();
    let people_now = api.all_people(&id).await;
    assert_eq!(people_now.len(), people);
    let checked = assert_records_match(sim, &people_now);
    assert!(checked.mobiles > 0 && checked.waterfall_emails > 0, "{checked:?}");

    // Calls Apollo really charged twice: a batch (named by its webhook URL) answered 200 more than once.
    let calls = sim.calls();
    let mut answered: std::collections::HashMap<String, u64> = Default::default();
    for call in calls.iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200) {
        let url = call.webhook_url.as_deref().expect("webhook url");
        let batch = url.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
        *answered.entry(batch).or_default() += 1;
    }
    let charged_twice: u64 = answered.values().map(|n| n - 1).sum();
    let double = job["possible_double_charges"].as_u64().unwrap();
    eprintln!("kills {kills}: {double} calls reported as possibly charged twice, {charged_twice} really were");
    assert!(charged_twice <= double, "the job under-reports: {charged_twice} charged twice, {double} reported");
    // Besides the kills, the simulator's own 502s (a gateway lost the answer) are unknown outcomes.
    let lost = calls.iter().filter(|c| c.route.ends_with("bulk_match") && matches!(c.status, 502 | 504)).count() as u64;
    assert!(
        double <= kills as u64 * CONCURRENCY + lost,
        "{double} possible double charges from {kills} kills of at most {CONCURRENCY} calls in flight and {lost} lost answers"
    );
    let job_credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    let ledger = sim.ledger().total;
    assert!(job_credits <= ledger, "the job never reports more than Apollo charged: {job_credits} > {ledger}");
    // The callback: one event id, at least one verified acceptance.
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    let accepted: Vec<_> = got.iter().filter(|r| r.answered < 300).collect();
    assert!(!accepted.is_empty(), "no callback arrived");
    assert!(got.iter().all(|r| r.id == got[0].id && r.verified), "one event id, every attempt signed");
    assert_eq!(accepted[0].json()["data"]["id"], id.as_str());

    // What the job may have been charged twice covers what it was: once Apollo has delivered
    // everything and every delivery is merged, its credits and that amount reach the ledger.
    let settled = Instant::now();
    while !(sim.idle() && store.pending_deliveries(1).await.unwrap().is_empty()) {
        assert!(settled.elapsed() < Duration::from_secs(60), "deliveries still coming after a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = api.get_json(&format!("/v1/jobs/{id}")).await;
    let job_credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    let possible: apollo_client::Credits =
        serde_json::from_value(job["possible_double_charge_credits"].clone()).unwrap();
    let ledger = sim.ledger().total;
    eprintln!("job credits {job_credits} + possibly charged twice {possible} against the ledger's {ledger}");
    assert!(job_credits <= ledger, "the job never reports more than Apollo charged: {job_credits} > {ledger}");
    assert!(ledger <= job_credits + possible, "{ledger} charged, {job_credits} reported and {possible} possible");

    // No secret in the complete logs of every run: Apollo, client and admin keys, signing secret, tokens.
    let mut log = String::new();
    for s in &mut stand.services {
        s.kill().await;
        log.push_str(&std::fs::read_to_string(&s.log).unwrap());
    }
    assert!(log.contains("request"), "the log was written");
    let mut secrets =
        vec![APOLLO_KEY.to_string(), CLIENT_KEY.to_string(), ADMIN_KEY.to_string(), stand.signing_text.clone()];
    secrets.push(stand.signing_text.trim_start_matches("whsec_").to_string());
    let mut batches = std::collections::BTreeSet::new();
    for p in &people_now {
        let pid = uuid::Uuid::parse_str(p["id"].as_str().unwrap()).unwrap();
        if let Some(b) = store.get_person(pid).await.unwrap().and_then(|p| p.batch_id) {
            batches.insert(b);
        }
    }
    for b in batches {
        secrets.push(store.get_batch(b).await.unwrap().unwrap().webhook_secret);
    }
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log ({} bytes of log)", log.len());
    }
    eprintln!(
        "crash test: {people} people, {replicas} replica(s), {kills} kills, {double} possible double charges, job credits {job_credits} vs ledger {ledger}, \
         {} secrets checked against {} bytes of log, {checked:?}",
        secrets.len(),
        log.len()
    );
    store.close().await.unwrap();
    stand.finish().await;
}
