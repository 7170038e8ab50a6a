//! The product end to end: a 250-person job with phone and waterfall, every simulator fault on,
//! on SQLite and PostgreSQL. Every record must equal the simulator's truth, the job's credits its
//! ledger, and the client must get exactly one verified `job.completed` callback.

use std::time::Duration;

use apollo_client::Credits;
use apollo_sim::SimConfig;
use e2e_tests::truth::assert_records_match;
use e2e_tests::{Backend, TestApp, fast_sim};
use serde_json::{Value, json};

const PEOPLE: usize = 250;

fn person(i: usize) -> Value {
    let domains = ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io", "bluefin.dev"];
    // Every 50th person repeats the one before it: looked up once, result copied.
    let i = if i % 50 == 49 { i - 1 } else { i };
    match i % 3 {
        0 => json!({"email": format!("person{i}@{}", domains[i % 4]), "external_id": format!("crm-{i}")}),
        1 => json!({"first_name": "Alex", "last_name": format!("Tester{i}"), "domain": domains[i % 4]}),
        _ => json!({"linkedin_url": format!("https://www.linkedin.com/in/alex-tester-{i}")}),
    }
}

fn all_faults() -> SimConfig {
    SimConfig {
        minute_limit: Some(20),
        fault_duplicate: 0.2,
        fault_reorder: 0.2,
        fault_early: 0.2,
        fault_drop: 0.1,
        fault_5xx: 0.1,
        fault_slow: 0.05,
        slow_ms: 200,
        fault_waterfall_failed: 0.1,
        fault_phone_skipped: 0.1,
        ..fast_sim()
    }
}

async fn full_flow(backend: Backend) {
    let t = TestApp::spawn(backend, all_faults(), |c| {
        c.reconcile_after = Duration::from_millis(1500);
        c.reconcile_every = Duration::from_millis(300);
        // People whose phone reveal Apollo skips wait for it until then.
        c.async_deadline = Duration::from_secs(8);
        c.apollo_timeout = Duration::from_secs(5);
    })
    .await
    .expect("test app");
    // The receiver fails twice before taking the callback: retries must carry the same id.
    t.receiver.script(&[500, 503]);
    let body = json!({
        "people": (0..PEOPLE).map(person).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": t.receiver.url(),
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["total"], PEOPLE);
    let c = &job["counts"];
    assert_eq!(c["failed"], 0);
    assert_eq!(
        c["complete"].as_i64().unwrap() + c["partial"].as_i64().unwrap() + c["not_found"].as_i64().unwrap(),
        PEOPLE as i64
    );

    // Every record equals what the simulator holds, given what each person's call answered.
    let people = t.all_people(&id).await;
    assert_eq!(people.len(), PEOPLE);
    let indexes: Vec<i64> = people.iter().map(|p| p["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, (0..PEOPLE as i64).collect::<Vec<_>>(), "input order");
    let checked = assert_records_match(&t.sim, &people);
    // Every part is delivered or polled; only a phone Apollo skipped and never sent is missing.
    assert_eq!(c["partial"], checked.phone_never_came, "{checked:?}");
    eprintln!(
        "{backend:?}: {c} {checked:?} credits={} deliveries={}",
        job["credits_consumed"],
        t.sim.deliveries().len()
    );
    assert!(checked.mobiles > 20 && checked.waterfall_emails > 20, "the faults left too little to check: {checked:?}");

    // Credits: the job's equal the simulator's ledger exactly.
    let credits: Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, t.sim.ledger().total, "job credits vs simulator ledger");
    assert_eq!(job["possible_double_charges"], 0);

    // One job.completed, verified, after two refusals carrying the same webhook-id.
    // Once the job says delivered, no attempt can follow: then count them.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while t.get_json(&format!("/v1/jobs/{id}")).await["callback"]["state"] != "delivered" {
        assert!(std::time::Instant::now() < deadline, "callback never delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = t.receiver.received();
    assert_eq!(got.len(), 3, "exactly three attempts: 500, 503, 200");
    assert!(got.iter().all(|r| r.id == got[0].id), "the same webhook-id on every retry");
    assert!(got.iter().all(|r| r.verified), "every attempt is signed");
    let accepted: Vec<_> = got.iter().filter(|r| r.answered < 300).collect();
    assert_eq!(accepted.len(), 1);
    let event = accepted[0].json();
    assert_eq!(event["type"], "job.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["people"].as_array().unwrap().len(), PEOPLE);
    let job = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["callback"]["state"], "delivered");
    assert_eq!(job["callback"]["attempts"], 3);
    assert_eq!(job["callback"]["webhook_id"], got[0].id.as_str());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_with_every_fault_sqlite() {
    full_flow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_with_every_fault_postgres() {
    full_flow(Backend::Postgres).await;
}
