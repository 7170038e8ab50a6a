//! A few thousand random operations; the counters kept in job rows must always equal a recount
//! of people, credits must add up, and every finished job has exactly one callback row.

use std::time::Duration;

use apollo_client::{Credits, EnrichFlags, parse_delivery};
use chrono::{DateTime, Utc};
use job_store::entities::{batch, callback_delivery, job as job_entity};
use job_store::{ApplyOutcome, ClaimedBatch, NewJob, Store};
use rules::records::SyncMatch;
use sea_orm::EntityTrait;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{all_matched, apollo_id, assert_counters_match, person, phone_body, waterfall_body};
use crate::store_tests;

store_tests!(counters_equal_a_recount_after_random_operations);

const OPS: usize = 2_000;
const LEASE: Duration = Duration::from_secs(60);

struct World {
    rng: fastrand::Rng,
    clock: DateTime<Utc>,
    jobs: Vec<Uuid>,
    submitting: Vec<ClaimedBatch>,
    /// Recorded batches: (batch, apollo ids of matched people).
    recorded: Vec<(Uuid, Vec<String>)>,
    deliveries: Vec<(Uuid, Vec<u8>)>,
    next_person: usize,
    paused: bool,
    stats: std::collections::BTreeMap<&'static str, usize>,
}

impl World {
    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += chrono::Duration::milliseconds(self.rng.i64(1..2_000));
        self.clock
    }

    fn new_job(&mut self) -> NewJob {
        let options = [
            EnrichFlags::default(),
            EnrichFlags { reveal_phone_number: true, ..Default::default() },
            EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..Default::default() },
        ][self.rng.usize(..3)];
        let n = [1, 3, 12, 35][self.rng.usize(..4)];
        let mut people: Vec<serde_json::Value> = Vec::with_capacity(n);
        for _ in 0..n {
            match self.rng.u8(..10) {
                // A duplicate of an earlier person of this job.
                0 if !people.is_empty() => people.push(people[self.rng.usize(..people.len())].clone()),
                1 => people.push(json!({"name": "no identifier"})),
                _ => {
                    people.push(person(self.next_person));
                    self.next_person += 1;
                }
            }
        }
        NewJob {
            client: format!("client-{}", self.rng.u8(..3)),
            callback_url: self.rng.bool().then(|| "https://client.example/cb".to_owned()),
            flags: options,
            people: people.into_iter().map(Into::into).collect(),
            ..NewJob::default()
        }
    }
}

async fn counters_equal_a_recount_after_random_operations(store: Store) {
    let mut w = World {
        rng: fastrand::Rng::with_seed(20_240_601),
        clock: Utc::now(),
        jobs: Vec::new(),
        submitting: Vec::new(),
        recorded: Vec::new(),
        deliveries: Vec::new(),
        next_person: 0,
        paused: false,
        stats: Default::default(),
    };
    for _ in 0..6 {
        let new = w.new_job();
        w.jobs.push(store.create_job(new).await.unwrap().job.id);
    }
    for op in 0..OPS {
        let now = w.tick();
        match w.rng.u8(..100) {
            0..=29 => {
                if let Some(b) = store.claim_batch("r", LEASE, now).await.unwrap() {
                    assert!(!w.paused);
                    w.count(if b.retry { "reclaim" } else { "claim" });
                    w.submitting.push(b);
                }
            }
            30..=49 if !w.submitting.is_empty() => {
                let b = w.submitting.swap_remove(w.rng.usize(..w.submitting.len()));
                let mut outcome = all_matched(&b, false, false);
                outcome.credits = Credits(w.rng.i64(0..20_000_000));
                let mut matched = Vec::new();
                for p in &mut outcome.people {
                    p.credits = Credits(w.rng.i64(0..2_000_000));
                    if w.rng.u8(..5) == 0 {
                        p.outcome = SyncMatch::NotFound;
                        continue;
                    }
                    p.expect_phone = b.flags.reveal_phone_number && w.rng.u8(..4) != 0;
                    p.expect_waterfall =
                        (b.flags.run_waterfall_email || b.flags.run_waterfall_phone) && w.rng.u8(..4) != 0;
                    matched.push(apollo_id(p.person_id));
                }
                if w.rng.u8(..6) == 0 {
                    outcome.people.pop();
                }
                store.record_sync(outcome.clone()).await.unwrap();
                if w.rng.u8(..10) == 0 {
                    // A late duplicate answer is ignored.
                    store.record_sync(outcome).await.unwrap();
                }
                w.recorded.push((b.batch_id, matched));
                w.count("record_sync");
            }
            50..=54 if !w.submitting.is_empty() => {
                let b = w.submitting.swap_remove(w.rng.usize(..w.submitting.len()));
                let count = w.rng.bool();
                assert!(store.schedule_retry(b.batch_id, now, count, "503").await.unwrap());
                w.count("schedule_retry");
            }
            55..=57 if !w.submitting.is_empty() => {
                let b = w.submitting.swap_remove(w.rng.usize(..w.submitting.len()));
                assert!(store.fail_batch(b.batch_id, "gave up").await.unwrap());
                w.count("fail_batch");
            }
            58..=59 => {
                w.clock += chrono::Duration::from_std(LEASE).unwrap() + chrono::Duration::seconds(1);
                let released = store.release_expired_leases(w.clock).await.unwrap();
                assert_eq!(released as usize, w.submitting.len());
                *w.stats.entry("released").or_default() += released as usize;
                w.submitting.clear();
            }
            60..=74 if !w.recorded.is_empty() || !w.submitting.is_empty() => {
                // Deliveries: to a recorded batch, or early (before the answer) to one in flight.
                let (batch_id, mut ids) = if w.recorded.is_empty() || (w.rng.u8(..5) == 0 && !w.submitting.is_empty()) {
                    let b = &w.submitting[w.rng.usize(..w.submitting.len())];
                    (b.batch_id, b.people.iter().map(|p| apollo_id(p.person_id)).collect())
                } else {
                    w.recorded[w.rng.usize(..w.recorded.len())].clone()
                };
                ids.retain(|_| w.rng.u8(..4) != 0);
                if w.rng.u8(..8) == 0 {
                    ids.push("ap_stranger".into());
                }
                let credits = f64::from(w.rng.u8(..30)) / 4.0;
                let body = if w.rng.bool() { phone_body(&ids, credits) } else { waterfall_body(&ids, credits) };
                let stored = store.store_delivery(batch_id, &body, now).await.unwrap();
                w.deliveries.push((stored.id(), body));
            }
            75..=84 => {
                // Applied one by one, or (as the ingest worker does) as one group.
                let grouped = w.rng.bool();
                let mut group = Vec::new();
                for d in store.pending_deliveries(w.rng.u64(1..9)).await.unwrap() {
                    match parse_delivery(&d.body) {
                        Ok(parsed) if grouped => group.push((d.id, parsed)),
                        Ok(parsed) => {
                            let out = store.apply_delivery(d.id, &parsed).await.unwrap();
                            assert!(matches!(out, ApplyOutcome::Applied { .. }), "{out:?}");
                            w.count("apply_delivery");
                        }
                        Err(e) => assert!(store.fail_delivery(d.id, &e.to_string()).await.unwrap()),
                    }
                }
                if !group.is_empty() {
                    let items: Vec<_> = group.iter().map(|(id, parsed)| (*id, parsed)).collect();
                    let outs = store.apply_deliveries(&items).await.unwrap();
                    assert_eq!(outs.len(), items.len(), "nothing waits for the writer here");
                    assert!(outs.iter().all(|o| matches!(o, ApplyOutcome::Applied { .. })), "{outs:?}");
                    w.count(if items.len() > 1 { "apply_deliveries" } else { "apply_delivery" });
                }
            }
            85..=86 if !w.deliveries.is_empty() => {
                // Replaying a stored delivery: stored once, applied at most once.
                let (id, body) = w.deliveries[w.rng.usize(..w.deliveries.len())].clone();
                // Any answer is fine (applied if it was still pending); it must not fail.
                store.apply_delivery(id, &parse_delivery(&body).unwrap()).await.unwrap();
            }
            87..=88 => {
                let j = w.jobs[w.rng.usize(..w.jobs.len())];
                store.cancel_job(j).await.unwrap();
                w.count("cancel");
            }
            89 => {
                let n = store.expire_parts(Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
                *w.stats.entry("expired").or_default() += n as usize;
            }
            90 => {
                w.paused = !w.paused;
                store.set_pause(w.paused.then(|| "credits exhausted".to_owned())).await.unwrap();
            }
            91..=95 => {
                let new = w.new_job();
                w.jobs.push(store.create_job(new).await.unwrap().job.id);
            }
            _ => {}
        }
        if op % 250 == 249 {
            assert_counters_match(&store, &w.jobs).await;
        }
    }
    assert_counters_match(&store, &w.jobs).await;

    // Money adds up: every micro-credit on a batch is on exactly one job.
    let db = store.connection();
    let batch_credits: i64 = batch::Entity::find().all(db).await.unwrap().iter().map(|b| b.credits_micros).sum();
    let jobs = job_entity::Entity::find().all(db).await.unwrap();
    let job_credits: i64 = jobs.iter().map(|j| j.credits_micros).sum();
    assert_eq!(batch_credits, job_credits, "credits on batches and on jobs differ");
    assert!(batch_credits > 0);

    // Exactly one callback row per finished job with a callback URL, none for the others.
    let callbacks = callback_delivery::Entity::find().all(db).await.unwrap();
    let mut finished = 0;
    for j in &jobs {
        let open = j.n_queued + j.n_submitted + j.n_awaiting_async;
        assert_eq!(j.completed_at.is_some(), open == 0, "job {} finished iff nothing is open", j.id);
        let rows = callbacks.iter().filter(|c| c.job_id == j.id).count();
        let expected = usize::from(j.completed_at.is_some() && j.callback_url.is_some());
        assert_eq!(rows, expected, "job {}: {rows} callback rows", j.id);
        finished += usize::from(j.completed_at.is_some());
    }
    eprintln!("{} jobs, {finished} finished; operations: {:?}", jobs.len(), w.stats);
    assert!(finished > 0, "the run should finish some jobs");
    for what in [
        "claim",
        "reclaim",
        "record_sync",
        "apply_delivery",
        "apply_deliveries",
        "fail_batch",
        "released",
        "expired",
        "cancel",
    ] {
        assert!(w.stats.get(what).copied().unwrap_or(0) > 0, "the run never did {what}");
    }
}
