//! Deploys and crashes: the real `enrichd` binary stopped with SIGTERM while Apollo calls are in
//! flight (Apollo answering each 2.5 s after charging it) and webhooks keep arriving, then
//! started again; three PostgreSQL replicas behind the balancer restarted one after another while
//! jobs run; and a SIGKILLed replica, whose leased batch another one must retry within seconds.
//!
//! The simulator's own record is the judge: every person sent exactly once (none twice after a
//! SIGTERM), credits equal to its ledger, every record equal to its truth.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use apollo_sim::{SimConfig, SimHandle};
use e2e_tests::stand::{Stand, StandSpec, same_for_all};
use e2e_tests::truth::assert_records_match;
use e2e_tests::{Backend, CLIENT_KEY, fast_sim};
use serde_json::{Value, json};

const APOLLO_KEY: &str = "apollo-shutdown-key-5d1e7a";
/// Apollo's answer delay: each call is charged, then answered this much later.
const ANSWER_DELAY_MS: u64 = 2_500;

/// The settings of every stand here, before a test's own.
const SETTINGS: &[(&str, &str)] = &[
    ("APOLLO_TIMEOUT", "10s"),
    ("APOLLO_RETRY_BASE", "100ms"),
    ("RECONCILE_AFTER", "5s"),
    ("RECONCILE_EVERY", "500ms"),
    ("CALLBACK_RETRY_SCHEDULE", "200ms,200ms,500ms,1s,1s,2s"),
    ("RUST_LOG", "info,sqlx=warn,sea_orm=warn"),
];

/// The simulator, a receiver, `replicas` processes (behind a balancer when more than one) with
/// the default lease and grace unless `extra` sets them.
async fn stand(backend: Backend, replicas: usize, sim: SimConfig, extra: &[(&str, &str)]) -> Stand {
    let env: Vec<(&str, &str)> = SETTINGS.iter().chain(extra).copied().collect();
    let sim = SimConfig { api_key: APOLLO_KEY.into(), ..sim };
    Stand::start(StandSpec { name: "deploys", backend, replicas, sim, env: &env, replica_env: &same_for_all }).await
}

/// A job of `n` people with phone reveal and a callback.
fn job_body(s: &Stand, tag: &str, n: usize) -> Value {
    json!({
        "people": (0..n).map(|i| json!({"email": format!("{tag}{i}@deploy-{}.io", i % 9)})).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "callback_url": s.receiver.url(),
    })
}

/// Submits `body` at the stand's public address; returns the job id.
async fn submit(s: &Stand, body: &Value) -> String {
    let resp = s.api().submit(body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// How many times Apollo answered each detail (by email) with a 200: a person charged twice
/// shows as 2.
fn sent_per_email(sim: &SimHandle) -> HashMap<String, u32> {
    let mut sent: HashMap<String, u32> = HashMap::new();
    for call in sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200) {
        for d in &call.received {
            if let Some(email) = d.detail["email"].as_str() {
                *sent.entry(email.to_string()).or_default() += 1;
            }
        }
    }
    sent
}

/// Waits until Apollo is answering at least `n` calls at once.
async fn calls_in_flight(sim: &SimHandle, n: usize) {
    let started = Instant::now();
    while sim.requests_in_progress() < n {
        assert!(started.elapsed() < Duration::from_secs(30), "never {n} calls in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_calls_in_flight_loses_nothing_and_pays_nothing_twice() {
    let sim = SimConfig {
        latency_ms: ANSWER_DELAY_MS,
        delivery_delay_ms: 300,
        delivery_jitter_ms: 1_500,
        max_delivery_retries: 10,
        retry_backoff_ms: 300,
        ..fast_sim()
    };
    let mut s = stand(Backend::Sqlite, 1, sim, &[("DISPATCH_CONCURRENCY", "6")]).await;
    let people = 300;
    let id = submit(&s, &job_body(&s, "term", people)).await;
    // Mid-job: some calls answered (their phones now arriving), six in flight.
    while s.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match")).count() < 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    calls_in_flight(&s.sim, 6).await;
    let in_flight = s.sim.requests_in_progress();
    let (status, took) = s.services[0].terminate(Duration::from_secs(30)).await;
    eprintln!("SIGTERM with {in_flight} calls in flight: exited {status} after {took:?}");
    assert!(status.success(), "exit 0 after a SIGTERM: {status}");
    assert!(took < Duration::from_secs(25), "within SHUTDOWN_GRACE: {took:?}");
    assert!(took >= Duration::from_millis(500), "the calls in flight were waited for, not abandoned: {took:?}");
    let log = s.log(0);
    for step in ["shutdown 1/5", "shutdown 2/5", "shutdown 3/5: every call sent was answered", "shutdown 5/5"] {
        assert!(log.contains(step), "{step} not logged");
    }
    let answered_before = s.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match")).count();

    // Down a moment: Apollo's deliveries meanwhile fail and are retried.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let restarted = SystemTime::now();
    let restarted_at = Instant::now();
    s.services[0].start().await;
    let job = s.api().wait_done(&id, Duration::from_secs(120)).await;
    eprintln!("job done {:?} after the restart ({answered_before} calls before the stop)", restarted_at.elapsed());
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    assert_eq!(job["counts"]["partial"], 0, "no phone lost: {job:#}");
    assert_eq!(job["possible_double_charges"], 0, "{job:#}");
    assert_eq!(job["possible_double_charge_credits"].as_f64(), Some(0.0), "{job:#}");

    let sent = sent_per_email(&s.sim);
    assert_eq!(sent.len(), people, "everyone sent");
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, s.sim.ledger().total, "the job's credits are Apollo's ledger");
    // No lease waited out: the restarted process called Apollo at once.
    let first_after = s
        .sim
        .calls()
        .iter()
        .filter(|c| c.route.ends_with("bulk_match") && c.at >= restarted)
        .map(|c| c.at.duration_since(restarted).unwrap_or_default())
        .min()
        .expect("calls after the restart");
    eprintln!("first call {first_after:?} after the restart");
    assert!(first_after < Duration::from_secs(5), "a lease was waited out: {first_after:?}");
    let people_now = s.api().all_people(&id).await;
    let checked = assert_records_match(&s.sim, &people_now);
    assert!(checked.mobiles > 0, "{checked:?}");
    let got = s.receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.iter().filter(|r| r.answered < 300).count(), 1, "one callback");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_replicas_refuses_no_request_and_pays_nothing_twice() {
    let sim = SimConfig {
        latency_ms: 600,
        delivery_delay_ms: 300,
        delivery_jitter_ms: 700,
        max_delivery_retries: 10,
        retry_backoff_ms: 300,
        ..fast_sim()
    };
    let mut s = stand(Backend::Postgres, 3, sim, &[("DISPATCH_CONCURRENCY", "3")]).await;
    let mut ids = Vec::new();
    for j in 0..3 {
        ids.push(submit(&s, &job_body(&s, &format!("roll{j}-"), 250)).await);
    }
    // A client polling and submitting through the balancer the whole time.
    let api = s.api();
    let (polled, body) = (ids.clone(), job_body(&s, "small-", 5));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut ok, mut refused, mut small) = (0u32, Vec::new(), Vec::new());
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &polled {
                    match api.http.get(format!("{}/v1/jobs/{id}", api.base)).bearer_auth(CLIENT_KEY).send().await {
                        Ok(r) if r.status().is_success() => ok += 1,
                        Ok(r) => refused.push(format!("GET: {}", r.status())),
                        Err(e) => refused.push(format!("GET: {e}")),
                    }
                }
                round += 1;
                if round % 10 == 0 {
                    let mut b = body.clone();
                    for p in b["people"].as_array_mut().unwrap() {
                        p["email"] = json!(p["email"].as_str().unwrap().replace("small-", &format!("small{round}-")));
                    }
                    let r = api.submit(&b).await;
                    if r.status() == 202 {
                        small.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
                    } else {
                        refused.push(format!("POST: {}", r.status()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, refused, small)
        }
    });
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (status, took) = s.services[i].terminate(Duration::from_secs(30)).await;
        eprintln!("replica {i}: SIGTERM, exited {status} after {took:?}");
        assert!(status.success(), "replica {i}: {status}");
        assert!(took < Duration::from_secs(25), "replica {i}: {took:?}");
        s.services[i].start().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, refused, small) = client.await.unwrap();
    eprintln!("client: {ok} reads answered, {} small jobs submitted, refused: {refused:?}", small.len());
    assert!(refused.is_empty(), "requests refused through the balancer: {refused:?}");
    assert!(ok > 50, "the client kept polling: {ok}");
    ids.extend(small);

    let api = s.api();
    let mut credits = apollo_client::Credits::ZERO;
    for id in &ids {
        let job = api.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "completed", "{job:#}");
        assert_eq!(job["counts"]["failed"], 0, "{job:#}");
        assert_eq!(job["counts"]["partial"], 0, "{job:#}");
        assert_eq!(job["possible_double_charges"], 0, "{job:#}");
        credits += serde_json::from_value::<apollo_client::Credits>(job["credits_consumed"].clone()).unwrap();
        let people = api.all_people(id).await;
        assert_records_match(&s.sim, &people);
    }
    let twice: Vec<_> = sent_per_email(&s.sim).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(credits, s.sim.ledger().total, "the jobs' credits are Apollo's ledger");
    // One callback event per job, accepted once.
    let got = s.receiver.wait_for(ids.len(), Duration::from_secs(30)).await;
    let mut per_job: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    for r in got.iter().filter(|r| r.answered < 300) {
        assert!(r.verified);
        per_job.entry(r.json()["data"]["id"].as_str().unwrap().to_string()).or_default().insert(r.id.clone());
    }
    assert_eq!(per_job.len(), ids.len(), "a callback for every job");
    assert!(per_job.values().all(|events| events.len() == 1), "one event per job: {per_job:?}");
    s.finish().await;
}

/// When a SIGKILLed process's batch is called again: the first retry's arrival at Apollo after
/// the kill, over every batch the killed process had in flight.
fn retried_after(sim: &SimHandle, killed: SystemTime) -> Vec<Duration> {
    let mut calls: HashMap<String, Vec<SystemTime>> = HashMap::new();
    for c in sim.calls().iter().filter(|c| c.route.ends_with("bulk_match")) {
        let batch = c.webhook_url.as_deref().and_then(|u| u.split('?').next()).and_then(|u| u.rsplit('/').next());
        calls.entry(batch.unwrap_or_default().to_string()).or_default().push(c.at);
    }
    calls
        .values()
        .filter(|at| at.iter().any(|t| *t < killed))
        .filter_map(|at| at.iter().filter(|t| **t >= killed).min())
        .map(|t| t.duration_since(killed).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replicas_batches_are_retried_within_seconds() {
    // Answers slow enough that the killed calls are still unanswered when the kill comes.
    let sim = SimConfig { latency_ms: 6_000, ..fast_sim() };
    let mut s = stand(Backend::Postgres, 2, sim, &[("DISPATCH_CONCURRENCY", "2"), ("APOLLO_TIMEOUT", "20s")]).await;
    // Only replica 0 runs when the job comes, so it holds the first calls.
    s.services[1].kill().await;
    let id = submit(&s, &job_body(&s, "kill-", 60)).await;
    calls_in_flight(&s.sim, 2).await;
    let killed = SystemTime::now();
    s.services[0].kill().await;
    s.services[1].start().await;
    let job = s.api().wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let waits = retried_after(&s.sim, killed);
    eprintln!("PostgreSQL, default lease: the killed replica's batches were called again after {waits:?}");
    assert_eq!(waits.len(), 2, "both calls in flight were retried");
    let worst = waits.iter().max().unwrap();
    assert!(*worst <= Duration::from_secs(15), "retried {worst:?} after the SIGKILL (default lease 10 s)");
    assert_eq!(job["possible_double_charges"], 2, "the two calls the kill caught are unknown outcomes: {job:#}");
    // Counted at the worst case (9 credits a person: 180) until the retries were answered, then at
    // what the answered copies cost; with every delivery in, the job's credits and that amount
    // reach Apollo's ledger.
    while !s.sim.idle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = s.api().get_json(&format!("/v1/jobs/{id}")).await;
    let amount: apollo_client::Credits = serde_json::from_value(job["possible_double_charge_credits"].clone()).unwrap();
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    eprintln!("credits {credits}, possibly charged twice {amount}, ledger {}", s.sim.ledger().total);
    assert!(amount < apollo_client::Credits::whole(180), "priced from the answered copies: {amount}");
    assert!(s.sim.ledger().total <= credits + amount, "{job:#}");
    s.finish().await;

    // SQLite: one process; the restarted one knows the old one is gone and retries at once.
    let sim = SimConfig { latency_ms: 6_000, ..fast_sim() };
    let mut s = stand(Backend::Sqlite, 1, sim, &[("DISPATCH_CONCURRENCY", "2"), ("APOLLO_TIMEOUT", "20s")]).await;
    let id = submit(&s, &job_body(&s, "kill-", 40)).await;
    calls_in_flight(&s.sim, 2).await;
    let killed = SystemTime::now();
    s.services[0].kill().await;
    s.services[0].start().await;
    let job = s.api().wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let waits = retried_after(&s.sim, killed);
    eprintln!("SQLite, restarted at once: the killed process's batches were called again after {waits:?}");
    assert_eq!(waits.len(), 2);
    assert!(*waits.iter().max().unwrap() <= Duration::from_secs(5), "{waits:?}");
    assert_eq!(job["possible_double_charges"], 2, "{job:#}");
    s.finish().await;
}
