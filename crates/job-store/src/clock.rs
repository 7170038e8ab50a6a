//! The clock replicas agree on: the database's (PostgreSQL's `clock_timestamp()`), this process's
//! corrected by the skew last measured against it, and instants at stored precision.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::{StoreError, StoreResult};

/// Instants are stored with microsecond precision (PostgreSQL's), so values read back compare
/// equal to values written on both databases.
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Now, at stored precision, on the database's clock: this process's clock corrected by the
/// skew last measured against PostgreSQL ([`db_clock`]), so the instants a replica
/// writes (outbox due times, submission times the reconciler compares) agree with every other
/// replica's even when this host's clock is off.
pub fn now() -> DateTime<Utc> {
    ts(Utc::now() - TimeDelta::microseconds(CLOCK_SKEW_MICROS.load(Ordering::Relaxed)))
}

/// This process's clock minus the database's, in microseconds; 0 on SQLite (its clock is ours).
static CLOCK_SKEW_MICROS: AtomicI64 = AtomicI64::new(0);

/// Below this, a measured skew is noise, not a wrong clock: ignored (hosts sharing a clock, such
/// as tests beside their database, must see exactly zero).
const SKEW_NOISE: TimeDelta = TimeDelta::milliseconds(100);

/// Only samples whose round trip took less than this are trusted: the database's answer came
/// from somewhere inside the round trip, so the error is at most half of it.
const SKEW_MAX_ROUND_TRIP: TimeDelta = TimeDelta::milliseconds(20);

/// Records the skew seen when the database said `db_now` between our `before` and `after`.
pub(crate) fn observe_skew(before: DateTime<Utc>, after: DateTime<Utc>, db_now: DateTime<Utc>) {
    if after - before > SKEW_MAX_ROUND_TRIP {
        return;
    }
    let ours = before + (after - before) / 2;
    let skew = ours - db_now;
    let micros = if skew.abs() < SKEW_NOISE { 0 } else { skew.num_microseconds().unwrap_or(0) };
    CLOCK_SKEW_MICROS.store(micros, Ordering::Relaxed);
}

/// The database's clock: PostgreSQL's `clock_timestamp()` (not `now()`, which is the start of the
/// transaction, before any lock wait); SQLite is embedded, so its clock is this process's. Each
/// read also updates the skew [`crate::clock::now`] corrects this process's clock by.
pub(crate) async fn db_clock<C: ConnectionTrait>(db: &C) -> StoreResult<DateTime<Utc>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(now());
    }
    let before = Utc::now();
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT clock_timestamp() AS now"))
        .await?
        .ok_or_else(|| StoreError::Corrupt("clock_timestamp() returned no row".into()))?;
    let db_now = ts(row.try_get::<DateTime<Utc>>("", "now")?);
    observe_skew(before, Utc::now(), db_now);
    Ok(db_now)
}
