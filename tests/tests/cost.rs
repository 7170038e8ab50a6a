//! Cost controls end to end, on SQLite and PostgreSQL: a job's `max_credits` stops spending
//! before the worst case could pass it, checked against the simulator's ledger, and the final
//! callback says why the job ended early; a dry run stores nothing and calls nothing.

use std::time::Duration;

use apollo_client::Credits;
use e2e_tests::{Backend, TestApp, fast_sim};
use serde_json::{Value, json};

const PEOPLE: usize = 40;

fn person(i: usize) -> Value {
    let domains = ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io", "bluefin.dev"];
    json!({"email": format!("budget{i}@{}", domains[i % 4])})
}

async fn budget_stops_spending(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.expect("test app");
    let budget = Credits::whole(50);
    // Phone reveal: worst case 1 + 8 credits per person, so 50 credits cover at most 5 at a time.
    let body = json!({
        "people": (0..PEOPLE).map(person).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "max_credits": 50,
        "callback_url": t.receiver.url(),
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let c = &job["counts"];
    let skipped = c["skipped_budget"].as_i64().unwrap();
    assert!(skipped > 0, "50 credits cannot pay for 40 phone reveals: {c}");
    let done: i64 = ["complete", "partial", "not_found", "failed"].iter().map(|k| c[k].as_i64().unwrap()).sum();
    assert_eq!(done + skipped, PEOPLE as i64, "{c}");

    // The simulator charged no more than the budget, and stopped less than one worst case short.
    let ledger = t.sim.ledger().total;
    let credits: Credits = serde_json::from_value(job["credits_consumed"].clone()).unwrap();
    assert_eq!(credits, ledger, "job credits vs simulator ledger");
    assert!(ledger <= budget, "ledger {ledger} over the budget {budget}");
    assert!(
        budget.micros() - ledger.micros() < Credits::whole(9).micros(),
        "stopped early: spent {ledger} of {budget}"
    );
    assert_eq!(job["max_credits"], 50.0);
    eprintln!("{backend:?}: budget {budget}, ledger {ledger}, skipped {skipped}, counts {c}");
    let reason = job["end_reason"].as_str().expect("end_reason");
    assert!(reason.contains("budget reached"), "{reason}");

    let people = t.all_people(&id).await;
    let unsent: Vec<&Value> = people.iter().filter(|p| p["status"] == "skipped_budget").collect();
    assert_eq!(unsent.len() as i64, skipped);

    // The final callback carries the reason and the count.
    let got = t.receiver.wait_for(1, Duration::from_secs(30)).await;
    let event = got[0].json();
    assert_eq!(event["type"], "job.completed");
    assert_eq!(event["data"]["end_reason"], reason);
    assert_eq!(event["data"]["counts"]["skipped_budget"], skipped);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_stops_spending_sqlite() {
    budget_stops_spending(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_stops_spending_postgres() {
    budget_stops_spending(Backend::Postgres).await;
}

async fn dry_run_stores_nothing_and_calls_nothing(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.rate_per_minute = Some(2)).await.expect("test app");
    let mut people: Vec<Value> = (0..25).map(person).collect();
    people.push(person(3));
    let body = json!({"people": people, "reveal_phone_number": true, "dry_run": true});
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 200);
    let e = resp.json::<Value>().await.unwrap();
    assert_eq!((e["people"].as_i64(), e["unique"].as_i64(), e["calls"].as_i64()), (Some(26), Some(25), Some(3)));
    assert_eq!(e["worst_case_credits"]["phone_reveal"], 200.0);
    assert_eq!(e["worst_case_credits"]["total"], 225.0);
    assert_eq!(e["reusable"], 0);
    // Three calls at two a minute (a test minute is short): the third waits one minute.
    assert!(e["seconds_at_limit"].as_f64().unwrap() > 0.0, "{e}");
    let jobs = t.get_json("/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "nothing stored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.sim.calls().is_empty(), "no Apollo call");
    assert_eq!(t.sim.ledger().total, Credits::ZERO);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_stores_nothing_and_calls_nothing_sqlite() {
    dry_run_stores_nothing_and_calls_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_stores_nothing_and_calls_nothing_postgres() {
    dry_run_stores_nothing_and_calls_nothing(Backend::Postgres).await;
}

async fn the_daily_cap_refuses_with_429(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| c.client_daily_credits = Some(3.0)).await.expect("test app");
    let resp = t.submit(&json!({"people": (0..3).map(person).collect::<Vec<_>>(), "max_credits": 100})).await;
    assert_eq!(resp.status(), 202);
    let first = resp.json::<Value>().await.unwrap();
    assert_eq!(first["max_credits"], 3.0, "the budget is cut to what remains of the day");
    // Running, the job holds its whole budget; done, what it spent (all three match: 3 credits).
    // Either way nothing remains today.
    let done = t.wait_done(first["id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(done["credits_consumed"], 3.0, "{done:#}");
    let resp = t.submit(&json!({"people": [person(11)]})).await;
    assert_eq!(resp.status(), 429);
    let err = resp.json::<Value>().await.unwrap();
    assert_eq!(err["error"]["code"], "daily_credit_cap_reached", "{err}");
    assert_eq!(t.get_json("/v1/jobs").await["data"].as_array().unwrap().len(), 1, "the refused job is not stored");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_refuses_with_429_sqlite() {
    the_daily_cap_refuses_with_429(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_refuses_with_429_postgres() {
    the_daily_cap_refuses_with_429(Backend::Postgres).await;
}
