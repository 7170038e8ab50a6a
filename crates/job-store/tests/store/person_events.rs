//! The person-event outbox: rows written with each person's final change, sealed into events of
//! at most `max_people`, the job's events kept in order, delivered one at a time.

use std::time::Duration;

use apollo_client::{EnrichFlags, parse_delivery};
use chrono::Utc;
use job_store::{ApplyOutcome, CallbackAttemptRecord, CallbackNext, SealedEvent, Store};
use rules::events::{Batching, PersonEvents};
use rules::{CallbackEvent, CallbackState};
use uuid::Uuid;

use crate::harness::{all_matched, apollo_id, claim, job, phone_and_waterfall, phone_body, record};
use crate::store_tests;

store_tests!(
    final_people_are_sealed_in_batches_and_sent_in_order,
    without_a_callback_url_events_are_recorded_not_sent,
    a_job_without_person_events_keeps_its_one_callback,
);

const LEASE: Duration = Duration::from_secs(30);
const TWO: Batching = Batching { max_people: 2, max_wait: Duration::from_secs(3_600) };

fn render(e: &SealedEvent<'_>) -> Vec<u8> {
    let ids: Vec<String> = e.people.iter().map(|p| p.id.to_string()).collect();
    format!("{} {}", e.event, ids.join(",")).into_bytes()
}

fn soon() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(1)
}

/// The job's events in sequence order: (seq, type, people in the body).
async fn sequence(store: &Store, j: Uuid) -> Vec<(i64, CallbackEvent, usize)> {
    store
        .job_events_after(j, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let people = e
                .body
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).unwrap().split(' ').nth(1).map(|ids| ids.split(',').count()))
                .unwrap_or(0);
            (e.seq, e.event, people)
        })
        .collect()
}

/// Sends every event of the job due at `at` in order, each accepted, returning the types sent.
async fn deliver_all(store: &Store, at: chrono::DateTime<Utc>) -> Vec<CallbackEvent> {
    let mut sent = Vec::new();
    loop {
        let due = store.due_callbacks("a", LEASE, at, 10).await.unwrap();
        if due.is_empty() {
            return sent;
        }
        assert_eq!(due.len(), 1, "one event of a job at a time");
        let ok = CallbackAttemptRecord { status_code: Some(200), ..Default::default() };
        store.record_callback_attempt(due[0].callback_id, ok, CallbackNext::Delivered).await.unwrap();
        sent.push(due[0].event);
    }
}

async fn final_people_are_sealed_in_batches_and_sent_in_order(store: Store) {
    let mut new = job("acme", 5, phone_and_waterfall());
    new.events = PersonEvents { completed: true, updated: true };
    let j = store.create_job(new).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    assert!(store.person_event_rows(j).await.unwrap().is_empty(), "nobody final while parts are awaited");
    assert!(store.jobs_to_seal(soon(), TWO).await.unwrap().is_empty());

    // The deadline makes everyone partial, the job completes: five `person.completed` rows in the
    // same transaction, and the completion held until they are sealed.
    assert_eq!(store.expire_parts(soon()).await.unwrap(), 5);
    let rows = store.person_event_rows(j).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|(_, kind, sealed)| *kind == CallbackEvent::PersonCompleted && sealed.is_none()));
    assert!(store.job_events_after(j, 0, 10).await.unwrap().is_empty(), "the completion waits");
    assert!(store.due_callbacks("a", LEASE, soon(), 10).await.unwrap().is_empty(), "nothing sent before sealing");

    // The completion waits for them: all sealed at once, two by two, then the completion.
    assert_eq!(store.jobs_to_seal(soon(), TWO).await.unwrap(), vec![j]);
    let sealed = store.seal_person_events(j, soon(), TWO, &render).await.unwrap();
    assert_eq!((sealed.person_events, sealed.job_events), (3, 1));
    let seq = sequence(&store, j).await;
    assert_eq!(
        seq,
        vec![
            (1, CallbackEvent::PersonCompleted, 2),
            (2, CallbackEvent::PersonCompleted, 2),
            (3, CallbackEvent::PersonCompleted, 1),
            (4, CallbackEvent::JobCompleted, 0),
        ]
    );
    let rows = store.person_event_rows(j).await.unwrap();
    assert!(rows.iter().all(|(_, _, sealed)| sealed.is_some()), "every person sealed");
    let people: std::collections::BTreeSet<Uuid> = rows.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(people.len(), 5, "each person in one event");
    // A second sealer finds nothing left.
    assert!(store.jobs_to_seal(soon(), TWO).await.unwrap().is_empty());
    assert_eq!(store.seal_person_events(j, soon(), TWO, &render).await.unwrap().person_events, 0);

    // Sent one at a time in sequence order, the completion last; a failed try holds the rest.
    let first = store.due_callbacks("a", LEASE, soon(), 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let failed = CallbackAttemptRecord { status_code: Some(500), ..Default::default() };
    store.record_callback_attempt(first[0].callback_id, failed, CallbackNext::RetryAt(Utc::now())).await.unwrap();
    let retry = store.due_callbacks("a", LEASE, soon(), 10).await.unwrap();
    assert_eq!(
        (retry.len(), retry[0].callback_id, &retry[0].webhook_id),
        (1, first[0].callback_id, &first[0].webhook_id)
    );
    assert_eq!(retry[0].body, first[0].body, "frozen at sealing");
    let ok = CallbackAttemptRecord { status_code: Some(200), ..Default::default() };
    store.record_callback_attempt(retry[0].callback_id, ok, CallbackNext::Delivered).await.unwrap();
    assert_eq!(
        deliver_all(&store, soon()).await,
        [CallbackEvent::PersonCompleted, CallbackEvent::PersonCompleted, CallbackEvent::JobCompleted]
    );

    // A late phone for everyone: five `person.updated` rows and a held `job.updated`. Two whole
    // events go at once; the fifth person waits for the wait (or more people), and so does the
    // `job.updated` behind it.
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let body = phone_body(&ids, 40.0);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    let outcome = store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap();
    assert!(matches!(outcome, ApplyOutcome::Applied { matched: 5, .. }), "{outcome:?}");
    let updated = store.person_event_rows(j).await.unwrap();
    assert_eq!(updated.iter().filter(|(_, k, _)| *k == CallbackEvent::PersonUpdated).count(), 5);
    let sealed = store.seal_person_events(j, soon(), TWO, &render).await.unwrap();
    assert_eq!((sealed.person_events, sealed.job_events), (2, 0));
    assert!(store.jobs_to_seal(soon(), TWO).await.unwrap().is_empty(), "one person waits for the wait");
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(store.jobs_to_seal(later, TWO).await.unwrap(), vec![j]);
    let sealed = store.seal_person_events(j, later, TWO, &render).await.unwrap();
    assert_eq!((sealed.person_events, sealed.job_events), (1, 1));
    let tail: Vec<(i64, CallbackEvent, usize)> = sequence(&store, j).await.into_iter().skip(4).collect();
    assert_eq!(
        tail,
        vec![
            (5, CallbackEvent::PersonUpdated, 2),
            (6, CallbackEvent::PersonUpdated, 2),
            (7, CallbackEvent::PersonUpdated, 1),
            (8, CallbackEvent::JobUpdated, 0),
        ]
    );
    assert_eq!(
        deliver_all(&store, later + chrono::Duration::seconds(1)).await,
        [
            CallbackEvent::PersonUpdated,
            CallbackEvent::PersonUpdated,
            CallbackEvent::PersonUpdated,
            CallbackEvent::JobUpdated
        ]
    );
    // The job shows its own events only.
    let jv = store.get_job(j).await.unwrap().unwrap();
    let shown: Vec<CallbackEvent> = jv.callback_events.iter().map(|e| e.event).collect();
    assert_eq!(shown, [CallbackEvent::JobCompleted, CallbackEvent::JobUpdated]);
    assert_eq!(jv.events, PersonEvents { completed: true, updated: true });
}

async fn without_a_callback_url_events_are_recorded_not_sent(store: Store) {
    let mut new = job("acme", 3, EnrichFlags::default());
    new.callback_url = None;
    new.events = PersonEvents { completed: true, updated: false };
    let j = store.create_job(new).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    store.seal_person_events(j, soon(), TWO, &render).await.unwrap();
    let seq = sequence(&store, j).await;
    assert_eq!(
        seq,
        vec![
            (1, CallbackEvent::PersonCompleted, 2),
            (2, CallbackEvent::PersonCompleted, 1),
            (3, CallbackEvent::JobCompleted, 0)
        ]
    );
    assert!(store.due_callbacks("a", LEASE, soon(), 10).await.unwrap().is_empty(), "nothing to send");
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.callback.map(|c| c.state), Some(CallbackState::Recorded));
}

async fn a_job_without_person_events_keeps_its_one_callback(store: Store) {
    let j = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    assert!(store.person_event_rows(j).await.unwrap().is_empty());
    assert_eq!(sequence(&store, j).await, vec![(1, CallbackEvent::JobCompleted, 0)], "in the sequence at once");
    assert_eq!(deliver_all(&store, soon()).await, [CallbackEvent::JobCompleted]);
}
