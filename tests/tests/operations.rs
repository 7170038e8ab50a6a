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

on_both_backends!(bare_base64_and_named_keys, retry_after_inf_is_clamped);

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
    for wrong in ["=", "==", "crm", &BARE[..BARE.len() - 2], named_spelled_out.as_str(), ADMIN_KEY] {
        let (status, body) = call(&t, Method::GET, "/v1/jobs", Some(wrong)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{wrong:?}");
    }
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
