//! The job store of enrichd: sea-orm entities and the store API, on SQLite (embedded default) and
//! PostgreSQL (production, several replicas).
//!
//! Every state change is one database transaction, and every change of a person's state updates
//! its job's counters in that same transaction ([`counters`]), so a job is read from its row alone.
//! Work is claimed under leases: PostgreSQL locks people with `FOR UPDATE SKIP LOCKED`; SQLite has
//! one writer: write transactions start with `BEGIN IMMEDIATE` (no read-to-write upgrade
//! deadlocks), and the writers of one process queue on an in-process gate rather than on
//! SQLite's sleeping busy handler (which let one busy writer starve the others): first come first
//! served, except that merges stand aside for the writes that cannot wait ([`Store::background_txn`]).
//!
//! Lock order (PostgreSQL), followed by every write path so transactions cannot deadlock: the
//! shared rate limiter's row ([`limiter`]), a delivery row, then a batch row, then people in id
//! order (a duplicate only after its primary), then job rows in id order, then the statistics
//! rows (`vendor_usage` in key order, `call_minutes`, `client_day_credits`). Erasure and purging ([`erase`]) follow it too.

mod apply;
pub mod budget;
pub mod callbacks;
pub mod calls;
pub mod claims;
pub mod clock;
mod columns;
pub mod counters;
pub mod deliveries;
pub mod dispatcher;
pub mod entities;
pub mod erase;
mod error;
pub mod jobs;
pub mod leases;
pub mod limiter;
mod outbox;
mod people;
pub mod person_events;
pub mod single_process;
mod sql;
pub mod stats;
pub mod suppressions;
pub mod sync;
pub mod system;
pub mod task_leases;
pub mod usage;
pub mod vendors;
pub mod wakeups;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::writer::{Gate, WriteGate};
use chrono::Utc;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use apply::ApplyOutcome;
pub use callbacks::{CallbackAttemptRecord, CallbackAttemptView, CallbackNext, CallbackView, DueCallback};
pub use claims::{BatchView, ClaimedBatch, ClaimedPerson};
pub use clock::now;
pub use deliveries::{InboundDelivery, OverdueBatch, PendingDelivery, StoredDelivery};
pub use erase::Erased;
pub use error::{StoreError, StoreResult};
pub use jobs::{CreatedJob, CreditsByKind, FailedDelivery, JobFilter, JobView, NewJob, NewPerson, PersonView};
pub use limiter::Admitted;
pub use person_events::{Render, Sealed, SealedEvent, StreamEvent};
pub use stats::StateCounts;
pub use suppressions::{AddedEntries, Scope, SuppressionEntry, SuppressionId};
pub use sync::{SyncOutcome, SyncRecorded};
pub use system::CallError;

/// How [`Store::connect_with`] connects.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Apply pending migrations on connect (the default); `enrichd migrate` may do it instead.
    pub run_migrations: bool,
    /// Pool size; `None` = 8 (in-memory SQLite always uses one connection).
    pub max_connections: Option<u32>,
    /// How long SQLite waits for the write lock before failing.
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection (or a new one) before failing.
    pub acquire_timeout: Duration,
    /// SQLite: refuse to open a database file another process holds, and hold it ([`single_process`]).
    pub single_process: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            run_migrations: true,
            max_connections: None,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            single_process: false,
        }
    }
}

/// The store: a connection pool and the API, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// SQLite only: writers of this process queue here instead of polling SQLite's busy handler
    /// (which sleeps and lets one busy writer starve the others).
    write_gate: Option<Arc<Gate>>,
    /// SQLite with [`StoreOptions::single_process`]: the held lock file.
    _process_lock: Option<Arc<std::fs::File>>,
    /// What [`Store::statements`] and [`Store::transactions`] read, shared by every clone.
    counts: Arc<StatementCounts>,
    /// The do-not-enrich list's hash key ([`Store::with_suppression_key`]); `None`: the list is off.
    suppression_key: Option<Arc<rules::suppression::SuppressionKey>>,
}

/// Statements and transactions sent through one [`Store`] and its clones (a relaxed atomic add each).
#[derive(Debug, Default)]
struct StatementCounts {
    statements: AtomicU64,
    transactions: AtomicU64,
}

impl Store {
    /// Connects to `sqlite://path?mode=rwc`, `sqlite::memory:` or `postgres://…`, and migrates.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> StoreResult<Store> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false);
        // When the database is down, fail fast (callers answer 503 and retry) instead of holding
        // requests and workers for sqlx's default 30 s.
        opts.acquire_timeout(options.acquire_timeout).connect_timeout(options.acquire_timeout);
        let is_sqlite = url.starts_with("sqlite:");
        let in_memory = is_sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        if is_sqlite {
            let busy = options.busy_timeout;
            opts.map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(busy)
                    .foreign_keys(true)
            });
        }
        if in_memory {
            // An in-memory database lives as long as its one connection.
            opts.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        } else {
            opts.max_connections(options.max_connections.unwrap_or(8));
        }
        let process_lock = if options.single_process { single_process::lock(url)? } else { None };
        // A file SQLite database migrates on a connection of its own, before the pool opens: a
        // pooled connection that read the schema half-way through the migrations keeps that view
        // for some statements (SQLite does not re-read it before refusing an upsert whose
        // `ON CONFLICT` target names an index created later: "does not match any PRIMARY KEY or
        // UNIQUE constraint").
        let migrate_first = is_sqlite && !in_memory && options.run_migrations;
        if migrate_first {
            let mut once = opts.clone();
            once.max_connections(1).min_connections(0);
            let db = Database::connect(once).await?;
            let done = Migrator::up(&db, None).await;
            db.close().await?;
            done?;
        }
        let db = Database::connect(opts).await?;
        let mut store = Store::from_connection(db);
        store._process_lock = process_lock.map(Arc::new);
        // Measures this host's clock against the database's once at start (then at every read).
        store.clock_now().await?;
        if options.run_migrations && !migrate_first {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Wraps an existing connection (migrations are not run), replacing its metric callback with
    /// the statement counter ([`Store::statements`]).
    pub fn from_connection(mut db: DatabaseConnection) -> Store {
        let write_gate = (db.get_database_backend() == DbBackend::Sqlite).then(Default::default);
        let counts = Arc::new(StatementCounts::default());
        let seen = Arc::clone(&counts);
        // sea-orm calls this after every statement it runs through `execute_raw`, `query_one_raw`
        // or `query_all_raw` (so every query builder and entity call), on the pool and inside
        // transactions, failed ones too. It counts only: the statement and its values are never read.
        db.set_metric_callback(move |_| {
            seen.statements.fetch_add(1, Ordering::Relaxed);
        });
        Store { db, write_gate, _process_lock: None, counts, suppression_key: None }
    }

    /// Statements this store has sent to the database, a transaction's BEGIN and its COMMIT or
    /// ROLLBACK included; not counted: raw SQL that migrations run (`execute_unprepared`), the
    /// PostgreSQL LISTEN connection ([`wakeups`]), and statements sent on [`Store::connection`]
    /// with `begin` or `execute_unprepared` from outside the store.
    pub fn statements(&self) -> u64 {
        self.counts.statements.load(Ordering::Relaxed)
    }

    /// Transactions this store has begun (each counts two of [`Store::statements`]).
    pub fn transactions(&self) -> u64 {
        self.counts.transactions.load(Ordering::Relaxed)
    }

    /// Counts `n` statements that sea-orm's metric callback does not see (`execute_unprepared`, ping).
    fn count_unseen(&self, n: u64) {
        self.counts.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// Begins a transaction and counts it, its BEGIN and its COMMIT or ROLLBACK (whichever ends
    /// it, explicitly or on drop) in [`Store::statements`].
    async fn begin(&self, options: TransactionOptions) -> StoreResult<DatabaseTransaction> {
        let txn = self.db.begin_with_options(options).await?;
        self.counts.transactions.fetch_add(1, Ordering::Relaxed);
        self.count_unseen(2);
        Ok(txn)
    }

    /// Applies pending migrations. On PostgreSQL under an advisory lock, so replicas started
    /// together migrate once: the others wait, then find nothing left to do.
    pub async fn migrate(&self) -> StoreResult<()> {
        if self.backend() == DbBackend::Postgres {
            let txn = self.begin(TransactionOptions::default()).await?;
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")).await?;
            self.count_unseen(1);
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
            return Ok(());
        }
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Whether this process alone can open the store (SQLite under its lock file): then no lease
    /// found at start belongs to a live process.
    pub fn holds_process_lock(&self) -> bool {
        self._process_lock.is_some()
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Whether this is PostgreSQL, the store several replicas can share (SQLite serves one process).
    pub fn is_shared(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> StoreResult<()> {
        self.count_unseen(1);
        self.db.ping().await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) -> StoreResult<()> {
        self.db.close().await?;
        Ok(())
    }

    /// Waits for this process's turn to write (SQLite); keep the guard until the write is done.
    pub(crate) async fn write_gate(&self) -> WriteGate {
        self.gate_as(false).await
    }

    async fn gate_as(&self, background: bool) -> WriteGate {
        match &self.write_gate {
            Some(gate) if background => Some(gate.background().await),
            Some(gate) => Some(gate.foreground().await),
            None => None,
        }
    }

    /// Whether a foreground writer of this process waits for SQLite's writer (never on
    /// PostgreSQL): background work holding it should commit and let it go.
    pub(crate) fn writer_wanted(&self) -> bool {
        self.write_gate.as_ref().is_some_and(|g| g.wanted())
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite: take the write lock up front).
    /// Keep the returned gate alive until the transaction ends.
    pub(crate) async fn write_txn(&self) -> StoreResult<(DatabaseTransaction, WriteGate)> {
        self.txn_as(false).await
    }

    /// [`Store::write_txn`] for background work, which lets foreground writers go first.
    pub(crate) async fn background_txn(&self) -> StoreResult<(DatabaseTransaction, WriteGate)> {
        self.txn_as(true).await
    }

    async fn txn_as(&self, background: bool) -> StoreResult<(DatabaseTransaction, WriteGate)> {
        let gate = self.gate_as(background).await;
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok((self.begin(options).await?, gate))
    }
}

/// The advisory lock key migrations run under ("enrichd" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x0065_6e72_6963_6864;

/// A new time-ordered id.
pub(crate) fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// `n` new ids in increasing order, as `n` calls of [`new_id`] give them, from one read of the
/// OS's random source rather than one each (100,000 reads took 35 ms of a 100,000-person job's
/// creation). Version 7 in `new_id`'s layout: this millisecond, a 42-bit counter from a random
/// start (41 random bits, so it cannot overflow), then 32 random bits.
pub(crate) fn new_ids(n: usize) -> Vec<uuid::Uuid> {
    let mut random = vec![0u8; 8 + 4 * n];
    if getrandom::fill(&mut random).is_err() {
        return (0..n).map(|_| new_id()).collect();
    }
    let millis = u128::from(Utc::now().timestamp_millis().unsigned_abs()) & 0xFFFF_FFFF_FFFF;
    let (start, tails) = random.split_at(8);
    let start = u64::from_le_bytes(start.try_into().unwrap_or_default()) >> 23;
    tails
        .chunks_exact(4)
        .enumerate()
        .map(|(i, tail)| {
            let counter = u128::from(start + i as u64);
            let tail = u128::from(u32::from_le_bytes(tail.try_into().unwrap_or_default()));
            let bits = millis << 80 | 0x7 << 76 | (counter >> 30) << 64 | 0b10 << 62 | (counter & 0x3FFF_FFFF) << 32;
            uuid::Uuid::from_u128(bits | tail)
        })
        .collect()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// sha256 hex of `parts`, each length-prefixed so that ("ab","c") and ("a","bc") differ.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use sea_orm::{EntityTrait, Statement};

    use super::*;

    /// Counts a known sequence of statements exactly: raw statements, entity queries, statements
    /// inside transactions, BEGIN and COMMIT or ROLLBACK, and the ping.
    #[tokio::test]
    async fn counts_every_statement_sent() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let db = store.connection();
        let select = || Statement::from_string(DbBackend::Sqlite, "SELECT 1");
        let (s0, t0) = (store.statements(), store.transactions());
        assert!(s0 > 0, "connecting measured the clock and migrated");

        db.query_one_raw(select()).await.unwrap();
        db.query_all_raw(select()).await.unwrap();
        db.execute_raw(select()).await.unwrap();
        entities::job::Entity::find().one(db).await.unwrap();
        assert_eq!(store.statements(), s0 + 4);
        // A failed statement was still sent.
        assert!(db.query_one_raw(Statement::from_string(DbBackend::Sqlite, "SELECT nope")).await.is_err());
        assert_eq!(store.statements(), s0 + 5);

        // BEGIN IMMEDIATE, two statements, COMMIT.
        let (txn, gate) = store.write_txn().await.unwrap();
        txn.query_one_raw(select()).await.unwrap();
        entities::job::Entity::find().all(&txn).await.unwrap();
        txn.commit().await.unwrap();
        drop(gate);
        assert_eq!(store.statements(), s0 + 9);
        // BEGIN, one statement, ROLLBACK on drop.
        let (txn, gate) = store.write_txn().await.unwrap();
        txn.execute_raw(select()).await.unwrap();
        drop((txn, gate));
        assert_eq!(store.statements(), s0 + 12);
        assert_eq!(store.transactions(), t0 + 2);

        store.ping().await.unwrap();
        assert_eq!(store.statements(), s0 + 13);
        // sea-orm's callback does not see `execute_unprepared`: the store counts its own uses.
        db.execute_unprepared("SELECT 1").await.unwrap();
        assert_eq!(store.statements(), s0 + 13);
        // Every clone shares the count.
        store.clone().ping().await.unwrap();
        assert_eq!(store.statements(), s0 + 14);
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn ids_made_together_are_version_7_increasing_and_of_now() {
        let before = new_id();
        let ids = new_ids(10_000);
        assert_eq!(ids.len(), 10_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert!(ids.iter().all(|id| id.get_version_num() == 7 && id.get_variant() == uuid::Variant::RFC4122));
        let millis =
            |id: &uuid::Uuid| id.get_timestamp().map(|t| t.to_unix()).map(|(s, n)| s * 1000 + u64::from(n) / 1_000_000);
        let (first, last) = (millis(&ids[0]).unwrap(), millis(&new_id()).unwrap());
        assert!(millis(&before).unwrap() <= first && first <= last, "this millisecond");
        assert_ne!(new_ids(1), new_ids(1));
        assert!(new_ids(0).is_empty());
    }
}
