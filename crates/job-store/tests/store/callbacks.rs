//! The final-callback outbox: leases, attempts, retries, redelivery.

use std::time::Duration;

use chrono::Utc;
use job_store::{CallbackAttemptRecord, CallbackNext, CallbackState, JobOptions, Store};

use crate::harness::{all_matched, claim, job, record};
use crate::store_tests;

store_tests!(callbacks_are_leased_retried_logged_and_redelivered);

async fn callbacks_are_leased_retried_logged_and_redelivered(store: Store) {
    let j = store.create_job(job("acme", 1, JobOptions::default())).await.unwrap().job.id;
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
