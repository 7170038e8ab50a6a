//! The same Apollo person asked for many times at once, on SQLite and PostgreSQL: forty five-person
//! jobs over the same eight leads (packed together into shared calls), and one job naming a lead
//! by email and again by LinkedIn URL (the simulator knows both as one person). Every record must
//! equal what the simulator answered and delivered for its input, and the jobs' credits together
//! must equal the simulator's ledger.

use std::time::Duration;

use apollo_client::Credits;
use apollo_sim::SimConfig;
use e2e_tests::truth::assert_records_match;
use e2e_tests::{ADMIN_KEY, Backend, TestApp, fast_sim, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(cross_job_duplicates);

const LEADS: usize = 8;
const JOBS: usize = 40;

fn lead(i: usize) -> Value {
    json!({"email": format!("lead{i}@northwind-labs.com")})
}

const LEAD_ZERO_LINKEDIN: &str = "https://www.linkedin.com/in/lead-zero-northwind";

async fn cross_job_duplicates(backend: Backend) {
    let sim = SimConfig {
        match_rate: 1.0,
        same_person: vec![("linkedin:lead-zero-northwind".into(), "email:lead0@northwind-labs.com".into())],
        fault_duplicate: 0.2,
        fault_reorder: 0.2,
        fault_early: 0.2,
        ..fast_sim()
    };
    let t = TestApp::spawn(backend, sim, |c| {
        c.reconcile_after = Duration::from_millis(1500);
        c.reconcile_every = Duration::from_millis(300);
    })
    .await
    .expect("test app");
    let mut bodies: Vec<Value> = (0..JOBS)
        .map(|j| {
            // Five distinct leads per job, every lead in many jobs.
            let people: Vec<Value> = (0..5).map(|k| lead((j + 3 * k) % LEADS)).collect();
            json!({"people": people, "reveal_phone_number": true, "run_waterfall_email": true})
        })
        .collect();
    bodies.push(json!({
        "people": [lead(0), {"linkedin_url": LEAD_ZERO_LINKEDIN}, lead(1)],
        "reveal_phone_number": true,
        "run_waterfall_email": true,
    }));
    // The jobs arrive while dispatch is paused, so their people are packed into shared calls
    // whatever the timing (a fast dispatcher would otherwise give each job its own call).
    t.app.state.store.set_pause(Some("collecting the jobs".into())).await.unwrap();
    let mut ids = Vec::new();
    for body in &bodies {
        let resp = t.submit(body).await;
        assert_eq!(resp.status(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    let resumed = t.http.post(format!("{}/v1/admin/resume", t.url())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resumed.status(), 200);
    let mut credits = Credits::ZERO;
    let mut checked = Vec::new();
    for id in &ids {
        let job = t.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "completed", "{job:#}");
        assert_eq!(job["counts"]["failed"], 0, "{job:#}");
        assert_eq!(job["counts"]["partial"], 0, "{job:#}");
        let people = t.all_people(id).await;
        checked.push(assert_records_match(&t.sim, &people));
        credits += serde_json::from_value::<Credits>(job["credits_consumed"].clone()).unwrap();
    }
    // The email and the LinkedIn URL of lead 0 are one Apollo person with one record.
    let last = t.all_people(ids.last().unwrap()).await;
    assert_eq!(last[0]["record"]["apollo_id"], last[1]["record"]["apollo_id"], "{last:#?}");
    assert_eq!(last[0]["record"]["phones"], last[1]["record"]["phones"]);
    let bulk_calls = t.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200).count();
    let mobiles: usize = checked.iter().map(|c| c.mobiles).sum();
    eprintln!("{backend:?}: {} jobs, {bulk_calls} calls, {mobiles} mobiles checked", ids.len());
    assert!(mobiles > JOBS, "too few mobiles to prove anything: {mobiles}");
    assert!(bulk_calls < ids.len(), "people of several jobs share calls: {bulk_calls} calls for {} jobs", ids.len());
    assert_eq!(credits, t.sim.ledger().total, "the jobs' credits vs the simulator's ledger");
    t.stop().await;
}
