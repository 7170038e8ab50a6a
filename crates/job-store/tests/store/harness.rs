//! Gives each test its own fresh database, on SQLite (a WAL file) and on PostgreSQL (a database
//! created for the test and dropped after it). PostgreSQL must be reachable: if it is not, the
//! `_pg` tests fail rather than skip.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use apollo_client::{Credits, EnrichFlags, PersonFacts};
use chrono::Utc;
use job_store::{ClaimedBatch, NewJob, Store, StoreOptions, SyncOutcome, SyncRecorded};
use rules::records::{SyncMatch, SyncPerson};
use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use serde_json::{Value, json};
use uuid::Uuid;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Pg,
}

/// Generates `sqlite` and `pg` test variants of each listed `async fn name(store: Store)`.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::harness::run($crate::harness::Backend::Sqlite, super::$name).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pg() {
                    $crate::harness::run($crate::harness::Backend::Pg, super::$name).await
                }
            }
        )*
    };
}

fn pg_admin_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `postgres://u@h:p/db?x` with the database replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

enum Cleanup {
    Sqlite(PathBuf),
    Pg { admin_url: String, name: String },
}

/// A fresh database with the schema applied.
pub struct TestDb {
    pub store: Store,
    cleanup: Cleanup,
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        let tag = Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("enrichd_test_{tag}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let store = Store::connect(&url).await.expect("open SQLite test database");
                TestDb { store, cleanup: Cleanup::Sqlite(path) }
            }
            Backend::Pg => {
                let admin_url = pg_admin_url();
                let name = format!("enrichd_test_{tag}");
                let mut opts = ConnectOptions::new(admin_url.clone());
                opts.max_connections(1).sqlx_logging(false).connect_timeout(Duration::from_secs(5));
                let admin = Database::connect(opts).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is required for the _pg tests (TEST_PG_URL={admin_url}): {e}")
                });
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await.ok();
                let url = with_database(&admin_url, &name);
                let options = StoreOptions { max_connections: Some(10), ..StoreOptions::default() };
                let store = Store::connect_with(&url, options).await.expect("open PostgreSQL test database");
                TestDb { store, cleanup: Cleanup::Pg { admin_url, name } }
            }
        }
    }

    pub async fn destroy(self) {
        self.store.close().await.ok();
        match self.cleanup {
            Cleanup::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Pg { admin_url, name } => {
                let mut opts = ConnectOptions::new(admin_url);
                opts.max_connections(1).sqlx_logging(false);
                if let Ok(admin) = Database::connect(opts).await {
                    let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    admin.close().await.ok();
                }
            }
        }
    }
}

/// Runs `test` on a fresh database of `backend`, dropping the database even if the test panics.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::create(backend).await;
    let result = tokio::spawn(test(db.store.clone())).await;
    db.destroy().await;
    if let Err(e) = result {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

// ----- fixtures -----

pub const LEASE: Duration = Duration::from_secs(60);

/// A person with a unique email.
pub fn person(i: usize) -> Value {
    json!({"first_name": "P", "last_name": format!("N{i}"), "email": format!("p{i}@example.com")})
}

/// A job of `n` distinct people.
pub fn job(client: &str, n: usize, flags: EnrichFlags) -> NewJob {
    NewJob {
        client: client.into(),
        idempotency_key: None,
        flags,
        callback_url: Some("https://client.example/callback".into()),
        metadata: Some(json!({"team": "growth"})),
        people: (0..n).map(|i| person(i).into()).collect(),
        max_credits: None,
        daily_cap: None,
        retry_of: None,
        reuse: None,
        events: Default::default(),
    }
}

pub fn phone_and_waterfall() -> EnrichFlags {
    EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..EnrichFlags::default() }
}

/// Apollo id used for a person in these tests.
pub fn apollo_id(person_id: Uuid) -> String {
    format!("ap_{}", person_id.simple())
}

/// A synchronous answer matching every person of the batch, with 1 credit each.
pub fn all_matched(b: &ClaimedBatch, expect_phone: bool, expect_waterfall: bool) -> SyncOutcome {
    SyncOutcome {
        batch_id: b.batch_id,
        claim: b.claims,
        http_status: 200,
        request_id: Some(-4211274463135576197),
        phone_request_id: expect_phone.then(|| "phone-job-1".to_owned()),
        response: json!({"status": "success", "matches": b.people.len()}),
        credits: Credits::whole(b.people.len() as i64),
        people: b
            .people
            .iter()
            .map(|p| SyncPerson {
                person_id: p.person_id,
                outcome: SyncMatch::Matched,
                apollo_id: Some(apollo_id(p.person_id)),
                facts: PersonFacts {
                    apollo_id: Some(apollo_id(p.person_id)),
                    emails: vec![apollo_client::EmailFact {
                        address: p.input["email"].as_str().unwrap_or("x@example.com").to_lowercase(),
                        status: Some("guessed".into()),
                        source: apollo_client::FactSource::Sync,
                        vendor: None,
                        personal: false,
                    }],
                    ..PersonFacts::default()
                },
                fields: json!({"title": "CTO", "city": "Austin", "name": null}),
                expect_phone,
                phone_elsewhere: false,
                expect_waterfall,
                credits: Credits::whole(1),
            })
            .collect(),
    }
}

/// Records `outcome` and asserts it was recorded.
pub async fn record(store: &Store, outcome: SyncOutcome) -> Vec<Uuid> {
    match store.record_sync(outcome).await.expect("record_sync") {
        SyncRecorded::Recorded { completed_jobs } => completed_jobs,
        other => panic!("expected Recorded, got {other:?}"),
    }
}

/// Claims a batch now, asserting there is one.
pub async fn claim(store: &Store) -> ClaimedBatch {
    store.claim_batch("test", LEASE, Utc::now()).await.expect("claim_batch").expect("a batch to claim")
}

/// A phone delivery body for some Apollo ids.
pub fn phone_body(ids: &[String], credits: f64) -> Vec<u8> {
    let people: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "status": "success", "phone_numbers": [{
                "raw_number": format!("+1 512-555-{:04}", 100 + i),
                "sanitized_number": format!("+1512555{:04}", 100 + i),
                "type_cd": "mobile", "status_cd": "valid_number", "dnc_status_cd": "not_on_list"
            }]})
        })
        .collect();
    serde_json::to_vec(&json!({"status": "success", "credits_consumed": credits, "people": people})).unwrap()
}

/// A waterfall delivery body for some Apollo ids.
pub fn waterfall_body(ids: &[String], credits: f64) -> Vec<u8> {
    let people: Vec<Value> = ids
        .iter()
        .map(|id| {
            let local: String = id.chars().take(12).collect();
            let email = format!("{local}@waterfall.example");
            json!({
                "id": id,
                "emails": [{"email": email, "email_status_cd": "verified"}],
                "waterfall": {"emails": [{"vendors": [{"name": "Hunter", "status": "found", "emails": [email]}]}]}
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "status": "completed", "request_id": 1039995589705121931i64, "target_fields": ["emails"],
        "credits_consumed": credits, "people": people
    }))
    .unwrap()
}

/// Asserts that every job's counters equal a recount of its people.
pub async fn assert_counters_match(store: &Store, job_ids: &[Uuid]) {
    for id in job_ids {
        let job = store.get_job(*id).await.unwrap().unwrap();
        let recount = store.recount(*id).await.unwrap();
        assert_eq!(job.counts, recount, "job {id}: counters differ from a recount");
        assert_eq!(recount.sum(), job.total, "job {id}: counts do not add up to total");
    }
}

/// Makes the people at `positions` of a recorded outcome one Apollo person (the first one's id),
/// as when two jobs, two clients, or an email and a LinkedIn URL name the same lead in one batch.
pub fn one_apollo_id(outcome: &mut SyncOutcome, positions: &[usize]) -> String {
    let id = outcome.people[positions[0]].apollo_id.clone().expect("matched");
    for &i in positions {
        outcome.people[i].apollo_id = Some(id.clone());
        outcome.people[i].facts.apollo_id = Some(id.clone());
    }
    id
}
