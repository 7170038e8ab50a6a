//! Ingest: the worker that parses stored deliveries and merges them into people.
//!
//! The webhook route only stores and answers ([`job_store::writer::group_commit`]); parsing and
//! merging happen here, so Apollo never waits on a merge, and a delivery that came before its
//! batch's synchronous answer simply stays pending until the answer is recorded.

use std::sync::Arc;
use std::time::Duration;

use apollo_client::parse_delivery;
use job_store::ApplyOutcome;

use crate::state::AppState;
use crate::worker::nap;

/// Attempts to apply one delivery before it is failed with its error (so one delivery the
/// database refuses cannot hold up every other tenant's).
pub const APPLY_ATTEMPTS: i32 = 5;

/// Runs the ingest loop until the process drains (stored deliveries wait for the next process
/// or another replica).
pub async fn run(state: AppState) {
    while !state.drain.is_draining() {
        match drain(&state).await {
            Ok(0) => nap(&state.drain, &state.wake.ingest, Duration::from_millis(500)).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ingest paused; database unavailable?");
                nap(&state.drain, &state.wake.ingest, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Pending deliveries read, parsed and merged per pass, in one transaction when the store takes
/// them all. Every group ends by updating its jobs' counter rows, which answers and claims update
/// too, so on PostgreSQL one group a page keeps up where smaller groups queued on those rows and
/// fell behind.
/// On SQLite the store caps a group itself and ends it early when another writer queues for the
/// one writer (merging is background work there: storing what Apollo sends and recording paid
/// answers go first).
const PAGE: usize = 100;

/// Processes one page of pending deliveries; returns how many it handled.
///
/// Parsed deliveries are applied as one group, or, when the store applies only the first ones, the
/// rest as the next group, one transaction each; a group the database refuses is applied again one delivery at a time, so only the culprit is counted.
pub async fn drain(state: &AppState) -> Result<usize, job_store::StoreError> {
    let pending = state.store.pending_deliveries(PAGE as u64).await?;
    let mut handled = 0;
    let mut parsed = Vec::with_capacity(pending.len());
    for d in pending {
        match parse_delivery(&d.body) {
            Ok(p) => parsed.push((d, p)),
            Err(e) => {
                tracing::warn!(delivery = %d.id, batch_id = %d.batch_id, error = %e, "unusable delivery kept with its error");
                state.store.fail_delivery(d.id, &e.to_string()).await?;
                handled += 1;
            }
        }
    }
    // Parsed here, merged on the writer thread: parsing a page is CPU work that must not hold
    // up the writes queued there.
    let parsed = Arc::new(parsed);
    let mut next = 0;
    while next < parsed.len() {
        let end = parsed.len();
        let (store, page) = (state.store.clone(), parsed.clone());
        let merge = async move {
            let items: Vec<_> = page[next..end].iter().map(|(d, p)| (d.id, p)).collect();
            store.apply_deliveries(&items).await
        };
        let group = &parsed[next..end];
        match state.writer.write(merge).await {
            Ok(outcomes) => {
                // The store may have applied only the first ones (the writer was wanted).
                next += outcomes.len().clamp(1, group.len());
                for ((d, p), outcome) in group.iter().zip(outcomes) {
                    handled += usize::from(counted(state, d, p, outcome));
                }
            }
            Err(_) => {
                for (d, p) in group {
                    handled += usize::from(apply_one(state, d, p).await?);
                }
                next = end;
            }
        }
    }
    Ok(handled)
}

/// Applies one delivery on its own; whether it was handled.
async fn apply_one(
    state: &AppState,
    d: &job_store::PendingDelivery,
    parsed: &apollo_client::Delivery,
) -> Result<bool, job_store::StoreError> {
    match state.store.apply_delivery(d.id, parsed).await {
        Err(e) => {
            // The database is down: end the pass, nothing counted against the delivery.
            state.store.ping().await?;
            // It answers, yet refused this delivery: count it, fail it at the cap, move on.
            tracing::warn!(delivery = %d.id, batch_id = %d.batch_id, error = %e, "could not apply a delivery");
            state.store.note_apply_failure(d.id, &e.to_string(), APPLY_ATTEMPTS).await
        }
        Ok(outcome) => Ok(counted(state, d, parsed, outcome)),
    }
}

/// Metrics, logs and wake-ups for an applied delivery; whether it counts as handled.
fn counted(
    state: &AppState,
    d: &job_store::PendingDelivery,
    parsed: &apollo_client::Delivery,
    outcome: ApplyOutcome,
) -> bool {
    match outcome {
        ApplyOutcome::Applied { unmatched, completed_jobs, .. } => {
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
                state.wake.person_events.notify_one();
            }
            true
        }
        ApplyOutcome::AlreadyProcessed => true,
        ApplyOutcome::NotReady => false,
    }
}
