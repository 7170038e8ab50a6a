//! The limiter replicas share, task leases, and the one-process rule of SQLite.

use std::time::Duration;

use apollo_client::{EnrichFlags, RateLimit, Window, WindowLimit};
use job_store::limiter::key_fingerprint;
use job_store::{Admitted, Store, StoreError, StoreOptions};
use rules::window::{RateRules, WindowRule};

use crate::harness::{LEASE, job};
use crate::store_tests;

store_tests!(
    a_whole_window_is_usable_at_once_then_the_wait_is_told,
    concurrent_claimers_never_exceed_the_limit_together,
    a_429_or_a_used_up_window_blocks_every_claimer,
    stated_limits_tighten_the_configured_ones,
    no_slot_is_taken_without_a_batch,
    a_task_lease_has_one_holder_until_it_runs_out,
    the_largest_margin_a_replica_measured_spaces_every_replica,
);

const MINUTE: Duration = Duration::from_secs(60);

fn rules(per_minute: Option<u32>) -> RateRules {
    let w = |len, limit| WindowRule { len, limit };
    RateRules {
        key: key_fingerprint("store-test-key"),
        windows: [w(MINUTE, per_minute), w(MINUTE * 60, None), w(MINUTE * 60 * 24, None)],
        margin: Duration::ZERO,
    }
}

async fn calls_logged(store: &Store) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let db = store.connection();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) AS n FROM rate_limit_calls"))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

fn wait_of(a: &Admitted) -> Duration {
    match a {
        Admitted::Wait(d) => *d,
        other => panic!("expected a wait, got {other:?}"),
    }
}

async fn a_whole_window_is_usable_at_once_then_the_wait_is_told(store: Store) {
    store.create_job(job("acme", 50, EnrichFlags::default())).await.unwrap();
    let r = rules(Some(3));
    assert!(matches!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Claimed(b) if b.len() == 1));
    // Asking for five at once: the two slots left, one transaction.
    assert!(matches!(store.claim_admitted("a", LEASE, &r, 5).await.unwrap(), Admitted::Claimed(b) if b.len() == 2));
    let wait = wait_of(&store.claim_admitted("b", LEASE, &r, 1).await.unwrap());
    // The first of the three calls ages out a window after it was made (this test takes seconds).
    assert!(wait > MINUTE - Duration::from_secs(10) && wait <= MINUTE, "{wait:?}");
    assert_eq!(calls_logged(&store).await, 3);
}

async fn concurrent_claimers_never_exceed_the_limit_together(store: Store) {
    store.create_job(job("acme", 200, EnrichFlags::default())).await.unwrap();
    let r = rules(Some(7));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (store, r) = (store.clone(), r.clone());
        tasks.spawn(async move {
            let mut claimed = 0;
            for _ in 0..10 {
                // Each asks for up to three at once: the limit holds for all of them together.
                if let Admitted::Claimed(b) = store.claim_admitted(&format!("replica-{w}"), LEASE, &r, 3).await.unwrap()
                {
                    claimed += b.len();
                }
            }
            claimed
        });
    }
    let claimed: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(claimed, 7, "the four claimers together took exactly the window's allowance");
    assert_eq!(calls_logged(&store).await, 7);
}

async fn a_429_or_a_used_up_window_blocks_every_claimer(store: Store) {
    store.create_job(job("acme", 50, EnrichFlags::default())).await.unwrap();
    let r = rules(Some(100));
    assert!(matches!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Claimed(_)));
    let h = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
    store.record_rate_limited(&r, &h).await.unwrap();
    let wait = wait_of(&store.claim_admitted("b", LEASE, &r, 1).await.unwrap());
    assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(17), "{wait:?}");
    let row = store.rate_limiter(&r.key).await.unwrap().unwrap();
    assert_eq!(row.rate_limited, 1);

    // A fresh key: the headers say the hour has none left; closed until our call in it ages out.
    let r2 = RateRules { key: key_fingerprint("another-key"), ..rules(None) };
    assert!(matches!(store.claim_admitted("a", LEASE, &r2, 1).await.unwrap(), Admitted::Claimed(_)));
    let h = RateLimit {
        hour: Window { limit: WindowLimit::Max(100), used: Some(100), left: Some(0) },
        ..Default::default()
    };
    store.observe_rate_headers(&r2, &h).await.unwrap();
    let wait = wait_of(&store.claim_admitted("c", LEASE, &r2, 1).await.unwrap());
    assert!(wait > MINUTE * 59 && wait <= MINUTE * 60, "{wait:?}");
}

async fn stated_limits_tighten_the_configured_ones(store: Store) {
    store.create_job(job("acme", 50, EnrichFlags::default())).await.unwrap();
    let r = rules(Some(40));
    let h = RateLimit {
        minute: Window { limit: WindowLimit::Max(2), used: Some(0), left: Some(2) },
        hour: Window { limit: WindowLimit::Unlimited, used: None, left: None },
        ..Default::default()
    };
    store.observe_rate_headers(&r, &h).await.unwrap();
    // A 401's headers state nothing: what was learned stays.
    store.observe_rate_headers(&r, &RateLimit::default()).await.unwrap();
    let row = store.rate_limiter(&r.key).await.unwrap().unwrap();
    assert_eq!((row.learned_minute, row.learned_hour), (Some(2), None));
    for _ in 0..2 {
        assert!(matches!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Claimed(_)));
    }
    wait_of(&store.claim_admitted("a", LEASE, &r, 1).await.unwrap());
}

async fn no_slot_is_taken_without_a_batch(store: Store) {
    let r = rules(Some(1));
    assert_eq!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Idle);
    store.set_pause(Some("credits exhausted".into())).await.unwrap();
    store.create_job(job("acme", 5, EnrichFlags::default())).await.unwrap();
    assert_eq!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Idle, "paused");
    assert_eq!(calls_logged(&store).await, 0);
    store.set_pause(None).await.unwrap();
    assert!(matches!(store.claim_admitted("a", LEASE, &r, 1).await.unwrap(), Admitted::Claimed(_)));
    wait_of(&store.claim_admitted("a", LEASE, &r, 1).await.unwrap());
}

async fn a_task_lease_has_one_holder_until_it_runs_out(store: Store) {
    let long = Duration::from_secs(60);
    assert!(store.hold_task("reconcile", "a", long).await.unwrap());
    assert!(!store.hold_task("reconcile", "b", long).await.unwrap(), "a holds it");
    assert!(store.hold_task("reconcile", "a", long).await.unwrap(), "the holder renews");
    assert!(store.hold_task("retention", "b", long).await.unwrap(), "another task, another lease");
    // a's lease runs out at once; then b may take it.
    assert!(store.hold_task("reconcile", "a", Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.hold_task("reconcile", "b", long).await.unwrap(), "an expired lease is taken over");
    assert!(!store.hold_task("reconcile", "a", long).await.unwrap());
}

async fn the_largest_margin_a_replica_measured_spaces_every_replica(store: Store) {
    store.create_job(job("acme", 100, EnrichFlags::default())).await.unwrap();
    let fast = rules(Some(1));
    let slow = RateRules { margin: Duration::from_secs(5), ..fast.clone() };
    // The slow replica's answers store its margin.
    store.observe_rate_headers(&slow, &RateLimit::default()).await.unwrap();
    assert_eq!(store.rate_limiter(&fast.key).await.unwrap().unwrap().margin_ms, Some(5_000));
    assert!(matches!(store.claim_admitted("a", LEASE, &fast, 1).await.unwrap(), Admitted::Claimed(_)));
    // The fast replica, which measured none, waits the window and the stored margin.
    let wait = wait_of(&store.claim_admitted("a", LEASE, &fast, 1).await.unwrap());
    assert!(wait > MINUTE && wait <= MINUTE + Duration::from_secs(5), "{wait:?}");
    // A smaller margin does not replace a fresh larger one.
    store.observe_rate_headers(&fast, &RateLimit::default()).await.unwrap();
    assert_eq!(store.rate_limiter(&fast.key).await.unwrap().unwrap().margin_ms, Some(5_000));
    let allowance = store.allowance(&fast).await.unwrap();
    assert_eq!((allowance.margin, allowance.windows[0].len), (Duration::from_secs(5), MINUTE + Duration::from_secs(5)));
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused() {
    let path = std::env::temp_dir().join(format!("enrichd_lock_{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let options = StoreOptions { single_process: true, ..Default::default() };
    let first = Store::connect_with(&url, options.clone()).await.unwrap();
    let second = Store::connect_with(&url, options.clone()).await;
    match second {
        Err(StoreError::InUse(m)) => assert!(m.contains("PostgreSQL") && m.contains(".lock"), "{m}"),
        other => panic!("the second opener was not refused: {:?}", other.map(|_| ())),
    }
    // Tools that only read (tests, `enrichd migrate`) may still open it.
    Store::connect_with(&url, StoreOptions { run_migrations: false, ..Default::default() }).await.unwrap();
    first.close().await.unwrap();
    let again = Store::connect_with(&url, options).await.expect("free again once the first process is gone");
    again.close().await.unwrap();
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
