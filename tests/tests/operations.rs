//! Operating the service: key spellings (bare base64 and named) and admin keys through the real
//! HTTP app, what `serve` refuses to start with, a hostile `retry-after` from Apollo, and callback
//! events (a frozen `job.completed`, then a `job.updated` for a late part), on SQLite and PostgreSQL.

use std::time::Duration;

use e2e_tests::{ADMIN_KEY, Backend, TestApp, fast_sim, on_both_backends};
use enrichd::config::Config;
use enrichd::core::signing::SigningSecret;
use enrichd::demo::demo_config;
use enrichd::startup::{Application, secret};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(bare_base64_and_named_keys, retry_after_inf_is_clamped, a_late_part_is_a_job_updated_event);

/// `openssl rand -base64 18`-like: ends in `==` once the bytes are not a multiple of three.
const BARE: &str = "vV1p3Qe6Zk+/ax0Lw9mRtA==";
/// A named key that itself ends in `=`.
const NAMED: &str = "Yx/8aQ3s+0PdLm2RkWq9Jb0=";

async fn call(t: &TestApp, method: Method, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = t.http.request(method, format!("{}{path}", t.url()));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn bare_base64_and_named_keys(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.api_keys = Some(secret(&format!("{BARE},crm={NAMED}"))))
        .await
        .unwrap();
    // Both spellings work as written, padding included; the padding alone, or a cut key, does not.
    for key in [BARE, NAMED] {
        assert_eq!(call(&t, Method::GET, "/v1/jobs", Some(key)).await.0, 200, "{key}");
    }
    let named_spelled_out = format!("crm={NAMED}");
    for wrong in ["=", "==", "crm", &BARE[..BARE.len() - 2], named_spelled_out.as_str()] {
        let (status, body) = call(&t, Method::GET, "/v1/jobs", Some(wrong)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{wrong:?}");
    }
    // An admin key is known but not a client's: 403, as a client key on the admin route.
    let (status, body) = call(&t, Method::GET, "/v1/jobs", Some(ADMIN_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body:#}");
    // Two keys, two clients: each sees only its own jobs.
    let resp = t
        .http
        .post(format!("{}/v1/jobs", t.url()))
        .bearer_auth(BARE)
        .json(&json!({"people": [{"email": "keys@northwind-labs.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(call(&t, Method::GET, &format!("/v1/jobs/{id}"), Some(BARE)).await.0, 200);
    assert_eq!(call(&t, Method::GET, &format!("/v1/jobs/{id}"), Some(NAMED)).await.0, 404);
    let (_, listed) = call(&t, Method::GET, "/v1/jobs", Some(NAMED)).await;
    assert_eq!(listed["data"], json!([]), "{listed:#}");

    // Operator routes: no key 401, a client key 403, an admin key 200.
    let (status, body) = call(&t, Method::POST, "/v1/admin/resume", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    for client in [BARE, NAMED] {
        let (status, body) = call(&t, Method::POST, "/v1/admin/resume", Some(client)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body:#}");
        assert!(body["error"]["message"].as_str().unwrap().contains("ENRICHD_ADMIN_KEYS"), "{body:#}");
    }
    let (status, body) = call(&t, Method::POST, "/v1/admin/resume", Some("not-any-key-at-all")).await;
    assert_eq!(status, 401, "{body:#}");
    let (status, body) = call(&t, Method::POST, "/v1/admin/resume", Some(ADMIN_KEY)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("resumed")), "{body:#}");
    t.stop().await;
}

/// A configuration `serve` would start with, on a database it never reaches (keys and secrets are
/// checked first).
fn config() -> Config {
    let (_, signing) = SigningSecret::generate();
    let mut c = demo_config(
        "sqlite:///nonexistent-dir/never-opened.db".into(),
        "http://127.0.0.1:9".into(),
        "apollo-key",
        &signing,
        Duration::from_secs(60),
    );
    c.api_keys = Some(secret(&format!("crm={NAMED}")));
    c
}

async fn refused(config: Config) -> String {
    match Application::build(config).await {
        Ok(_) => panic!("started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn serve_refuses_to_start_on_missing_or_weak_secrets() {
    let message = refused(Config { callback_signing_secret: None, ..config() }).await;
    assert!(message.contains("CALLBACK_SIGNING_SECRET is required"), "{message}");

    let message = refused(Config { api_keys: Some(secret("abc==")), ..config() }).await;
    assert!(message.contains("ENRICHD_API_KEYS: the key of entry 1 is shorter than 16"), "{message}");
    assert!(!message.contains("abc"), "the key is never printed: {message}");

    let message = refused(Config { api_keys: Some(secret(&format!("{BARE},,{NAMED}"))), ..config() }).await;
    assert!(message.contains("entry 2 is empty"), "{message}");

    let message = refused(Config { admin_keys: Some(secret("ops=tiny")), ..config() }).await;
    assert!(message.contains("ENRICHD_ADMIN_KEYS: the key of entry 1"), "{message}");
    assert!(!message.contains("tiny"), "{message}");

    let message = refused(Config { admin_keys: Some(secret(&format!("ops={NAMED}"))), ..config() }).await;
    assert!(message.contains("both ENRICHD_API_KEYS and ENRICHD_ADMIN_KEYS"), "{message}");
    assert!(!message.contains(NAMED), "{message}");

    let message = refused(Config { api_keys: None, ..config() }).await;
    assert!(message.contains("ENRICHD_API_KEYS is empty"), "{message}");
}

async fn retry_after_inf_is_clamped(backend: Backend) {
    // No call allowed at first; every 429 says `retry-after: inf` and nothing finer.
    let sim = apollo_sim::SimConfig { minute_limit: Some(0), retry_after_header: Some("inf".into()), ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |c| c.max_retry_after = Duration::from_millis(300)).await.unwrap();
    let people: Vec<Value> = (0..30).map(|i| json!({"email": format!("ra{i}@northwind-labs.com")})).collect();
    let resp = t.submit(&json!({"people": people})).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // Two 429s mean the first one's wait was taken (and cut to the maximum) without harm.
    let limited = || t.sim.calls().iter().filter(|c| c.status == 429).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while limited() < 2 {
        assert!(std::time::Instant::now() < deadline, "{} 429s after 30 s", limited());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.app.workers_alive(), "a worker died on `retry-after: inf`");
    t.sim.update_config(|c| c.minute_limit = None);
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["counts"]["failed"], 0, "{job:#}");
    assert!(t.app.workers_alive(), "a worker died");
    t.stop().await;
}

async fn a_late_part_is_a_job_updated_event(backend: Backend) {
    // Phones come 2.5 s after the answer; the service gives up waiting after 300 ms.
    let sim = apollo_sim::SimConfig {
        match_rate: 1.0,
        mobile_rate: 1.0,
        delivery_delay_ms: 2_500,
        delivery_jitter_ms: 0,
        ..fast_sim()
    };
    let t = TestApp::spawn(backend, sim, |c| {
        c.async_deadline = Duration::from_millis(300);
        c.reconcile_every = Duration::from_millis(100);
        c.reconcile_after = Duration::from_secs(600);
    })
    .await
    .unwrap();
    // The first try of the completion fails: its retry must be the same bytes.
    t.receiver.script(&[500]);
    let people = json!([{"email": "late1@northwind-labs.com"}, {"email": "late2@northwind-labs.com"}]);
    let body = json!({"people": people, "reveal_phone_number": true, "callback_url": t.receiver.url()});
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let got = t.receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3, "completion (500), its retry, the update: {got:#?}");
    assert!(got.iter().all(|r| r.verified), "every event is signed");
    let (first, retry, update) = (&got[0], &got[1], &got[2]);
    assert_eq!((first.answered, retry.answered, update.answered), (500, 200, 200));
    assert_eq!(retry.id, first.id, "a retry is the same event");
    assert_eq!(retry.body, first.body, "a retry sends the same bytes");
    assert_ne!(update.id, first.id, "a later change is a new event");

    let completed = first.json();
    assert_eq!(completed["type"], "job.completed");
    assert_eq!(completed["data"]["id"], id.as_str());
    let statuses = |v: &Value| -> Vec<String> {
        v["data"]["people"].as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(statuses(&completed), ["partial", "partial"], "{completed:#}");
    let updated = update.json();
    assert_eq!(updated["type"], "job.updated");
    assert_eq!(statuses(&updated), ["complete", "complete"], "{updated:#}");
    for p in updated["data"]["people"].as_array().unwrap() {
        assert!(!p["record"]["phones"].as_array().unwrap().is_empty(), "{p:#}");
    }

    // The job shows both events with their tries (once the last try is recorded); `callback` is
    // still the completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let job = t.get_json(&format!("/v1/jobs/{id}")).await;
        let events = job["callback_events"].as_array().cloned().unwrap_or_default();
        if events.len() == 2 && events.iter().all(|e| e["state"] == "delivered") {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "events not delivered: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["callback"]["webhook_id"], first.id.as_str(), "{job:#}");
    let events = job["callback_events"].as_array().unwrap();
    let shown: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["webhook_id"].as_str().unwrap(), e["attempts"].as_i64().unwrap()))
        .collect();
    assert_eq!(shown, [("job.completed", first.id.as_str(), 2), ("job.updated", update.id.as_str(), 1)]);
    // Nothing further: exactly one update for the late part.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.receiver.received().len(), 3);
    t.stop().await;
}
