//! The lifecycle defects of issue 10, each on both databases: the same Apollo person twice in a
//! call, calls with an unknown outcome, refused details (split), cancel during a retry, values the
//! database cannot hold, a skipped phone reveal, failed parts, and the retry backstop.

use apollo_client::EnrichFlags;
use apollo_client::{Credits, parse_delivery};
use chrono::Utc;
use job_store::{ApplyOutcome, ClaimedBatch, InboundDelivery, Store, SyncOutcome};
use rules::lifecycle::Part;
use rules::{BatchState, DeliveryState, JobState, PersonState};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{all_matched, apollo_id, assert_counters_match, claim, job, phone_body, record, waterfall_body};
use crate::store_tests;

store_tests!(
    the_same_apollo_person_twice_in_one_call_both_get_the_delivery,
    a_retried_call_apollo_also_ran_is_charged_for_every_copy,
    the_answered_copys_own_payload_is_fetched_for_its_credits,
    deliveries_of_a_failed_batch_still_count_their_credits,
    cancel_stops_people_waiting_for_a_retry,
    cancel_during_a_call_drops_its_people_from_the_retry,
    values_the_database_cannot_hold_are_stored,
    a_delivery_that_keeps_failing_is_failed_at_the_cap,
    a_skipped_phone_comes_from_the_earlier_request,
    a_skipped_phone_already_delivered_is_copied_at_once,
    a_skipped_phone_that_never_comes_ends_partial_with_the_reason,
    a_failed_part_makes_waiting_people_partial,
    a_refused_batch_splits_in_halves,
    a_batch_is_given_up_after_the_attempt_backstop,
);

fn phone() -> EnrichFlags {
    EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() }
}

/// Gives every person of the answer the Apollo id `id`.
fn all_as(mut outcome: SyncOutcome, id: &str) -> SyncOutcome {
    for p in &mut outcome.people {
        p.apollo_id = Some(id.to_owned());
        p.facts.apollo_id = Some(id.to_owned());
    }
    outcome
}

async fn deliver(store: &Store, batch_id: Uuid, claim: Option<i32>, body: &[u8]) -> ApplyOutcome {
    let item = InboundDelivery { batch_id, claim, body };
    let id = store.store_deliveries(&[item], Utc::now()).await.unwrap().pop().unwrap().unwrap().id();
    store.apply_delivery(id, &parse_delivery(body).unwrap()).await.unwrap()
}

async fn person_of(store: &Store, job_id: Uuid) -> job_store::PersonView {
    store.list_people(job_id, None, 10).await.unwrap().remove(0)
}

fn phones_of(p: &job_store::PersonView) -> Vec<String> {
    p.record
        .as_ref()
        .and_then(|r| r["phones"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| e["e164"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn the_same_apollo_person_twice_in_one_call_both_get_the_delivery(store: Store) {
    // Two clients ask for the same lead at the same time: one call carries both.
    let a = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    let b = store.create_job(job("globex", 1, phone())).await.unwrap().job.id;
    let batch = claim(&store).await;
    assert_eq!(batch.people.len(), 2, "both jobs share the call");
    record(&store, all_as(all_matched(&batch, true, false), "ap_same")).await;
    // Apollo lists the id once.
    let outcome = deliver(&store, batch.batch_id, Some(batch.claims), &phone_body(&["ap_same".into()], 8.0)).await;
    assert!(matches!(outcome, ApplyOutcome::Applied { matched: 1, .. }), "{outcome:?}");
    for j in [a, b] {
        let p = person_of(&store, j).await;
        assert_eq!(p.state, PersonState::Complete, "{p:?}");
        assert_eq!(phones_of(&p), vec!["+15125550100"], "every person with the id gets the phone");
        assert_eq!(store.get_job(j).await.unwrap().unwrap().state, JobState::Completed);
    }
    let credits = store.get_job(a).await.unwrap().unwrap().credits + store.get_job(b).await.unwrap().unwrap().credits;
    assert_eq!(credits, Credits::whole(2 + 8), "the delivery is charged once, split between the jobs");
    assert_counters_match(&store, &[a, b]).await;
}

async fn a_retried_call_apollo_also_ran_is_charged_for_every_copy(store: Store) {
    let j = store.create_job(job("acme", 2, phone())).await.unwrap().job.id;
    let first = claim(&store).await;
    // The answer was lost (a timeout after sending): retried, counted as a possible double charge.
    assert!(store.retry_unknown_outcome(first.batch_id, Utc::now(), "timeout: operation timed out").await.unwrap());
    assert_eq!(store.get_job(j).await.unwrap().unwrap().possible_double_charges, 1);
    let second = claim(&store).await;
    assert_eq!((second.batch_id, second.claims, second.attempt), (first.batch_id, 2, 2));
    let ids: Vec<String> = second.people.iter().map(|p| apollo_id(p.person_id)).collect();
    record(&store, all_matched(&second, true, false)).await;
    // Both calls ran at Apollo: each delivers (the same bytes) and each was charged.
    let body = phone_body(&ids, 16.0);
    assert!(matches!(deliver(&store, first.batch_id, Some(1), &body).await, ApplyOutcome::Applied { .. }));
    assert!(matches!(deliver(&store, first.batch_id, Some(2), &body).await, ApplyOutcome::Applied { .. }));
    // The second call's result polled too, with other bytes: no new charge.
    let mut polled: serde_json::Value = serde_json::from_slice(&body).unwrap();
    polled["polled"] = json!(true);
    let polled = serde_json::to_vec(&polled).unwrap();
    assert!(matches!(deliver(&store, first.batch_id, Some(2), &polled).await, ApplyOutcome::Applied { .. }));
    let jv = store.get_job(j).await.unwrap().unwrap();
    // Sync 2 (answered) + 2 (the lost answer, proven by its delivery) + 16 + 16.
    assert_eq!(jv.credits, Credits::whole(36));
    assert_eq!(jv.state, JobState::Completed);
    assert_eq!(jv.possible_double_charges, 1);
    assert_counters_match(&store, &[j]).await;
}

/// The lost copy's payload completes the people; the answered copy's own payload (billed too)
/// never came: the batch stays wanted for that part until it arrives, or until the billing
/// window closes.
async fn the_answered_copys_own_payload_is_fetched_for_its_credits(store: Store) {
    let j = store.create_job(job("acme", 2, phone())).await.unwrap().job.id;
    let first = claim(&store).await;
    assert!(store.retry_unknown_outcome(first.batch_id, Utc::now(), "timeout: operation timed out").await.unwrap());
    let second = claim(&store).await;
    let ids: Vec<String> = second.people.iter().map(|p| apollo_id(p.person_id)).collect();
    record(&store, all_matched(&second, true, false)).await;
    let body = phone_body(&ids, 16.0);
    assert!(matches!(deliver(&store, first.batch_id, Some(1), &body).await, ApplyOutcome::Applied { .. }));
    assert_eq!(store.get_job(j).await.unwrap().unwrap().state, JobState::Completed, "nobody waits");
    let later = Utc::now() + chrono::Duration::seconds(1);
    let long_ago = Utc::now() - chrono::Duration::minutes(5);
    let wanted = store.overdue_batches(later, long_ago, 10).await.unwrap();
    assert_eq!(wanted.len(), 1, "the answered call's phone payload is still owed");
    assert!(wanted[0].awaiting_phone && !wanted[0].awaiting_waterfall, "{wanted:?}");
    assert_eq!(wanted[0].answered_claim, Some(2));
    // Past the billing window: no longer polled.
    assert!(store.overdue_batches(later, later, 10).await.unwrap().is_empty());
    // Once the answered call's payload arrives (polled), its credits count and nothing is owed.
    assert!(matches!(deliver(&store, first.batch_id, Some(2), &body).await, ApplyOutcome::Applied { .. }));
    assert!(store.overdue_batches(later, long_ago, 10).await.unwrap().is_empty());
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.credits, Credits::whole(2 + 2 + 16 + 16), "both copies billed: sync and phone each");
    assert_counters_match(&store, &[j]).await;
}

async fn deliveries_of_a_failed_batch_still_count_their_credits(store: Store) {
    let j = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    assert!(store.fail_batch(b.batch_id, "gave up: timeouts").await.unwrap());
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.state, jv.counts.failed), (JobState::Failed, 1));
    let outcome = deliver(&store, b.batch_id, Some(1), &phone_body(&["ap_unknown".into()], 8.0)).await;
    assert!(matches!(outcome, ApplyOutcome::Applied { matched: 0, .. }), "{outcome:?}");
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.credits, Credits::whole(8), "Apollo billed the call that never answered");
    assert_eq!(jv.counts.failed, 1, "nobody can be told apart without an answer");
    assert!(store.pending_deliveries(10).await.unwrap().is_empty());
}

async fn cancel_stops_people_waiting_for_a_retry(store: Store) {
    let j = store.create_job(job("acme", 3, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    // A 429: the batch waits for a retry, its people `submitted`.
    assert!(store.schedule_retry(b.batch_id, Utc::now(), false, "rate limited").await.unwrap());
    let jv = store.cancel_job(j).await.unwrap();
    assert_eq!(jv.counts.cancelled, 3, "people waiting for a retry are not in a call: cancelled");
    assert_eq!(store.get_job(j).await.unwrap().unwrap().state, JobState::Cancelled);
    assert_eq!(
        store.claim_batch("test", crate::harness::LEASE, Utc::now()).await.unwrap(),
        None,
        "no call contains them"
    );
    assert_counters_match(&store, &[j]).await;
}

async fn cancel_during_a_call_drops_its_people_from_the_retry(store: Store) {
    let j = store.create_job(job("acme", 2, phone())).await.unwrap().job.id;
    let other = store.create_job(job("globex", 2, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 4);
    // Cancelled while the call is in flight: its people finish that call...
    store.cancel_job(j).await.unwrap();
    // ...which fails transiently: the retry must not carry the cancelled job's people.
    assert!(store.schedule_retry(b.batch_id, Utc::now(), true, "503").await.unwrap());
    let retry = claim(&store).await;
    assert_eq!(retry.batch_id, b.batch_id);
    assert!(retry.people.iter().all(|p| p.job_id == other), "{:?}", retry.people);
    assert_eq!(retry.people.len(), 2);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.state, jv.counts.cancelled), (JobState::Cancelled, 2));
    assert_counters_match(&store, &[j, other]).await;
}

async fn values_the_database_cannot_hold_are_stored(store: Store) {
    let j = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    let mut outcome = all_matched(&b, true, false);
    outcome.response = json!({"status": "success", "matches": [{"name": "Ann\u{0}Lee", "title": "C\u{0}O"}]});
    outcome.people[0].fields = json!({"name": "Ann\u{0}Lee", "title": "C\u{0}O"});
    let raw = serde_json::to_vec(&outcome.response).unwrap();
    record(&store, outcome).await;
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.state, BatchState::Submitted, "the answer was recorded once, not retried forever");
    assert_eq!(view.response.as_ref().unwrap()["matches"][0]["name"], "Ann\u{fffd}Lee");
    assert_eq!(view.response_body, Some(raw), "Apollo's answer kept byte for byte");
    // A delivery with U+0000 in a value merges too.
    let body = br#"{"status":"success","credits_consumed":8,"people":[{"id":"ID","phone_numbers":[{"raw_number":"+1 512 555 0100\u0000","sanitized_number":"+15125550100","type_cd":"mobile"}]}]}"#;
    let body = String::from_utf8_lossy(body).replace("ID", &apollo_id(b.people[0].person_id)).into_bytes();
    assert!(matches!(deliver(&store, b.batch_id, Some(1), &body).await, ApplyOutcome::Applied { matched: 1, .. }));
    let p = person_of(&store, j).await;
    assert_eq!(p.state, PersonState::Complete);
    assert_eq!(p.record.as_ref().unwrap()["fields"]["title"], "C\u{fffd}O");
}

async fn a_delivery_that_keeps_failing_is_failed_at_the_cap(store: Store) {
    let j = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, false)).await;
    let d = store.store_delivery(b.batch_id, b"{\"people\": []}", Utc::now()).await.unwrap().id();
    for _ in 0..4 {
        assert!(!store.note_apply_failure(d, "deadlock detected", 5).await.unwrap());
        assert_eq!(store.get_delivery(d).await.unwrap().unwrap().state, DeliveryState::Pending);
    }
    assert!(store.note_apply_failure(d, "deadlock detected", 5).await.unwrap());
    let row = store.get_delivery(d).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert!(row.parse_error.unwrap().contains("deadlock detected"));
    assert!(store.pending_deliveries(10).await.unwrap().is_empty(), "ingest moves on");
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.failed_deliveries.len(), 1, "visible on the job");
    assert_eq!(jv.failed_deliveries[0].id, d);
}

/// Job A's call (phone pending) then job B's call for the same Apollo person (phone skipped).
async fn skipped_pair(store: &Store) -> (Uuid, ClaimedBatch, Uuid, ClaimedBatch) {
    let a = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    let first = claim(store).await;
    let b = store.create_job(job("globex", 1, phone())).await.unwrap().job.id;
    let second = claim(store).await;
    record(store, all_as(all_matched(&first, true, false), "ap_x")).await;
    (a, first, b, second)
}

fn skipped(b: &ClaimedBatch) -> SyncOutcome {
    let mut o = all_as(all_matched(b, true, false), "ap_x");
    o.phone_request_id = None;
    for p in &mut o.people {
        p.phone_elsewhere = true;
    }
    o
}

async fn a_skipped_phone_comes_from_the_earlier_request(store: Store) {
    let (a, first, b, second) = skipped_pair(&store).await;
    record(&store, skipped(&second)).await;
    let waiting = person_of(&store, b).await;
    assert_eq!(waiting.state, PersonState::AwaitingAsync, "never complete without the phone");
    deliver(&store, first.batch_id, Some(1), &phone_body(&["ap_x".into()], 8.0)).await;
    for j in [a, b] {
        let p = person_of(&store, j).await;
        assert_eq!(p.state, PersonState::Complete, "{p:?}");
        assert_eq!(phones_of(&p), vec!["+15125550100"]);
    }
    assert_counters_match(&store, &[a, b]).await;
}

async fn a_skipped_phone_already_delivered_is_copied_at_once(store: Store) {
    let (a, first, b, second) = skipped_pair(&store).await;
    deliver(&store, first.batch_id, Some(1), &phone_body(&["ap_x".into()], 8.0)).await;
    record(&store, skipped(&second)).await;
    let p = person_of(&store, b).await;
    assert_eq!(p.state, PersonState::Complete, "{p:?}");
    assert_eq!(phones_of(&p), vec!["+15125550100"]);
    assert_counters_match(&store, &[a, b]).await;
}

async fn a_skipped_phone_that_never_comes_ends_partial_with_the_reason(store: Store) {
    let b = store.create_job(job("globex", 1, phone())).await.unwrap().job.id;
    let second = claim(&store).await;
    record(&store, skipped(&second)).await;
    assert_eq!(store.expire_parts(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 1);
    let p = person_of(&store, b).await;
    assert_eq!(p.state, PersonState::Partial);
    assert_eq!(p.missing_parts, vec!["phone".to_owned()]);
    assert!(p.last_error.unwrap().contains("skipped"));
    assert_eq!(store.get_job(b).await.unwrap().unwrap().state, JobState::Completed);
}

async fn a_failed_part_makes_waiting_people_partial(store: Store) {
    let j = store.create_job(job("acme", 2, crate::harness::phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    deliver(&store, b.batch_id, Some(1), &waterfall_body(&ids, 2.0)).await;
    assert_eq!(store.fail_part(b.batch_id, Part::Phone, "phone provider down").await.unwrap(), 2);
    for p in store.list_people(j, None, 10).await.unwrap() {
        assert_eq!(p.state, PersonState::Partial);
        assert_eq!(p.missing_parts, vec!["phone".to_owned()]);
        assert!(p.last_error.as_deref().unwrap().contains("phone provider down"));
    }
    assert_eq!(store.fail_part(b.batch_id, Part::Phone, "again").await.unwrap(), 0, "once");
    assert_eq!(store.get_job(j).await.unwrap().unwrap().state, JobState::Completed);
    assert_counters_match(&store, &[j]).await;
}

async fn a_refused_batch_splits_in_halves(store: Store) {
    let j = store.create_job(job("acme", 5, phone())).await.unwrap().job.id;
    let b = claim(&store).await;
    let new = store.split_batch(b.batch_id, "Apollo refused the request (422)").await.unwrap().expect("split");
    let first = claim(&store).await;
    let second = claim(&store).await;
    let mut got: Vec<(Uuid, Vec<Uuid>)> =
        [first, second].into_iter().map(|c| (c.batch_id, c.people.iter().map(|p| p.person_id).collect())).collect();
    got.sort();
    let mut want = vec![
        (b.batch_id, b.people[..2].iter().map(|p| p.person_id).collect::<Vec<_>>()),
        (new, b.people[2..].iter().map(|p| p.person_id).collect()),
    ];
    want.sort();
    assert_eq!(got, want, "the halves keep details order");
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.counts.submitted, 5);
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().attempt, 1, "a split is not a failed attempt");
    assert_counters_match(&store, &[j]).await;
}

async fn a_batch_is_given_up_after_the_attempt_backstop(store: Store) {
    let j = store.create_job(job("acme", 1, phone())).await.unwrap().job.id;
    // Lost answers and leases that ran out in turn: both are attempts, only the first a failure.
    let lease = crate::harness::LEASE;
    let mut now = Utc::now();
    let mut b = claim(&store).await;
    let mut failures = 0;
    let lose = |b: ClaimedBatch, now| {
        let store = store.clone();
        async move {
            if b.attempt % 2 == 1 {
                assert!(store.retry_unknown_outcome(b.batch_id, now, "timeout").await.unwrap());
                (now, 1)
            } else {
                let later = now + chrono::Duration::from_std(lease).unwrap() + chrono::Duration::seconds(1);
                assert_eq!(store.release_expired_leases(later).await.unwrap(), 1);
                (later, 0)
            }
        }
    };
    while b.attempt < job_store::claims::MAX_ATTEMPTS {
        let failed;
        (now, failed) = lose(b, now).await;
        failures += failed;
        b = store.claim_batch("test", lease, now).await.unwrap().expect("retried");
        assert_eq!(b.failures, failures, "attempt {}", b.attempt);
    }
    (now, _) = lose(b, now).await;
    assert_eq!(store.claim_batch("test", lease, now).await.unwrap(), None);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.state, jv.counts.failed), (JobState::Failed, 1));
    assert_eq!(jv.possible_double_charges, i64::from(job_store::claims::MAX_ATTEMPTS));
}
