//! One Apollo person behind several people of one batch (two jobs, two clients, or one job naming
//! a lead by email and again by LinkedIn URL): every one of them gets the delivered data.

use apollo_client::{Credits, parse_delivery};
use chrono::Utc;
use job_store::{ApplyOutcome, Store};
use rules::PersonState;

use crate::harness::{
    all_matched, assert_counters_match, claim, job, one_apollo_id, phone_and_waterfall, phone_body, record,
    waterfall_body,
};
use crate::store_tests;

store_tests!(every_person_with_one_apollo_id_gets_the_deliveries);

async fn every_person_with_one_apollo_id_gets_the_deliveries(store: Store) {
    // Two clients' jobs claimed into one batch; person 0 of each is the same lead, and the first
    // job names that lead twice.
    let a = store.create_job(job("acme", 3, phone_and_waterfall())).await.unwrap().job.id;
    let b = store.create_job(job("globex", 2, phone_and_waterfall())).await.unwrap().job.id;
    let batch = claim(&store).await;
    assert_eq!(batch.people.len(), 5, "both jobs in one batch");
    let email = |p: &job_store::ClaimedPerson| p.input["email"].as_str().unwrap_or_default().to_string();
    let same: Vec<usize> = (0..batch.people.len())
        .filter(|&i| {
            let p = &batch.people[i];
            let e = email(p);
            (p.job_id == a && (e == "p0@example.com" || e == "p2@example.com"))
                || (p.job_id == b && e == "p0@example.com")
        })
        .collect();
    assert_eq!(same.len(), 3, "{same:?}");
    let mut outcome = all_matched(&batch, true, true);
    let lead = one_apollo_id(&mut outcome, &same);
    record(&store, outcome).await;
    for body in [phone_body(std::slice::from_ref(&lead), 8.0), waterfall_body(std::slice::from_ref(&lead), 2.0)] {
        let d = store.store_delivery(batch.batch_id, &body, Utc::now()).await.unwrap().id();
        let applied = store.apply_delivery(d, &parse_delivery(&body).unwrap()).await.unwrap();
        assert!(matches!(applied, ApplyOutcome::Applied { .. }), "{applied:?}");
    }
    let mut got = 0;
    for j in [a, b] {
        for p in store.list_people(j, None, 10).await.unwrap() {
            if p.apollo_id.as_deref() != Some(lead.as_str()) {
                continue;
            }
            got += 1;
            assert_eq!(p.state, PersonState::Complete, "{p:?}");
            let record = p.record.as_ref().expect("record");
            let phones: Vec<&str> =
                record["phones"].as_array().unwrap().iter().filter_map(|x| x["e164"].as_str()).collect();
            assert_eq!(phones, ["+15125550100"], "the mobile reached {p:?}");
            let emails = record["emails"].as_array().unwrap();
            assert!(
                emails.iter().any(|e| e["vendors"] == serde_json::json!(["Hunter"])),
                "the waterfall email reached {p:?}"
            );
        }
    }
    assert_eq!(got, 3);
    assert_counters_match(&store, &[a, b]).await;
    // Charged once: the call's 5 credits, one mobile, one waterfall find, across both jobs.
    let credits = |j| {
        let store = store.clone();
        async move { store.get_job(j).await.unwrap().unwrap().credits }
    };
    assert_eq!(credits(a).await + credits(b).await, Credits::whole(5 + 8 + 2));
}
