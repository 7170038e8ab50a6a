//! Claiming batches: flags, fairness, retries, lease expiry, failure.

use std::collections::HashSet;
use std::time::Duration;

use apollo_client::{Credits, EnrichFlags};
use chrono::Utc;
use job_store::{NewJob, Store};
use rules::{BatchState, JobState, PersonState};

use crate::harness::{LEASE, all_matched, assert_counters_match, claim, job, record};
use crate::store_tests;

store_tests!(
    batches_share_flags_across_jobs,
    small_job_is_served_within_two_claims_of_a_huge_one,
    retry_keeps_the_batch_and_counts_attempts_as_asked,
    crash_between_submitting_and_result_is_recovered_by_lease_expiry,
    failed_batch_fails_its_people_and_the_job,
    several_claims_in_one_transaction,
    claims_in_one_transaction_take_turns_between_jobs,
    claims_in_one_transaction_keep_to_the_budget,
);

async fn batches_share_flags_across_jobs(store: Store) {
    let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id);
    }
    let other = store.create_job(job("acme", 2, phone)).await.unwrap().job.id;
    ids.push(store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id);

    let b = claim(&store).await;
    assert_eq!(b.flags, EnrichFlags::default());
    assert_eq!(b.people.len(), 4, "one call for four one-person jobs");
    let jobs: HashSet<_> = b.people.iter().map(|p| p.job_id).collect();
    assert_eq!(jobs, ids.iter().copied().collect());
    let b2 = claim(&store).await;
    assert_eq!(b2.flags, phone);
    assert!(b2.people.iter().all(|p| p.job_id == other));
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
    for id in &ids {
        assert_eq!(store.get_job(*id).await.unwrap().unwrap().state, JobState::Running);
    }
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.state, BatchState::Submitting);
    assert_eq!(view.people, b.people.iter().map(|p| p.person_id).collect::<Vec<_>>());
    assert_eq!(b.webhook_secret.len(), 64);
    assert_ne!(b.webhook_secret, b2.webhook_secret);
}

async fn small_job_is_served_within_two_claims_of_a_huge_one(store: Store) {
    let big = store.create_job(job("bulk", 5_000, EnrichFlags::default())).await.unwrap().job.id;
    for _ in 0..3 {
        let b = claim(&store).await;
        assert!(b.people.iter().all(|p| p.job_id == big));
    }
    let small = store.create_job(job("tiny", 1, EnrichFlags::default())).await.unwrap().job.id;
    let mut served_at = None;
    for i in 0..2 {
        let b = claim(&store).await;
        assert_eq!(b.people.len(), 10, "the batch is filled from the big job");
        if b.people.iter().any(|p| p.job_id == small) {
            served_at = Some(i);
            break;
        }
    }
    assert!(served_at.is_some(), "the one-person job waited more than two claims");
    assert_counters_match(&store, &[big, small]).await;
}

async fn retry_keeps_the_batch_and_counts_attempts_as_asked(store: Store) {
    let j = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    let now = Utc::now();
    // A 429: not a counted attempt.
    assert!(store.schedule_retry(b.batch_id, now + chrono::Duration::seconds(30), false, "429").await.unwrap());
    assert!(store.claim_batch("t", LEASE, now).await.unwrap().is_none(), "not due yet");
    let later = now + chrono::Duration::seconds(31);
    let again = store.claim_batch("t", LEASE, later).await.unwrap().unwrap();
    assert_eq!(again.batch_id, b.batch_id);
    assert!(again.retry);
    assert_eq!((again.attempt, again.claims, again.failures), (1, 2, 0));
    assert_eq!(again.people, b.people);
    assert_eq!(again.webhook_secret, b.webhook_secret);
    // A 503: counted.
    assert!(store.schedule_retry(b.batch_id, later, true, "503").await.unwrap());
    let third = store.claim_batch("t", LEASE, later).await.unwrap().unwrap();
    assert_eq!((third.attempt, third.claims, third.failures), (2, 3, 1));
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.last_error.as_deref(), Some("503"));
    // Not submitting any more once recorded: a late retry request is refused.
    record(&store, all_matched(&third, false, false)).await;
    assert!(!store.schedule_retry(b.batch_id, later, true, "late").await.unwrap());
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed);
    assert_eq!(jv.calls, 1);
    assert_eq!(jv.possible_double_charges, 0);
}

async fn crash_between_submitting_and_result_is_recovered_by_lease_expiry(store: Store) {
    let j = store.create_job(job("acme", 1, EnrichFlags::default())).await.unwrap().job.id;
    let now = Utc::now();
    let lease = Duration::from_secs(30);
    let b = store.claim_batch("replica-a", lease, now).await.unwrap().unwrap();
    // replica-a dies during the HTTP call: nothing is recorded.
    assert_eq!(store.release_expired_leases(now + chrono::Duration::seconds(10)).await.unwrap(), 0);
    let after = now + chrono::Duration::seconds(31);
    assert_eq!(store.release_expired_leases(after).await.unwrap(), 1);
    let view = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(view.state, BatchState::RetryWait);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.possible_double_charges, 1, "the lost call may have been charged");
    assert_eq!(jv.counts.submitted, 1);

    let retry = store.claim_batch("replica-b", lease, after).await.unwrap().unwrap();
    assert_eq!(retry.batch_id, b.batch_id);
    assert_eq!((retry.attempt, retry.failures), (2, 0), "a lost lease is an attempt, not a failure of Apollo's");
    record(&store, all_matched(&retry, false, false)).await;
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed);
    assert_eq!(jv.counts.complete, 1);
    assert_eq!(jv.possible_double_charges, 1);
    assert_eq!(store.release_expired_leases(after + chrono::Duration::hours(1)).await.unwrap(), 0);
    assert_counters_match(&store, &[j]).await;
}

async fn failed_batch_fails_its_people_and_the_job(store: Store) {
    let j = store.create_job(job("acme", 2, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    assert!(store.fail_batch(b.batch_id, "422: malformed").await.unwrap());
    assert!(!store.fail_batch(b.batch_id, "again").await.unwrap());
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Failed);
    assert_eq!(jv.counts.failed, 2);
    assert!(jv.callback.is_some());
    let people = store.list_people(j, None, 10).await.unwrap();
    assert!(people.iter().all(|p| p.state == PersonState::Failed && p.last_error.as_deref() == Some("422: malformed")));
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().state, BatchState::Failed);
    assert_counters_match(&store, &[j]).await;
}

async fn several_claims_in_one_transaction(store: Store) {
    let j = store.create_job(job("acme", 25, EnrichFlags::default())).await.unwrap().job.id;
    let batches = store.claim_batches("test", LEASE, Utc::now(), 5).await.unwrap();
    // Full batches claimed together; the short one after them stays queued (it may yet fill).
    assert_eq!(batches.iter().map(|b| b.people.len()).collect::<Vec<_>>(), vec![10, 10]);
    for b in &batches {
        assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().state, BatchState::Submitting);
    }
    let view = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((view.state, view.counts.submitted, view.counts.queued), (JobState::Running, 20, 5));
    // Claimed first, a short batch goes.
    let rest = store.claim_batches("test", LEASE, Utc::now(), 5).await.unwrap();
    assert_eq!(rest.iter().map(|b| b.people.len()).collect::<Vec<_>>(), vec![5]);
    let people: HashSet<_> = batches.iter().chain(&rest).flat_map(|b| b.people.iter().map(|p| p.person_id)).collect();
    assert_eq!(people.len(), 25, "no one twice");
    assert!(store.claim_batches("test", LEASE, Utc::now(), 5).await.unwrap().is_empty());
    // A limit of one claims one.
    store.create_job(job("acme", 25, EnrichFlags::default())).await.unwrap();
    assert_eq!(store.claim_batches("test", LEASE, Utc::now(), 1).await.unwrap().len(), 1);
    assert_counters_match(&store, &[j]).await;
}

async fn claims_in_one_transaction_take_turns_between_jobs(store: Store) {
    // The job counters are written at the end of the transaction; the second claim still sees
    // the first job as just served and goes to the other one.
    let a = store.create_job(job("acme", 20, EnrichFlags::default())).await.unwrap().job.id;
    let b = store.create_job(job("globex", 20, EnrichFlags::default())).await.unwrap().job.id;
    let got = store.claim_batches("test", LEASE, Utc::now(), 2).await.unwrap();
    let jobs: Vec<_> = got.iter().map(|c| c.people[0].job_id).collect();
    assert_eq!(jobs, vec![a, b], "one full batch each, the older job first");
    assert!(got.iter().all(|c| c.people.len() == 10 && c.people.iter().all(|p| p.job_id == c.people[0].job_id)));
    for id in [a, b] {
        let view = store.get_job(id).await.unwrap().unwrap();
        assert_eq!((view.state, view.counts.submitted, view.counts.queued), (JobState::Running, 10, 10));
    }
    assert_counters_match(&store, &[a, b]).await;
}

async fn claims_in_one_transaction_keep_to_the_budget(store: Store) {
    // At worst a credit a person (no flags): 25 credits cover 25 people in flight, so after two
    // full batches only five fit, a short batch that waits; a third full one would pass the budget.
    let new = NewJob { max_credits: Some(Credits::whole(25)), ..job("acme", 40, EnrichFlags::default()) };
    let j = store.create_job(new).await.unwrap().job.id;
    let got = store.claim_batches("test", LEASE, Utc::now(), 4).await.unwrap();
    assert_eq!(got.iter().map(|b| b.people.len()).collect::<Vec<_>>(), vec![10, 10]);
    let view = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((view.counts.submitted, view.counts.queued), (20, 20));
    // Claimed first, the five that fit go; then nothing while they are in flight.
    let rest = store.claim_batches("test", LEASE, Utc::now(), 4).await.unwrap();
    assert_eq!(rest.iter().map(|b| b.people.len()).collect::<Vec<_>>(), vec![5]);
    assert!(store.claim_batches("test", LEASE, Utc::now(), 4).await.unwrap().is_empty());
    assert_counters_match(&store, &[j]).await;
}
