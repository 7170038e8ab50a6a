//! Per-person events: a job asking for `person.completed` and `person.updated` gets its people in
//! signed, batched events as they finish, each person in exactly one `person.completed`, late parts
//! as `person.updated`, the job's own callback after the person events it covers; a receiver that
//! fails for a while gets every event later under its first id; the event stream resumes with
//! `Last-Event-ID` without a gap or a repeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::{Backend, CLIENT_KEY, TestApp, fast_sim};
use enrichd::demo::receiver::Received;
use rules::events::completed_events_bound;
use serde_json::{Value, json};

/// People in the big job.
const PEOPLE: usize = 2_000;
/// Most people per event in these tests.
const MAX_PEOPLE: u64 = 100;
/// The longest a person waits for its event in these tests.
const MAX_WAIT: Duration = Duration::from_secs(2);

fn person(i: usize) -> Value {
    let domains = ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io", "bluefin.dev"];
    match i % 3 {
        0 => json!({"email": format!("events{i}@{}", domains[i % 4])}),
        1 => json!({"first_name": "Sam", "last_name": format!("Events{i}"), "domain": domains[i % 4]}),
        _ => json!({"linkedin_url": format!("https://www.linkedin.com/in/sam-events-{i}")}),
    }
}

/// Parts arrive after the deadline has made their people `partial`: each is a late part.
fn late_parts() -> SimConfig {
    SimConfig { delivery_delay_ms: 1_500, delivery_jitter_ms: 1_500, ..fast_sim() }
}

async fn start(backend: Backend, sim: SimConfig, schedule: Vec<Duration>) -> TestApp {
    let _ = enrichd::logging::init("warn");
    TestApp::spawn(backend, sim, |c| {
        c.person_events_max_people = MAX_PEOPLE;
        c.person_events_max_wait = MAX_WAIT;
        c.async_deadline = Duration::from_secs(1);
        c.reconcile_every = Duration::from_millis(200);
        // No polling: parts come only by webhook, after the deadline.
        c.reconcile_after = Duration::from_secs(3_600);
        c.callback_schedule = enrichd::config::Schedule(schedule);
    })
    .await
    .expect("test app")
}

async fn submit(t: &TestApp, body: &Value) -> String {
    let resp = t.submit(body).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sse {
    id: i64,
    event: String,
    data: String,
}

/// Reads the job's event stream after `last` (a `Last-Event-ID`), at most `take` events (or to
/// the end of the stream).
async fn read_stream(t: &TestApp, id: &str, last: Option<i64>, take: usize) -> Vec<Sse> {
    let mut req = t.http.get(format!("{}/v1/jobs/{id}/events", t.url())).bearer_auth(CLIENT_KEY);
    if let Some(last) = last {
        req = req.header("last-event-id", last.to_string());
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while out.len() < take {
        let Some(chunk) = resp.chunk().await.unwrap() else { break };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            out.extend(parse(std::str::from_utf8(&frame).unwrap()));
        }
    }
    out.truncate(take);
    out
}

/// Waits until `cond` holds on what the receiver got (generous deadline: the machine may be busy).
async fn wait_received(t: &TestApp, what: &str, cond: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = t.receiver.received();
        if cond(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; {} requests", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The accepted (2xx) requests, checked: each signed by the Standard Webhooks rules, its
/// timestamp within the specification's five-minute tolerance, each `webhook-id` accepted once.
fn accepted(got: &[Received]) -> Vec<(String, Value)> {
    let now = chrono::Utc::now().timestamp();
    assert!(got.iter().all(|r| r.verified), "every request verifies");
    assert!(got.iter().all(|r| (now - r.timestamp).abs() < 300), "timestamps within the tolerance");
    let ok: Vec<(String, Value)> =
        got.iter().filter(|r| (200..300).contains(&r.answered)).map(|r| (r.id.clone(), r.json())).collect();
    let ids: BTreeSet<&str> = ok.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), ok.len(), "no event accepted twice");
    ok
}

fn people_of(body: &Value) -> Vec<Value> {
    body["data"]["people"].as_array().cloned().unwrap_or_default()
}

/// The done-when run: 2,000 people with phone and waterfall, both person events, a healthy
/// receiver.
async fn big_job(backend: Backend) {
    let t = start(backend, late_parts(), vec![Duration::from_millis(200); 4]).await;
    let started = Instant::now();
    let id = submit(
        &t,
        &json!({
            "people": (0..PEOPLE).map(person).collect::<Vec<_>>(),
            "reveal_phone_number": true,
            "run_waterfall_email": true,
            "callback_url": t.receiver.url(),
            "events": ["person.completed", "person.updated"],
        }),
    )
    .await;
    // A stream read from the start, uninterrupted, while another one drops after three events
    // and resumes with `Last-Event-ID`.
    let whole = {
        let t = t.api();
        let id = id.clone();
        tokio::spawn(async move {
            let http = t.http.clone();
            let resp =
                http.get(format!("{}/v1/jobs/{id}/events", t.base)).bearer_auth(CLIENT_KEY).send().await.unwrap();
            resp.text().await.unwrap()
        })
    };
    let first = read_stream(&t, &id, None, 3).await;
    assert_eq!(first.len(), 3);
    let rest = read_stream(&t, &id, Some(first[2].id), usize::MAX).await;

    let job = t.wait_done(&id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["events"], json!(["person.completed", "person.updated"]));
    // Everything announced: the job's callback delivered and nobody waiting for late parts.
    let got = wait_received(&t, "job.completed delivered", |got| {
        got.iter().any(|r| r.json()["type"] == "job.completed" && r.answered == 200)
    })
    .await;
    let elapsed = started.elapsed();
    let _ = got;
    // Late parts stop arriving once the simulator has sent everything; the last event follows.
    let quiet = Instant::now() + Duration::from_secs(180);
    while !t.sim.idle() {
        assert!(Instant::now() < quiet, "the simulator never went quiet");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last word on each person in the events is what the API shows, and a job event came last.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (people, got) = loop {
        let people = t.all_people(&id).await;
        let got = t.receiver.received();
        let ok: Vec<Value> = got.iter().filter(|r| r.answered == 200).map(Received::json).collect();
        let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
        for body in ok.iter().filter(|b| b["type"].as_str().is_some_and(|t| t.starts_with("person."))) {
            for p in body["data"]["people"].as_array().unwrap() {
                last.insert(p["id"].as_str().unwrap(), p);
            }
        }
        let settled = people.iter().all(|p| last.get(p["id"].as_str().unwrap()) == Some(&p))
            && ok.last().is_some_and(|b| b["type"].as_str().unwrap().starts_with("job."));
        if settled {
            break (people, got);
        }
        assert!(Instant::now() < deadline, "the events never caught up with the people");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ok = accepted(&got);

    // Every person in exactly one `person.completed`.
    let completed: Vec<&Value> = ok.iter().map(|(_, b)| b).filter(|b| b["type"] == "person.completed").collect();
    let updated: Vec<&Value> = ok.iter().map(|(_, b)| b).filter(|b| b["type"] == "person.updated").collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for body in &completed {
        assert_eq!(body["job_id"], id.as_str());
        let n = people_of(body).len() as u64;
        assert!((1..=MAX_PEOPLE).contains(&n), "an event of {n} people");
        for p in people_of(body) {
            *seen.entry(p["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), PEOPLE, "every person announced");
    assert!(seen.values().all(|n| *n == 1), "nobody twice");
    let ids: BTreeSet<String> = people.iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids);

    // Late parts came as `person.updated`: people announced `partial` then changed.
    let updates: u64 = updated.iter().map(|b| people_of(b).len() as u64).sum();
    assert!(updates > 100, "too few late parts to check: {updates}");
    for body in &updated {
        for p in people_of(body) {
            assert_ne!(p["status"], "awaiting_async", "only final people are announced");
        }
    }
    // The last word on each person is what the API shows now.
    let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
    for body in completed.iter().chain(&updated) {
        for p in body["data"]["people"].as_array().unwrap() {
            last.insert(p["id"].as_str().unwrap(), p);
        }
    }
    for p in &people {
        assert_eq!(last[p["id"].as_str().unwrap()], p, "person {}", p["index"]);
    }

    // The job's callback after every person event it covers; the last request is a job event.
    let types: Vec<&str> = ok.iter().map(|(_, b)| b["type"].as_str().unwrap()).collect();
    let done_at = types.iter().position(|t| *t == "job.completed").unwrap();
    let last_completed = types.iter().rposition(|t| *t == "person.completed").unwrap();
    assert!(done_at > last_completed, "job.completed after every person.completed: {types:?}");
    assert!(types.last().unwrap().starts_with("job."), "a job event last: {types:?}");
    assert_eq!(types.iter().filter(|t| **t == "job.completed").count(), 1);

    // Batching: whole events of `MAX_PEOPLE`, a part-filled one only after a wait of `MAX_WAIT`
    // or at the completion; at most one such per kind and wait over the run.
    let waits = (elapsed.as_millis() / MAX_WAIT.as_millis()) as u64 + 1;
    let final_people = PEOPLE as u64;
    let job_updates = types.iter().filter(|t| **t == "job.updated").count() as u64;
    assert!(completed.len() as u64 <= completed_events_bound(final_people, MAX_PEOPLE) + waits, "{}", completed.len());
    assert!(updated.len() as u64 <= completed_events_bound(updates, MAX_PEOPLE) + waits + 1, "{}", updated.len());
    assert!(job_updates <= updated.len() as u64, "a job.updated follows a person.updated");
    assert_eq!(got.len(), ok.len(), "a healthy receiver: one POST per event");
    eprintln!(
        "{backend:?}: {} POSTs: {} person.completed, {} person.updated ({updates} people), {job_updates} job.updated, \
         elapsed {elapsed:?}",
        got.len(),
        completed.len(),
        updated.len()
    );

    // The stream: the resumed read continues the first without a gap or repeat, and both equal an
    // uninterrupted read; each event's data is the body its callback carried.
    let whole = parse(&whole.await.unwrap());
    let resumed: Vec<Sse> = first.iter().cloned().chain(rest).collect();
    assert_eq!(resumed, whole);
    assert_eq!(whole.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=whole.len() as i64).collect::<Vec<_>>());
    assert_eq!(whole.last().unwrap().event, "job.completed", "the stream ends with the completion");
    let posted: Vec<Value> = ok.iter().map(|(_, b)| b.clone()).take(whole.len()).collect();
    let streamed: Vec<Value> = whole.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert_eq!(streamed, posted, "the stream carries the callbacks' bodies, in their order");
    t.stop().await;
}

/// The events of a whole stream's text.
fn parse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|frame| {
            let mut e = Sse { id: -1, event: String::new(), data: String::new() };
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    e.id = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    e.event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    e.data = v.to_string();
                }
            }
            (e.id >= 0).then_some(e)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_job_announces_every_person_once_in_batches_on_sqlite() {
    big_job(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_job_announces_every_person_once_in_batches_on_postgres() {
    big_job(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_for_a_while_gets_every_event_under_its_first_id() {
    // Enough tries for the outage below.
    let t = start(Backend::Sqlite, fast_sim(), vec![Duration::from_millis(100); 12]).await;
    // Two events go through, then eight refusals, then the receiver is back.
    t.receiver.script(&[200, 200, 500, 500, 503, 500, 500, 500, 500, 500]);
    let n = 330;
    let id = submit(
        &t,
        &json!({
            "people": (0..n).map(person).collect::<Vec<_>>(),
            "callback_url": t.receiver.url(),
            "events": ["person.completed"],
        }),
    )
    .await;
    t.wait_done(&id, Duration::from_secs(120)).await;
    let got =
        wait_received(&t, "job.completed delivered", |got| got.iter().any(|r| r.json()["type"] == "job.completed"))
            .await;
    assert!(got.iter().all(|r| r.verified));
    let refused: Vec<&Received> = got.iter().filter(|r| r.answered >= 500).collect();
    assert_eq!(refused.len(), 8);
    let ok = accepted(&got);
    // Every refused event was accepted later, under the same id and with the same bytes.
    for r in &refused {
        let later = got.iter().find(|x| x.id == r.id && x.answered == 200).expect("delivered later");
        assert_eq!(later.body, r.body, "the same bytes");
    }
    // Every person once; the job's callback last.
    let mut seen = BTreeMap::<String, usize>::new();
    for (_, b) in ok.iter().filter(|(_, b)| b["type"] == "person.completed") {
        for p in people_of(b) {
            *seen.entry(p["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|c| *c == 1));
    assert_eq!(ok.last().unwrap().1["type"], "job.completed");
    // In order: no event was accepted before an earlier one (each person event's ordinal ranges
    // are sealed in order, so the order of acceptance is the order of sealing).
    let job = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["callback"]["state"], "delivered");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_checked_and_the_stream_works_without_a_callback_url() {
    let t = start(Backend::Sqlite, fast_sim(), vec![Duration::from_millis(100); 4]).await;
    let resp =
        t.submit(&json!({"people": [{"email": "a@b.io"}], "events": ["person.completed", "person.deleted"]})).await;
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["details"][0]["field"], "events[1]", "{err:#}");
    assert!(err["error"]["details"][0]["message"].as_str().unwrap().contains("person.deleted"), "{err:#}");

    let id =
        submit(&t, &json!({"people": (0..25).map(person).collect::<Vec<_>>(), "events": ["person.completed"]})).await;
    let all = read_stream(&t, &id, None, usize::MAX).await;
    assert_eq!(all.last().unwrap().event, "job.completed");
    let announced: usize = all
        .iter()
        .filter(|e| e.event == "person.completed")
        .map(|e| people_of(&serde_json::from_str(&e.data).unwrap()).len())
        .sum();
    assert_eq!(announced, 25);
    // Resuming after the last event of a finished job: nothing more, and the stream ends.
    let after = read_stream(&t, &id, Some(all.last().unwrap().id), usize::MAX).await;
    assert!(after.is_empty());
    let resumed = read_stream(&t, &id, Some(1), usize::MAX).await;
    assert_eq!(resumed, all[1..].to_vec());
    let job = t.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["callback"]["state"], "recorded", "kept for the stream, never sent: {job:#}");
    assert!(t.receiver.received().is_empty());
    t.stop().await;
}
