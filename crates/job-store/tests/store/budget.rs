//! Credit budgets: claims take only the people a job's `max_credits` can pay for at worst, and
//! the rest end `skipped_budget` once nothing is in flight.

use apollo_client::Credits;
use apollo_client::EnrichFlags;
use chrono::Utc;
use job_store::{NewJob, Store, StoreError};
use rules::records::SyncMatch;
use rules::{JobState, PersonState};
use serde_json::json;

use crate::harness::{LEASE, all_matched, assert_counters_match, claim, job, person, record};
use crate::store_tests;

store_tests!(
    claims_stop_at_the_budget_and_the_rest_are_skipped,
    a_job_without_budget_is_not_limited,
    the_daily_cap_bounds_every_budget_of_the_day,
    a_purged_job_still_counts_against_its_days_cap,
);

async fn claims_stop_at_the_budget_and_the_rest_are_skipped(store: Store) {
    // 25 distinct people and one duplicate of the last; worst case 1 credit each (no flags).
    let mut new = NewJob {
        max_credits: Some(Credits::parse_decimal("12.5").unwrap()),
        ..job("acme", 25, EnrichFlags::default())
    };
    new.people.push(person(24).into());
    let id = store.create_job(new).await.unwrap().job.id;

    let b1 = claim(&store).await;
    assert_eq!(b1.people.len(), 10);
    // Ten reserved at 1 credit each: 2.5 left, room for two.
    let b2 = claim(&store).await;
    assert_eq!(b2.people.len(), 2, "only what the budget covers at worst");
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none(), "nothing fits while in flight");

    // Half of the first call comes back unmatched: those cost nothing, which makes room again.
    let mut answer = all_matched(&b1, false, false);
    for p in answer.people.iter_mut().take(5) {
        p.outcome = SyncMatch::NotFound;
        p.credits = Credits::ZERO;
    }
    answer.credits = Credits::whole(5);
    record(&store, answer).await;
    // Spent 5, two in flight: 12.5 - 5 - 2 = 5.5, room for five.
    let b3 = claim(&store).await;
    assert_eq!(b3.people.len(), 5);
    record(&store, all_matched(&b2, false, false)).await;
    record(&store, all_matched(&b3, false, false)).await;
    assert_eq!(store.get_job(id).await.unwrap().unwrap().state, JobState::Running);

    // Spent 12 of 12.5: not one more person fits, nothing in flight, so the rest are skipped.
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.credits, Credits::whole(12));
    assert_eq!(j.max_credits, Some(Credits::parse_decimal("12.5").unwrap()));
    assert_eq!(j.counts.complete, 12);
    assert_eq!(j.counts.not_found, 5);
    assert_eq!(j.counts.skipped_budget, 9, "eight people and the duplicate of one of them");
    let reason = j.end_reason.expect("the job says why it ended");
    assert!(reason.contains("budget reached") && reason.contains("12.5"), "{reason}");
    assert_counters_match(&store, &[id]).await;
    let people = store.list_people(id, None, 100).await.unwrap();
    let skipped: Vec<_> = people.iter().filter(|p| p.state == PersonState::SkippedBudget).collect();
    assert_eq!(skipped.len(), 9);
    assert!(skipped.iter().all(|p| p.batch_id.is_none()), "never sent");
    assert_eq!(people.last().unwrap().state, PersonState::SkippedBudget, "the duplicate follows its primary");
    assert!(store.claim_batch("t", LEASE, Utc::now()).await.unwrap().is_none());
}

async fn a_job_without_budget_is_not_limited(store: Store) {
    let phone = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let capped = store
        .create_job(NewJob { max_credits: Some(Credits::whole(18)), ..job("acme", 3, phone) })
        .await
        .unwrap()
        .job
        .id;
    let free = store.create_job(NewJob { metadata: Some(json!({})), ..job("acme", 12, phone) }).await.unwrap().job.id;
    // The capped job (worst case 9 each) gives two people; the batch fills from the other job.
    let b = claim(&store).await;
    assert_eq!(b.people.iter().filter(|p| p.job_id == capped).count(), 2);
    assert_eq!(b.people.iter().filter(|p| p.job_id == free).count(), 8);
    let b2 = claim(&store).await;
    assert!(b2.people.iter().all(|p| p.job_id == free), "the capped job waits for its call");
    assert_eq!(b2.people.len(), 4);
    assert_counters_match(&store, &[capped, free]).await;
}

async fn the_daily_cap_bounds_every_budget_of_the_day(store: Store) {
    let cap = Some(Credits::whole(20));
    let capped = |client: &str, n: usize, max: Option<i64>| NewJob {
        daily_cap: cap,
        max_credits: max.map(Credits::whole),
        ..job(client, n, EnrichFlags::default())
    };
    // A job without a budget takes what remains of the day as its budget.
    let a = store.create_job(capped("acme", 3, None)).await.unwrap().job;
    assert_eq!(a.max_credits, Some(Credits::whole(20)));
    // While it runs, it holds all of it: the next job is refused.
    match store.create_job(capped("acme", 1, Some(5))).await {
        Err(StoreError::DailyCapReached { cap: c }) => assert_eq!(c, Credits::whole(20)),
        other => panic!("expected DailyCapReached, got {other:?}"),
    }
    // Finished, it holds only what it spent (3): a new budget is cut to the 17 left.
    let b = claim(&store).await;
    assert!(b.people.iter().all(|p| p.job_id == a.id));
    record(&store, all_matched(&b, false, false)).await;
    assert_eq!(store.get_job(a.id).await.unwrap().unwrap().state, JobState::Completed);
    let c = store.create_job(capped("acme", 1, Some(100))).await.unwrap().job;
    assert_eq!(c.max_credits, Some(Credits::whole(17)));
    let d = store.create_job(capped("acme", 1, None));
    assert!(matches!(d.await, Err(StoreError::DailyCapReached { .. })), "17 held by the running job");
    assert_eq!(store.create_job(capped("other", 1, None)).await.unwrap().job.max_credits, cap, "per client");
}

async fn a_purged_job_still_counts_against_its_days_cap(store: Store) {
    // No callback: a job whose final callback is pending is not purged.
    let capped = |n: usize| NewJob {
        daily_cap: Some(Credits::whole(20)),
        callback_url: None,
        ..job("acme", n, EnrichFlags::default())
    };
    for n in [3, 4] {
        let j = store.create_job(capped(n)).await.unwrap().job;
        let b = claim(&store).await;
        record(&store, all_matched(&b, false, false)).await;
        assert_eq!(store.get_job(j.id).await.unwrap().unwrap().state, JobState::Completed);
    }
    // Retention purges both finished jobs (3 and 4 credits): their 7 credits stay spent today.
    let future = Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 2);
    let c = store.create_job(capped(1)).await.unwrap().job;
    assert_eq!(c.max_credits, Some(Credits::whole(13)), "20 less the 7 the purged jobs spent");
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    // A second purge adds to the day: 8 spent, 12 left.
    assert_eq!(store.purge_finished_jobs(future).await.unwrap(), 1);
    assert_eq!(store.create_job(capped(1)).await.unwrap().job.max_credits, Some(Credits::whole(12)));
    let other = NewJob { daily_cap: Some(Credits::whole(20)), ..job("other", 1, EnrichFlags::default()) };
    assert_eq!(store.create_job(other).await.unwrap().job.max_credits, Some(Credits::whole(20)), "per client");
}
