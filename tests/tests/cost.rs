//! Cost controls end to end, on SQLite and PostgreSQL: a job's `max_credits` stops spending
//! before the worst case could pass it, checked against the simulator's ledger, and the final
//! callback says why the job ended early; a dry run stores nothing and calls nothing; a retry
//! sends only the people asked for.

use std::collections::BTreeSet;
use std::time::Duration;

use apollo_client::Credits;
use apollo_sim::SimConfig;
use e2e_tests::{Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    retry_sends_only_the_people_asked_for,
    usage_equals_the_ledger_per_client,
    reuse_answers_without_a_call,
    reuse_keeps_out_of_erased_jobs_other_clients_and_old_lookups,
    shared_reuse_crosses_clients,
);

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

/// `POST /v1/jobs/{id}/retry` as `key` (no body when `body` is `None`).
async fn retry(t: &TestApp, key: &str, id: &str, body: Option<Value>, idem: Option<&str>) -> reqwest::Response {
    let mut req = t.http.post(format!("{}/v1/jobs/{id}/retry", t.url())).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(k) = idem {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("retry")
}

fn bulk_calls(t: &TestApp) -> Vec<apollo_sim::CallRecord> {
    t.sim.calls().into_iter().filter(|c| c.path.ends_with("bulk_match")).collect()
}

/// Apollo refuses three details of a job (they fail alone); once it accepts them again, a retry
/// of the failed people makes a new job of exactly those three, linked both ways, idempotent
/// under its key, whose calls hold only their details and whose records are Apollo's answers.
async fn retry_sends_only_the_people_asked_for(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, reject_marker: Some("refuse-me.example".into()), ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let mut list: Vec<Value> = (0..12).map(|i| json!({"email": format!("retry{i}@northwind-labs.com")})).collect();
    let refused = [2usize, 7, 11];
    for i in refused {
        list[i] = json!({"email": format!("refused{i}@refuse-me.example"), "external_id": format!("crm-{i}")});
    }
    let resp = t.submit(&json!({"people": list, "metadata": {"batch": "monday"}})).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["counts"]["failed"], 3, "{job:#}");
    assert_eq!(job["counts"]["complete"], 9, "{job:#}");

    // Another client does not see the job; states other than failed/partial/not_found are named.
    assert_eq!(retry(&t, OTHER_KEY, &id, None, None).await.status(), 404);
    let bad = retry(&t, CLIENT_KEY, &id, Some(json!({"states": ["failed", "complete"]})), None).await;
    assert_eq!(bad.status(), 422);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["error"]["details"][0]["field"], "states[1]", "{err}");
    // Nobody is not_found: nothing to retry, a conflict with the job's state as while it runs.
    let none = retry(&t, CLIENT_KEY, &id, Some(json!({"states": ["not_found"]})), None).await;
    assert_eq!(none.status(), 409);
    let err: Value = none.json().await.unwrap();
    assert_eq!(err["error"]["message"], "no person of the job is not_found: nothing to retry", "{err}");

    // Apollo takes them now.
    t.sim.update_config(|c| c.reject_marker = None);
    let calls_before = bulk_calls(&t).len();
    let resp = retry(&t, CLIENT_KEY, &id, None, Some("retry-monday")).await;
    assert_eq!(resp.status(), 202);
    let new: Value = resp.json().await.unwrap();
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert_eq!(new["total"], 3, "{new:#}");
    assert_eq!(new["retry_of"], id.as_str());
    assert_eq!(new["metadata"], json!({"batch": "monday"}), "the original's settings");
    // The same key gives the same job.
    let again = retry(&t, CLIENT_KEY, &id, None, Some("retry-monday")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(again.json::<Value>().await.unwrap()["id"], new_id.as_str());
    // A `null` body is an absent one (the document's body is optional): the same request again.
    let null = retry(&t, CLIENT_KEY, &id, Some(Value::Null), Some("retry-monday")).await;
    assert_eq!(null.status(), 202);
    assert_eq!(null.json::<Value>().await.unwrap()["id"], new_id.as_str());

    let done = t.wait_done(&new_id, Duration::from_secs(60)).await;
    assert_eq!(done["counts"]["complete"], 3, "{done:#}");
    let original = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(original["retries"], json!([new_id]));

    // The retry's calls carried exactly the refused details, once each.
    let calls: Vec<apollo_sim::CallRecord> = bulk_calls(&t).into_iter().skip(calls_before).collect();
    let sent: Vec<String> = calls
        .iter()
        .flat_map(|c| c.received.iter().map(|d| d.detail["email"].as_str().unwrap_or_default().to_string()))
        .collect();
    let wanted: BTreeSet<String> = refused.iter().map(|i| format!("refused{i}@refuse-me.example")).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent.iter().cloned().collect::<BTreeSet<_>>(), wanted);
    // Each record is what Apollo answered for that detail, and the input is the original's.
    let people = t.all_people(&new_id).await;
    for (p, i) in people.iter().zip(refused) {
        assert_eq!(p["input"]["email"], format!("refused{i}@refuse-me.example"));
        assert_eq!(p["external_id"], format!("crm-{i}"));
        let answered = calls
            .iter()
            .flat_map(|c| c.received.iter())
            .find(|d| d.detail["email"] == p["input"]["email"])
            .and_then(|d| d.apollo_id.clone());
        assert_eq!(p["apollo_id"].as_str(), answered.as_deref(), "{p:#}");
        assert_eq!(p["status"], "complete");
    }

    // While a job runs, it cannot be retried.
    t.sim.update_config(|c| c.latency_ms = 3_000);
    let resp = t.submit(&json!({"people": [{"email": "slow@northwind-labs.com"}]})).await;
    let slow = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let running = retry(&t, CLIENT_KEY, &slow, None, None).await;
    let refused_at = chrono::Utc::now();
    assert_eq!(running.status(), 409);
    let slow_done = t.wait_done(&slow, Duration::from_secs(60)).await;
    let completed: chrono::DateTime<chrono::Utc> = serde_json::from_value(slow_done["completed_at"].clone()).unwrap();
    assert!(completed > refused_at, "the 409 came while the job ran");
    t.sim.update_config(|c| c.latency_ms = 0);
    t.stop().await;
}

/// Polls `pred` on a JSON document at `path` (a generous deadline: waiting on a condition).
async fn wait_json(t: &TestApp, key: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let resp = t.http.get(format!("{}{path}", t.url())).bearer_auth(key).send().await.expect("get");
        let v: Value = resp.json().await.expect("JSON");
        if pred(&v) {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "condition never met on {path}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit_as(t: &TestApp, key: &str, body: &Value) -> String {
    let resp = t.http.post(format!("{}/v1/jobs", t.url())).bearer_auth(key).json(body).send().await.expect("submit");
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Waits until the job is done and the simulator quiet with every charge of it booked.
async fn settle(t: &TestApp, key: &str, id: &str) -> Value {
    wait_json(t, key, &format!("/v1/jobs/{id}"), |j| {
        matches!(j["status"].as_str(), Some("completed" | "failed" | "cancelled")) && t.sim.idle()
    })
    .await
}

fn credits(v: &Value) -> Credits {
    serde_json::from_value(v.clone()).unwrap()
}

/// The simulator's charges so far by kind: (sync, phone, waterfall).
fn ledger_kinds(t: &TestApp) -> [Credits; 3] {
    use apollo_sim::ChargeKind as K;
    let l = t.sim.ledger();
    [l.total_of(K::Sync), l.total_of(K::Phone), l.total_of(K::Waterfall)]
}

/// Two clients' jobs, one after the other: each client's usage equals the simulator's charges for
/// its jobs, kind by kind, and the sums over its jobs.
async fn usage_equals_the_ledger_per_client(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, mobile_rate: 1.0, waterfall_email_rate: 1.0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let emails = |tag: &str, n: usize| {
        (0..n).map(|i| json!({"email": format!("{tag}{i}@harbor-analytics.io")})).collect::<Vec<_>>()
    };
    let a1 = submit_as(&t, CLIENT_KEY, &json!({"people": emails("ua", 6), "reveal_phone_number": true})).await;
    let a2 = submit_as(&t, CLIENT_KEY, &json!({"people": emails("ub", 4), "run_waterfall_email": true})).await;
    settle(&t, CLIENT_KEY, &a1).await;
    settle(&t, CLIENT_KEY, &a2).await;
    let [sync_a, phone_a, waterfall_a] = ledger_kinds(&t);
    let mine =
        wait_json(&t, CLIENT_KEY, "/v1/usage", |u| credits(&u["credits"]["total"]) == t.sim.ledger().total).await;
    assert_eq!(mine["jobs"], 2, "{mine:#}");
    assert_eq!(mine["people"], 10);
    assert_eq!(credits(&mine["credits"]["sync"]), sync_a, "{mine:#}");
    assert_eq!(credits(&mine["credits"]["phone"]), phone_a, "{mine:#}");
    assert_eq!(credits(&mine["credits"]["waterfall"]), waterfall_a, "{mine:#}");
    assert!(phone_a > Credits::ZERO && waterfall_a > Credits::ZERO && sync_a > Credits::ZERO);
    let j1 = t.get_json(&format!("/v1/jobs/{a1}")).await;
    let j2 = t.get_json(&format!("/v1/jobs/{a2}")).await;
    assert_eq!(
        mine["calls"].as_i64(),
        Some(j1["apollo_calls"].as_i64().unwrap() + j2["apollo_calls"].as_i64().unwrap())
    );
    assert_eq!(credits(&mine["credits"]["total"]), credits(&j1["credits_consumed"]) + credits(&j2["credits_consumed"]));
    assert_eq!(credits(&j1["credits_by_kind"]["phone"]) + credits(&j2["credits_by_kind"]["phone"]), phone_a);
    assert_eq!((mine["reuse_hits"].as_i64(), mine["possible_double_charges"].as_i64()), (Some(0), Some(0)));

    // The other client's job: its usage is what the ledger added, and the first client's stays.
    let b = submit_as(&t, OTHER_KEY, &json!({"people": emails("uc", 5), "reveal_phone_number": true})).await;
    settle(&t, OTHER_KEY, &b).await;
    let [sync_all, phone_all, waterfall_all] = ledger_kinds(&t);
    let other = wait_json(&t, OTHER_KEY, "/v1/usage", |u| {
        credits(&u["credits"]["total"]).micros()
            == t.sim.ledger().total.micros() - credits(&mine["credits"]["total"]).micros()
    })
    .await;
    assert_eq!(other["jobs"], 1, "{other:#}");
    assert_eq!(credits(&other["credits"]["sync"]).micros(), sync_all.micros() - sync_a.micros());
    assert_eq!(credits(&other["credits"]["phone"]).micros(), phone_all.micros() - phone_a.micros());
    assert_eq!(credits(&other["credits"]["waterfall"]).micros(), waterfall_all.micros() - waterfall_a.micros());
    let again = t.get_json("/v1/usage").await;
    assert_eq!(again["credits"], mine["credits"], "the first client's usage is its own");

    // The window: tomorrow holds nothing; a bad end is named.
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1)).format("%Y-%m-%d");
    assert_eq!(t.get_json(&format!("/v1/usage?from={tomorrow}")).await["jobs"], 0);
    let bad = t.http.get(format!("{}/v1/usage?from=yesterday", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["details"][0]["field"], "from");
    t.stop().await;
}

fn five(tag: &str) -> Vec<Value> {
    (0..5).map(|i| json!({"email": format!("{tag}{i}@kestrel-robotics.io")})).collect()
}

/// Emails of the details the simulator received after the first `skip` bulk calls.
fn details_after(t: &TestApp, skip: usize) -> Vec<String> {
    bulk_calls(t)
        .into_iter()
        .skip(skip)
        .flat_map(|c| c.received.into_iter().map(|d| d.detail["email"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A person looked up earlier is answered from the store: no call and no credit, its record the
/// earlier one, with where and when it came from; two jobs at the same time make one lookup.
async fn reuse_answers_without_a_call(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, mobile_rate: 1.0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let body = |people: Vec<Value>| json!({"people": people, "reveal_phone_number": true, "reuse_within": "30d"});
    // Two jobs with the same five people at once: one lookup between them.
    let a = submit_as(&t, CLIENT_KEY, &body(five("re"))).await;
    let b = submit_as(&t, CLIENT_KEY, &body(five("re"))).await;
    let ja = settle(&t, CLIENT_KEY, &a).await;
    let jb = settle(&t, CLIENT_KEY, &b).await;
    let sent = details_after(&t, 0);
    assert_eq!(sent.len(), 5, "each person looked up once: {sent:?}");
    assert_eq!(ja["reuse_hits"].as_i64().unwrap() + jb["reuse_hits"].as_i64().unwrap(), 5, "{ja:#} {jb:#}");
    let spent = credits(&ja["credits_consumed"]) + credits(&jb["credits_consumed"]);
    assert_eq!(spent, t.sim.ledger().total);
    assert_eq!(credits(&ja["credits_saved"]) + credits(&jb["credits_saved"]), spent, "the lookup's cost, saved once");

    // Later, a job with the same five and two new people: only the new ones are sent or charged.
    let (calls, ledger) = (bulk_calls(&t).len(), t.sim.ledger().total);
    let mut people = five("re");
    people.extend((0..2).map(|i| json!({"email": format!("fresh{i}@kestrel-robotics.io")})));
    // Its dry run says so first, without a call: five reusable, one call for the two others.
    let mut dry = body(people.clone());
    dry["dry_run"] = json!(true);
    let resp = t.http.post(format!("{}/v1/jobs", t.url())).bearer_auth(CLIENT_KEY).json(&dry).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let estimate: Value = resp.json().await.unwrap();
    assert_eq!((estimate["unique"].as_i64(), estimate["reusable"].as_i64()), (Some(7), Some(5)), "{estimate:#}");
    assert_eq!(estimate["calls"], 1, "{estimate:#}");
    assert_eq!(bulk_calls(&t).len(), calls, "a dry run calls nobody");
    // Without a reuse window nothing is reusable.
    dry["reuse_within"] = json!("0s");
    let resp = t.http.post(format!("{}/v1/jobs", t.url())).bearer_auth(CLIENT_KEY).json(&dry).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["reusable"], 0);
    let c = submit_as(&t, CLIENT_KEY, &body(people)).await;
    let jc = settle(&t, CLIENT_KEY, &c).await;
    let sent: BTreeSet<String> = details_after(&t, calls).into_iter().collect();
    assert_eq!(sent, (0..2).map(|i| format!("fresh{i}@kestrel-robotics.io")).collect::<BTreeSet<_>>());
    assert_eq!(jc["reuse_hits"], 5, "{jc:#}");
    assert_eq!(credits(&jc["credits_consumed"]).micros(), t.sim.ledger().total.micros() - ledger.micros());
    let mut earlier: Vec<(String, Value)> = Vec::new();
    for job in [&a, &b] {
        earlier.extend(t.all_people(job).await.into_iter().map(|p| (job.clone(), p)));
    }
    for p in t.all_people(&c).await.iter().take(5) {
        assert_eq!(p["status"], "complete", "{p:#}");
        let (job, src) =
            earlier.iter().find(|(_, e)| e["input"] == p["input"] && e["reused_from"].is_null()).expect("the lookup");
        assert_eq!(p["reused_from"], job.as_str(), "{p:#}");
        assert_eq!(p["record"], src["record"], "the earlier record");
        assert!(p["reused_at"].is_string(), "{p:#}");
        assert_eq!(credits(&p["credits_consumed"]), Credits::ZERO);
    }
    let usage = t.get_json("/v1/usage").await;
    assert_eq!(usage["reuse_hits"], 10, "{usage:#}");
    t.stop().await;
}

/// Reuse never answers from an erased job, from another client's lookup (scope `client`), or
/// from a lookup older than the window.
async fn reuse_keeps_out_of_erased_jobs_other_clients_and_old_lookups(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let body = |tag: &str, within: &str| json!({"people": five(tag), "reuse_within": within});
    // Erased: the next job looks everyone up again.
    let a = submit_as(&t, CLIENT_KEY, &body("er", "30d")).await;
    settle(&t, CLIENT_KEY, &a).await;
    let resp = t.http.delete(format!("{}/v1/jobs/{a}", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let calls = bulk_calls(&t).len();
    let b = submit_as(&t, CLIENT_KEY, &body("er", "30d")).await;
    let jb = settle(&t, CLIENT_KEY, &b).await;
    assert_eq!((jb["reuse_hits"].as_i64(), details_after(&t, calls).len()), (Some(0), 5), "{jb:#}");
    // Another client with scope `client`: looked up again.
    let calls = bulk_calls(&t).len();
    let c = submit_as(&t, OTHER_KEY, &body("er", "30d")).await;
    let jc = settle(&t, OTHER_KEY, &c).await;
    assert_eq!((jc["reuse_hits"].as_i64(), details_after(&t, calls).len()), (Some(0), 5), "{jc:#}");
    // The same client inside the window: reused; outside it (1 s, once a second has passed): not.
    let calls = bulk_calls(&t).len();
    let d = submit_as(&t, CLIENT_KEY, &body("er", "30d")).await;
    let jd = settle(&t, CLIENT_KEY, &d).await;
    assert_eq!((jd["reuse_hits"].as_i64(), details_after(&t, calls).len()), (Some(5), 0), "{jd:#}");
    let finished: chrono::DateTime<chrono::Utc> = serde_json::from_value(jb["completed_at"].clone()).unwrap();
    while chrono::Utc::now() < finished + chrono::TimeDelta::seconds(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = bulk_calls(&t).len();
    let e = submit_as(&t, CLIENT_KEY, &body("er", "1s")).await;
    let je = settle(&t, CLIENT_KEY, &e).await;
    assert_eq!((je["reuse_hits"].as_i64(), details_after(&t, calls).len()), (Some(0), 5), "{je:#}");
    t.stop().await;
}

/// With `REUSE_SCOPE=shared` another client's lookup answers too.
async fn shared_reuse_crosses_clients(backend: Backend) {
    let sim = SimConfig { match_rate: 1.0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |c| {
        c.reuse_scope = enrichd::config::ReuseScope::Shared;
        c.reuse_within = Some(Duration::from_secs(86_400));
    })
    .await
    .expect("test app");
    let a = submit_as(&t, CLIENT_KEY, &json!({"people": five("sh")})).await;
    settle(&t, CLIENT_KEY, &a).await;
    let calls = bulk_calls(&t).len();
    let b = submit_as(&t, OTHER_KEY, &json!({"people": five("sh")})).await;
    let jb = settle(&t, OTHER_KEY, &b).await;
    assert_eq!((jb["reuse_hits"].as_i64(), details_after(&t, calls).len()), (Some(5), 0), "{jb:#}");
    assert_eq!(jb["reuse_scope"], "shared");
    t.stop().await;
}
