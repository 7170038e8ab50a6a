//! Concurrent claimers (several replicas): nobody gets the same person or batch twice.

use std::collections::HashSet;

use apollo_client::EnrichFlags;
use chrono::Utc;
use job_store::{NewJob, Store};
use sea_orm::TransactionTrait;
use serde_json::json;

use crate::harness::{LEASE, all_matched, assert_counters_match, job, person};
use crate::store_tests;

store_tests!(eight_concurrent_claimers_never_share_a_person_or_batch, concurrent_creates_with_one_key_make_one_job);

async fn eight_concurrent_claimers_never_share_a_person_or_batch(store: Store) {
    let mut jobs = Vec::new();
    let mut primaries = 0;
    for (i, n) in [300usize, 200, 150, 1, 1, 1, 60].into_iter().enumerate() {
        let options = if i % 2 == 0 {
            EnrichFlags::default()
        } else {
            EnrichFlags { reveal_phone_number: true, ..Default::default() }
        };
        jobs.push(store.create_job(job(&format!("c{i}"), n, options)).await.unwrap().job.id);
        primaries += n;
    }
    // A job with duplicates: 20 people, 10 distinct keys.
    let dups = NewJob {
        client: "dups".into(),
        people: (0..20).map(|i| person(i % 10)).chain([json!({"name": "invalid"})]).map(Into::into).collect(),
        ..NewJob::default()
    };
    jobs.push(store.create_job(dups).await.unwrap().job.id);
    primaries += 10;

    // Open eight pooled connections first: otherwise one worker runs on the connection already
    // open while the others wait ~100 ms for theirs, and the claims hardly overlap.
    let mut warm = Vec::new();
    for _ in 0..8 {
        warm.push(store.connection().begin().await.unwrap());
    }
    drop(warm);

    let mut workers = Vec::new();
    for w in 0..8 {
        let s = store.clone();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Start together, so the claims really overlap.
            tokio::task::yield_now().await;
            while let Some(b) = s.claim_batch(&format!("worker-{w}"), LEASE, Utc::now()).await.unwrap() {
                // Half the workers record their answers at once: claims race with sync writes.
                if w % 2 == 0 {
                    s.record_sync(all_matched(&b, false, false)).await.unwrap();
                }
                got.push(b);
            }
            got
        }));
    }
    let mut batches = Vec::new();
    let mut busy_workers = 0;
    for w in workers {
        let got = w.await.unwrap();
        busy_workers += usize::from(!got.is_empty());
        batches.extend(got);
    }
    assert!(busy_workers >= 2, "only {busy_workers} worker(s) got work: the claims did not overlap");
    // A worker may stop early while others hold the last rows locked: drain what is left.
    while let Some(b) = store.claim_batch("drain", LEASE, Utc::now()).await.unwrap() {
        batches.push(b);
    }
    let mut people = HashSet::new();
    let mut batch_ids = HashSet::new();
    for b in &batches {
        assert!(batch_ids.insert(b.batch_id), "batch {} claimed twice", b.batch_id);
        assert!(!b.people.is_empty() && b.people.len() <= 10);
        for p in &b.people {
            assert!(people.insert(p.person_id), "person {} claimed twice", p.person_id);
        }
    }
    assert_eq!(people.len(), primaries, "every primary claimed exactly once");
    assert_counters_match(&store, &jobs).await;
}

async fn concurrent_creates_with_one_key_make_one_job(store: Store) {
    let mut new = job("acme", 50, EnrichFlags::default());
    new.idempotency_key = Some("retry-storm".into());
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (s, n) = (store.clone(), new.clone());
        tasks.push(tokio::spawn(async move { s.create_job(n).await.unwrap() }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap());
    }
    assert_eq!(created.iter().filter(|c| !c.existing).count(), 1, "exactly one request created the job");
    assert!(created.iter().all(|c| c.job.id == created[0].job.id));
    assert_eq!(store.list_jobs("acme", None, 10).await.unwrap().len(), 1);
}
