//! The callback outbox: leases, attempts, retries, redelivery, frozen bodies, later events.

use std::time::Duration;

use apollo_client::{EnrichFlags, parse_delivery};
use chrono::Utc;
use job_store::{ApplyOutcome, CallbackAttemptRecord, CallbackNext, Store};
use rules::{CallbackEvent, CallbackState, JobState};
use uuid::Uuid;

use crate::harness::{
    all_matched, apollo_id, assert_counters_match, claim, job, phone_and_waterfall, phone_body, record, waterfall_body,
};
use crate::store_tests;

store_tests!(
    callbacks_are_leased_retried_logged_and_redelivered,
    a_body_is_frozen_once_and_resent_byte_for_byte,
    a_late_part_after_completion_is_one_job_updated_event,
);

async fn callbacks_are_leased_retried_logged_and_redelivered(store: Store) {
    let j = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    let lease = Duration::from_secs(30);
    let now = Utc::now() + chrono::Duration::seconds(1);

    let due = store.due_callbacks("replica-a", lease, now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let cb = due[0].clone();
    assert_eq!((cb.job_id, cb.attempt_no, cb.manual), (j, 1, false));
    assert_eq!(cb.callback_url, "https://client.example/callback");
    assert!(store.due_callbacks("replica-b", lease, now, 10).await.unwrap().is_empty(), "leased to replica-a");

    let huge = "x".repeat(50_000);
    let attempt = CallbackAttemptRecord {
        status_code: Some(500),
        response_excerpt: Some(huge),
        duration_ms: 120,
        error: None,
        manual: false,
    };
    let retry_at = now + chrono::Duration::seconds(60);
    store.record_callback_attempt(cb.callback_id, attempt, CallbackNext::RetryAt(retry_at)).await.unwrap();
    assert!(store.due_callbacks("replica-b", lease, now, 10).await.unwrap().is_empty(), "not due before the retry");
    let due = store.due_callbacks("replica-b", lease, retry_at, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempt_no, 2);
    assert_eq!(due[0].webhook_id, cb.webhook_id, "one webhook id for every retry");
    let ok = CallbackAttemptRecord { status_code: Some(204), duration_ms: 15, ..Default::default() };
    store.record_callback_attempt(cb.callback_id, ok, CallbackNext::Delivered).await.unwrap();

    let view = store.get_job(j).await.unwrap().unwrap().callback.unwrap();
    assert_eq!(view.state, CallbackState::Delivered);
    assert_eq!(view.attempts, 2);
    assert_eq!(view.last_status, Some(204));
    assert!(view.delivered_at.is_some());
    assert_eq!(view.attempt_log.len(), 2);
    assert_eq!(view.attempt_log[0].response_excerpt.as_ref().unwrap().len(), 20 * 1024);
    assert_eq!(view.attempt_log[0].trigger, "scheduled");
    assert!(store.due_callbacks("replica-a", lease, retry_at, 10).await.unwrap().is_empty());

    store.redeliver_callback(j).await.unwrap();
    let due = store.due_callbacks("replica-a", lease, Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].manual);
    let manual = CallbackAttemptRecord { status_code: Some(200), manual: true, ..Default::default() };
    store.record_callback_attempt(due[0].callback_id, manual, CallbackNext::Delivered).await.unwrap();
    let view = store.get_job(j).await.unwrap().unwrap().callback.unwrap();
    assert_eq!(view.attempt_log.len(), 3);
    assert_eq!(view.attempt_log[2].trigger, "manual");
    let listed = store.list_jobs("acme", None, 10).await.unwrap();
    assert_eq!(listed[0].callback.as_ref().unwrap().state, CallbackState::Delivered);
    assert!(store.redeliver_callback(uuid::Uuid::now_v7()).await.is_err());
}

/// The job's `updated_at`: the version a rendered body shows.
async fn version(store: &Store, job: Uuid) -> chrono::DateTime<Utc> {
    store.get_job(job).await.unwrap().unwrap().updated_at
}

async fn a_body_is_frozen_once_and_resent_byte_for_byte(store: Store) {
    let j = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    let lease = Duration::from_secs(30);
    let soon = || Utc::now() + chrono::Duration::seconds(1);
    let due = store.due_callbacks("a", lease, soon(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let cb = due[0].clone();
    assert_eq!((cb.event, cb.body.as_deref()), (CallbackEvent::JobCompleted, None), "not frozen before its first send");

    // A body rendered from an older version of the job is refused; the current one is kept, once.
    let v = version(&store, j).await;
    let stale = v - chrono::Duration::seconds(1);
    assert_eq!(store.freeze_callback_body(cb.callback_id, b"old".to_vec(), stale).await.unwrap(), None);
    let first = store.freeze_callback_body(cb.callback_id, b"{\"n\":1}".to_vec(), v).await.unwrap();
    assert_eq!(first.as_deref(), Some(&b"{\"n\":1}"[..]));
    let again = store.freeze_callback_body(cb.callback_id, b"{\"n\":2}".to_vec(), v).await.unwrap();
    assert_eq!(again, first, "a frozen body never changes");

    // An event given back untried (its body could not be rendered) is due at the time asked,
    // to any replica, without an attempt counted.
    let at = soon() + chrono::Duration::seconds(5);
    store.postpone_callback(cb.callback_id, at).await.unwrap();
    assert!(store.due_callbacks("b", lease, soon(), 10).await.unwrap().is_empty(), "not due before");
    let back = store.due_callbacks("b", lease, at, 10).await.unwrap();
    assert_eq!((back.len(), back[0].attempt_no), (1, 1));

    // Every retry and the redelivery get the same bytes under the same webhook id.
    let failed = CallbackAttemptRecord { status_code: Some(503), ..Default::default() };
    store.record_callback_attempt(cb.callback_id, failed, CallbackNext::RetryAt(Utc::now())).await.unwrap();
    let retry = store.due_callbacks("b", lease, soon(), 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!((retry[0].attempt_no, &retry[0].webhook_id, &retry[0].body), (2, &cb.webhook_id, &first));
    let ok = CallbackAttemptRecord { status_code: Some(204), ..Default::default() };
    store.record_callback_attempt(cb.callback_id, ok, CallbackNext::Delivered).await.unwrap();
    store.redeliver_callback(j).await.unwrap();
    let manual = store.due_callbacks("c", lease, soon(), 10).await.unwrap();
    assert_eq!(manual.len(), 1);
    assert!(manual[0].manual);
    assert_eq!((&manual[0].webhook_id, &manual[0].body), (&cb.webhook_id, &first));

    // Erasing the job drops the frozen body (it holds the people's records).
    store.erase_job(j).await.unwrap();
    use sea_orm::EntityTrait;
    let rows = job_store::entities::callback_delivery::Entity::find().all(store.connection()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body, None);
}

async fn a_late_part_after_completion_is_one_job_updated_event(store: Store) {
    let j = store.create_job(job("acme", 2, phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    assert_eq!(store.expire_parts(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 2);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.state, jv.counts.partial), (JobState::Completed, 2));
    assert_eq!(jv.callback_events.len(), 1);
    let completed = jv.callback_events[0].clone();
    assert_eq!(completed.event, CallbackEvent::JobCompleted);
    assert_eq!(jv.callback.as_ref(), Some(&completed));
    let rendered_at = jv.updated_at;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let apply = |body: Vec<u8>| {
        let store = store.clone();
        async move {
            let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
            let outcome = store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap();
            assert!(matches!(outcome, ApplyOutcome::Applied { matched: 2, .. }), "{outcome:?}");
        }
    };

    // A late phone while the completion is still unsent: its body, frozen later, shows the phone,
    // so no second event; a body rendered before the phone is refused.
    apply(phone_body(&ids, 16.0)).await;
    assert_eq!(store.get_job(j).await.unwrap().unwrap().callback_events.len(), 1);
    assert_eq!(store.freeze_callback_body(completed.id, b"before".to_vec(), rendered_at).await.unwrap(), None);
    let v = version(&store, j).await;
    let frozen = store.freeze_callback_body(completed.id, b"after".to_vec(), v).await.unwrap();
    assert_eq!(frozen.as_deref(), Some(&b"after"[..]));

    // A late waterfall after the completion was frozen: exactly one `job.updated`, with its own id.
    apply(waterfall_body(&ids, 4.0)).await;
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.counts.partial, jv.counts.complete), (0, 2));
    let events: Vec<CallbackEvent> = jv.callback_events.iter().map(|e| e.event).collect();
    assert_eq!(events, [CallbackEvent::JobCompleted, CallbackEvent::JobUpdated]);
    let updated = &jv.callback_events[1];
    assert_ne!(updated.webhook_id, completed.webhook_id);
    assert_eq!(
        jv.callback.as_ref().map(|c| &c.webhook_id),
        Some(&completed.webhook_id),
        "`callback` stays the completion"
    );
    let due =
        store.due_callbacks("a", Duration::from_secs(30), Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap();
    // One event of a job at a time, in order: the update waits until the completion is delivered.
    let kinds: Vec<(CallbackEvent, Option<&[u8]>)> = due.iter().map(|d| (d.event, d.body.as_deref())).collect();
    assert_eq!(kinds, [(CallbackEvent::JobCompleted, Some(&b"after"[..]))]);
    let ok = CallbackAttemptRecord { status_code: Some(200), ..Default::default() };
    store.record_callback_attempt(due[0].callback_id, ok, CallbackNext::Delivered).await.unwrap();
    let due =
        store.due_callbacks("a", Duration::from_secs(30), Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap();
    let kinds: Vec<(CallbackEvent, Option<&[u8]>)> = due.iter().map(|d| (d.event, d.body.as_deref())).collect();
    assert_eq!(kinds, [(CallbackEvent::JobUpdated, None)]);

    // The same delivery again changes nothing: no further event.
    let body = waterfall_body(&ids, 4.0);
    let again = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap();
    assert!(matches!(again, job_store::StoredDelivery::Duplicate { .. }));
    assert_eq!(store.get_job(j).await.unwrap().unwrap().callback_events.len(), 2);
    assert_counters_match(&store, &[j]).await;
}
