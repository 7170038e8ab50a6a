//! A job's life beyond the happy path, on SQLite and PostgreSQL: idempotent submit, cancel while
//! dispatch is slow, pause on exhausted credits and resume, the one-person job's fast callback,
//! and poll-only mode (no `PUBLIC_BASE_URL`: asynchronous parts come through `webhook_result`).

use std::time::{Duration, Instant};

use apollo_client::Credits;
use apollo_sim::SimConfig;
use e2e_tests::truth::{assert_records_match, same_identity};
use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use job_store::entities::{inbound_delivery, job, person};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

on_both_backends!(idempotent_submit, cancel, pause_on_exhausted_credits_and_resume, one_person_callback, poll_only);

fn people(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"email": format!("{prefix}{i}@northwind-labs.com")})).collect()
}

async fn post_job(t: &TestApp, key: &str, idempotency_key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = t.http.post(format!("{}/v1/jobs", t.url())).bearer_auth(key).json(body);
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("submit")
}

async fn get_as(t: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let resp = t.http.get(format!("{}{path}", t.url())).bearer_auth(key).send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Accepted, with the job's id.
async fn accepted(resp: reqwest::Response) -> (String, Value) {
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    (job["id"].as_str().expect("id").to_string(), job)
}

fn count(job: &Value, state: &str) -> i64 {
    job["counts"][state].as_i64().unwrap_or_else(|| panic!("counts.{state} in {job:#}"))
}

/// People whose enrichment ended (found or not).
fn finished(job: &Value) -> i64 {
    count(job, "complete") + count(job, "partial") + count(job, "not_found")
}

fn counts_sum(job: &Value) -> i64 {
    job["counts"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum()
}

/// `bulk_match` calls the simulator answered 200, and the people they carried.
fn answered_calls(t: &TestApp) -> (usize, usize) {
    let calls: Vec<_> =
        t.sim.calls().into_iter().filter(|c| c.path.ends_with("bulk_match") && c.status == 200).collect();
    (calls.len(), calls.iter().map(|c| c.details).sum())
}

fn bulk_calls(t: &TestApp) -> usize {
    t.sim.calls().iter().filter(|c| c.path.ends_with("bulk_match")).count()
}

fn credits(job: &Value) -> Credits {
    serde_json::from_value(job["credits_consumed"].clone()).expect("credits_consumed")
}

async fn people_rows(t: &TestApp, job_id: Option<&str>) -> u64 {
    let mut q = person::Entity::find();
    if let Some(id) = job_id {
        q = q.filter(person::Column::JobId.eq(uuid::Uuid::parse_str(id).unwrap()));
    }
    q.count(t.app.state.store.connection()).await.unwrap()
}

/// Polls the job until `pred` holds.
async fn wait_until(t: &TestApp, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let job = t.get_json(&format!("/v1/jobs/{id}")).await;
        if pred(&job) {
            return job;
        }
        assert!(started.elapsed() < timeout, "job {id}: condition not met after {timeout:?}: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same key and body give the same job, once; another client's same key is its own job.
async fn idempotent_submit(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.expect("test app");
    let body = json!({"people": people("idem", 12), "metadata": {"order": 42}});

    let first = post_job(&t, CLIENT_KEY, Some("order-42"), &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (id, _) = accepted(first).await;
    let again = post_job(&t, CLIENT_KEY, Some("order-42"), &body).await;
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let (again_id, replayed) = accepted(again).await;
    assert_eq!(again_id, id);
    assert_eq!(replayed["total"], 12);
    // Keys belong to a client: the other client's same key and body is a job of its own.
    let other = post_job(&t, OTHER_KEY, Some("order-42"), &body).await;
    assert!(other.headers().get("idempotent-replayed").is_none());
    let (other_id, _) = accepted(other).await;
    assert_ne!(other_id, id);

    let job = t.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(finished(&job), 12);
    // Replayed after completion: the finished job, not a new one.
    let late = post_job(&t, CLIENT_KEY, Some("order-42"), &body).await;
    assert_eq!(late.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let (late_id, late_job) = accepted(late).await;
    assert_eq!(late_id, id);
    assert_eq!(late_job["status"], "completed");
    assert_eq!(late_job["counts"], job["counts"]);

    let started = Instant::now();
    let other_job = loop {
        let (_, j) = get_as(&t, OTHER_KEY, &format!("/v1/jobs/{other_id}")).await;
        if j["status"] == "completed" {
            break j;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{j:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished(&other_job), 12);

    // One set of people per job; each person sent to Apollo once.
    let db = t.app.state.store.connection();
    assert_eq!(job::Entity::find().count(db).await.unwrap(), 2);
    assert_eq!(people_rows(&t, Some(&id)).await, 12);
    assert_eq!(people_rows(&t, None).await, 24);
    let (_, listed) = get_as(&t, CLIENT_KEY, "/v1/jobs").await;
    assert_eq!(listed["data"].as_array().unwrap().iter().map(|j| j["id"].clone()).collect::<Vec<_>>(), [json!(id)]);
    assert_eq!(answered_calls(&t).1, 24, "people sent to Apollo");
    t.stop().await;
}

/// Cancel while dispatch is throttled and a call is in flight: queued people are cancelled, the
/// people already sent still merge (their phone deliveries too), no new calls go out, and the
/// callback says `cancelled`.
async fn cancel(backend: Backend) {
    const TOTAL: i64 = 200;
    // Two calls a (1-second) minute, each answered after 300 ms: the cancel finds one in flight.
    let sim = SimConfig { minute_limit: Some(2), minute_ms: 1000, latency_ms: 300, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    let body = json!({
        "people": people("cancel", TOTAL as usize),
        "reveal_phone_number": true,
        "callback_url": t.receiver.url(),
    });
    let (id, _) = accepted(t.submit(&body).await).await;
    wait_until(&t, &id, Duration::from_secs(10), |j| count(j, "submitted") > 0).await;

    let resp = t.http.post(format!("{}/v1/jobs/{id}/cancel", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let at_cancel: Value = resp.json().await.unwrap();
    let (calls_at_cancel, _) = answered_calls(&t);
    assert!(at_cancel["cancel_requested_at"].is_string(), "{at_cancel:#}");
    assert_eq!(count(&at_cancel, "queued"), 0, "every queued person is cancelled at once: {at_cancel:#}");
    let cancelled = count(&at_cancel, "cancelled");
    let in_flight = count(&at_cancel, "submitted") + count(&at_cancel, "awaiting_async");
    assert!(cancelled > 0, "the throttled job still had queued people: {at_cancel:#}");
    assert!(in_flight > 0, "a call was in flight: {at_cancel:#}");
    eprintln!(
        "{backend:?}: at cancel: {calls_at_cancel} calls answered, {in_flight} people in flight, {} finished, \
         {cancelled} cancelled",
        finished(&at_cancel)
    );

    let job = t.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    // People queued at the cancel are cancelled; so are people of a call in flight at the cancel
    // that Apollo refused (429), as no later call may carry them.
    let cancelled_in_the_end = count(&job, "cancelled");
    assert!(cancelled_in_the_end >= cancelled, "{job:#}");
    assert!(cancelled_in_the_end - cancelled <= in_flight, "only people in flight at the cancel: {job:#}");
    assert_eq!(count(&job, "failed"), 0);
    assert_eq!(count(&job, "partial"), 0, "the phone deliveries of sent people still merged: {job:#}");
    assert_eq!(finished(&job), TOTAL - cancelled_in_the_end, "people already sent still merge: {job:#}");
    assert!(finished(&job) > finished(&at_cancel), "merges went on after the cancel");
    assert_eq!(counts_sum(&job), TOTAL);
    // Apollo answered exactly the people not cancelled, in no more calls than were in flight.
    let (calls, sent) = answered_calls(&t);
    assert_eq!(sent as i64, TOTAL - cancelled_in_the_end);
    assert!(
        calls as i64 <= calls_at_cancel as i64 + (in_flight + 9) / 10,
        "{calls} calls answered; {calls_at_cancel} at the cancel with {in_flight} people in flight"
    );
    let people = t.all_people(&id).await;
    assert_eq!(people.len() as i64, TOTAL);
    assert_eq!(people.iter().filter(|p| p["status"] == "cancelled").count() as i64, cancelled_in_the_end);
    let mobiles = people
        .iter()
        .flat_map(|p| p["record"]["phones"].as_array().cloned().unwrap_or_default())
        .filter(|ph| ph["sources"].as_array().is_some_and(|s| s.contains(&json!("phone_webhook"))))
        .count();
    assert!(mobiles > 0, "phone deliveries of sent people merged");
    // A later job goes through dispatch after the cancelled one ended: every call from then on
    // carries only its person, none of the cancelled ones.
    let quiet = bulk_calls(&t);
    let (probe, _) = accepted(t.submit(&json!({"people": crate::people("probe", 1)})).await).await;
    assert_eq!(t.wait_done(&probe, Duration::from_secs(60)).await["status"], "completed");
    let later: Vec<Value> = t
        .sim
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("bulk_match"))
        .skip(quiet)
        .flat_map(|c| c.received.iter().map(|r| r.detail.clone()))
        .collect();
    let probe_person = &crate::people("probe", 1)[0];
    assert!(
        !later.is_empty() && later.iter().all(|d| same_identity(probe_person, d)),
        "no Apollo call for the cancelled job after it ended: {later:?}"
    );

    let got = t.receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "one callback");
    assert!(got[0].verified);
    let event = got[0].json();
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["status"], "cancelled");
    assert_eq!(event["data"]["counts"]["cancelled"], cancelled_in_the_end);
    assert_eq!(event["data"]["people"].as_array().unwrap().len() as i64, TOTAL);
    t.stop().await;
}

/// Credits run out: dispatch pauses (every job shows why, `/readyz` too), nothing fails or is
/// lost; after the balance is raised and an operator resumes, everything completes and the jobs'
/// credits equal the simulator's ledger.
async fn pause_on_exhausted_credits_and_resume(backend: Backend) {
    let sim = SimConfig { credit_balance: Some(Credits::whole(3)), latency_ms: 0, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.expect("test app");
    // Two people cost at most 2 credits: this job completes on the balance of 3.
    let (small, _) = accepted(t.submit(&json!({"people": people("early", 2)})).await).await;
    let small_job = t.wait_done(&small, Duration::from_secs(10)).await;
    assert_eq!(small_job["status"], "completed", "{small_job:#}");
    assert_eq!(credits(&small_job), t.sim.ledger().total);

    let (id, _) = accepted(t.submit(&json!({"people": people("pause", 50)})).await).await;
    let paused = wait_until(&t, &id, Duration::from_secs(10), |j| j["status"] == "paused").await;
    let reason = paused["pause_reason"].as_str().expect("pause_reason").to_string();
    assert!(reason.to_lowercase().contains("credits"), "{reason}");
    // Still ready: a paused replica takes jobs, polls and Apollo's webhooks (see `/readyz`).
    let ready = t.http.get(format!("{}/readyz", t.url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "paused");
    assert_eq!(ready["dispatch_paused"], reason.as_str());
    // Nothing failed, nobody lost, and Apollo is left alone while paused.
    // Calls already in flight when the pause was recorded still finish; none starts after them.
    let at_pause = bulk_calls(&t);
    let deadline = Instant::now() + Duration::from_secs(60);
    // In flight: claimed before the pause (a batch `submitting`, its request perhaps not yet at
    // Apollo) or being answered.
    let submitting = || async {
        let counts = t.app.state.store.state_counts().await.unwrap();
        counts.batches.iter().filter(|(s, _)| s == "submitting").map(|(_, n)| *n).sum::<i64>()
    };
    while t.sim.requests_in_progress() > 0 || submitting().await > 0 {
        assert!(Instant::now() < deadline, "Apollo calls still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = bulk_calls(&t);
    let in_flight = t.app.state.config.dispatch_concurrency;
    assert!(calls - at_pause < in_flight, "{} calls after the pause, {in_flight} at most in flight", calls - at_pause);
    let paused = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(count(&paused, "failed"), 0);
    assert_eq!(count(&paused, "cancelled"), 0);
    assert_eq!(counts_sum(&paused), 50, "{paused:#}");
    assert_eq!(count(&paused, "queued") + count(&paused, "submitted"), 50, "not one person was sent: {paused:#}");
    let listed = t.all_people(&id).await;
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|p| matches!(p["status"].as_str(), Some("queued" | "submitted"))));
    // A job submitted meanwhile is accepted and shows the pause.
    let (late, late_job) = accepted(t.submit(&json!({"people": people("meanwhile", 3)})).await).await;
    assert_eq!(late_job["status"], "paused");
    assert_eq!(late_job["pause_reason"], reason.as_str());

    assert_eq!(bulk_calls(&t), calls, "no calls while paused, a job submitted meanwhile included");
    t.sim.update_config(|c| c.credit_balance = Some(Credits::whole(10_000)));
    let resumed = t.http.post(format!("{}/v1/admin/resume", t.url())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resumed.status(), 200);
    let resumed: Value = resumed.json().await.unwrap();
    assert_eq!(resumed["status"], "resumed");
    assert_eq!(resumed["was_paused"], reason.as_str());

    let job = t.wait_done(&id, Duration::from_secs(20)).await;
    let late_job = t.wait_done(&late, Duration::from_secs(20)).await;
    for (j, total) in [(&job, 50), (&late_job, 3)] {
        assert_eq!(j["status"], "completed", "{j:#}");
        assert_eq!(j["pause_reason"], Value::Null);
        assert_eq!(count(j, "failed"), 0);
        assert_eq!(count(j, "partial"), 0);
        assert_eq!(count(j, "complete") + count(j, "not_found"), total, "{j:#}");
    }
    let everyone = t.all_people(&id).await;
    assert_eq!(everyone.len(), 50);
    assert!(everyone.iter().all(|p| matches!(p["status"].as_str(), Some("complete" | "not_found"))));
    let total = credits(&small_job) + credits(&job) + credits(&late_job);
    assert_eq!(total, t.sim.ledger().total, "the jobs' credits equal the simulator's ledger");
    assert!(credits(&job) > Credits::ZERO);
    assert_eq!(t.http.get(format!("{}/readyz", t.url())).send().await.unwrap().status(), 200);
    t.stop().await;
}

/// A one-person job without asynchronous parts gets its signed callback as soon as its answer is
/// recorded (the latency is measured by the benchmark).
async fn one_person_callback(backend: Backend) {
    let t = TestApp::spawn(backend, SimConfig { latency_ms: 0, ..fast_sim() }, |_| {}).await.expect("test app");
    let body = json!({"people": [{"email": "solo@northwind-labs.com"}], "callback_url": t.receiver.url()});
    let started = Instant::now();
    let (id, _) = accepted(t.submit(&body).await).await;
    let got = t.receiver.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 1, "the callback came");
    // How fast is the benchmark's business (enrichd-bench); here only that it comes, unasked.
    let took = got[0].at.duration_since(started);
    eprintln!("{backend:?}: submit → signed callback in {} ms", took.as_millis());

    assert!(got[0].verified, "the signature verifies");
    let event = got[0].json();
    assert_eq!(event["type"], "job.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["status"], "completed");
    assert_eq!(event["data"]["total"], 1);
    assert_eq!(event["data"]["people"].as_array().unwrap().len(), 1);
    let job = wait_until(&t, &id, Duration::from_secs(5), |j| j["callback"]["state"] == "delivered").await;
    assert_eq!(job["callback"]["webhook_id"], got[0].id.as_str());
    assert_eq!(job["callback"]["attempts"], 1);
    assert_eq!(job["callback"]["attempt_log"][0]["status_code"], 200);
    t.stop().await;
}

/// Without `PUBLIC_BASE_URL` Apollo is asked with `poll_only`, never POSTs a webhook, and every
/// asynchronous part arrives by polling `webhook_result`.
async fn poll_only(backend: Backend) {
    let t = TestApp::spawn_with(backend, fast_sim(), false, |c| {
        c.reconcile_every = Duration::from_millis(200);
        c.reconcile_after = Duration::from_millis(200);
    })
    .await
    .expect("test app");
    let body = json!({"people": people("poll", 30), "reveal_phone_number": true, "run_waterfall_email": true});
    let (id, _) = accepted(t.submit(&body).await).await;
    let job = t.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(count(&job, "partial"), 0, "every part was polled: {job:#}");
    assert_eq!(count(&job, "failed"), 0);
    assert_eq!(count(&job, "complete") + count(&job, "not_found"), 30);

    // Each record holds what the simulator answered and its payloads carried.
    let checked = assert_records_match(&t.sim, &t.all_people(&id).await);
    let (mobiles, waterfall_emails) = (checked.mobiles, checked.waterfall_emails);
    assert!(mobiles > 0 && waterfall_emails > 0, "{mobiles} mobiles, {waterfall_emails} waterfall emails");

    // No webhook was ever POSTed: every call was poll_only, results came from webhook_result.
    let deliveries = t.sim.deliveries();
    assert!(deliveries.iter().all(|d| d.dropped && d.attempt == 0), "webhook POSTs in poll-only mode: {deliveries:?}");
    let calls = t.sim.calls();
    let bulk: Vec<_> = calls.iter().filter(|c| c.path.ends_with("bulk_match")).collect();
    assert!(!bulk.is_empty());
    assert!(bulk.iter().all(|c| c.poll_only && c.webhook_url.is_none()), "{bulk:?}");
    let polls = calls.iter().filter(|c| c.path.contains("webhook_result") && c.status == 200).count();
    assert!(polls > 0, "results were polled");
    let stored = inbound_delivery::Entity::find().count(t.app.state.store.connection()).await.unwrap();
    assert!(stored > 0 && stored as usize <= polls, "{stored} polled payloads stored, {polls} polls answered");
    assert_eq!(credits(&job), t.sim.ledger().total, "job credits vs simulator ledger");
    eprintln!("{backend:?}: {mobiles} mobiles, {waterfall_emails} waterfall emails, {polls} polls, {stored} stored");
    t.stop().await;
}
