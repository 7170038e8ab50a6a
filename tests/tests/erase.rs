//! Personal data end to end, on SQLite and PostgreSQL: `DELETE /v1/jobs/{id}` erases a finished
//! phone + waterfall job's inputs, records and raw Apollo payloads while its counters and credits
//! stay (in the job list and in `/v1/usage`); reading the erased job or its people answers 410
//! Gone; another client cannot erase it; and with a retention of 0 days a finished job is purged.

use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::{Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use job_store::entities::{batch, batch_person, inbound_delivery, person};
use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(delete_erases_personal_data_and_keeps_counters, delete_a_running_job, retention_purges_finished_jobs);

fn people(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(
            |i| json!({"email": format!("{prefix}{i}@northwind-labs.com"), "external_id": format!("crm-{prefix}-{i}")}),
        )
        .collect()
}

/// A request with `key`; the status and the JSON body (`null` if none).
async fn call(t: &TestApp, method: Method, key: &str, path: &str) -> (u16, Value) {
    let resp = t.http.request(method, format!("{}{path}", t.url())).bearer_auth(key).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The batches that held people of a job.
async fn batches_of(t: &TestApp, job_id: Uuid) -> Vec<Uuid> {
    batch_person::Entity::find()
        .select_only()
        .column(batch_person::Column::BatchId)
        .distinct()
        .filter(batch_person::Column::JobId.eq(job_id))
        .into_tuple()
        .all(t.app.state.store.connection())
        .await
        .unwrap()
}

async fn deliveries_of(t: &TestApp, batches: &[Uuid]) -> Vec<inbound_delivery::Model> {
    inbound_delivery::Entity::find()
        .filter(inbound_delivery::Column::BatchId.is_in(batches.iter().copied()))
        .all(t.app.state.store.connection())
        .await
        .unwrap()
}

/// The people of a job as `GET /v1/jobs/{id}/people` showed them, read from the store: once the
/// job is erased the API answers 410 instead.
async fn stored_people(t: &TestApp, job_id: Uuid) -> Vec<Value> {
    let people = t.app.state.store.list_people(job_id, None, 10_000).await.unwrap();
    people.iter().map(enrichd::models::person_json).collect()
}

/// Asserts that `GET path` answers 410 Gone naming the job and when it was erased.
async fn assert_gone(t: &TestApp, path: &str, id: &str, erased_at: &Value) {
    let (status, err) = call(t, Method::GET, CLIENT_KEY, path).await;
    assert_eq!(status, 410, "{path}: {err:#}");
    assert_eq!(err["error"]["code"], "gone", "{path}: {err:#}");
    let message = err["error"]["message"].as_str().unwrap();
    let at = erased_at.as_str().unwrap();
    assert!(message.contains(&format!("job {id} was erased at {at}")), "{path}: {message}");
}

/// This client's usage over every job of the test's database.
async fn usage(t: &TestApp) -> Value {
    t.get_json("/v1/usage?from=2000-01-01&to=2100-01-01").await
}

/// What must not change when a job is erased.
fn accounting(job: &Value) -> Value {
    json!([
        job["status"],
        job["total"],
        job["counts"],
        job["credits_consumed"],
        job["apollo_calls"],
        job["completed_at"]
    ])
}

async fn delete_erases_personal_data_and_keeps_counters(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.expect("test app");
    let body = json!({
        "people": people("erase", 14),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": t.receiver.url(),
        "metadata": {"owner": "dana@example.com"},
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job_id = Uuid::parse_str(&id).unwrap();
    let before = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(before["status"], "completed", "{before:#}");
    t.receiver.wait_for(1, Duration::from_secs(10)).await;
    // The receiver answers before the sender records its attempt: wait for the record too.
    let recorded = Instant::now();
    while t.get_json(&format!("/v1/jobs/{id}")).await["callback"]["attempt_log"].as_array().is_none_or(Vec::is_empty) {
        assert!(recorded.elapsed() < Duration::from_secs(10), "the callback's attempt was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let people_before = t.all_people(&id).await;
    assert!(people_before.iter().any(|p| p["record"].is_object()), "something was found to erase");
    let batches = batches_of(&t, job_id).await;
    assert!(!batches.is_empty());
    assert!(!deliveries_of(&t, &batches).await.is_empty(), "phone and waterfall deliveries were stored");
    let before = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert!(before["erased_at"].is_null());
    let usage_before = usage(&t).await;
    assert_eq!(usage_before["jobs"], 1, "{usage_before:#}");
    assert!(usage_before["credits"]["total"].as_f64().unwrap() > 0.0, "the job cost credits: {usage_before:#}");

    // Another client's DELETE: not found, nothing erased.
    let (status, err) = call(&t, Method::DELETE, OTHER_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 404, "{err:#}");
    assert_eq!(err["error"]["code"], "not_found");
    assert_eq!(t.all_people(&id).await, people_before);

    let (status, erased) = call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{erased:#}");
    assert_eq!(erased["id"], id.as_str());
    assert!(erased["erased_at"].is_string(), "{erased:#}");
    assert_eq!(accounting(&erased), accounting(&before), "counters and credits stay");
    assert!(erased["metadata"].is_null() && erased["callback_url"].is_null());
    let log = erased["callback"]["attempt_log"].as_array().unwrap();
    assert!(!log.is_empty() && log.iter().all(|a| a["response_excerpt"].is_null()));

    // Its people and the job itself are gone for the client: 410, naming the job and the time.
    assert_gone(&t, &format!("/v1/jobs/{id}/people"), &id, &erased["erased_at"]).await;
    assert_gone(&t, &format!("/v1/jobs/{id}/people?limit=1&after=3"), &id, &erased["erased_at"]).await;
    assert_gone(&t, &format!("/v1/jobs/{id}"), &id, &erased["erased_at"]).await;
    // Another client still gets 404: an erased job is not revealed to anyone else.
    let (status, _) = call(&t, Method::GET, OTHER_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 404);

    // The people as stored: no input, no record, no Apollo id; index and state kept.
    let after = stored_people(&t, job_id).await;
    assert_eq!(after.len(), 14);
    for (b, a) in people_before.iter().zip(&after) {
        assert_eq!(a["input"], json!({}), "{a:#}");
        assert!(a["record"].is_null() && a["apollo_id"].is_null() && a["external_id"].is_null(), "{a:#}");
        assert_eq!(
            (&a["index"], &a["status"], &a["credits_consumed"]),
            (&b["index"], &b["status"], &b["credits_consumed"])
        );
    }

    // The store: no raw response, no delivery body (a late duplicate is emptied once applied).
    let db = t.app.state.store.connection();
    for b in &batches {
        let row = batch::Entity::find_by_id(*b).one(db).await.unwrap().unwrap();
        assert!(row.response.is_none(), "batch {b} kept its raw response");
    }
    let started = Instant::now();
    loop {
        let deliveries = deliveries_of(&t, &batches).await;
        if deliveries.iter().all(|d| d.body.is_empty()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "delivery bodies left: {deliveries:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = person::Entity::find().filter(person::Column::JobId.eq(job_id)).all(db).await.unwrap();
    assert!(rows.iter().all(|p| p.person_key.is_none() && p.last_error.is_none()));

    // Its counters stay in the job list, and its credits in the usage, unchanged.
    let list = t.get_json("/v1/jobs").await;
    let listed = list["data"].as_array().unwrap().iter().find(|j| j["id"] == id.as_str()).expect("still listed");
    assert_eq!(accounting(listed), accounting(&before));
    assert_eq!(listed["erased_at"], erased["erased_at"]);
    assert!(listed["metadata"].is_null() && listed["callback_url"].is_null(), "{listed:#}");
    assert_eq!(usage(&t).await, usage_before, "an erased job's credits stay in the usage");

    // Erased again: the same job, the same erasure time, still gone for reads.
    let (status, again) = call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(again["erased_at"], erased["erased_at"]);
    assert_eq!(accounting(&again), accounting(&before));
    assert_gone(&t, &format!("/v1/jobs/{id}"), &id, &erased["erased_at"]).await;
    let (status, _) = call(&t, Method::POST, CLIENT_KEY, &format!("/v1/jobs/{id}/callback/redeliver")).await;
    assert_eq!(status, 409, "an erased job has no callback URL to redeliver to");
    let (status, _) = call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{}", Uuid::now_v7())).await;
    assert_eq!(status, 404);
    let (status, _) = call(&t, Method::DELETE, CLIENT_KEY, "/v1/jobs/not-a-job").await;
    assert_eq!(status, 404);
    let (_, doc) = call(&t, Method::GET, CLIENT_KEY, "/openapi.json").await;
    assert!(doc["paths"]["/v1/jobs/{id}"]["delete"].is_object(), "the OpenAPI document lists DELETE");
    t.stop().await;
}

/// A running job is cancelled and erased at once; calls in flight finish, and bring back no data.
async fn delete_a_running_job(backend: Backend) {
    const TOTAL: usize = 100;
    // Two calls a (1-second) minute, each answered after 300 ms: the DELETE finds one in flight.
    let sim = SimConfig { minute_limit: Some(2), minute_ms: 1000, latency_ms: 300, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let body = json!({"people": people("running", TOTAL), "reveal_phone_number": true, "run_waterfall_email": true});
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    while t.get_json(&format!("/v1/jobs/{id}")).await["counts"]["submitted"].as_i64().unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no call went out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, erased) = call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{erased:#}");
    assert!(erased["erased_at"].is_string() && erased["cancel_requested_at"].is_string(), "{erased:#}");
    assert_eq!(erased["counts"]["queued"], 0, "nothing more is sent: {erased:#}");
    assert!(erased["counts"]["cancelled"].as_i64().unwrap() > 0, "{erased:#}");
    let in_flight =
        erased["counts"]["submitted"].as_i64().unwrap() + erased["counts"]["awaiting_async"].as_i64().unwrap();
    assert!(in_flight > 0, "a call was in flight: {erased:#}");

    // Reads are gone at once, while the calls in flight still run to their end.
    assert_gone(&t, &format!("/v1/jobs/{id}"), &id, &erased["erased_at"]).await;
    assert_gone(&t, &format!("/v1/jobs/{id}/people"), &id, &erased["erased_at"]).await;
    let job_id = Uuid::parse_str(&id).unwrap();
    let started = Instant::now();
    let job = loop {
        let job = enrichd::models::job_json(&t.app.state.store.get_job(job_id).await.unwrap().expect("kept"));
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not done: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["status"], "cancelled", "{job:#}");
    let sum: i64 = job["counts"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(sum, TOTAL as i64);
    // Late answers arrived (and were charged) for the calls in flight, but wrote nothing personal.
    for p in stored_people(&t, job_id).await {
        assert_eq!(p["input"], json!({}), "{p:#}");
        assert!(p["record"].is_null() && p["apollo_id"].is_null(), "{p:#}");
    }
    let batches = batches_of(&t, job_id).await;
    let db = t.app.state.store.connection();
    for b in &batches {
        assert!(batch::Entity::find_by_id(*b).one(db).await.unwrap().unwrap().response.is_none());
    }
    let started = Instant::now();
    while !deliveries_of(&t, &batches).await.iter().all(|d| d.body.is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(10), "delivery bodies left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}

async fn retention_purges_finished_jobs(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |c| {
        c.retention_days = Some(0.0);
        c.retention_every = Duration::from_millis(200);
    })
    .await
    .expect("test app");
    let body = json!({
        "people": people("retain", 12),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": t.receiver.url(),
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job_id = Uuid::parse_str(&id).unwrap();
    // It runs to the end (its callback is sent: a pending callback holds the purge back), then goes.
    t.receiver.wait_for(1, Duration::from_secs(60)).await;
    let started = Instant::now();
    loop {
        let (status, job) = call(&t, Method::GET, CLIENT_KEY, &format!("/v1/jobs/{id}")).await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(30), "not purged: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = t.receiver.received()[0].json();
    assert_eq!(event["data"]["status"], "completed", "it finished before it was purged");
    let db = t.app.state.store.connection();
    assert_eq!(person::Entity::find().filter(person::Column::JobId.eq(job_id)).count(db).await.unwrap(), 0);
    assert!(batches_of(&t, job_id).await.is_empty());
    assert_eq!(batch::Entity::find().count(db).await.unwrap(), 0, "its batches went with it");
    assert_eq!(inbound_delivery::Entity::find().count(db).await.unwrap(), 0);
    let (status, _) = call(&t, Method::GET, CLIENT_KEY, &format!("/v1/jobs/{id}/people")).await;
    assert_eq!(status, 404);
    assert!(t.app.workers_alive(), "the retention worker keeps running");
    t.stop().await;
}
