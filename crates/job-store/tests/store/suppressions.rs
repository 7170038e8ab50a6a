//! The do-not-enrich list in the store: listed people never reach a claim (listed before the job,
//! or after it while they wait), scopes stay apart, erasing with `suppress` lists a job's people.

use apollo_client::EnrichFlags;
use chrono::Utc;
use job_store::{NewJob, Scope, Store};
use rules::events::PersonEvents;
use rules::suppression::SuppressionKey;
use rules::{CallbackEvent, JobState, PersonState, SuppressionKind as K};
use serde_json::json;

use crate::harness::{LEASE, all_matched, assert_counters_match, claim, job, person, record};
use crate::store_tests;

store_tests!(
    listed_people_are_suppressed_at_creation_with_their_duplicates,
    an_entry_added_after_submission_holds_at_the_claim,
    scopes_are_apart_and_global_applies_to_everyone,
    erasing_with_suppress_lists_the_jobs_people,
    entries_are_added_once_listed_and_removed,
    listed_people_get_their_person_completed,
);

fn key() -> SuppressionKey {
    SuppressionKey::new("store-test-suppression-key").unwrap()
}

fn keyed(store: Store) -> Store {
    store.with_suppression_key(key())
}

fn entry(kind: K, raw: &str) -> (K, String) {
    (kind, key().hash_raw(kind, raw).unwrap())
}

/// Every claimable person, claimed and answered: the emails of everyone sent.
async fn send_all(store: &Store) -> Vec<String> {
    let mut sent = Vec::new();
    while let Some(b) = store.claim_batch("t", LEASE, Utc::now()).await.unwrap() {
        sent.extend(b.people.iter().map(|p| p.input["email"].as_str().unwrap_or_default().to_owned()));
        record(store, all_matched(&b, false, false)).await;
    }
    sent
}

async fn listed_people_are_suppressed_at_creation_with_their_duplicates(store: Store) {
    let store = keyed(store);
    let scope = Scope::Client("acme".into());
    store
        .add_suppressions(
            &scope,
            &[
                entry(K::Email, "P1@Example.com"),
                entry(K::LinkedinUrl, "https://www.linkedin.com/in/lin/"),
                entry(K::ApolloId, "AAAAAAAAAAAAAAAAAAAAAAAA"),
                entry(K::Domain, "blocked.io"),
            ],
        )
        .await
        .unwrap();
    let mut new = job("acme", 4, EnrichFlags::default());
    new.people.push(json!({"linkedin_url": "linkedin.com/in/LIN", "first_name": "L"}).into());
    new.people.push(json!({"id": "aaaaaaaaaaaaaaaaaaaaaaaa"}).into());
    new.people.push(json!({"first_name": "D", "last_name": "X", "domain": "www.blocked.io"}).into());
    new.people.push(json!({"email": "someone@blocked.io"}).into());
    // A duplicate (same email) of an unlisted person, with a listed LinkedIn URL: the group goes.
    new.people.push(json!({"email": "p2@example.com", "linkedin_url": "linkedin.com/in/lin"}).into());
    let id = store.create_job(new).await.unwrap().job.id;
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(j.counts.suppressed, 7, "p1, four by kind, p2 and its duplicate");
    assert_eq!(j.counts.queued, 2);
    assert_counters_match(&store, &[id]).await;
    let sent = send_all(&store).await;
    assert_eq!(sent, vec!["p0@example.com", "p3@example.com"]);
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    let people = store.list_people(id, None, 100).await.unwrap();
    let suppressed: Vec<i64> =
        people.iter().filter(|p| p.state == PersonState::Suppressed).map(|p| p.ordinal).collect();
    assert_eq!(suppressed, vec![1, 2, 4, 5, 6, 7, 8]);
    assert!(people.iter().filter(|p| p.state == PersonState::Suppressed).all(|p| p.credits.micros() == 0));
    assert_counters_match(&store, &[id]).await;

    // Every person of a job listed: the job completes at once.
    let all = NewJob { people: vec![person(1).into()], ..job("acme", 0, EnrichFlags::default()) };
    let id = store.create_job(all).await.unwrap().job.id;
    assert_eq!(store.get_job(id).await.unwrap().unwrap().state, JobState::Completed);
}

async fn an_entry_added_after_submission_holds_at_the_claim(store: Store) {
    let store = keyed(store);
    let id = store.create_job(job("acme", 25, EnrichFlags::default())).await.unwrap().job.id;
    let first = claim(&store).await;
    assert_eq!(first.people.len(), 10);
    // p3 is in a call already (it finishes); p12 and p20 wait in the queue.
    let scope = Scope::Client("acme".into());
    let entries =
        [entry(K::Email, "p3@example.com"), entry(K::Email, "p12@example.com"), entry(K::Email, "p20@example.com")];
    assert_eq!(store.add_suppressions(&scope, &entries).await.unwrap().added, 3);
    record(&store, all_matched(&first, false, false)).await;
    let sent = send_all(&store).await;
    assert_eq!(sent.len(), 13);
    assert!(!sent.iter().any(|e| e == "p12@example.com" || e == "p20@example.com"), "{sent:?}");
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((j.counts.suppressed, j.counts.complete), (2, 23));
    assert_counters_match(&store, &[id]).await;

    // Waiting in a batch for a retry (a 429): listed then, not sent again.
    let id = store.create_job(job("beta", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    assert!(store.schedule_retry(b.batch_id, Utc::now(), false, "429").await.unwrap());
    store.add_suppressions(&Scope::Client("beta".into()), &[entry(K::Email, "p0@example.com")]).await.unwrap();
    let again = claim(&store).await;
    assert_eq!(again.batch_id, b.batch_id);
    assert_eq!(again.people.len(), 2);
    assert!(again.people.iter().all(|p| p.input["email"] != "p0@example.com"));
    record(&store, all_matched(&again, false, false)).await;
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((j.counts.suppressed, j.counts.complete, j.state), (1, 2, JobState::Completed));
    assert_counters_match(&store, &[id]).await;
}

async fn scopes_are_apart_and_global_applies_to_everyone(store: Store) {
    let store = keyed(store);
    store.add_suppressions(&Scope::Client("acme".into()), &[entry(K::Email, "p0@example.com")]).await.unwrap();
    store.add_suppressions(&Scope::Global, &[entry(K::Email, "p1@example.com")]).await.unwrap();
    // beta's entries match none of its people (p0..p2@example.com).
    let beta = [entry(K::Email, "p9@example.com"), entry(K::Domain, "example.org")];
    store.add_suppressions(&Scope::Client("beta".into()), &beta).await.unwrap();
    // /metrics' counts: the clients' lists together, the global one apart, by kind.
    let mut counts = store.suppression_counts().await.unwrap();
    counts.sort_by_key(|(global, kind, _)| (*global, kind.as_str()));
    assert_eq!(counts, [(false, K::Domain, 1), (false, K::Email, 2), (true, K::Email, 1)]);
    let a = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job;
    let b = store.create_job(job("beta", 3, EnrichFlags::default())).await.unwrap().job;
    assert_eq!(a.counts.suppressed, 2, "its own entry and the global one");
    assert_eq!(b.counts.suppressed, 1, "only the global one: acme's list is acme's");
    let sent = send_all(&store).await;
    let mut sorted = sent.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["p0@example.com", "p2@example.com", "p2@example.com"]);
}

async fn erasing_with_suppress_lists_the_jobs_people(store: Store) {
    let store = keyed(store);
    let first = store.create_job(job("acme", 3, EnrichFlags::default())).await.unwrap().job.id;
    let b = claim(&store).await;
    let mut matched = all_matched(&b, false, false);
    // Apollo ids as Apollo writes them (24 hex characters).
    for (i, p) in matched.people.iter_mut().enumerate() {
        p.apollo_id = Some(format!("{:024x}", 0xabc0 + i));
    }
    let apollo_ids: Vec<String> = matched.people.iter().filter_map(|p| p.apollo_id.clone()).collect();
    record(&store, matched).await;
    let erased = store.erase_job_with(first, true).await.unwrap();
    let added = erased.suppressed.expect("entries added");
    // Per person: the email and the Apollo id it was matched to (no domain entries).
    assert_eq!(added.added, 6, "{added:?}");
    let listed = store.list_suppressions(&Scope::Client("acme".into()), None, 100).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed.iter().all(|e| e.kind != K::Domain));
    assert_eq!(listed.iter().filter(|e| e.kind == K::ApolloId).count(), apollo_ids.len());

    // The same people again, by email and by the Apollo id: none is sent.
    let mut again = job("acme", 3, EnrichFlags::default());
    again.people.extend(apollo_ids.iter().map(|id| json!({"id": id}).into()));
    again.people.push(person(7).into());
    let id = store.create_job(again).await.unwrap().job.id;
    let sent = send_all(&store).await;
    assert_eq!(sent, vec!["p7@example.com"]);
    assert_eq!(store.get_job(id).await.unwrap().unwrap().counts.suppressed, 6);
    // Another client is not affected.
    store.create_job(job("beta", 3, EnrichFlags::default())).await.unwrap();
    assert_eq!(send_all(&store).await.len(), 3);
}

async fn entries_are_added_once_listed_and_removed(store: Store) {
    let store = keyed(store);
    let scope = Scope::Client("acme".into());
    let e = entry(K::Email, "dana@example.com");
    let d = entry(K::Domain, "example.com");
    let first = store.add_suppressions(&scope, &[e.clone(), d.clone(), e.clone()]).await.unwrap();
    assert_eq!((first.added, first.already_present), (2, 1));
    let again = store.add_suppressions(&scope, std::slice::from_ref(&e)).await.unwrap();
    assert_eq!((again.added, again.already_present), (0, 1));
    let listed = store.list_suppressions(&scope, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|x| (x.kind, x.hash.clone())).collect::<Vec<_>>(), vec![e.clone(), d.clone()]);
    let page = store.list_suppressions(&scope, Some(listed[0].id), 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(store.list_suppressions(&Scope::Global, None, 10).await.unwrap().is_empty());
    assert!(!store.remove_suppression(&Scope::Client("beta".into()), listed[0].id).await.unwrap(), "another scope");
    assert!(store.remove_suppression(&scope, listed[0].id).await.unwrap());
    assert!(store.remove_suppression_hash(&scope, &d.1).await.unwrap());
    assert!(!store.remove_suppression_hash(&scope, &d.1).await.unwrap());
    assert!(store.list_suppressions(&scope, None, 10).await.unwrap().is_empty());
    // Removed: the person is sent again.
    let id = store
        .create_job(NewJob {
            people: vec![json!({"email": "dana@example.com"}).into()],
            ..job("acme", 0, EnrichFlags::default())
        })
        .await
        .unwrap()
        .job
        .id;
    assert_eq!(store.get_job(id).await.unwrap().unwrap().counts.queued, 1);
}

/// Listed people are final people: each gets its `person.completed`, listed at creation or at the
/// claim.
async fn listed_people_get_their_person_completed(store: Store) {
    let store = keyed(store);
    let scope = Scope::Client("acme".into());
    store.add_suppressions(&scope, &[entry(K::Email, "p1@example.com")]).await.unwrap();
    let mut new = job("acme", 12, EnrichFlags::default());
    new.events = PersonEvents { completed: true, updated: false };
    let id = store.create_job(new).await.unwrap().job.id;
    assert_eq!(store.person_event_rows(id).await.unwrap().len(), 1, "p1, listed at creation");
    store.add_suppressions(&scope, &[entry(K::Email, "p11@example.com")]).await.unwrap();
    let sent = send_all(&store).await;
    assert_eq!(sent.len(), 10);
    let rows = store.person_event_rows(id).await.unwrap();
    let people: std::collections::BTreeSet<uuid::Uuid> =
        rows.iter().filter(|(_, kind, _)| *kind == CallbackEvent::PersonCompleted).map(|(p, _, _)| *p).collect();
    assert_eq!((rows.len(), people.len()), (12, 12), "everyone once, p11 listed at its claim");
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((j.counts.suppressed, j.counts.complete, j.state), (2, 10, JobState::Completed));
}
