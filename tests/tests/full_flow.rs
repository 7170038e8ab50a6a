//! The product end to end: a 250-person job with phone and waterfall, every simulator fault on,
//! on SQLite and PostgreSQL. Every record must equal the simulator's truth, the job's credits its
//! ledger, and the client must get exactly one verified `job.completed` callback.

use std::collections::BTreeSet;
use std::time::Duration;

use apollo_client::{BulkMatchResponse, Credits};
use apollo_sim::SimConfig;
use e2e_tests::{Backend, TestApp, fast_sim};
use enrichd::core::records::detail_of;
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

fn set_of(v: &Value, list: &str, key: &str) -> BTreeSet<String> {
    v[list].as_array().into_iter().flatten().filter_map(|e| e[key].as_str().map(str::to_string)).collect()
}

async fn full_flow(backend: Backend) {
    let t = TestApp::spawn(backend, all_faults(), |c| {
        c.reconcile_after = Duration::from_millis(1500);
        c.reconcile_every = Duration::from_millis(300);
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
    assert_eq!(c["partial"], 0, "every part is delivered or polled; none may be missing");

    // Every record equals what the simulator holds, given what each person's call answered.
    let store = &t.app.state.store;
    let people = t.all_people(&id).await;
    assert_eq!(people.len(), PEOPLE);
    let mut mobiles = 0;
    let mut waterfall_emails = 0;
    for p in &people {
        assert_eq!(p["index"], p["index"].as_i64().unwrap(), "input order");
        let truth = t.sim.truth_for(&detail_of(&p["input"]));
        let Some(truth) = truth else {
            assert_eq!(p["status"], "not_found", "{p:#}");
            continue;
        };
        assert_eq!(p["status"], "complete", "{p:#}");
        let record = &p["record"];
        assert_eq!(record["apollo_id"], truth.apollo_id.as_str());
        assert_eq!(record["fields"]["name"], truth.name.as_str());
        // The call that carried this person (its own, or its primary's for a duplicate).
        let pid = uuid::Uuid::parse_str(p["duplicate_of"].as_str().unwrap_or(p["id"].as_str().unwrap())).unwrap();
        let batch_id = store.get_person(pid).await.unwrap().unwrap().batch_id.unwrap();
        let batch = store.get_batch(batch_id).await.unwrap().unwrap();
        let answer = BulkMatchResponse::from_value(batch.response.unwrap()).unwrap();
        let phone_pending = answer.phone_enrichment.as_ref().is_some_and(|p| p.pending());
        let waterfall_accepted = answer.waterfall.as_ref().is_some_and(|w| w.accepted());

        let mut phones: BTreeSet<String> = truth.work_phone.iter().map(|w| w.e164.clone()).collect();
        if phone_pending && let Some(m) = &truth.mobile {
            phones.insert(m.e164.clone());
            mobiles += 1;
        }
        assert_eq!(set_of(record, "phones", "e164"), phones, "phones of {p:#}");
        let mut emails = BTreeSet::new();
        if waterfall_accepted && let Some(found) = &truth.waterfall_email.found {
            emails.insert(found.value.clone());
            waterfall_emails += 1;
            let entry =
                record["emails"].as_array().unwrap().iter().find(|e| e["address"] == found.value.as_str()).unwrap();
            assert_eq!(entry["vendors"], json!([found.vendor.name]), "the vendor is kept");
        }
        assert_eq!(set_of(record, "emails", "address"), emails, "emails of {p:#}");
    }
    eprintln!(
        "{backend:?}: {c} mobiles={mobiles} waterfall_emails={waterfall_emails} credits={} deliveries={}",
        job["credits_consumed"],
        t.sim.deliveries().len()
    );
    assert!(
        mobiles > 20 && waterfall_emails > 20,
        "the faults left too little to check: {mobiles} / {waterfall_emails}"
    );

    // Credits: the job's equal the simulator's ledger exactly.
    let credits: Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, t.sim.ledger().total, "job credits vs simulator ledger");
    assert_eq!(job["possible_double_charges"], 0);

    // One job.completed, verified, after two refusals carrying the same webhook-id.
    let got = t.receiver.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = t.receiver.received();
    assert_eq!(got_after.len(), 3, "exactly three attempts: 500, 503, 200");
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
