//! The reconciler: polls `webhook_result` (free) for batches whose deliveries are late, feeding
//! what it finds into the same ingest path, and turns people whose parts never came into `partial`.
//!
//! Without `PUBLIC_BASE_URL` Apollo has no webhook to call (`poll_only`), so this is how every
//! asynchronous part arrives; batches are then polled soon after submission.

use std::time::Duration;

use apollo_client::{WebhookResult, WebhookResultPoll};
use job_store::{InboundDelivery, OverdueBatch};
use rules::lifecycle::Part;

use crate::state::AppState;
use crate::worker::{after, nap};

/// How long after submission a batch is first polled.
pub fn poll_after(state: &AppState) -> Duration {
    if state.config.public_base_url.is_some() {
        state.config.reconcile_after
    } else {
        state.config.reconcile_after.min(state.config.reconcile_every)
    }
}

/// Runs the reconcile loop until the process drains.
pub async fn run(state: AppState) {
    let sleeper = tokio::sync::Notify::new();
    while !state.drain.is_draining() {
        if let Err(e) = tick(&state).await {
            tracing::warn!(error = %e, "reconcile pass failed; database unavailable?");
        }
        nap(&state.drain, &sleeper, state.config.reconcile_every).await;
    }
}

/// How the system page names this process: host and process id.
pub fn replica_label() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

/// One pass: a heartbeat (every replica, so the system page lists it), then poll late batches
/// and expire parts past the deadline. With several replicas one of them does the latter, under
/// the task's lease, renewed by the heartbeat (the others would only poll the same batches again).
pub async fn tick(state: &AppState) -> Result<(), job_store::StoreError> {
    state.store.heartbeat(&state.owner, &replica_label()).await?;
    if !state.store.hold_task("reconcile", &state.owner, state.config.lease).await? {
        return Ok(());
    }
    let now = state.store.clock_now().await?;
    let cutoff = now - chrono::TimeDelta::from_std(poll_after(state)).unwrap_or_default();
    let deadline = now - chrono::TimeDelta::from_std(state.config.async_deadline).unwrap_or_default();
    let overdue = state.store.overdue_batches(cutoff, deadline, 200).await?;
    let mut stored = 0;
    for batch in &overdue {
        stored += poll_batch(state, batch).await?;
    }
    if stored > 0 {
        state.wake.ingest.notify_one();
    }
    let expired = state.store.expire_parts(deadline).await?;
    if expired > 0 {
        tracing::warn!(people = expired, "asynchronous parts past the deadline: people marked partial");
        state.wake.callbacks.notify_one();
        state.wake.person_events.notify_one();
    }
    Ok(())
}

/// Polls the ids a batch still wants (a part someone waits for, or one the answered call owes
/// the job's credits): the waterfall with the top-level request id, the phone
/// with the top-level request id first (Apollo's phone answer says so) and the phone job id as
/// the fallback. A result counts only when Apollo says `success` (then it is stored as a
/// delivery of the answered call); `in_progress` waits; `failed` ends the part with Apollo's
/// reason. The batch is polled again after a back-off. Returns how many deliveries were stored.
async fn poll_batch(state: &AppState, batch: &OverdueBatch) -> Result<usize, job_store::StoreError> {
    let mut want: Vec<Part> = Vec::new();
    if batch.awaiting_phone {
        want.push(Part::Phone);
    }
    if batch.awaiting_waterfall {
        want.push(Part::Waterfall);
    }
    let top = batch.request_id.map(|r| r.to_string());
    let mut ids: Vec<String> = top.iter().cloned().collect();
    if batch.awaiting_phone {
        ids.extend(batch.phone_request_id.clone());
    }
    ids.dedup();
    let mut stored = 0;
    for id in ids {
        if want.is_empty() {
            break;
        }
        match state.apollo.webhook_result(&id).await {
            Ok(WebhookResultPoll::Ready(result)) => {
                let part = part_of(&result);
                let Some(part) = part.filter(|p| want.contains(p)) else { continue };
                want.retain(|p| *p != part);
                match result_status(&result) {
                    ResultStatus::Success => {
                        let Some(payload) = result.webhook_result else { continue };
                        let body = serde_json::to_vec(&payload).unwrap_or_default();
                        let item =
                            InboundDelivery { batch_id: batch.batch_id, claim: batch.answered_claim, body: &body };
                        state.store.store_deliveries(&[item], chrono::Utc::now()).await?.pop().transpose()?;
                        stored += 1;
                    }
                    ResultStatus::InProgress => {}
                    ResultStatus::Failed => {
                        let reason = result.failure_reason.as_deref().unwrap_or("no reason given");
                        let n = state.store.fail_part(batch.batch_id, part, reason).await?;
                        tracing::warn!(batch_id = %batch.batch_id, part = part.as_str(), people = n, reason, "Apollo reports the part failed");
                        if n > 0 {
                            state.wake.callbacks.notify_one();
                            state.wake.person_events.notify_one();
                        }
                    }
                }
            }
            Ok(WebhookResultPoll::Pending { .. }) => {}
            Ok(WebhookResultPoll::Gone { code }) => {
                tracing::info!(batch_id = %batch.batch_id, %code, "no asynchronous result under this id; the deadline decides")
            }
            Err(e) => tracing::warn!(batch_id = %batch.batch_id, error = %e, "webhook_result poll failed"),
        }
    }
    state.store.record_poll(batch.batch_id, after(poll_backoff(state.config.reconcile_every, batch.polls))).await?;
    Ok(stored)
}

/// What Apollo says of a polled result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultStatus {
    /// `success`: the payload is final.
    Success,
    /// `in_progress` (or anything unknown): poll again later.
    InProgress,
    /// `failed`: the part will not come.
    Failed,
}

/// The `webhook_status` of a polled result.
pub fn result_status(result: &WebhookResult) -> ResultStatus {
    match result.webhook_status.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("success") => ResultStatus::Success,
        Some("failed") => ResultStatus::Failed,
        _ => ResultStatus::InProgress,
    }
}

/// Which part a polled result is: its `request_type`, else the shape of its payload.
pub fn part_of(result: &WebhookResult) -> Option<Part> {
    match result.request_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("phone") => Some(Part::Phone),
        Some("waterfall" | "email") => Some(Part::Waterfall),
        _ => result
            .webhook_result
            .as_ref()
            .and_then(|p| serde_json::to_vec(p).ok())
            .and_then(|b| apollo_client::parse_delivery(&b).ok())
            .map(|d| Part::of(d.kind)),
    }
}

/// The wait before polling a batch again after `polls` earlier polls: `every`, doubling, at most
/// 64 × `every` — a batch that stays pending costs ever fewer calls and never starves the rest.
pub fn poll_backoff(every: Duration, polls: i32) -> Duration {
    every.saturating_mul(1u32 << polls.clamp(0, 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(v: serde_json::Value) -> WebhookResult {
        WebhookResult::from_value(v)
    }

    #[test]
    fn only_success_is_applied() {
        assert_eq!(result_status(&result(json!({"webhook_status": "success"}))), ResultStatus::Success);
        assert_eq!(result_status(&result(json!({"webhook_status": "SUCCESS"}))), ResultStatus::Success);
        assert_eq!(result_status(&result(json!({"webhook_status": "failed"}))), ResultStatus::Failed);
        assert_eq!(result_status(&result(json!({"webhook_status": "in_progress"}))), ResultStatus::InProgress);
        assert_eq!(result_status(&result(json!({}))), ResultStatus::InProgress, "no status is no answer yet");
    }

    #[test]
    fn the_part_comes_from_the_request_type_or_the_payload() {
        assert_eq!(part_of(&result(json!({"request_type": "phone"}))), Some(Part::Phone));
        assert_eq!(part_of(&result(json!({"request_type": "waterfall"}))), Some(Part::Waterfall));
        assert_eq!(part_of(&result(json!({"request_type": "email"}))), Some(Part::Waterfall));
        let phone = json!({"webhook_result": {"people": [{"id": "a", "phone_numbers": [{"raw_number": "+1 555 0100", "type_cd": "mobile"}]}]}});
        assert_eq!(part_of(&result(phone)), Some(Part::Phone));
        assert_eq!(part_of(&result(json!({"request_type": "fax"}))), None);
    }

    #[test]
    fn polls_back_off_and_stay_bounded() {
        let every = Duration::from_secs(10);
        assert_eq!(poll_backoff(every, 0), every);
        assert_eq!(poll_backoff(every, 1), every * 2);
        assert_eq!(poll_backoff(every, 3), every * 8);
        assert_eq!(poll_backoff(every, 6), every * 64);
        assert_eq!(poll_backoff(every, 1000), every * 64);
        assert_eq!(poll_backoff(every, -3), every);
        assert_eq!(poll_backoff(Duration::MAX, 5), Duration::MAX, "saturates instead of overflowing");
    }
}
