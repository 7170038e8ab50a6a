//! Waterfall vendor statistics end to end, on SQLite and PostgreSQL: a job with both waterfalls
//! against the real simulator (duplicated and reordered deliveries included); once it is done,
//! `/v1/usage`'s `vendors` and `/metrics` equal what the simulator's own waterfall payloads say,
//! counted here from the bodies it sent; the credits attributed add up to the waterfall charges of
//! its ledger; and erasing the job leaves the statistics as they were.

use std::collections::BTreeMap;
use std::time::Duration;

use apollo_client::{Credits, DeliveryKind};
use apollo_sim::SimConfig;
use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(vendor_statistics_equal_the_simulators_payloads);

/// `/metrics` gauges are process-wide: the two backends' scenarios take turns.
static METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// (vendor, kind) → (attempts, results, verified, credits).
type Figures = BTreeMap<(String, String), (i64, i64, i64, Credits)>;

/// The figures of the simulator's waterfall payloads, each counted once (a duplicated delivery is
/// one payload), read from the bodies as sent: per person, each vendor of the trail is an attempt;
/// one that lists a value is a result; a result with status `VERIFIED` is verified. The payload's
/// credits go evenly to its results (or to all its attempts when none found anything), the first
/// ones in the payload taking the odd micro-credits.
fn from_payloads(t: &TestApp) -> (Figures, usize) {
    let mut bodies: BTreeMap<i64, String> = BTreeMap::new();
    for d in t.sim.deliveries().into_iter().filter(|d| d.kind == DeliveryKind::Waterfall) {
        let earlier = bodies.insert(d.request_id.0, d.body.clone());
        assert!(earlier.is_none_or(|b| b == d.body), "one body per request");
    }
    let mut out = Figures::new();
    for body in bodies.values() {
        let payload: Value = serde_json::from_str(body).unwrap();
        let mut attempts: Vec<(String, String, bool, bool)> = Vec::new();
        for person in payload["people"].as_array().unwrap() {
            for (field, kind) in [("emails", "email"), ("phone_numbers", "phone")] {
                for step in person["waterfall"][field].as_array().into_iter().flatten() {
                    for v in step["vendors"].as_array().unwrap() {
                        let found = v[field].as_array().is_some_and(|l| !l.is_empty());
                        let verified = found && v["status"] == "VERIFIED";
                        attempts.push((v["name"].as_str().unwrap().to_owned(), kind.to_owned(), found, verified));
                    }
                }
            }
        }
        let credits: Credits = serde_json::from_value(payload["credits_consumed"].clone()).unwrap();
        let any = attempts.iter().any(|a| a.2);
        let n = attempts.iter().filter(|a| a.2 || !any).count() as i64;
        let mut odd = if n == 0 { 0 } else { credits.micros() % n };
        for (vendor, kind, found, verified) in attempts {
            let share = if n > 0 && (found || !any) {
                let extra = i64::from(odd > 0);
                odd -= extra;
                credits.micros() / n + extra
            } else {
                0
            };
            let e = out.entry((vendor, kind)).or_insert((0, 0, 0, Credits::ZERO));
            e.0 += 1;
            e.1 += i64::from(found);
            e.2 += i64::from(verified);
            e.3 += Credits(share);
        }
    }
    (out, bodies.len())
}

/// The `vendors` of a usage report as figures, checking each row's cost per verified result.
fn from_report(report: &Value) -> Figures {
    let mut out = Figures::new();
    for v in report["vendors"].as_array().unwrap() {
        let credits: Credits = serde_json::from_value(v["credits"].clone()).unwrap();
        let verified = v["verified"].as_i64().unwrap();
        let cost: Option<Credits> = serde_json::from_value(v["cost_per_verified"].clone()).unwrap();
        assert_eq!(cost, (verified > 0).then(|| Credits(credits.micros() / verified)), "{v}");
        let key = (v["vendor"].as_str().unwrap().to_owned(), v["kind"].as_str().unwrap().to_owned());
        out.insert(key, (v["attempts"].as_i64().unwrap(), v["results"].as_i64().unwrap(), verified, credits));
    }
    out
}

async fn get_as(t: &TestApp, key: &str, path: &str) -> reqwest::Response {
    t.http.get(format!("{}{path}", t.url())).bearer_auth(key).send().await.expect("get")
}

/// The `enrichd_vendor_*` gauges as figures.
async fn from_metrics(t: &TestApp) -> Figures {
    let text = t.http.get(format!("{}/metrics", t.url())).send().await.unwrap().text().await.unwrap();
    let mut out = Figures::new();
    for line in text.lines().filter(|l| l.starts_with("enrichd_vendor_")) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap();
        let label = |k: &str| {
            labels.split(',').find_map(|l| l.strip_prefix(&format!("{k}=\""))).unwrap().trim_end_matches(['"', '}'])
        };
        let e = out.entry((label("vendor").to_owned(), label("kind").to_owned())).or_insert((0, 0, 0, Credits::ZERO));
        let value: f64 = value.parse().unwrap();
        match name {
            "enrichd_vendor_attempts" => e.0 = value as i64,
            "enrichd_vendor_results" => e.1 = value as i64,
            "enrichd_vendor_verified" => e.2 = value as i64,
            "enrichd_vendor_credits_micros" => e.3 = Credits(value as i64),
            other => panic!("unexpected series {other}"),
        }
    }
    out
}

async fn vendor_statistics_equal_the_simulators_payloads(backend: Backend) {
    let _turn = METRICS.lock().await;
    let sim = SimConfig {
        match_rate: 0.9,
        waterfall_email_rate: 0.7,
        waterfall_phone_rate: 0.5,
        fault_duplicate: 0.3,
        fault_reorder: 0.2,
        ..fast_sim()
    };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let domains = ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io"];
    let people: Vec<Value> =
        (0..45).map(|i| json!({"email": format!("vendor{i}@{}", domains[i % domains.len()])})).collect();
    let body = json!({"people": people, "run_waterfall_email": true, "run_waterfall_phone": true});
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");

    // Every waterfall charge booked: the simulator is quiet and the usage has its ledger's credits.
    let ledger_waterfall = || t.sim.ledger().total_of(apollo_sim::ChargeKind::Waterfall);
    let started = std::time::Instant::now();
    let usage = loop {
        let u = t.get_json("/v1/usage").await;
        let booked: Credits = serde_json::from_value(u["credits"]["waterfall"].clone()).unwrap();
        if t.sim.idle() && booked == ledger_waterfall() {
            let pending = t.get_json(&format!("/v1/jobs/{id}")).await;
            if pending["status"] == "completed" {
                break u;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(90), "waterfall credits never booked: {u:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let (expected, payloads) = from_payloads(&t);
    let duplicates = t.sim.deliveries().iter().filter(|d| d.kind == DeliveryKind::Waterfall && d.duplicate).count();
    let attempts: i64 = expected.values().map(|e| e.0).sum();
    let results: i64 = expected.values().map(|e| e.1).sum();
    let verified: i64 = expected.values().map(|e| e.2).sum();
    eprintln!(
        "{backend:?}: {payloads} waterfall payloads ({duplicates} duplicated), {} vendor rows, {attempts} attempts, \
         {results} results, {verified} verified",
        expected.len()
    );
    assert!(payloads >= 5 && attempts > results && results > verified && verified > 0, "{expected:?}");
    assert!(expected.keys().any(|k| k.1 == "email") && expected.keys().any(|k| k.1 == "phone"));

    // The client's report, the admin's (everyone, and this client by name), and /metrics agree.
    assert_eq!(from_report(&usage), expected, "{usage:#}");
    let attributed: Credits = expected.values().map(|e| e.3).sum();
    assert_eq!(attributed, ledger_waterfall(), "every waterfall credit attributed to a vendor");
    let everyone: Value = get_as(&t, ADMIN_KEY, "/v1/usage").await.json().await.unwrap();
    assert_eq!((from_report(&everyone), &everyone["client"]), (expected.clone(), &Value::Null));
    let named: Value = get_as(&t, ADMIN_KEY, "/v1/usage?client=e2e").await.json().await.unwrap();
    assert_eq!((from_report(&named), &named["client"]), (expected.clone(), &json!("e2e")));
    let other: Value = get_as(&t, OTHER_KEY, "/v1/usage").await.json().await.unwrap();
    assert_eq!(other["vendors"], json!([]), "another client's usage has none");
    let refused = get_as(&t, CLIENT_KEY, "/v1/usage?client=other").await;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["details"][0]["field"], "client");
    let unnamed = get_as(&t, ADMIN_KEY, "/v1/usage?client=").await;
    assert_eq!(unnamed.status(), 422, "an empty name is no client's");
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1)).format("%Y-%m-%d");
    assert_eq!(t.get_json(&format!("/v1/usage?from={tomorrow}")).await["vendors"], json!([]));
    let metrics = from_metrics(&t).await;
    for (key, want) in &expected {
        assert_eq!(metrics.get(key), Some(want), "/metrics for {key:?}");
    }

    // Erasure takes the people, not the statistics.
    let erased = t.http.delete(format!("{}/v1/jobs/{id}", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(erased.status(), 200);
    assert_eq!(from_report(&t.get_json("/v1/usage").await), expected, "after erasure");
    t.stop().await;
}
