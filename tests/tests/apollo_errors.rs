//! The dispatcher's error paths, driven through the simulator on SQLite and PostgreSQL: a wrong
//! key (401) and a key without the endpoint (403) pause dispatch until an operator resumes;
//! exhausted credits are probed with a refused call, not a free one; a call
//! failing every attempt fails its people with the reason; an expired `webhook_result` (410)
//! leaves the deadline to decide; a job over the inline limit gets its callback with a link.

use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::{ADMIN_KEY, Backend, TestApp, fast_sim, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    unauthorized_and_forbidden_pause_dispatch,
    an_accepted_probe_lifts_the_pause,
    exhausted_credits_are_probed_with_a_refused_call,
    attempts_exhausted_fail_the_people,
    expired_results_leave_the_deadline_to_decide,
    callbacks_over_the_inline_limit_link_the_people,
);

fn people(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"email": format!("{prefix}{i}@northwind-labs.com")})).collect()
}

async fn submit(t: &TestApp, body: &Value) -> String {
    let resp = t.submit(body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Polls the job until `cond` holds (a generous deadline: the machine may be busy).
async fn wait_until(t: &TestApp, id: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = t.get_json(&format!("/v1/jobs/{id}")).await;
        if cond(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never got there: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn resume(t: &TestApp) {
    let resp = t.http.post(format!("{}/v1/admin/resume", t.url())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// The key is rejected: dispatch pauses. Probes (costing nothing) are refused and the pause stays;
/// once the key works again at Apollo's end, a probe is accepted and dispatch resumes without an
/// operator; the job completes.
async fn an_accepted_probe_lifts_the_pause(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.pause_probe_every = Duration::from_millis(300))
        .await
        .expect("test app");
    let right_key = t.sim.config().api_key;
    t.sim.update_config(|c| c.api_key = "rotated-by-someone".into());
    let id = submit(&t, &json!({"people": people("probe", 12), "reveal_phone_number": true})).await;
    let paused = wait_until(&t, &id, |j| j["status"] == "paused").await;
    assert!(paused["pause_reason"].as_str().unwrap_or_default().contains("401"), "{paused:#}");
    // Still refused: probes are made, refused, and the pause stays. (Nothing is dispatched while
    // paused, so every refusal after the pause is a probe.)
    let refused =
        |t: &TestApp| t.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 401).count();
    let at_pause = refused(&t);
    let started = Instant::now();
    while refused(&t) < at_pause + 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no probe made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.get_json(&format!("/v1/jobs/{id}")).await["status"], "paused");
    t.sim.update_config(|c| c.api_key = right_key.clone());
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "resumed by the probe: {job:#}");
    assert_eq!(job["pause_reason"], Value::Null);
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, t.sim.ledger().total, "the probes cost nothing");
    t.stop().await;
}

/// Apollo's credits run out: dispatch pauses. A free call would be accepted (it costs nothing) and
/// prove nothing, so the probe sends a refused call again: while the credits stay out, each probe
/// is one refused call and nothing else is sent; once they are back, the probe's call is accepted,
/// dispatch resumes without an operator and the job completes.
async fn exhausted_credits_are_probed_with_a_refused_call(backend: Backend) {
    let every = Duration::from_millis(300);
    let t = TestApp::spawn(backend, fast_sim(), |c| c.pause_probe_every = every).await.expect("test app");
    t.sim.update_config(|c| c.credit_balance = Some(apollo_client::Credits::ZERO));
    let id = submit(&t, &json!({"people": people("broke", 40)})).await;
    let paused = wait_until(&t, &id, |j| j["status"] == "paused").await;
    assert!(paused["pause_reason"].as_str().unwrap_or_default().contains("credits exhausted"), "{paused:#}");
    // When each `bulk_match` answered with `status` arrived.
    let answered = |t: &TestApp, status: u16| -> Vec<std::time::SystemTime> {
        t.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == status).map(|c| c.at).collect()
    };
    // The calls sent with the refused one are in; the first probe comes an interval later.
    tokio::time::sleep(every).await;
    let at_pause = answered(&t, 422).len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let probes: Vec<_> = answered(&t, 422).split_off(at_pause);
    assert!(probes.len() >= 2, "{} probes in 6 s, probing every {every:?}", probes.len());
    // Each probe is one call: no burst of calls resumed after a free probe.
    for pair in probes.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(gap >= every / 2, "two refused calls {gap:?} apart: {} in 6 s", probes.len());
    }
    assert!(answered(&t, 200).is_empty(), "no call was accepted while the credits were out (no free probe)");
    assert_eq!(t.get_json(&format!("/v1/jobs/{id}")).await["status"], "paused");

    t.sim.update_config(|c| c.credit_balance = None);
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "resumed by the probe: {job:#}");
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    assert_eq!(job["counts"]["complete"].as_i64().unwrap() + job["counts"]["not_found"].as_i64().unwrap(), 40);
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, t.sim.ledger().total, "every accepted call is the job's");
    t.stop().await;
}

async fn unauthorized_and_forbidden_pause_dispatch(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.expect("test app");
    let right_key = t.sim.config().api_key;
    for (status, fault) in [(401, "a wrong key"), (403, "a key without bulk_match")] {
        if status == 401 {
            t.sim.update_config(|c| c.api_key = "rotated-by-someone".into());
        } else {
            t.sim.update_config(|c| c.forbidden = true);
        }
        let id = submit(&t, &json!({"people": people(&format!("p{status}-"), 3)})).await;
        let paused = wait_until(&t, &id, |j| j["status"] == "paused").await;
        let reason = paused["pause_reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&status.to_string()), "{fault}: the reason says {status}: {reason}");
        assert_eq!(paused["counts"]["failed"], 0, "{fault}: nobody fails: {paused:#}");
        // A paused replica stays in the balancer (Apollo's webhooks must still reach it): 200,
        // with the pause and its reason in the body.
        let ready = t.http.get(format!("{}/readyz", t.url())).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{fault}: a paused replica is still ready");
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["status"], "paused", "{fault}: {ready}");
        assert!(ready.to_string().contains(&status.to_string()), "{fault}: the reason shows: {ready}");
        let refused = t.sim.calls().iter().filter(|c| c.status == status).count();
        assert!(refused >= 1, "{fault}: Apollo answered {status}");

        // Fixed at Apollo's end, then resumed by an operator: the job completes.
        t.sim.update_config(|c| {
            c.api_key = right_key.clone();
            c.forbidden = false;
        });
        resume(&t).await;
        let job = t.wait_done(&id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "completed", "{fault}: {job:#}");
        assert_eq!(job["counts"]["failed"], 0);
        assert_eq!(job["pause_reason"], Value::Null);
    }
    t.stop().await;
}

async fn attempts_exhausted_fail_the_people(backend: Backend) {
    let t = TestApp::spawn(backend, SimConfig { fault_5xx: 1.0, ..fast_sim() }, |c| {
        c.max_attempts = 3;
        c.retry_base = Duration::from_millis(10);
    })
    .await
    .expect("test app");
    let id = submit(&t, &json!({"people": people("exhausted", 2)})).await;
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["counts"]["failed"], 2, "{job:#}");
    let calls: Vec<_> = t.sim.calls().into_iter().filter(|c| c.route.ends_with("bulk_match")).collect();
    assert_eq!(calls.len(), 3, "one call per allowed attempt: {calls:?}");
    assert!(calls.iter().all(|c| c.status >= 500));
    for p in t.all_people(&id).await {
        assert_eq!(p["status"], "failed", "{p:#}");
        let error = p["error"].as_str().unwrap_or_default();
        assert!(error.contains("50"), "the person says why: {p:#}");
    }
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, apollo_client::Credits::ZERO, "{job:#}");
    t.stop().await;
}

async fn expired_results_leave_the_deadline_to_decide(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, mobile_rate: 1.0, fault_result_expired: 1.0, ..fast_sim() };
    // No public URL: results can only be polled, and every poll answers 410.
    let t = TestApp::spawn_with(backend, sim, false, |c| {
        c.reconcile_after = Duration::from_millis(200);
        c.reconcile_every = Duration::from_millis(200);
        c.async_deadline = Duration::from_secs(3);
    })
    .await
    .expect("test app");
    let id = submit(&t, &json!({"people": people("expired", 3), "reveal_phone_number": true})).await;
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["counts"]["partial"], 3, "the phone never came: {job:#}");
    assert_eq!(job["counts"]["failed"], 0);
    let expired = t.sim.calls().iter().filter(|c| c.status == 410).count();
    assert!(expired >= 1, "the reconciler polled and got 410");
    for p in t.all_people(&id).await {
        assert_eq!(p["status"], "partial", "{p:#}");
        assert_eq!(p["missing_parts"], json!(["phone"]), "{p:#}");
    }
    t.stop().await;
}

async fn callbacks_over_the_inline_limit_link_the_people(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.callback_inline_limit = 2).await.expect("test app");
    let url = t.receiver.url().to_string();
    let inline = submit(&t, &json!({"people": people("inline", 2), "callback_url": url})).await;
    let linked = submit(&t, &json!({"people": people("linked", 3), "callback_url": url})).await;
    let got = t.receiver.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 2);
    for r in &got {
        assert!(r.verified);
        let data = &r.json()["data"];
        if data["id"] == inline.as_str() {
            assert_eq!(data["people"].as_array().map(Vec::len), Some(2), "{data:#}");
            assert!(data.get("people_url").is_none(), "{data:#}");
        } else {
            assert_eq!(data["id"], linked.as_str());
            assert_eq!(data["people"], Value::Null, "{data:#}");
            assert_eq!(data["people_url"], format!("/v1/jobs/{linked}/people"), "{data:#}");
        }
    }
    t.stop().await;
}
