//! Money and data you can trust (issue 10), end to end through the simulator on SQLite and
//! PostgreSQL: cancel stops spending even for people waiting for a retry, an Apollo that refuses
//! every call pauses dispatch instead of failing everyone while one refused detail fails alone,
//! a skipped phone reveal never ends `complete` without the phone, and calls whose answer was lost
//! are retried, counted, and charged in full.

use std::time::{Duration, Instant, SystemTime};

use apollo_sim::SimConfig;
use e2e_tests::{Backend, TestApp, fast_sim, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    cancel_sends_nobody_after_it,
    refused_everywhere_pauses_and_fails_nobody,
    skipped_phone_is_never_complete,
    lost_answers_are_charged_in_full,
    one_refused_detail_fails_alone,
);

fn people(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"email": format!("{prefix}{i}@northwind-labs.com")})).collect()
}

async fn submit(t: &TestApp, body: &Value) -> String {
    let resp = t.submit(body).await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    job["id"].as_str().expect("id").to_owned()
}

/// Polls until `pred` holds of the job (a generous deadline: waiting on a condition, not timing).
async fn wait_for(t: &TestApp, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let job = t.get_json(&format!("/v1/jobs/{id}")).await;
        if pred(&job) {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "condition never met: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bulk_calls(t: &TestApp) -> Vec<apollo_sim::CallRecord> {
    t.sim.calls().into_iter().filter(|c| c.path.ends_with("bulk_match")).collect()
}

/// Calls refused with 429 wait in `retry_wait`; the cancel must stop them too: no call reaches
/// Apollo after the cancel is answered.
async fn cancel_sends_nobody_after_it(backend: Backend) {
    // Apollo first allows plenty, then cuts the allowance to one call a (1-second) minute: the
    // calls already going are refused with 429 and wait for a retry.
    let sim = SimConfig { minute_limit: Some(50), latency_ms: 100, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |c| c.dispatch_concurrency = 2).await.expect("test app");
    let id = submit(&t, &json!({"people": people("cancel", 400)})).await;
    let started = Instant::now();
    while bulk_calls(&t).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no call made");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.sim.update_config(|c| c.minute_limit = Some(1));
    while !bulk_calls(&t).iter().any(|c| c.status == 429) {
        assert!(started.elapsed() < Duration::from_secs(60), "no 429 drawn: {:?}", bulk_calls(&t));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = t.http.post(format!("{}/v1/jobs/{id}/cancel", t.url())).bearer_auth(e2e_tests::CLIENT_KEY).send().await;
    assert!(resp.expect("cancel").status().is_success());
    let cancelled_at = SystemTime::now();
    let job = wait_for(&t, &id, |j| j["status"] == "cancelled").await;
    // Several retry windows later, still nothing new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late: Vec<_> = bulk_calls(&t).into_iter().filter(|c| c.at > cancelled_at).collect();
    assert!(late.is_empty(), "calls after the cancel: {late:?}");
    let counts = &job["counts"];
    assert!(counts["cancelled"].as_i64().unwrap() > 0, "{job:#}");
    assert_eq!(counts["queued"], 0);
    assert_eq!(counts["submitted"], 0);
    t.stop().await;
}

/// A wrong `APOLLO_BASE_URL` path answers 404 to every call: that is a configuration error, so
/// dispatch pauses with the reason and nobody fails (today every person failed at once).
async fn refused_everywhere_pauses_and_fails_nobody(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.apollo_base_url = format!("{}/wrong-prefix", c.apollo_base_url))
        .await
        .expect("test app");
    let id = submit(&t, &json!({"people": people("refused", 25)})).await;
    let job = wait_for(&t, &id, |j| j["pause_reason"].is_string()).await;
    assert!(job["pause_reason"].as_str().unwrap().contains("refuses every call"), "{job:#}");
    // Whatever happens meanwhile, nobody fails.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    assert_eq!(job["status"], "paused");
    let ready = t.http.get(format!("{}/readyz", t.url())).send().await.expect("readyz");
    let body: Value = ready.json().await.unwrap_or(Value::Null);
    assert!(body.to_string().contains("refuses every call"), "the pause shows in /readyz: {body}");
    t.stop().await;
}

/// Apollo answers `phone_enrichment: skipped` (an earlier request delivers), and no such request
/// of ours exists: the people wait for the phone until the deadline and end `partial` with the
/// reason — never `complete` without it.
async fn skipped_phone_is_never_complete(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, fault_phone_skipped: 1.0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |c| c.async_deadline = Duration::from_secs(2)).await.expect("test app");
    let id = submit(&t, &json!({"people": people("skip", 12), "reveal_phone_number": true})).await;
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed");
    let people = t.all_people(&id).await;
    assert_eq!(people.len(), 12);
    for p in &people {
        assert_eq!(p["status"], "partial", "{p:#}");
        assert_eq!(p["missing_parts"], json!(["phone"]), "{p:#}");
        assert!(p["error"].as_str().unwrap_or_default().contains("skipped"), "{p:#}");
    }
    t.stop().await;
}

/// Every call Apollo runs but whose answer never reaches us (charged, webhooks scheduled, the
/// answer after our timeout) is retried; the job's credits still equal Apollo's ledger and each
/// retry shows as a possible double charge.
async fn lost_answers_are_charged_in_full(backend: Backend) {
    let sim = SimConfig {
        match_rate: 1.0,
        mobile_rate: 1.0,
        fault_charge_then_timeout: 0.4,
        charge_then_timeout_ms: 1_500,
        seed: 7,
        ..fast_sim()
    };
    let t = TestApp::spawn(backend, sim, |c| {
        c.apollo_timeout = Duration::from_millis(500);
        c.retry_base = Duration::from_millis(50);
        c.max_attempts = 8;
        c.reconcile_after = Duration::from_secs(1);
        c.reconcile_every = Duration::from_millis(300);
    })
    .await
    .expect("test app");
    let id = submit(&t, &json!({"people": people("lost", 60), "reveal_phone_number": true})).await;
    let job = t.wait_done(&id, Duration::from_secs(90)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    // Once Apollo is quiet, every delivery of every call it ran is applied: the job's credits
    // equal the ledger, the lost calls' charges included.
    let job = wait_for(&t, &id, |j| {
        t.sim.idle() && j["credits_consumed"] == serde_json::to_value(t.sim.ledger().total).unwrap()
    })
    .await;
    assert_eq!(job["counts"]["complete"], 60, "{job:#}");
    // The simulator records a lost call when its late answer is sent: count them once it is quiet.
    let lost = bulk_calls(&t).iter().filter(|c| c.fault.as_deref() == Some("charge_then_timeout")).count();
    assert!(lost > 0, "the fault fired");
    // Every call Apollo received and we never saw answered (the fault's, and any that outran our
    // timeout on a busy machine) was retried and counted; a retry whose request timed out before
    // Apollo read it is counted too (we cannot know), so the job may report more, never fewer.
    let unseen = bulk_calls(&t).len() as i64 - job["apollo_calls"].as_i64().unwrap();
    assert!(unseen >= lost as i64);
    let double = job["possible_double_charges"].as_i64().unwrap();
    assert!(double >= unseen, "each retry of a lost answer is counted: {double} < {unseen}: {job:#}");
    t.stop().await;
}

/// One person Apollo refuses among many jobs' people: only that person fails, with Apollo's
/// message; everyone else of the shared calls is enriched.
async fn one_refused_detail_fails_alone(backend: Backend) {
    let sim = SimConfig { reject_marker: Some("refuse-me.example".into()), ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let mut list = people("a", 14);
    list[7] = json!({"email": "bad@refuse-me.example"});
    let a = submit(&t, &json!({"people": list})).await;
    let b = submit(&t, &json!({"people": people("b", 5)})).await;
    let ja = t.wait_done(&a, Duration::from_secs(60)).await;
    let jb = t.wait_done(&b, Duration::from_secs(60)).await;
    assert_eq!(ja["counts"]["failed"], 1, "{ja:#}");
    assert_eq!(jb["counts"]["failed"], 0, "{jb:#}");
    let people = t.all_people(&a).await;
    for (i, p) in people.iter().enumerate() {
        if i == 7 {
            assert_eq!(p["status"], "failed", "{p:#}");
            assert!(p["error"].as_str().unwrap_or_default().contains("422"), "Apollo's message is kept: {p:#}");
        } else {
            assert_ne!(p["status"], "failed", "{p:#}");
        }
    }
    assert_eq!(ja["pause_reason"], Value::Null);
    t.stop().await;
}
