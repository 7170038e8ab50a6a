//! The reconciler: polls `webhook_result` (free) for batches whose deliveries are late, feeding
//! what it finds into the same ingest path, and turns people whose parts never came into `partial`.
//!
//! Without `PUBLIC_BASE_URL` Apollo has no webhook to call (`poll_only`), so this is how every
//! asynchronous part arrives; batches are then polled soon after submission.

use std::time::Duration;

use apollo_client::WebhookResultPoll;
use job_store::OverdueBatch;

use crate::state::AppState;
use crate::worker::nap;

/// How long after submission a batch is first polled.
pub fn poll_after(state: &AppState) -> Duration {
    if state.config.public_base_url.is_some() {
        state.config.reconcile_after
    } else {
        state.config.reconcile_after.min(state.config.reconcile_every)
    }
}

/// Runs the reconcile loop until the task is dropped.
pub async fn run(state: AppState) {
    let sleeper = tokio::sync::Notify::new();
    loop {
        if let Err(e) = tick(&state).await {
            tracing::warn!(error = %e, "reconcile pass failed; database unavailable?");
        }
        nap(&sleeper, state.config.reconcile_every).await;
    }
}

/// One pass: poll late batches, then expire parts past the deadline.
pub async fn tick(state: &AppState) -> Result<(), job_store::StoreError> {
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::from_std(poll_after(state)).unwrap_or_default();
    let overdue = state.store.overdue_batches(cutoff, 200).await?;
    let mut stored = 0;
    for batch in &overdue {
        stored += poll_batch(state, batch).await?;
    }
    if stored > 0 {
        state.wake.ingest.notify_one();
    }
    let deadline = chrono::Utc::now() - chrono::TimeDelta::from_std(state.config.async_deadline).unwrap_or_default();
    let expired = state.store.expire_parts(deadline).await?;
    if expired > 0 {
        tracing::warn!(people = expired, "asynchronous parts past the deadline: people marked partial");
        state.wake.callbacks.notify_one();
    }
    Ok(())
}

/// Polls the ids a batch still waits on; stores each ready payload as a delivery. Returns how many
/// were stored.
async fn poll_batch(state: &AppState, batch: &OverdueBatch) -> Result<usize, job_store::StoreError> {
    let mut ids = Vec::new();
    if batch.awaiting_phone {
        // The phone job id when Apollo gave one, else the top-level request id.
        ids.extend(batch.phone_request_id.clone().or(batch.request_id.map(|r| r.to_string())));
    }
    if batch.awaiting_waterfall {
        ids.extend(batch.request_id.map(|r| r.to_string()));
    }
    ids.dedup();
    let mut stored = 0;
    for id in ids {
        match state.apollo.webhook_result(&id).await {
            Ok(WebhookResultPoll::Ready(result)) => {
                let Some(payload) = result.webhook_result else { continue };
                let body = serde_json::to_vec(&payload).unwrap_or_default();
                state.store.store_delivery(batch.batch_id, &body, chrono::Utc::now()).await?;
                stored += 1;
            }
            Ok(WebhookResultPoll::Pending { .. }) => {}
            Ok(WebhookResultPoll::Gone { code }) => {
                tracing::info!(batch = %batch.batch_id, %code, "no asynchronous result will come; the deadline decides")
            }
            Err(e) => tracing::warn!(batch = %batch.batch_id, error = %e, "webhook_result poll failed"),
        }
    }
    Ok(stored)
}
