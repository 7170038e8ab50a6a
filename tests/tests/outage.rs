//! Database outage: PostgreSQL stopped in the middle of a job. The webhook route and the API answer
//! 503 with a clear error (so Apollo and clients retry), nothing panics, and the service carries on
//! by itself when the database is back; the job completes correctly.
//!
//! Runs against a throwaway PostgreSQL cluster of its own (so stopping it disturbs no other test).
//! `OUTAGE_SECS` sets the outage (default 10 in CI; `scripts/outage-test.sh` runs 30).

use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::cluster::Cluster;
use e2e_tests::truth::assert_records_match;
use e2e_tests::{Backend, TestApp, fast_sim};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_a_database_outage() {
    let outage = Duration::from_secs(std::env::var("OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10));
    let cluster = Cluster::create();
    // This test binary holds only this test: point the harness at the throwaway cluster.
    e2e_tests::set_pg_admin_url(&cluster.url());
    let sim = SimConfig {
        minute_limit: Some(4),
        delivery_delay_ms: 500,
        delivery_jitter_ms: 500,
        // Apollo "may retry": enough retries to span the outage.
        max_delivery_retries: 12,
        retry_backoff_ms: 250,
        // Slow answers, so calls are in flight when the database stops: their answers come
        // during the outage.
        latency_ms: 3_000,
        ..fast_sim()
    };
    let t = TestApp::spawn(Backend::Postgres, sim, |c| {
        c.reconcile_after = Duration::from_secs(2);
        c.reconcile_every = Duration::from_millis(500);
        c.lease = Duration::from_secs(3);
    })
    .await
    .expect("test app");
    let body = json!({
        "people": (0..120).map(|i| json!({"email": format!("outage{i}@db-down.io")})).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": t.receiver.url(),
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // Wait until the first answers are recorded (later calls are still in flight), and note a
    // real batch for the webhook check.
    let started = Instant::now();
    let batch = loop {
        let people = t.all_people(&id).await;
        // Answered: its deliveries may already have completed it (they come 0–1 s after).
        let sent: Vec<_> = people.iter().filter(|p| p["status"] != "queued" && p["status"] != "submitted").collect();
        if !sent.is_empty() {
            let pid = uuid::Uuid::parse_str(sent[0]["id"].as_str().unwrap()).unwrap();
            let bid = t.app.state.store.get_person(pid).await.unwrap().unwrap().batch_id.unwrap();
            break t.app.state.store.get_batch(bid).await.unwrap().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "dispatch did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    cluster.stop();
    let down = Instant::now();
    // The API: 503 with a clear error, within the store's acquire timeout.
    let asked = Instant::now();
    let resp = t.http.get(format!("{}/v1/jobs/{id}", t.url())).bearer_auth(e2e_tests::CLIENT_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    eprintln!("503 answered after {:?} (the store's acquire timeout)", asked.elapsed());
    assert_eq!(resp.headers()["retry-after"], "5");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unavailable");
    assert!(err["error"]["message"].as_str().unwrap().contains("database"), "{err}");
    assert_eq!(t.submit(&body).await.status(), 503, "no job accepted while the database is down");
    // The webhook route: 503, so Apollo retries.
    let hook = format!("{}/v1/webhooks/apollo/{}?token={}", t.url(), batch.id, batch.webhook_secret);
    let resp = t.http.post(&hook).json(&json!({"people": []})).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    // Liveness stays up; readiness says why not.
    assert_eq!(t.http.get(format!("{}/healthz", t.url())).send().await.unwrap().status(), 200);
    let ready = t.http.get(format!("{}/readyz", t.url())).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], "unreachable");

    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    assert!(t.app.workers_alive(), "a worker died during the outage");
    cluster.start();

    let job = t.wait_done(&id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["counts"]["failed"], 0);
    assert_eq!(job["counts"]["partial"], 0);
    let people = t.all_people(&id).await;
    let checked = assert_records_match(&t.sim, &people);
    assert!(checked.mobiles > 0 && checked.waterfall_emails > 0, "{checked:?}");
    // Answers that came during the outage were kept and recorded when the database came back:
    // nobody was sent (and charged) twice, and no call is counted as a possible double charge.
    let mut sends: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for c in t.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200) {
        for r in &c.received {
            *sends.entry(r.detail["email"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(sends.len(), 120, "every person sent");
    assert!(twice.is_empty(), "sent twice across the outage: {twice:?}");
    assert_eq!(job["possible_double_charges"], 0, "{job:#}");
    let got = t.receiver.wait_for(1, Duration::from_secs(30)).await;
    assert!(got.iter().any(|r| r.answered < 300 && r.verified), "no verified callback");
    let failed_deliveries = t.sim.deliveries().iter().filter(|d| d.status.is_some_and(|s| s == 503)).count();
    eprintln!("outage of {outage:?}: {failed_deliveries} deliveries answered 503 and were retried; {checked:?}");
    assert!(t.app.workers_alive());
    t.stop().await;
    drop(cluster);
}
