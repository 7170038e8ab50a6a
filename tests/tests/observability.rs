//! `/metrics` and JSON logs after a real job. The metrics recorder and the log subscriber are
//! process-wide, so this file holds one test that runs SQLite then PostgreSQL in turn and compares
//! each scrape with the one before the job.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::{Backend, CLIENT_KEY, TestApp, fast_sim};
use enrichd::logging::{LogFormat, install};
use serde_json::{Value, json};

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Series of a Prometheus text page: `(name, labels)` → value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_metrics(text: &str) -> Series {
    let mut out = Series::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().expect("a number"));
    }
    out
}

fn get(s: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    s.get(&key).copied().unwrap_or(0.0)
}

async fn scrape(t: &TestApp) -> (String, Series) {
    let resp = t.http.get(format!("{}/metrics", t.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let series = parse_metrics(&text);
    (text, series)
}

async fn one_job(backend: Backend, logs: &Captured) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let (before_text, before) = scrape(&t).await;
    // Every person state is listed, with no one in it yet.
    assert!(before_text.contains("enrichd_people{state=\"suppressed\"} 0"), "{before_text}");
    // One of the 25 is on the client's do-not-enrich list.
    let listed = t
        .http
        .post(format!("{}/v1/suppressions", t.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"email": "person24@northwind-labs.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);
    let people: Vec<Value> = (0..25).map(|i| json!({"email": format!("person{i}@northwind-labs.com")})).collect();
    let resp = t.submit(&json!({"people": people})).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let (text, after) = scrape(&t).await;
    let delta = |name: &str, labels: &[(&str, &str)]| get(&after, name, labels) - get(&before, name, labels);

    let calls = job["apollo_calls"].as_f64().unwrap();
    assert!(calls >= 3.0, "25 people need at least 3 calls: {job:#}");
    assert_eq!(
        delta("enrichd_apollo_requests_total", &[("endpoint", "bulk_match"), ("outcome", "ok")]),
        calls,
        "{text}"
    );
    let credits: apollo_client::Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(delta("enrichd_credits_consumed_micros_total", &[("kind", "sync")]), credits.micros() as f64, "{text}");
    assert_eq!(job["counts"]["suppressed"], 1, "{job:#}");
    for state in ["complete", "not_found", "failed", "partial", "suppressed"] {
        let n = job["counts"][state].as_f64().unwrap();
        assert_eq!(get(&after, "enrichd_people", &[("state", state)]), n, "people {state}: {text}");
    }
    assert_eq!(get(&after, "enrichd_jobs", &[("state", "completed")]), 1.0, "{text}");
    assert_eq!(get(&after, "enrichd_suppressions", &[("scope", "client"), ("kind", "email")]), 1.0, "{text}");
    assert!(text.contains("enrichd_suppressions{scope=\"global\",kind=\"domain\"} 0"), "{text}");
    assert_eq!(
        delta("enrichd_http_requests_total", &[("route", "/v1/jobs"), ("method", "POST"), ("status", "202")]),
        1.0
    );
    assert!(
        delta("enrichd_http_requests_total", &[("route", "/v1/jobs/{id}"), ("method", "GET"), ("status", "200")])
            >= 1.0
    );
    assert!(!text.contains(&id), "no job id in a label");
    assert_eq!(get(&after, "enrichd_database_up", &[]), 1.0);

    // The job's log lines: JSON, carrying its id, with the request id of the submit.
    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> =
        captured.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let accepted = lines
        .iter()
        .find(|l| l["job_id"] == id.as_str() && l["message"] == "job accepted")
        .unwrap_or_else(|| panic!("no line carries job {id}: {captured}"));
    assert_eq!(accepted["level"], "INFO");
    assert_eq!(accepted["span"]["request_id"].as_str().map(str::len), Some(32), "{accepted}");
    for secret in [CLIENT_KEY.to_string(), t.sim.config().api_key.clone()] {
        assert!(!captured.contains(secret.as_str()), "a secret reached the log");
    }
    assert!(!captured.contains("token="), "webhook tokens stay out of the log");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_logs_follow_a_job() {
    let logs = Captured::default();
    let sink = logs.clone();
    install(LogFormat::Json, "info", move || sink.clone(), false).expect("the only subscriber of this binary");
    one_job(Backend::Sqlite, &logs).await;
    logs.0.lock().unwrap().clear();
    one_job(Backend::Postgres, &logs).await;

    // METRICS_BIND moves /metrics off the API's address.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = TestApp::spawn(Backend::Sqlite, fast_sim(), |c| {
        c.metrics_bind = Some(format!("127.0.0.1:{port}").parse().unwrap());
    })
    .await
    .unwrap();
    assert_eq!(t.http.get(format!("{}/metrics", t.url())).send().await.unwrap().status(), 404);
    let separate = t.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(separate.status(), 200);
    assert!(separate.text().await.unwrap().contains("enrichd_database_up 1"));
    t.stop().await;
}
