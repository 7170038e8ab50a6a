//! Inbound deliveries: dedup, hold-until-answer, batch isolation, merge, deadlines.

use apollo_client::EnrichFlags;
use apollo_client::{Credits, parse_delivery};
use chrono::Utc;
use job_store::{ApplyOutcome, InboundDelivery, Store, StoredDelivery};
use rules::records::SyncMatch;
use rules::{DeliveryState, JobState, PersonState};
use uuid::Uuid;

use crate::harness::{
    Backend, TestDb, all_matched, apollo_id, assert_counters_match, claim, job, phone_and_waterfall, phone_body,
    record, waterfall_body,
};
use crate::store_tests;

store_tests!(
    storing_the_same_delivery_twice_is_a_no_op,
    a_group_of_deliveries_dedups_within_and_across_groups,
    delivery_before_the_answer_is_held_then_applied,
    delivery_only_touches_its_own_batch,
    applying_twice_does_not_double_count,
    deliveries_in_either_order_give_the_same_record,
    missing_parts_expire_to_partial_and_a_late_part_completes,
    overdue_batches_and_failed_deliveries,
    a_group_of_merges_is_one_transaction_with_each_outcome,
    a_group_ends_as_its_deliveries_applied_in_turn,
    a_payloads_charge_goes_to_the_jobs_of_the_matched_people,
);

fn apply_ok(outcome: ApplyOutcome) -> (usize, Vec<String>) {
    match outcome {
        ApplyOutcome::Applied { matched, unmatched, .. } => (matched, unmatched),
        other => panic!("expected Applied, got {other:?}"),
    }
}

async fn storing_the_same_delivery_twice_is_a_no_op(store: Store) {
    store.create_job(job("acme", 1, phone_and_waterfall())).await.unwrap();
    let b = claim(&store).await;
    let body = phone_body(&[apollo_id(b.people[0].person_id)], 8.0);
    let first = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap();
    let second = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap();
    assert!(matches!(first, StoredDelivery::Stored { .. }));
    assert_eq!(second, StoredDelivery::Duplicate { id: first.id() });
    // A different body is a different delivery.
    let other = store.store_delivery(b.batch_id, b"{}", Utc::now()).await.unwrap();
    assert!(matches!(other, StoredDelivery::Stored { .. }));
    let unknown = store.store_delivery(Uuid::now_v7(), &body, Utc::now()).await;
    assert!(matches!(unknown, Err(job_store::StoreError::NotFound(_))), "{unknown:?}");
}

async fn a_group_of_deliveries_dedups_within_and_across_groups(store: Store) {
    store.create_job(job("acme", 1, phone_and_waterfall())).await.unwrap();
    let b = claim(&store).await;
    let phone = phone_body(&[apollo_id(b.people[0].person_id)], 8.0);
    let earlier = store.store_delivery(b.batch_id, b"{\"people\": []}", Utc::now()).await.unwrap();
    // Reordered keys and spacing are the same delivery.
    let same_as_earlier: &[u8] = b"{ \"people\" : [ ] }";
    let unknown = Uuid::now_v7();
    let item = |batch_id, body| InboundDelivery { batch_id, claim: None, body };
    let items = vec![
        item(b.batch_id, &phone[..]),
        item(unknown, &phone[..]),
        item(b.batch_id, &phone[..]),
        item(b.batch_id, same_as_earlier),
    ];
    let got = store.store_deliveries(&items, Utc::now()).await.unwrap();
    assert_eq!(got.len(), 4);
    let first = match &got[0] {
        Ok(StoredDelivery::Stored { id }) => *id,
        other => panic!("expected Stored, got {other:?}"),
    };
    assert!(matches!(got[1], Err(job_store::StoreError::NotFound(_))), "{:?}", got[1]);
    assert_eq!(got[2].as_ref().unwrap(), &StoredDelivery::Duplicate { id: first });
    assert_eq!(got[3].as_ref().unwrap(), &StoredDelivery::Duplicate { id: earlier.id() });
    let pending = store.pending_deliveries(10).await.unwrap();
    assert!(pending.is_empty(), "held until the answer: {pending:?}");
}

async fn delivery_before_the_answer_is_held_then_applied(store: Store) {
    let j = store.create_job(job("acme", 2, EnrichFlags { reveal_phone_number: true, ..Default::default() })).await;
    let j = j.unwrap().job.id;
    let b = claim(&store).await;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let body = phone_body(&ids, 16.0);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    assert!(store.pending_deliveries(10).await.unwrap().is_empty(), "held until the answer is recorded");
    let parsed = parse_delivery(&body).unwrap();
    assert_eq!(store.apply_delivery(d, &parsed).await.unwrap(), ApplyOutcome::NotReady);

    record(&store, all_matched(&b, true, false)).await;
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].body, body);
    let (matched, unmatched) =
        apply_ok(store.apply_delivery(d, &parse_delivery(&pending[0].body).unwrap()).await.unwrap());
    assert_eq!((matched, unmatched.len()), (2, 0));
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed);
    assert_eq!(jv.counts.complete, 2);
    assert_eq!(jv.credits, Credits::whole(2 + 16));
    let people = store.list_people(j, None, 10).await.unwrap();
    let phones = &people[0].record.as_ref().unwrap()["phones"];
    assert_eq!(phones[0]["e164"], "+15125550100");
    assert_eq!(phones[0]["sources"][0], "phone_webhook");
    assert!(people.iter().all(|p| p.got_phone));
    assert!(store.pending_deliveries(10).await.unwrap().is_empty());
    assert_eq!(store.get_delivery(d).await.unwrap().unwrap().state, DeliveryState::Processed);
}

async fn delivery_only_touches_its_own_batch(store: Store) {
    let opts = EnrichFlags { reveal_phone_number: true, ..Default::default() };
    let j = store.create_job(job("acme", 12, opts)).await.unwrap().job.id;
    let a = claim(&store).await;
    let b = claim(&store).await;
    record(&store, all_matched(&a, true, false)).await;
    record(&store, all_matched(&b, true, false)).await;
    let before_b: Vec<_> =
        store.list_people(j, None, 20).await.unwrap().into_iter().filter(|p| p.batch_id == Some(b.batch_id)).collect();
    // A delivery to batch A's URL that names a person of batch B.
    let body = phone_body(&[apollo_id(b.people[0].person_id)], 8.0);
    let d = store.store_delivery(a.batch_id, &body, Utc::now()).await.unwrap().id();
    let (matched, unmatched) = apply_ok(store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap());
    assert_eq!(matched, 0);
    assert_eq!(unmatched, vec![apollo_id(b.people[0].person_id)]);
    let after: Vec<_> = store.list_people(j, None, 20).await.unwrap();
    let after_b: Vec<_> = after.iter().filter(|p| p.batch_id == Some(b.batch_id)).cloned().collect();
    assert_eq!(before_b, after_b, "batch B's people were not touched");
    // The payload still counts as batch A's phone delivery: A's people have their part.
    assert!(after.iter().filter(|p| p.batch_id == Some(a.batch_id)).all(|p| p.state == PersonState::Complete));
    assert_counters_match(&store, &[j]).await;
}

async fn applying_twice_does_not_double_count(store: Store) {
    let j = store.create_job(job("acme", 1, phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    let body = waterfall_body(&[apollo_id(b.people[0].person_id)], 3.5);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    let parsed = parse_delivery(&body).unwrap();
    apply_ok(store.apply_delivery(d, &parsed).await.unwrap());
    let once = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(store.apply_delivery(d, &parsed).await.unwrap(), ApplyOutcome::AlreadyProcessed);
    let twice = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(once.credits, twice.credits);
    assert_eq!(once.credits, Credits(4_500_000));
    assert_eq!(once.counts, twice.counts);
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().credits, Credits(4_500_000));
    let p = &store.list_people(j, None, 1).await.unwrap()[0];
    assert_eq!(p.state, PersonState::AwaitingAsync, "the phone part is still missing");
    assert!(p.got_waterfall && !p.got_phone);
}

async fn deliveries_in_either_order_give_the_same_record(store: Store) {
    let mut records = Vec::new();
    for phone_first in [true, false] {
        let j = store.create_job(job("acme", 1, phone_and_waterfall())).await.unwrap().job.id;
        let b = claim(&store).await;
        let mut outcome = all_matched(&b, true, true);
        // Same Apollo id in both runs, so the records can be compared.
        outcome.people[0].apollo_id = Some("ap_same_person_000".into());
        outcome.people[0].facts.apollo_id = Some("ap_same_person_000".into());
        outcome.people[0].facts.emails[0].address = "dana@example.com".into();
        record(&store, outcome).await;
        let ids = vec!["ap_same_person_000".to_owned()];
        let bodies = [phone_body(&ids, 8.0), waterfall_body(&ids, 2.0)];
        let order: [usize; 2] = if phone_first { [0, 1] } else { [1, 0] };
        for i in order {
            let d = store.store_delivery(b.batch_id, &bodies[i], Utc::now()).await.unwrap().id();
            apply_ok(store.apply_delivery(d, &parse_delivery(&bodies[i]).unwrap()).await.unwrap());
        }
        let p = store.list_people(j, None, 1).await.unwrap().remove(0);
        assert_eq!(p.state, PersonState::Complete);
        records.push(p.record.unwrap());
    }
    assert_eq!(records[0], records[1]);
    assert_eq!(records[0]["emails"].as_array().unwrap().len(), 2);
}

async fn missing_parts_expire_to_partial_and_a_late_part_completes(store: Store) {
    let j = store.create_job(job("acme", 2, phone_and_waterfall())).await.unwrap().job.id;
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    let ids: Vec<String> = b.people.iter().map(|p| apollo_id(p.person_id)).collect();
    let body = phone_body(&ids, 16.0);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    apply_ok(store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap());
    assert_eq!(store.expire_parts(Utc::now() - chrono::Duration::hours(1)).await.unwrap(), 0);
    assert_eq!(store.expire_parts(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 2);
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!(jv.state, JobState::Completed, "partial is terminal");
    assert_eq!(jv.counts.partial, 2);
    let people = store.list_people(j, None, 10).await.unwrap();
    assert!(people.iter().all(|p| p.missing_parts == ["waterfall"]));
    // The waterfall arrives after all: the people complete (the job stays completed).
    let body = waterfall_body(&ids, 4.0);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    apply_ok(store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap());
    let jv = store.get_job(j).await.unwrap().unwrap();
    assert_eq!((jv.counts.partial, jv.counts.complete), (0, 2));
    assert!(store.list_people(j, None, 10).await.unwrap().iter().all(|p| p.missing_parts.is_empty()));
    assert_counters_match(&store, &[j]).await;
}

async fn overdue_batches_and_failed_deliveries(store: Store) {
    store.create_job(job("acme", 1, phone_and_waterfall())).await.unwrap();
    let b = claim(&store).await;
    record(&store, all_matched(&b, true, true)).await;
    assert!(store.overdue_batches(Utc::now() - chrono::Duration::minutes(5), Utc::now(), 10).await.unwrap().is_empty());
    let overdue = store.overdue_batches(Utc::now() + chrono::Duration::seconds(1), Utc::now(), 10).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].batch_id, b.batch_id);
    assert!(overdue[0].awaiting_phone && overdue[0].awaiting_waterfall);
    assert_eq!(overdue[0].phone_request_id.as_deref(), Some("phone-job-1"));

    let d = store.store_delivery(b.batch_id, b"not json", Utc::now()).await.unwrap().id();
    assert!(store.fail_delivery(d, "delivery body is not JSON").await.unwrap());
    assert!(!store.fail_delivery(d, "again").await.unwrap());
    let row = store.get_delivery(d).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert_eq!(row.parse_error.as_deref(), Some("delivery body is not JSON"));
    assert!(store.pending_deliveries(10).await.unwrap().is_empty());
}

async fn a_group_of_merges_is_one_transaction_with_each_outcome(store: Store) {
    // Two jobs, two calls, four deliveries applied as one group, plus one already applied and
    // one whose call has no answer yet: people, deliveries and jobs end as applying them in turn.
    let a = store.create_job(job("acme", 10, phone_and_waterfall())).await.unwrap().job.id;
    let b1 = claim(&store).await;
    let c = store.create_job(job("globex", 2, phone_and_waterfall())).await.unwrap().job.id;
    let b2 = claim(&store).await;
    let b3_job = store.create_job(job("initech", 1, phone_and_waterfall())).await.unwrap().job.id;
    let b3 = claim(&store).await;
    record(&store, all_matched(&b1, true, true)).await;
    record(&store, all_matched(&b2, true, true)).await;
    let ids = |b: &job_store::ClaimedBatch| b.people.iter().map(|p| apollo_id(p.person_id)).collect::<Vec<_>>();
    let stored = |batch_id, body: Vec<u8>| {
        let store = store.clone();
        async move { store.store_delivery(batch_id, &body, Utc::now()).await.unwrap().id() }
    };
    let p1 = stored(b1.batch_id, phone_body(&ids(&b1), 10.0)).await;
    let w1 = stored(b1.batch_id, waterfall_body(&ids(&b1), 5.0)).await;
    let p2 = stored(b2.batch_id, phone_body(&ids(&b2), 2.0)).await;
    let w2 = stored(b2.batch_id, waterfall_body(&ids(&b2), 1.0)).await;
    let early = stored(b3.batch_id, phone_body(&ids(&b3), 1.0)).await;
    let parse = |id: Uuid| {
        let store = store.clone();
        async move { parse_delivery(&store.get_delivery(id).await.unwrap().unwrap().body).unwrap() }
    };
    let (dp1, dw1, dp2, dw2, dearly) =
        (parse(p1).await, parse(w1).await, parse(p2).await, parse(w2).await, parse(early).await);
    apply_ok(store.apply_delivery(p2, &dp2).await.unwrap());

    let group = [(p1, &dp1), (w1, &dw1), (p2, &dp2), (w2, &dw2), (early, &dearly)];
    let outcomes = store.apply_deliveries(&group).await.unwrap();
    assert_eq!(outcomes.len(), 5);
    assert!(
        matches!(&outcomes[0], ApplyOutcome::Applied { matched: 10, completed_jobs, .. } if completed_jobs.is_empty())
    );
    assert!(
        matches!(&outcomes[1], ApplyOutcome::Applied { matched: 10, completed_jobs, .. } if completed_jobs.is_empty())
    );
    assert_eq!(outcomes[2], ApplyOutcome::AlreadyProcessed);
    // The jobs the group completed, on its last applied delivery.
    assert!(
        matches!(&outcomes[3], ApplyOutcome::Applied { matched: 2, completed_jobs, .. } if *completed_jobs == [a, c])
    );
    assert_eq!(outcomes[4], ApplyOutcome::NotReady);

    let ja = store.get_job(a).await.unwrap().unwrap();
    assert_eq!((ja.state, ja.counts.complete), (JobState::Completed, 10));
    assert_eq!(ja.credits_by_kind.phone, Credits::whole(10));
    assert_eq!(ja.credits_by_kind.waterfall, Credits::whole(5));
    let jc = store.get_job(c).await.unwrap().unwrap();
    assert_eq!(
        (jc.state, jc.credits_by_kind.phone, jc.credits_by_kind.waterfall),
        (JobState::Completed, Credits::whole(2), Credits::whole(1))
    );
    let people = store.list_people(a, None, 10).await.unwrap();
    assert!(people.iter().all(|p| p.got_phone && p.got_waterfall && p.state == PersonState::Complete));
    assert_eq!(people[3].record.as_ref().unwrap()["phones"][0]["e164"], "+15125550103");
    assert_eq!(people[0].credits.micros(), 1_000_000 + 1_000_000 + 500_000, "sync, phone and waterfall shares");
    let held = store.get_delivery(early).await.unwrap().unwrap();
    assert_eq!(held.state, DeliveryState::Pending, "held until its call is answered");
    assert_counters_match(&store, &[a, c, b3_job]).await;

    // A group with a delivery that does not exist changes nothing.
    let again = [(early, &dearly), (Uuid::now_v7(), &dp1)];
    record(&store, all_matched(&b3, true, true)).await;
    assert!(matches!(store.apply_deliveries(&again).await, Err(job_store::StoreError::NotFound(_))));
    assert_eq!(store.get_delivery(early).await.unwrap().unwrap().state, DeliveryState::Pending);
    apply_ok(store.apply_delivery(early, &dearly).await.unwrap());
    assert!(store.list_people(b3_job, None, 1).await.unwrap()[0].got_phone);
}

/// Jobs, batches and stored deliveries for [`a_group_ends_as_its_deliveries_applied_in_turn`],
/// the same on every store (Apollo ids by position, not by person id): two batches spanning three
/// jobs, one Apollo person twice in a call and once more in the other call waiting for a phone
/// Apollo skipped, one job erased before its deliveries, parts charged once per request.
async fn group_scenario(store: &Store) -> (Vec<Uuid>, Vec<(Uuid, apollo_client::Delivery)>) {
    let a = store.create_job(job("acme", 4, phone_and_waterfall())).await.unwrap().job.id;
    let b = store.create_job(job("globex", 3, phone_and_waterfall())).await.unwrap().job.id;
    let b1 = claim(store).await;
    let mut answer = all_matched(&b1, true, true);
    for (k, p) in answer.people.iter_mut().enumerate() {
        let id = format!("ap_{}", if k == 4 { 0 } else { k });
        p.apollo_id = Some(id.clone());
        p.facts.apollo_id = Some(id);
    }
    record(store, answer).await;
    let c =
        store.create_job(job("initech", 2, EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() })).await;
    let c = c.unwrap().job.id;
    let b2 = claim(store).await;
    let mut answer = all_matched(&b2, true, false);
    for (k, p) in answer.people.iter_mut().enumerate() {
        let id = format!("ap_c{k}");
        p.apollo_id = Some(if k == 0 { "ap_0".to_owned() } else { id.clone() });
        p.facts.apollo_id = p.apollo_id.clone();
        p.phone_elsewhere = k == 0;
    }
    record(store, answer).await;
    store.erase_job(b).await.unwrap();

    let ids = |n: std::ops::Range<usize>| n.map(|k| format!("ap_{k}")).collect::<Vec<_>>();
    let bodies = [
        (b1.batch_id, waterfall_body(&ids(0..3), 2.5)),
        (b1.batch_id, phone_body(&ids(0..6), 6.0)),
        (b2.batch_id, phone_body(&["ap_c1".to_owned()], 1.0)),
        // A second phone delivery of the same request: merged, not charged again.
        (b1.batch_id, phone_body(&ids(4..6), 2.0)),
        (b1.batch_id, waterfall_body(&ids(3..6), 1.5)),
    ];
    let mut deliveries = Vec::new();
    for (batch_id, body) in bodies {
        let id = store.store_delivery(batch_id, &body, Utc::now()).await.unwrap().id();
        deliveries.push((id, parse_delivery(&body).unwrap()));
    }
    (vec![a, b, c], deliveries)
}

/// What a store holds after [`group_scenario`], without ids and times.
async fn group_scenario_result(store: &Store, jobs: &[Uuid], deliveries: &[Uuid]) -> Vec<String> {
    let mut out = Vec::new();
    for j in jobs {
        let v = store.get_job(*j).await.unwrap().unwrap();
        out.push(format!(
            "job {:?} {:?} {:?} {:?} {} events",
            v.state,
            v.counts,
            v.credits,
            v.credits_by_kind,
            v.callback_events.len()
        ));
        for p in store.list_people(*j, None, 100).await.unwrap() {
            out.push(format!(
                "person {} {:?} {:?} {} {} {:?} {:?} {}",
                p.ordinal,
                p.state,
                p.apollo_id,
                p.got_phone,
                p.got_waterfall,
                p.missing_parts,
                p.credits,
                p.record.map(|r| r.to_string()).unwrap_or_default()
            ));
        }
    }
    for d in deliveries {
        let d = store.get_delivery(*d).await.unwrap().unwrap();
        out.push(format!("delivery {:?} {:?} {} {}", d.state, d.kind, d.credits_micros, d.body.len()));
    }
    out
}

async fn a_group_ends_as_its_deliveries_applied_in_turn(store: Store) {
    // The oracle: the same scenario on a second, fresh database, its deliveries applied one by one.
    let backend = if store.is_shared() { Backend::Pg } else { Backend::Sqlite };
    let other = TestDb::create(backend).await;
    let (jobs_one, one) = group_scenario(&other.store).await;
    let mut completed_one = Vec::new();
    for (id, parsed) in &one {
        match other.store.apply_delivery(*id, parsed).await.unwrap() {
            ApplyOutcome::Applied { completed_jobs, .. } => completed_one.extend(completed_jobs),
            o => panic!("{o:?}"),
        }
    }
    let ids_one: Vec<Uuid> = one.iter().map(|(id, _)| *id).collect();
    let in_turn = group_scenario_result(&other.store, &jobs_one, &ids_one).await;
    other.destroy().await;

    let (jobs, group) = group_scenario(&store).await;
    let items: Vec<_> = group.iter().map(|(id, parsed)| (*id, parsed)).collect();
    let outcomes = store.apply_deliveries(&items).await.unwrap();
    assert_eq!(outcomes.len(), items.len());
    let ids: Vec<Uuid> = group.iter().map(|(id, _)| *id).collect();
    let grouped = group_scenario_result(&store, &jobs, &ids).await;
    assert_eq!(grouped, in_turn);
    assert_counters_match(&store, &jobs).await;

    // The scenario does what it says: the erased job's people got parts but no data, the
    // delivery naming them lost its body, the waiting person got the phone, the second phone
    // delivery was free, and the same jobs completed.
    let position =
        |job: usize| completed_one.iter().filter_map(|j| jobs_one.iter().position(|x| x == j)).any(|p| p == job);
    let completed = match outcomes.last() {
        Some(ApplyOutcome::Applied { completed_jobs, .. }) => completed_jobs.clone(),
        o => panic!("{o:?}"),
    };
    for (k, j) in jobs.iter().enumerate() {
        assert_eq!(completed.contains(j), position(k), "job {k} completes alike");
    }
    let deliveries: Vec<&String> = grouped.iter().filter(|l| l.starts_with("delivery")).collect();
    assert_eq!(deliveries.len(), 5);
    assert_eq!(deliveries[3], "delivery Processed Some(\"phone\") 0 0", "the second phone delivery is free");
    assert!(deliveries[1].starts_with("delivery Processed Some(\"phone\") 6000000 "));
    let emptied: Vec<bool> = deliveries.iter().map(|l| l.ends_with(" 0")).collect();
    assert_eq!(emptied, [true, true, false, true, true], "bodies naming the erased job's people go");
    let c_first = store.list_people(jobs[2], None, 1).await.unwrap().remove(0);
    assert!(c_first.got_phone && c_first.record.unwrap()["phones"].as_array().is_some_and(|p| !p.is_empty()));
    let erased = store.list_people(jobs[1], None, 10).await.unwrap();
    assert!(erased.iter().all(|p| p.record.is_none() && p.got_phone), "{erased:#?}");
}

async fn a_payloads_charge_goes_to_the_jobs_of_the_matched_people(store: Store) {
    // One call for two jobs: `done`'s only person is not matched, `waits`'s three are.
    let flags = EnrichFlags { run_waterfall_email: true, ..Default::default() };
    let done = store.create_job(job("acme", 1, flags)).await.unwrap().job.id;
    let mut other = job("acme", 3, flags);
    other.people = (10..13).map(|i| crate::harness::person(i).into()).collect();
    let waits = store.create_job(other).await.unwrap().job.id;
    let b = claim(&store).await;
    assert_eq!(b.people.len(), 4, "both jobs in one call");
    let mut outcome = all_matched(&b, false, true);
    for p in
        outcome.people.iter_mut().filter(|p| b.people.iter().any(|c| c.person_id == p.person_id && c.job_id == done))
    {
        p.outcome = SyncMatch::NotFound;
        p.apollo_id = None;
        p.facts = Default::default();
        p.expect_waterfall = false;
    }
    outcome.credits = Credits::ZERO;
    record(&store, outcome).await;
    let finished = store.get_job(done).await.unwrap().unwrap();
    assert_eq!(finished.state, JobState::Completed, "final at the answer");

    let ids: Vec<String> = b.people.iter().filter(|p| p.job_id == waits).map(|p| apollo_id(p.person_id)).collect();
    let body = waterfall_body(&ids, 6.0);
    let d = store.store_delivery(b.batch_id, &body, Utc::now()).await.unwrap().id();
    apply_ok(store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap());
    let after = store.get_job(done).await.unwrap().unwrap();
    assert_eq!(after.credits, finished.credits, "a finished job takes no later charge");
    assert_eq!(store.get_job(waits).await.unwrap().unwrap().credits, Credits::whole(6), "all of it");
    assert_eq!(store.get_batch(b.batch_id).await.unwrap().unwrap().credits, Credits::whole(6));
    assert_counters_match(&store, &[done, waits]).await;
}
