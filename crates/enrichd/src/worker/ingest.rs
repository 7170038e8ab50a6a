//! Ingest: the worker that parses stored deliveries and merges them into people.
//!
//! The webhook route only stores and answers ([`crate::delivery_writer`]); parsing and
//! merging happen here, so Apollo never waits on a merge, and a delivery that came before its
//! batch's synchronous answer simply stays pending until the answer is recorded.

use std::time::Duration;

use apollo_client::parse_delivery;
use job_store::ApplyOutcome;

use crate::state::AppState;
use crate::worker::nap;

/// Attempts to apply one delivery before it is failed with its error (so one delivery the
/// database refuses cannot hold up every other tenant's).
pub const APPLY_ATTEMPTS: i32 = 5;

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
            Ok(parsed) => match state.store.apply_delivery(d.id, &parsed).await {
                Err(e) => {
                    // The database is down: end the pass, nothing counted against the delivery.
                    state.store.ping().await?;
                    // It answers, yet refused this delivery: count it, fail it at the cap, move on.
                    tracing::warn!(delivery = %d.id, batch_id = %d.batch_id, error = %e, "could not apply a delivery");
                    if state.store.note_apply_failure(d.id, &e.to_string(), APPLY_ATTEMPTS).await? {
                        handled += 1;
                    }
                }
                Ok(ApplyOutcome::Applied { unmatched, completed_jobs, .. }) => {
                    handled += 1;
                    let credits = parsed.credits.unwrap_or_default().micros().max(0) as u64;
                    metrics::counter!("enrichd_credits_consumed_micros_total", "kind" => parsed.kind.as_str())
                        .increment(credits);
                    let lag = (chrono::Utc::now() - d.received_at).as_seconds_f64();
                    metrics::histogram!("enrichd_delivery_ingest_lag_seconds").record(lag);
                    if !unmatched.is_empty() {
                        // People of other batches are never touched; note it for the audit trail.
                        tracing::warn!(delivery = %d.id, batch_id = %d.batch_id, count = unmatched.len(), "delivery named people outside its batch");
                    }
                    if !completed_jobs.is_empty() {
                        state.wake.callbacks.notify_one();
                    }
                }
                Ok(ApplyOutcome::AlreadyProcessed) => handled += 1,
                Ok(ApplyOutcome::NotReady) => {}
            },
            Err(e) => {
                tracing::warn!(delivery = %d.id, batch_id = %d.batch_id, error = %e, "unusable delivery kept with its error");
                state.store.fail_delivery(d.id, &e.to_string()).await?;
                handled += 1;
            }
        }
    }
    Ok(handled)
}
