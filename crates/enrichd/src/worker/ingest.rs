//! The ingest worker: parses stored deliveries and merges them into people.
//!
//! The webhook route only stores and answers; parsing and merging happen here, so Apollo never
//! waits on a merge, and a delivery that came before its batch's synchronous answer simply stays
//! pending until the answer is recorded.

use std::time::Duration;

use apollo_client::parse_delivery;
use job_store::ApplyOutcome;

use crate::state::AppState;
use crate::worker::nap;

/// Runs the ingest loop until the task is dropped.
pub async fn run(state: AppState) {
    loop {
        match drain(&state).await {
            Ok(0) => nap(&state.wake.ingest, Duration::from_millis(500)).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ingest paused; database unavailable?");
                nap(&state.wake.ingest, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Processes one page of pending deliveries; returns how many it handled.
pub async fn drain(state: &AppState) -> Result<usize, job_store::StoreError> {
    let pending = state.store.pending_deliveries(100).await?;
    let mut handled = 0;
    for d in pending {
        match parse_delivery(&d.body) {
            Ok(parsed) => match state.store.apply_delivery(d.id, &parsed).await? {
                ApplyOutcome::Applied { unmatched, completed_jobs, .. } => {
                    handled += 1;
                    if !unmatched.is_empty() {
                        // People of other batches are never touched; note it for the audit trail.
                        tracing::warn!(delivery = %d.id, batch = %d.batch_id, count = unmatched.len(), "delivery named people outside its batch");
                    }
                    if !completed_jobs.is_empty() {
                        state.wake.callbacks.notify_one();
                    }
                }
                ApplyOutcome::AlreadyProcessed => handled += 1,
                ApplyOutcome::NotReady => {}
            },
            Err(e) => {
                tracing::warn!(delivery = %d.id, batch = %d.batch_id, error = %e, "unusable delivery kept with its error");
                state.store.fail_delivery(d.id, &e.to_string()).await?;
                handled += 1;
            }
        }
    }
    Ok(handled)
}
