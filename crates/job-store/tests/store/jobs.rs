//! Job creation, idempotency, queries, cancellation, pause, API keys.

use apollo_client::EnrichFlags;
use chrono::Utc;
use job_store::{NewJob, Store, StoreError};
use rules::{CallbackState, JobState, PersonState};
use serde_json::json;

use crate::harness::{LEASE, all_matched, assert_counters_match, claim, job, record};
use crate::store_tests;

store_tests!(
    create_stores_people_in_order_with_keys_and_counters,
    idempotent_create,
    job_without_valid_people_completes_at_once,
    list_jobs_newest_first_by_cursor,
    duplicates_get_the_primary_result,
    cancel_stops_queued_people_and_waits_for_in_flight,
    pause_blocks_claims_and_shows_on_jobs,
    large_job_is_inserted_in_chunks,
    job_past_one_statements_bind_limit_keeps_every_row,
);

async fn create_stores_people_in_order_with_keys_and_counters(store: Store) {
    let new = NewJob {
        client: "acme".into(),
        people: vec![
            json!({"email": "A@x.com"}),
            json!({"first_name": "No", "last_name": "Domain"}),
            json!({"linkedin_url": "https://www.linkedin.com/in/dana/"}),
            json!({"email": "a@X.com", "external_id": "crm-9"}),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        ..NewJob::default()
    };
    let created = store.create_job(new).await.unwrap();
    assert!(!created.existing);
    let j = created.job;
    assert_eq!(j.state, JobState::Queued);
    assert_eq!((j.total, j.counts.queued, j.counts.invalid), (4, 3, 1));
    assert!(j.callback.is_none());

    let page1 = store.list_people(j.id, None, 2).await.unwrap();
    let page2 = store.list_people(j.id, Some(page1[1].ordinal), 10).await.unwrap();
    let all: Vec<_> = page1.into_iter().chain(page2).collect();
    assert_eq!(all.iter().map(|p| p.ordinal).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(all[0].person_key.as_deref(), Some("email:a@x.com"));
    assert_eq!(all[1].state, PersonState::Invalid);
    assert_eq!(all[1].person_key, None);
    assert_eq!(all[2].person_key.as_deref(), Some("linkedin:linkedin.com/in/dana"));
    assert_eq!(all[3].dup_of, Some(all[0].id), "same email in the same job is a duplicate");
    assert_eq!(all[3].input["external_id"], "crm-9");
    assert_counters_match(&store, &[j.id]).await;
}

async fn idempotent_create(store: Store) {
    let mut new = crate::harness::job("acme", 3, EnrichFlags::default());
    new.idempotency_key = Some("key-1".into());
    let first = store.create_job(new.clone()).await.unwrap();
    let again = store.create_job(new.clone()).await.unwrap();
    assert!(!first.existing);
    assert!(again.existing);
    assert_eq!(first.job.id, again.job.id);

    let mut different = new.clone();
    different.people.pop();
    match store.create_job(different).await {
        Err(StoreError::IdempotencyConflict { key, job_id }) => {
            assert_eq!(key, "key-1");
            assert_eq!(job_id, first.job.id);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut other_client = new.clone();
    other_client.client = "globex".into();
    assert_ne!(store.create_job(other_client).await.unwrap().job.id, first.job.id);
    new.idempotency_key = None;
    assert_ne!(store.create_job(new).await.unwrap().job.id, first.job.id);
    // Only the first keyed job holds the key: nothing else was stored for it.
    assert_eq!(store.list_jobs("acme", None, 10).await.unwrap().len(), 2);
}

async fn job_without_valid_people_completes_at_once(store: Store) {
    let new = NewJob {
        client: "acme".into(),
        callback_url: Some("https://client.example/cb".into()),
        people: vec![json!({"name": "Only A Name"}).into(), json!({}).into()],
        ..NewJob::default()
    };
    let j = store.create_job(new).await.unwrap().job;
    assert_eq!(j.state, JobState::Completed);
    assert!(j.completed_at.is_some());
    assert_eq!(j.counts.invalid, 2);
    let cb = j.callback.expect("callback row created with the completion");
    assert_eq!(cb.state, CallbackState::Pending);
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
}

async fn list_jobs_newest_first_by_cursor(store: Store) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id);
    }
    store.create_job(job("globex", 1, EnrichFlags::default())).await.unwrap();
    let page1 = store.list_jobs("acme", None, 2).await.unwrap();
    let page2 = store.list_jobs("acme", Some(page1[1].id), 2).await.unwrap();
    let page3 = store.list_jobs("acme", Some(page2[1].id), 2).await.unwrap();
    let got: Vec<_> = page1.iter().chain(&page2).chain(&page3).map(|j| j.id).collect();
    ids.reverse();
    assert_eq!(got, ids);
}

async fn duplicates_get_the_primary_result(store: Store) {
    let new = NewJob {
        client: "acme".into(),
        flags: crate::harness::phone_and_waterfall(),
        people: [json!({"email": "dana@x.com"}), json!({"email": "other@x.com"}), json!({"email": "DANA@x.com"})]
            .map(Into::into)
            .into(),
        ..NewJob::default()
    };
    let j = store.create_job(new).await.unwrap().job;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 2, "the duplicate is not sent");
    let people = store.list_people(j.id, None, 10).await.unwrap();
    assert_eq!(people[2].state, PersonState::Submitted, "the duplicate follows its primary");
    record(&store, all_matched(&b, true, false)).await;
    let people = store.list_people(j.id, None, 10).await.unwrap();
    assert_eq!(people[2].state, PersonState::AwaitingAsync);
    assert_eq!(people[2].record, people[0].record);
    assert_eq!(people[2].apollo_id, people[0].apollo_id);
    assert_eq!(people[2].credits.micros(), 0, "credits stay on the person sent");
    let j = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(j.counts.awaiting_async, 3);
    assert_counters_match(&store, &[j.id]).await;
}

async fn cancel_stops_queued_people_and_waits_for_in_flight(store: Store) {
    let j = store.create_job(job("acme", 25, EnrichFlags::default())).await.unwrap().job;
    let b = claim(&store).await;
    let j = store.cancel_job(j.id).await.unwrap();
    assert_eq!(j.counts.cancelled, 15);
    assert_eq!(j.counts.submitted, 10);
    assert!(j.cancel_requested_at.is_some());
    assert!(j.completed_at.is_none(), "in-flight people still finish");
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
    record(&store, all_matched(&b, false, false)).await;
    let j = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.counts.complete, 10);
    assert!(j.callback.is_some());
    // Cancelling again changes nothing.
    let again = store.cancel_job(j.id).await.unwrap();
    assert_eq!(again.state, JobState::Cancelled);
    assert_eq!(again.completed_at, j.completed_at);

    let idle = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job;
    let idle = store.cancel_job(idle.id).await.unwrap();
    assert_eq!(idle.state, JobState::Cancelled, "nothing in flight: cancelled at once");
    assert_counters_match(&store, &[j.id, idle.id]).await;
}

async fn pause_blocks_claims_and_shows_on_jobs(store: Store) {
    let running = store.create_job(job("acme", 15, EnrichFlags::default())).await.unwrap().job;
    claim(&store).await;
    let queued = store.create_job(job("acme", 1, EnrichFlags { reveal_personal_emails: true, ..Default::default() }));
    let queued = queued.await.unwrap().job;
    store.set_pause(Some("credits exhausted".into())).await.unwrap();
    assert_eq!(store.pause_reason().await.unwrap().as_deref(), Some("credits exhausted"));
    for id in [running.id, queued.id] {
        let j = store.get_job(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Paused);
        assert_eq!(j.pause_reason.as_deref(), Some("credits exhausted"));
    }
    let created_while_paused = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job;
    assert_eq!(created_while_paused.state, JobState::Paused);
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());

    // A probe lifts only the pause it probed: one recorded since, for another reason, stays.
    assert!(!store.lift_pause("key rejected (401)").await.unwrap());
    assert_eq!(store.pause_reason().await.unwrap().as_deref(), Some("credits exhausted"));
    assert_eq!(store.get_job(running.id).await.unwrap().unwrap().state, JobState::Paused);
    assert!(store.lift_pause("credits exhausted").await.unwrap());
    assert!(!store.lift_pause("credits exhausted").await.unwrap(), "already lifted");
    assert_eq!(store.pause_reason().await.unwrap(), None);
    let r = store.get_job(running.id).await.unwrap().unwrap();
    let q = store.get_job(queued.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.pause_reason), (JobState::Running, None));
    assert_eq!((q.state, q.pause_reason), (JobState::Queued, None));
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_some());
}

async fn large_job_is_inserted_in_chunks(store: Store) {
    // More rows than one multi-row insert may carry on SQLite.
    let j = store.create_job(job("acme", 4_000, EnrichFlags::default())).await.unwrap().job;
    assert_eq!((j.total, j.counts.queued), (4_000, 4_000));
    let last = store.list_people(j.id, Some(3_997), 10).await.unwrap();
    assert_eq!(last.iter().map(|p| p.ordinal).collect::<Vec<_>>(), [3_998, 3_999]);
    assert_counters_match(&store, &[j.id]).await;
}

async fn job_past_one_statements_bind_limit_keeps_every_row(store: Store) {
    // 11,000 people: more than one statement binds on either database (5,460 a statement on
    // SQLite, 10,922 on PostgreSQL), then a remainder in smaller statements. Invalid people and
    // duplicates sit on both sides of the statement boundaries.
    let n = 11_000;
    let mut new = job("acme", n, EnrichFlags::default());
    for i in [0, 5_458, 5_459, 10_921, 10_922, 10_999] {
        new.people[i] = json!({"name": format!("no identifier {i}"), "external_id": i}).into();
    }
    new.people[5_460] = json!({"email": "P1@example.com", "external_id": "dup of 1"}).into();
    new.people[10_923] = json!({"email": "p10920@EXAMPLE.com"}).into();
    let inputs = new.people.clone();
    let j = store.create_job(new).await.unwrap().job;
    assert_eq!((j.total, j.counts.queued, j.counts.invalid), (11_000, 10_994, 6));
    let mut people = Vec::new();
    while people.len() < n {
        let after = people.last().map(|p: &job_store::PersonView| p.ordinal);
        people.extend(store.list_people(j.id, after, 5_000).await.unwrap());
    }
    assert_eq!(people.iter().map(|p| p.ordinal).collect::<Vec<_>>(), (0..n as i64).collect::<Vec<_>>());
    assert!(people.iter().zip(&inputs).all(|(p, input)| p.input == *input), "inputs stored as given");
    for i in [0, 5_458, 5_459, 10_921, 10_922, 10_999] {
        assert_eq!(people[i].state, PersonState::Invalid, "person {i}");
        assert_eq!(people[i].person_key, None);
        assert_eq!(people[i].last_error.as_deref(), Some("no usable identifier"));
    }
    assert_eq!(people[5_460].dup_of, Some(people[1].id));
    assert_eq!(people[10_923].dup_of, Some(people[10_920].id));
    assert_eq!(people[10_923].person_key.as_deref(), Some("email:p10920@example.com"));
    assert_eq!(people.iter().filter(|p| p.dup_of.is_some()).count(), 2);
    assert!(people.iter().all(|p| p.job_id == j.id && p.created_at == j.created_at && p.record.is_none()));
    assert_eq!(people[7].state, PersonState::Queued);
    assert_eq!(people[7].last_error, None);
    assert_counters_match(&store, &[j.id]).await;
}

/// `sqlite::memory:` works (one connection keeps the database alive), with migrations applied.
#[tokio::test]
async fn in_memory_sqlite_is_usable() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let j = store.create_job(job("acme", 12, EnrichFlags::default())).await.unwrap().job;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    assert_eq!(store.get_job(j.id).await.unwrap().unwrap().counts.complete, 10);
    assert!(store.ping().await.is_ok());
}
