//! Recording synchronous answers.

use apollo_client::Credits;
use apollo_client::EnrichFlags;
use job_store::{Store, SyncRecorded};
use rules::records::SyncMatch;
use rules::{BatchState, CallbackState, JobState, PersonState};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::harness::{all_matched, assert_counters_match, claim, job, phone_and_waterfall, record};
use crate::store_tests;

store_tests!(
    sync_answer_sets_each_person_state_and_credits,
    recording_twice_changes_nothing,
    completion_creates_exactly_one_callback_row,
    one_answer_writes_every_primary_and_each_ones_duplicates,
    answers_recorded_together_end_as_recorded_one_by_one,
    a_group_with_an_answer_the_store_refuses_records_nothing,
);

async fn sync_answer_sets_each_person_state_and_credits(store: Store) {
    let j = store.create_job(job("acme", 4, phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    let mut outcome = all_matched(&b, true, true);
    outcome.credits = Credits(4_500_000); // 1 per person attributed + 0.5 unattributed
    outcome.people[1].outcome = SyncMatch::NotFound;
    outcome.people[1].credits = Credits::ZERO;
    outcome.people[2].expect_phone = false;
    outcome.people[2].expect_waterfall = false;
    outcome.people.pop(); // the last person got no answer at all
    record(&store, outcome).await;

    let people = store.list_people(j, None, 10).await.unwrap();
    let states: Vec<_> = people.iter().map(|p| p.state).collect();
    assert_eq!(
        states,
        [PersonState::AwaitingAsync, PersonState::NotFound, PersonState::Complete, PersonState::NotFound]
    );
    assert_eq!(people[3].last_error.as_deref(), Some("no answer for this person in the response"));
    let rec = people[0].record.as_ref().unwrap();
    assert_eq!(rec["fields"]["title"], "CTO");
    assert!(rec["fields"].get("name").is_none(), "null fields are not stored");
    assert_eq!(rec["emails"][0]["sources"][0], "sync");
    assert_eq!(people[0].apollo_id.as_deref(), Some(crate::harness::apollo_id(people[0].id).as_str()));
    assert!(people[0].expect_phone && people[0].expect_waterfall);

    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.credits, Credits(4_500_000), "job credits add up to the call's");
    assert_eq!(jv.calls, 1);
    assert_eq!(jv.state, JobState::Running);
    let bv = store.get_batch(b.batch_id).await.unwrap().unwrap();
    assert_eq!(bv.state, BatchState::Submitted);
    assert_eq!(bv.request_id.map(|r| r.0), Some(-4211274463135576197));
    assert_eq!(bv.http_status, Some(200));
    assert!(bv.response.is_some());
    assert_counters_match(&store, &[j]).await;
}

async fn recording_twice_changes_nothing(store: Store) {
    let j = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, false, false)).await;
    let before = store.get_job(j).await.unwrap().unwrap();
    let again = store.record_sync(all_matched(&b, false, false)).await.unwrap();
    assert_eq!(again, SyncRecorded::AlreadyRecorded);
    let after = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(before.counts, after.counts);
    assert_eq!(before.credits, after.credits);
    assert_eq!(before.calls, after.calls);
}

async fn completion_creates_exactly_one_callback_row(store: Store) {
    let j = store.create_job(job("acme", 15, EnrichFlags::default())).await.unwrap().job.id;
    let b1 = claim(&store).await;
    let b2 = claim(&store).await;
    let done = record(&store, all_matched(&b1, false, false)).await;
    assert!(done.is_empty());
    assert!(store.get_job(j).await.unwrap().unwrap().callback.is_none());
    let done = record(&store, all_matched(&b2, false, false)).await;
    assert_eq!(done, vec![j]);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed);
    let cb = jv.callback.unwrap();
    assert_eq!(cb.state, CallbackState::Pending);
    assert_eq!(cb.attempts, 0);
    let _ = store.record_sync(all_matched(&b2, false, false)).await.unwrap();
    let _ = store.cancel_job(j).await.unwrap();
    use job_store::entities::callback_delivery;
    let rows = callback_delivery::Entity::find()
        .filter(callback_delivery::Column::JobId.eq(j))
        .count(store.connection())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

async fn one_answer_writes_every_primary_and_each_ones_duplicates(store: Store) {
    // Ten primaries in one call, three of them with duplicates (one has two): the answer's people
    // are written together, and every duplicate mirrors its own primary, not another's.
    let mut new = job("acme", 10, phone_and_waterfall());
    new.people.push(serde_json::json!({"email": "P1@example.com", "external_id": "dup-1"}).into());
    new.people.push(serde_json::json!({"email": "p4@EXAMPLE.com"}).into());
    new.people.push(serde_json::json!({"email": "p4@example.com ", "external_id": "dup-4b"}).into());
    new.people.push(serde_json::json!({"email": "p7@example.com"}).into());
    let j = store.create_job(new).await.unwrap().job.id;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 10);
    let mut outcome = all_matched(&b, true, false);
    outcome.people[4].outcome = SyncMatch::NotFound;
    outcome.people[7].expect_phone = false;
    record(&store, outcome).await;

    let people = store.list_people(j, None, 20).await.unwrap();
    let state = |i: usize| people[i].state;
    assert_eq!(state(1), PersonState::AwaitingAsync);
    assert_eq!(state(4), PersonState::NotFound);
    assert_eq!(state(7), PersonState::Complete);
    for (dup, primary) in [(10, 1), (11, 4), (12, 4), (13, 7)] {
        assert_eq!(people[dup].dup_of, Some(people[primary].id), "person {dup}");
        assert_eq!(state(dup), state(primary), "person {dup}");
        assert_eq!(people[dup].record, people[primary].record, "person {dup}");
        assert_eq!(people[dup].apollo_id, people[primary].apollo_id, "person {dup}");
        assert_eq!(people[dup].expect_phone, people[primary].expect_phone, "person {dup}");
        assert_eq!(people[dup].credits.micros(), 0, "credits stay on the person sent");
        assert_eq!(people[dup].batch_id, None, "duplicates are never in a batch");
    }
    assert_eq!(people[1].record.as_ref().unwrap()["emails"][0]["address"], "p1@example.com");
    assert_eq!(people[7].record.as_ref().unwrap()["emails"][0]["address"], "p7@example.com");
    assert_eq!(people[4].record, None);
    assert!(people[..10].iter().all(|p| p.credits.micros() == 1_000_000 && p.batch_id == Some(b.batch_id)));
    let job = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((job.counts.awaiting_async, job.counts.not_found, job.counts.complete), (9, 3, 2));
    assert_counters_match(&store, &[j]).await;
}

async fn answers_recorded_together_end_as_recorded_one_by_one(store: Store) {
    // Two jobs in two calls, one answered as found-and-done, one expecting parts: one group.
    let done = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b1 = claim(&store).await;
    let open = store.create_job(job("globex", 2, phone_and_waterfall())).await.unwrap().job.id;
    let b2 = claim(&store).await;
    let (o1, o2) = (all_matched(&b1, false, false), all_matched(&b2, true, true));
    let recorded = store.record_syncs(&[o1.clone(), o2]).await.unwrap();
    // The jobs the group completed are listed once, on its last recorded answer.
    assert_eq!(
        recorded,
        vec![SyncRecorded::Recorded { completed_jobs: vec![] }, SyncRecorded::Recorded { completed_jobs: vec![done] }]
    );
    let jd = store.get_job(done).await.unwrap().unwrap();
    assert_eq!((jd.state, jd.counts.complete, jd.credits), (JobState::Completed, 3, Credits::whole(3)));
    let jo = store.get_job(open).await.unwrap().unwrap();
    assert_eq!((jo.state, jo.counts.awaiting_async, jo.credits), (JobState::Running, 2, Credits::whole(2)));
    for b in [&b1, &b2] {
        assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().state, BatchState::Submitted);
    }
    assert_counters_match(&store, &[done, open]).await;
    // Recording either again changes nothing.
    assert_eq!(store.record_syncs(&[o1]).await.unwrap(), vec![SyncRecorded::AlreadyRecorded]);
}

async fn a_group_with_an_answer_the_store_refuses_records_nothing(store: Store) {
    let j = store.create_job(job("acme", 2, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    let good = all_matched(&b, false, false);
    let mut twice = good.clone();
    twice.batch_id = uuid::Uuid::now_v7(); // no such batch
    assert!(matches!(store.record_syncs(&[good.clone(), twice]).await, Err(job_store::StoreError::NotFound(_))));
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().state, BatchState::Submitting);
    assert_eq!(store.get_job(j).await.unwrap().unwrap().counts.submitted, 2, "nothing recorded");
    // Alone, the good one is recorded.
    assert_eq!(record(&store, good).await, vec![j]);
    assert_counters_match(&store, &[j]).await;
}
