//! Background workers, one module per job: dispatch (and its admission), ingest, reconcile,
//! callbacks, person events, retention, the rescue of batches whose lease ran out, and the heartbeat
//! that renews leases. Each loop ends when the process starts draining ([`crate::shutdown`]).

pub mod admission;
pub mod callbacks;
pub mod dispatch;
pub mod heartbeat;
pub mod ingest;
pub mod person_events;
pub mod reconcile;
pub mod rescue;
pub mod retention;

use std::time::Duration;

use tokio::sync::Notify;

use crate::shutdown::Drain;

/// Sleeps until woken, `max` passes, or the process starts draining, whichever comes first.
pub async fn nap(drain: &Drain, wake: &Notify, max: Duration) {
    tokio::select! {
        _ = tokio::time::timeout(max, wake.notified()) => {}
        _ = drain.begun() => {}
    }
}

/// A delay with ±20 % jitter, so retries of many batches or callbacks do not move in lockstep.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// `d` from now on the clock replicas compare times with (the database's; see
/// [`job_store::Store::clock_now`]). Should the database not answer, this process's clock serves:
/// the write that uses the instant will fail the same way.
pub async fn db_after(state: &crate::state::AppState, d: Duration) -> chrono::DateTime<chrono::Utc> {
    let now = state.store.clock_now().await.unwrap_or_else(|_| chrono::Utc::now());
    now + chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// A `chrono` instant `d` from now.
pub fn after(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
