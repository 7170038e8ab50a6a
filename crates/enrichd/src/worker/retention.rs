//! Retention: finished jobs older than `RETENTION_DAYS` are purged with all their data (people,
//! records, raw payloads, callbacks), and recorded Apollo errors of that age, every
//! `RETENTION_EVERY`. Without `RETENTION_DAYS` this worker is not started and jobs are kept
//! forever (the recorded Apollo errors are capped at the newest thousand anyway).

use std::time::Duration;

use crate::state::AppState;
use crate::worker::nap;

/// The cutoff for a retention of `keep` at `now`: jobs finished before it are purged.
pub fn cutoff(now: chrono::DateTime<chrono::Utc>, keep: Duration) -> chrono::DateTime<chrono::Utc> {
    now - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX)
}

/// Runs the retention loop until the process drains (returns at once without `RETENTION_DAYS`).
pub async fn run(state: AppState) {
    let Some(keep) = state.config.retention() else { return };
    let sleeper = tokio::sync::Notify::new();
    while !state.drain.is_draining() {
        if let Err(e) = tick(&state, keep).await {
            tracing::warn!(error = %e, "retention pass failed; will retry at the next one");
        }
        nap(&state.drain, &sleeper, state.config.retention_every.max(Duration::from_millis(10))).await;
    }
}

/// One pass: purges the jobs that finished more than `keep` ago; returns how many. With
/// several replicas one of them does it, under the task's lease (renewed by the heartbeat).
pub async fn tick(state: &AppState, keep: Duration) -> Result<u64, job_store::StoreError> {
    if !state.store.hold_task("retention", &state.owner, state.config.lease).await? {
        return Ok(0);
    }
    let cutoff = cutoff(state.store.clock_now().await?, keep);
    let purged = state.store.purge_finished_jobs(cutoff).await?;
    if purged > 0 {
        tracing::info!(jobs = purged, retention_secs = keep.as_secs(), "purged finished jobs past retention");
    }
    // Error messages may quote a refused detail: they go with the jobs' data.
    let errors = state.store.purge_apollo_errors(cutoff).await?;
    if errors > 0 {
        tracing::info!(errors, retention_secs = keep.as_secs(), "purged recorded Apollo errors past retention");
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_days_before_now() {
        let now = chrono::Utc::now();
        assert_eq!(cutoff(now, Duration::ZERO), now);
        assert_eq!(now - cutoff(now, Duration::from_secs(30 * 86_400)), chrono::TimeDelta::days(30));
        assert_eq!(now - cutoff(now, Duration::from_secs(900)), chrono::TimeDelta::minutes(15));
    }
}
