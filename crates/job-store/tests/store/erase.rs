//! Personal data: erasing a job (inputs, records, raw payloads; counters kept), writes that come
//! after the erasure, and purging finished jobs.

use std::time::Duration;

use apollo_client::{Credits, EnrichFlags, parse_delivery};
use chrono::Utc;
use job_store::entities::{
    apollo_error, batch, batch_person, callback_delivery, inbound_delivery, job as job_row, person,
};
use job_store::{ApplyOutcome, CallbackAttemptRecord, CallbackNext, NewJob, Store, StoreError};
use rules::{BatchState, CallbackState, JobState, PersonState};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{
    LEASE, all_matched, apollo_id, assert_counters_match, claim, job, phone_and_waterfall, phone_body, record,
    waterfall_body,
};
use crate::store_tests;

store_tests!(
    erase_clears_personal_data_and_raw_payloads_and_keeps_counters,
    erase_of_a_running_job_cancels_it_and_later_answers_bring_no_data,
    a_delivery_after_erase_writes_no_record_and_no_second_charge,
    purge_removes_old_finished_jobs_and_keeps_recent_running_and_shared,
    purge_works_in_chunks,
);

fn applied(outcome: ApplyOutcome) -> (usize, Vec<String>) {
    match outcome {
        ApplyOutcome::Applied { matched, unmatched, .. } => (matched, unmatched),
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// Stores and applies a delivery body for a batch; returns the delivery id.
async fn deliver(store: &Store, batch_id: Uuid, body: &[u8]) -> (Uuid, ApplyOutcome) {
    let d = store.store_delivery(batch_id, body, Utc::now()).await.unwrap().id();
    let outcome = store.apply_delivery(d, &parse_delivery(body).unwrap()).await.unwrap();
    (d, outcome)
}

async fn people_rows(store: &Store, job_id: Uuid) -> Vec<person::Model> {
    let mut rows =
        person::Entity::find().filter(person::Column::JobId.eq(job_id)).all(store.connection()).await.unwrap();
    rows.sort_by_key(|p| p.ordinal);
    rows
}

async fn deliveries_of(store: &Store, batch_id: Uuid) -> Vec<inbound_delivery::Model> {
    inbound_delivery::Entity::find()
        .filter(inbound_delivery::Column::BatchId.eq(batch_id))
        .all(store.connection())
        .await
        .unwrap()
}

/// Every personal field of a person row is gone; what counts is kept.
fn assert_erased(before: &person::Model, after: &person::Model) {
    assert_eq!(after.input, json!({}), "input");
    assert_eq!(after.record, None, "record");
    assert_eq!(after.apollo_id, None, "apollo_id");
    assert_eq!(after.person_key, None, "person_key");
    assert_eq!(after.last_error, None, "last_error");
    assert_eq!(
        (after.id, after.ordinal, &after.state, after.credits_micros, after.got_phone, after.got_waterfall),
        (before.id, before.ordinal, &before.state, before.credits_micros, before.got_phone, before.got_waterfall),
        "what counts stays"
    );
}

async fn erase_clears_personal_data_and_raw_payloads_and_keeps_counters(store: Store) {
    // Two jobs whose people share one batch (one Apollo call), both with phone and waterfall.
    let a = store.create_job(job("acme", 3, phone_and_waterfall())).await.unwrap().job.id;
    let mut other = job("globex", 2, phone_and_waterfall());
    other.people = vec![json!({"email": "x1@globex.example"}).into(), json!({"email": "x2@globex.example"}).into()];
    let b_job = store.create_job(other).await.unwrap().job.id;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 5, "one batch across both jobs");
    record(&store, all_matched(&b, true, true)).await;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    applied(deliver(&store, b.batch_id, &phone_body(&ids, 40.0)).await.1);
    applied(deliver(&store, b.batch_id, &waterfall_body(&ids, 5.0)).await.1);
    // An unusable delivery is kept with its error: it goes too.
    let junk = store.store_delivery(b.batch_id, b"not json: alice@example.com", Utc::now()).await.unwrap().id();
    store.fail_delivery(junk, "delivery body is not JSON: alice@example.com").await.unwrap();
    // The client's receiver answered with something personal; the callback is still pending.
    let due = store.due_callbacks("t", LEASE, Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap();
    let cb_a = due.iter().find(|c| c.job_id == a).expect("job a's callback is due").clone();
    let attempt = CallbackAttemptRecord {
        status_code: Some(500),
        response_excerpt: Some("cannot store p0@example.com".into()),
        duration_ms: 3,
        error: None,
        manual: false,
    };
    let later = Utc::now() + chrono::Duration::hours(1);
    store.record_callback_attempt(cb_a.callback_id, attempt, CallbackNext::RetryAt(later)).await.unwrap();

    // Apollo's answer kept byte for byte (when a JSON column could not hold it), an error text
    // and an error row of the system page can quote a detail: they go too.
    let db = store.connection();
    batch::Entity::update_many()
        .filter(batch::Column::Id.eq(b.batch_id))
        .col_expr(batch::Column::ResponseBody, sea_orm::sea_query::Expr::value(b"p0@example.com \0".to_vec()))
        .col_expr(batch::Column::LastError, sea_orm::sea_query::Expr::value("422: p0@example.com refused"))
        .exec(db)
        .await
        .unwrap();
    let error_row = apollo_error::ActiveModel {
        at: sea_orm::Set(Utc::now()),
        batch_id: sea_orm::Set(Some(b.batch_id)),
        kind: sea_orm::Set("invalid_request".into()),
        status: sea_orm::Set(Some(422)),
        message: sea_orm::Set("p0@example.com is not accepted".into()),
        ..Default::default()
    };
    apollo_error::Entity::insert(error_row).exec(db).await.unwrap();

    let job_before = store.get_job(a).await.unwrap().unwrap();
    assert_eq!(job_before.state, JobState::Completed);
    let a_before = people_rows(&store, a).await;
    let b_before = people_rows(&store, b_job).await;
    assert!(a_before.iter().all(|p| p.record.is_some() && p.apollo_id.is_some()));
    let deliveries_before = deliveries_of(&store, b.batch_id).await;
    assert_eq!(deliveries_before.len(), 3);

    let erased = store.erase_job(a).await.unwrap();
    assert_eq!(erased.people, 3);
    assert_eq!(erased.cancelled, 0);
    assert_eq!((erased.batches, erased.shared_batches), (1, 1));
    assert_eq!((erased.deliveries, erased.pending_deliveries), (3, 0));

    // The job: counters, credits and state kept; metadata and callback URL gone; erased_at set.
    let jv = erased.job;
    assert_eq!(jv.counts, job_before.counts);
    assert_eq!(jv.credits, job_before.credits);
    assert_eq!((jv.total, jv.calls, jv.state), (job_before.total, job_before.calls, job_before.state));
    assert_eq!((jv.metadata.clone(), jv.callback_url.clone()), (None, None));
    assert!(jv.erased_at.is_some());
    let cb = jv.callback.as_ref().unwrap();
    assert_eq!(cb.state, CallbackState::Exhausted, "no URL left to send it to");
    assert!(cb.attempt_log.iter().all(|a| a.response_excerpt.is_none()));
    assert_eq!(store.get_job(a).await.unwrap().unwrap(), jv);
    let row = job_row::Entity::find_by_id(a).one(store.connection()).await.unwrap().unwrap();
    assert_eq!(row.request_hash, None);
    let due = store.due_callbacks("t", LEASE, later + chrono::Duration::hours(1), 10).await.unwrap();
    assert!(due.iter().all(|c| c.job_id != a), "job a's callback is never sent");

    // The people: nothing personal left; the other job's people keep their records.
    let a_after = people_rows(&store, a).await;
    for (before, after) in a_before.iter().zip(&a_after) {
        assert_erased(before, after);
    }
    assert_eq!(people_rows(&store, b_job).await, b_before, "the other job's people are untouched");
    let listed = store.list_people(a, None, 10).await.unwrap();
    assert!(listed.iter().all(|p| p.input == json!({}) && p.record.is_none() && p.apollo_id.is_none()));

    // The raw payloads: the batch's response and every delivery body.
    let bv = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(bv.response, None);
    let row = batch::Entity::find_by_id(b.batch_id).one(db).await.unwrap().unwrap();
    assert_eq!((row.response_body, row.last_error), (None, None));
    assert_eq!(apollo_error::Entity::find().count(db).await.unwrap(), 0, "the batch's error rows");
    assert_eq!(bv.state, BatchState::Submitted);
    assert_eq!(bv.credits, Credits::whole(5 + 40 + 5), "the batch keeps its credits");
    for (before, after) in deliveries_before.iter().zip(deliveries_of(&store, b.batch_id).await.iter()) {
        assert_eq!(after.id, before.id);
        assert!(after.body.is_empty(), "delivery {} still has its body", after.id);
        assert_eq!(
            (&after.state, &after.kind, after.credits_micros, &after.dedup_key),
            (&before.state, &before.kind, before.credits_micros, &before.dedup_key)
        );
        assert!(!after.parse_error.as_deref().unwrap_or("").contains("alice"));
    }
    assert_counters_match(&store, &[a, b_job]).await;

    // Erasing again is fine and changes nothing.
    let again = store.erase_job(a).await.unwrap();
    assert_eq!(again.job.erased_at, jv.erased_at, "the first erasure time stays");
    assert_eq!((again.job.counts, again.job.credits), (jv.counts, jv.credits));
    assert_eq!(people_rows(&store, a).await.iter().map(|p| &p.input).collect::<Vec<_>>(), vec![&json!({}); 3]);
    assert!(matches!(store.erase_job(Uuid::now_v7()).await, Err(StoreError::NotFound(_))));
    // The other job's callback is untouched.
    let other_cb = store.get_job(b_job).await.unwrap().unwrap();
    assert_eq!(other_cb.callback.unwrap().state, CallbackState::Pending);
    assert_eq!(other_cb.metadata, Some(json!({"team": "growth"})));
}

async fn erase_of_a_running_job_cancels_it_and_later_answers_bring_no_data(store: Store) {
    // Twelve people: ten in a call in flight, two still queued.
    let a = store.create_job(job("acme", 12, phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 10);
    let erased = store.erase_job(a).await.unwrap();
    assert_eq!(erased.cancelled, 2, "the queued people are cancelled");
    assert!(erased.job.cancel_requested_at.is_some());
    assert_eq!(erased.job.counts.submitted, 10, "the call in flight still gets its answer");
    assert_eq!(erased.job.state, JobState::Running);
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none(), "nothing left to send");

    // The answer of the call in flight: states and credits, no data, no raw response.
    record(&store, all_matched(&b, true, true)).await;
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().response, None);
    let rows = people_rows(&store, a).await;
    assert!(rows.iter().all(|p| p.record.is_none() && p.apollo_id.is_none() && p.input == json!({})));
    assert_eq!(rows.iter().filter(|p| p.state == PersonState::AwaitingAsync).count(), 10);

    // Deliveries for the batch: the parts count, nothing is written, the bodies are not kept.
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let (d1, out) = deliver(&store, b.batch_id, &phone_body(&ids, 80.0)).await;
    assert_eq!(applied(out).0, 0, "erased people match nothing");
    let (d2, out) = deliver(&store, b.batch_id, &waterfall_body(&ids, 10.0)).await;
    let ApplyOutcome::Applied { completed_jobs, .. } = out else { panic!("not applied") };
    assert_eq!(completed_jobs, vec![a]);
    for d in [d1, d2] {
        assert!(store.get_delivery(d).await.unwrap().unwrap().body.is_empty());
    }
    let rows = people_rows(&store, a).await;
    assert!(rows.iter().all(|p| p.record.is_none() && p.apollo_id.is_none()));
    let jv = store.get_job(a).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Cancelled);
    assert_eq!((jv.counts.complete, jv.counts.cancelled), (10, 2));
    assert_eq!(jv.credits, Credits::whole(10 + 80 + 10), "credits are still counted");
    assert!(jv.callback.is_none(), "no callback without a URL");
    assert_counters_match(&store, &[a]).await;

    // A job whose batch waits for a retry: its people are cancelled at once, never sent again.
    let c = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let bc = claim(&store).await;
    store.schedule_retry(bc.batch_id, Utc::now(), true, "503").await.unwrap();
    let erased = store.erase_job(c).await.unwrap();
    assert_eq!(erased.cancelled, 3);
    assert_eq!(erased.job.state, JobState::Cancelled);
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none(), "the retry has nobody to send");
    assert_eq!(store.get_batch(bc.batch_id).await.unwrap().unwrap().state, BatchState::Failed);

    // Erased while the call was in flight, then the call failed and was put back: cancelled, not sent.
    let d = store.create_job(job("acme", 2, EnrichFlags::default())).await.unwrap().job.id;
    let bd = claim(&store).await;
    let erased = store.erase_job(d).await.unwrap();
    assert_eq!((erased.cancelled, erased.job.counts.submitted), (0, 2));
    store.schedule_retry(bd.batch_id, Utc::now(), true, "timeout").await.unwrap();
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
    let jv = store.get_job(d).await.unwrap().unwrap();
    assert_eq!((jv.state, jv.counts.cancelled), (JobState::Cancelled, 2));
    assert_counters_match(&store, &[a, c, d]).await;
}

async fn a_delivery_after_erase_writes_no_record_and_no_second_charge(store: Store) {
    let opts = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let a = store.create_job(job("acme", 2, opts)).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, false)).await;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let body = phone_body(&ids, 16.0);
    applied(deliver(&store, b.batch_id, &body).await.1);
    assert_eq!(store.get_job(a).await.unwrap().unwrap().state, JobState::Completed);
    let before = store.erase_job(a).await.unwrap().job;

    // The same payload again is still recognised as a duplicate (its dedup key stays).
    let again = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap();
    assert!(matches!(again, job_store::StoredDelivery::Duplicate { .. }));
    // The same part fetched again with other bytes (polled after the push): merged into nobody,
    // not kept, and not charged a second time.
    let mut other = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    other["people"][0]["phone_numbers"][0]["sanitized_number"] = json!("+15125559999");
    let other = serde_json::to_vec(&other).unwrap();
    let (d, out) = deliver(&store, b.batch_id, &other).await;
    let (matched, unmatched) = applied(out);
    assert_eq!((matched, unmatched.len()), (0, 2));
    assert!(store.get_delivery(d).await.unwrap().unwrap().body.is_empty());
    let rows = people_rows(&store, a).await;
    assert!(rows.iter().all(|p| p.record.is_none() && p.apollo_id.is_none()), "no record came back");
    let after = store.get_job(a).await.unwrap().unwrap();
    assert_eq!((after.counts, after.credits), (before.counts, before.credits));
    assert_counters_match(&store, &[a]).await;
}

/// A job without a callback URL (so nothing keeps it from being purged).
fn no_callback(mut j: NewJob) -> NewJob {
    j.callback_url = None;
    j
}

async fn count_people(store: &Store, job_id: Uuid) -> u64 {
    person::Entity::find().filter(person::Column::JobId.eq(job_id)).count(store.connection()).await.unwrap()
}

async fn count_members(store: &Store, batch_id: Uuid) -> u64 {
    batch_person::Entity::find()
        .filter(batch_person::Column::BatchId.eq(batch_id))
        .count(store.connection())
        .await
        .unwrap()
}

async fn purge_removes_old_finished_jobs_and_keeps_recent_running_and_shared(store: Store) {
    // `old` (2 people) shares its batch with the still-running `run` (12 people).
    let old = store.create_job(no_callback(job("acme", 2, EnrichFlags::default()))).await.unwrap().job.id;
    let run = store.create_job(no_callback(job("acme", 12, EnrichFlags::default()))).await.unwrap().job.id;
    let shared = claim(&store).await;
    assert_eq!(shared.people.iter().filter(|p| p.job_id == old).count(), 2);
    record(&store, all_matched(&shared, false, false)).await;
    assert_eq!(store.get_job(old).await.unwrap().unwrap().state, JobState::Completed);
    assert_eq!(store.get_job(run).await.unwrap().unwrap().state, JobState::Running);
    // `phone` (other flags, so its own batch) has a delivery and a callback still pending.
    let opts = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let phone = store.create_job(job("acme", 1, opts)).await.unwrap().job.id;
    let own = claim(&store).await;
    assert!(own.people.iter().all(|p| p.job_id == phone));
    record(&store, all_matched(&own, true, false)).await;
    applied(deliver(&store, own.batch_id, &phone_body(&[apollo_id(own.people[0].person_id)], 8.0)).await.1);
    assert_eq!(store.get_job(phone).await.unwrap().unwrap().state, JobState::Completed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // `recent` finishes after the cutoff (no usable identifier: done at once).
    let mut recent = no_callback(job("acme", 1, EnrichFlags::default()));
    recent.people = vec![json!({"first_name": "Nobody"}).into()];
    let recent = store.create_job(recent).await.unwrap().job.id;
    assert_eq!(store.get_job(recent).await.unwrap().unwrap().state, JobState::Completed);

    // `phone` waits for its callback; `old` goes; the shared batch stays for `run`.
    assert_eq!(store.purge_finished_jobs(cutoff).await.unwrap(), 1);
    assert!(store.get_job(old).await.unwrap().is_none());
    assert_eq!(count_people(&store, old).await, 0);
    assert!(store.get_batch(shared.batch_id).await.unwrap().is_some(), "the shared batch stays");
    assert_eq!(count_members(&store, shared.batch_id).await, 8, "only the purged job's memberships go");
    assert_eq!(count_people(&store, run).await, 12);
    assert!(store.get_job(phone).await.unwrap().is_some(), "its callback is still pending");
    assert!(store.get_job(recent).await.unwrap().is_some(), "finished after the cutoff");
    assert_counters_match(&store, &[run, phone, recent]).await;

    // Once its callback is delivered, `phone` goes with its own batch and deliveries.
    let due = store.due_callbacks("t", LEASE, Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap();
    let ok = CallbackAttemptRecord { status_code: Some(204), ..Default::default() };
    store.record_callback_attempt(due[0].callback_id, ok, CallbackNext::Delivered).await.unwrap();
    assert_eq!(store.purge_finished_jobs(cutoff).await.unwrap(), 1);
    assert!(store.get_job(phone).await.unwrap().is_none());
    assert!(store.get_batch(own.batch_id).await.unwrap().is_none());
    assert!(deliveries_of(&store, own.batch_id).await.is_empty());
    let db = store.connection();
    assert_eq!(callback_delivery::Entity::find().count(db).await.unwrap(), 0);

    // Later: `recent` goes, `run` (still running) stays; when `run` finishes, everything goes.
    let future = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 1);
    assert!(store.get_job(recent).await.unwrap().is_none());
    assert!(store.get_job(run).await.unwrap().is_some());
    let rest = claim(&store).await;
    record(&store, all_matched(&rest, false, false)).await;
    assert_eq!(store.get_job(run).await.unwrap().unwrap().state, JobState::Completed);
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 1);
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 0);
    assert_eq!(job_row::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(person::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(batch::Entity::find().count(db).await.unwrap(), 0, "the shared batch went with its last job");
    assert_eq!(batch_person::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(inbound_delivery::Entity::find().count(db).await.unwrap(), 0);
}

async fn purge_works_in_chunks(store: Store) {
    // More jobs than one purge transaction takes (they finish at once: no usable identifier).
    for i in 0..230 {
        let mut j = no_callback(job("acme", 1, EnrichFlags::default()));
        j.people = vec![json!({"first_name": format!("Nobody{i}")}).into()];
        store.create_job(j).await.unwrap();
    }
    let kept = store.create_job(no_callback(job("acme", 1, EnrichFlags::default()))).await.unwrap().job.id;
    let future = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 230);
    let db = store.connection();
    assert_eq!(job_row::Entity::find().count(db).await.unwrap(), 1);
    assert!(store.get_job(kept).await.unwrap().is_some(), "a queued job is never purged");
}
