//! The leases of a live process: renewed while work runs, handed back when it stops, ended at once
//! when the process that held them is known to be gone; and what a call of unknown outcome may
//! have cost.

use std::time::Duration;

use apollo_client::{Credits, EnrichFlags};
use chrono::TimeDelta;
use job_store::Store;
use rules::{BatchState, JobState};
use rules::{budget::PHONE_REVEAL, budget::SYNC_MATCH};

use crate::harness::{all_matched, apollo_id, assert_counters_match, job, phone_body, record};
use crate::store_tests;

store_tests!(
    renewed_leases_do_not_lapse_and_only_their_holder_renews,
    a_batch_handed_back_is_due_at_once_without_an_attempt_or_a_double_charge,
    a_lapsed_call_costs_its_worst_case_until_its_retry_is_answered,
    a_lost_answer_is_priced_like_a_lapsed_lease,
    orphans_are_released_at_once_and_task_leases_end_with_their_holder,
    deliveries_of_the_answered_and_the_lost_calls_settle_what_the_lost_ones_cost,
);

const SHORT: Duration = Duration::from_secs(10);

async fn renewed_leases_do_not_lapse_and_only_their_holder_renews(store: Store) {
    let j = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let b = store.claim_batch("replica-a", SHORT, now).await.unwrap().unwrap();
    let renewed = store.renew_leases("replica-b", &[b.batch_id], &[], now + TimeDelta::seconds(60)).await.unwrap();
    assert_eq!(renewed.batches, 0, "another replica cannot renew replica-a's lease");
    let renewed = store.renew_leases("replica-a", &[b.batch_id], &[], now + TimeDelta::seconds(60)).await.unwrap();
    assert_eq!(renewed.batches, 1);
    assert_eq!(store.release_expired_leases(now + TimeDelta::seconds(30)).await.unwrap(), 0, "renewed past 10 s");
    assert_eq!(store.release_expired_leases(now + TimeDelta::seconds(61)).await.unwrap(), 1, "not renewed again");

    // A callback being sent: renewed, another replica does not take it meanwhile.
    let retry = store.claim_batch("replica-a", SHORT, now + TimeDelta::seconds(61)).await.unwrap().unwrap();
    record(&store, all_matched(&retry, false, false)).await;
    assert_eq!(store.get_job(j).await.unwrap().unwrap().state, JobState::Completed);
    let t = now + TimeDelta::seconds(120);
    let due = store.due_callbacks("replica-a", SHORT, t, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let cb = due[0].callback_id;
    let renewed = store.renew_leases("replica-a", &[], &[cb], t + TimeDelta::seconds(60)).await.unwrap();
    assert_eq!(renewed.callbacks, 1);
    assert!(store.due_callbacks("replica-b", SHORT, t + TimeDelta::seconds(30), 10).await.unwrap().is_empty());
    let taken = store.due_callbacks("replica-b", SHORT, t + TimeDelta::seconds(61), 10).await.unwrap();
    assert_eq!(taken.iter().map(|c| c.callback_id).collect::<Vec<_>>(), vec![cb], "lapsed: another replica sends it");

    // Task leases: renewed with the rest, by their holder only.
    assert!(store.hold_task("reconcile", "replica-a", SHORT).await.unwrap());
    let renewed = store.renew_leases("replica-a", &[], &[], now + TimeDelta::seconds(600)).await.unwrap();
    assert_eq!(renewed.tasks, 1);
    assert!(!store.hold_task("reconcile", "replica-b", SHORT).await.unwrap(), "still held after its first 10 s");
}

async fn a_batch_handed_back_is_due_at_once_without_an_attempt_or_a_double_charge(store: Store) {
    let j = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let b = store.claim_batch("stopping", SHORT, now).await.unwrap().unwrap();
    assert!(store.hand_back_batch(b.batch_id).await.unwrap());
    assert!(!store.hand_back_batch(b.batch_id).await.unwrap(), "only a batch in its call can be handed back");
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.state, BatchState::RetryWait);
    assert_eq!(view.lease_owner, None);
    let again = store.claim_batch("other", SHORT, store.clock_now().await.unwrap()).await.unwrap().unwrap();
    assert_eq!(again.batch_id, b.batch_id, "due at once, not a lease later");
    assert_eq!((again.attempt, again.failures), (1, 0), "no attempt counted: it was never sent");
    assert_eq!(again.people, b.people);
    record(&store, all_matched(&again, false, false)).await;
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed);
    assert_eq!((jv.possible_double_charges, jv.possible_double_charge_credits), (0, Credits::ZERO));
    assert_counters_match(&store, &[j]).await;
}

async fn a_lapsed_call_costs_its_worst_case_until_its_retry_is_answered(store: Store) {
    let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let j = store.create_job(job("acme", 3, phone)).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let b = store.claim_batch("dead", SHORT, now).await.unwrap().unwrap();
    assert_eq!(store.release_expired_leases(now + TimeDelta::seconds(11)).await.unwrap(), 1);
    let jv = store.get_job(j).await.unwrap().unwrap();
    let worst = Credits((SYNC_MATCH + PHONE_REVEAL).micros() * 3);
    assert_eq!((jv.possible_double_charges, jv.possible_double_charge_credits), (1, worst));
    assert_eq!(store.possible_double_charges().await.unwrap(), worst);

    // Its retry lapses too, then is answered: two unknown calls, each priced as the answer (3 credits).
    let retry = store.claim_batch("dead-too", SHORT, now + TimeDelta::seconds(11)).await.unwrap().unwrap();
    assert_eq!(retry.batch_id, b.batch_id);
    assert_eq!(store.release_expired_leases(now + TimeDelta::seconds(22)).await.unwrap(), 1);
    assert_eq!(store.get_job(j).await.unwrap().unwrap().possible_double_charge_credits, Credits(worst.micros() * 2));
    let third = store.claim_batch("alive", SHORT, now + TimeDelta::seconds(22)).await.unwrap().unwrap();
    record(&store, all_matched(&third, true, false)).await;
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.possible_double_charges, 2);
    assert_eq!(jv.possible_double_charge_credits, Credits::whole(6), "two lost copies of a 3-credit answer");
    let usage = store.usage("acme", now - TimeDelta::hours(1), now + TimeDelta::hours(1)).await.unwrap();
    assert_eq!((usage.possible_double_charges, usage.possible_double_charge_credits), (2, Credits::whole(6)));
    assert_counters_match(&store, &[j]).await;
}

async fn a_lost_answer_is_priced_like_a_lapsed_lease(store: Store) {
    let waterfall = EnrichFlags { run_waterfall_email: true, ..EnrichFlags::default() };
    let a = store.create_job(job("acme", 2, waterfall)).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let b = store.claim_batch("t", SHORT, now).await.unwrap().unwrap();
    assert!(store.retry_unknown_outcome(b.batch_id, now, "502 from the gateway").await.unwrap());
    let jv = store.get_job(a).await.unwrap().unwrap();
    assert_eq!(jv.possible_double_charges, 1);
    assert_eq!(jv.possible_double_charge_credits, Credits((SYNC_MATCH.micros() + 4_000_000) * 2));
    let retry = store.claim_batch("t", SHORT, store.clock_now().await.unwrap()).await.unwrap().unwrap();
    record(&store, all_matched(&retry, false, true)).await;
    assert_eq!(store.get_job(a).await.unwrap().unwrap().possible_double_charge_credits, Credits::whole(2));
}

async fn orphans_are_released_at_once_and_task_leases_end_with_their_holder(store: Store) {
    let j = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let b = store.claim_batch("gone", Duration::from_secs(3600), now).await.unwrap().unwrap();
    assert!(store.hold_task("reconcile", "gone", Duration::from_secs(3600)).await.unwrap());
    assert!(store.hold_task("retention", "alive", Duration::from_secs(3600)).await.unwrap());
    assert_eq!(store.release_tasks("alive").await.unwrap(), 1);
    assert!(store.hold_task("retention", "next", SHORT).await.unwrap(), "released: taken at once");
    assert_eq!(store.release_expired_leases(now).await.unwrap(), 0, "an hour's lease has not run out");
    assert_eq!(store.release_orphans(now).await.unwrap(), 1);
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.state, BatchState::RetryWait);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.possible_double_charges, 1, "the gone process's call may have been charged");
    assert!(store.hold_task("reconcile", "next", SHORT).await.unwrap(), "the gone process's task is free");
    let retry = store.claim_batch("next", SHORT, now).await.unwrap().unwrap();
    assert_eq!(retry.batch_id, b.batch_id);
    record(&store, all_matched(&retry, false, false)).await;
    let t = now + TimeDelta::seconds(60);
    let due = store.due_callbacks("gone", Duration::from_secs(3600), t, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(store.release_orphans(t).await.unwrap(), 0);
    let due = store.due_callbacks("next", SHORT, t, 10).await.unwrap();
    assert_eq!(due.len(), 1, "the gone process's callback lease ended too");
}

async fn deliver(store: &Store, batch_id: uuid::Uuid, claim: i32, body: &[u8]) {
    let item = job_store::InboundDelivery { batch_id, claim: Some(claim), body };
    let id = store.store_deliveries(&[item], chrono::Utc::now()).await.unwrap().pop().unwrap().unwrap().id();
    store.apply_delivery(id, &apollo_client::parse_delivery(body).unwrap()).await.unwrap();
}

async fn deliveries_of_the_answered_and_the_lost_calls_settle_what_the_lost_ones_cost(store: Store) {
    let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let j = store.create_job(job("acme", 2, phone)).await.unwrap().job.id;
    let now = store.clock_now().await.unwrap();
    let amount = |store: &Store| {
        let store = store.clone();
        async move { store.get_job(j).await.unwrap().unwrap().possible_double_charge_credits }
    };
    // Claim 1 lapses (it ran), claim 2's answer is lost (it did not), claim 3 is answered.
    let b = store.claim_batch("a", SHORT, now).await.unwrap().unwrap();
    assert_eq!(store.release_expired_leases(now + TimeDelta::seconds(11)).await.unwrap(), 1);
    store.claim_batch("b", SHORT, now + TimeDelta::seconds(11)).await.unwrap().unwrap();
    assert!(store.retry_unknown_outcome(b.batch_id, now, "502").await.unwrap());
    assert_eq!(amount(&store).await, Credits::whole(2 * 2 * 9), "two calls at the worst case");
    let third = store.claim_batch("c", SHORT, store.clock_now().await.unwrap()).await.unwrap().unwrap();
    assert_eq!(third.claims, 3);
    record(&store, all_matched(&third, true, false)).await;
    assert_eq!(amount(&store).await, Credits::whole(2 * 2), "each at the answer's 2 credits");
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    deliver(&store, b.batch_id, 3, &phone_body(&ids, 16.0)).await;
    assert_eq!(amount(&store).await, Credits::whole(2 * 18), "each ran the phones too");
    // Claim 1's phones come: it ran, its 2 + 16 credits are booked now.
    deliver(&store, b.batch_id, 1, &phone_body(&ids, 16.0)).await;
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.credits, Credits::whole(2 * 18));
    assert_eq!(jv.possible_double_charge_credits, Credits::whole(18), "claim 2 may still have cost 18");
    assert_eq!(jv.possible_double_charges, 2);
}
