//! Background workers, one module per job: dispatch, ingest, reconcile, callbacks, retention.

pub mod callbacks;
pub mod dispatch;
pub mod ingest;
pub mod reconcile;
pub mod retention;

use std::time::Duration;

use tokio::sync::Notify;

/// Sleeps until woken or `max` passes, whichever comes first.
pub async fn nap(wake: &Notify, max: Duration) {
    let _ = tokio::time::timeout(max, wake.notified()).await;
}

/// A delay with ±20 % jitter, so retries of many batches or callbacks do not move in lockstep.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// A `chrono` instant `d` from now.
pub fn after(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
