//! The person-event sealer: seals each job's pending people into `person.completed` and
//! `person.updated` events of at most `PERSON_EVENTS_MAX_PEOPLE` people once that many are
//! pending or the oldest has waited `PERSON_EVENTS_MAX_WAIT` (at once when the job's completion
//! waits for them), each with its `webhook-id`, place in the job's sequence and frozen body. The
//! callback sender then delivers them in that order, the job's own events after them.

use std::time::Duration;

use job_store::SealedEvent;
use serde_json::json;

use crate::models::person_json;
use crate::state::AppState;
use crate::worker::nap;

/// The body of a sealed person event: the job callback's shape, `data.people` holding each
/// person as `GET /v1/jobs/{id}/people` shows it.
pub fn render(event: &SealedEvent<'_>) -> Vec<u8> {
    let body = json!({
        "type": event.event.as_str(),
        "timestamp": event.created_at.to_rfc3339(),
        "job_id": event.job_id,
        "data": { "people": event.people.iter().map(person_json).collect::<Vec<_>>() },
    });
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// How often jobs are checked: a fifth of the longest wait, between 100 ms and 1 s.
fn period(max_wait: Duration) -> Duration {
    (max_wait / 5).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Runs the sealer until the process drains. Every replica runs it: sealing a job locks its row,
/// so two replicas never seal the same people.
pub async fn run(state: AppState) {
    let batching = state.config.batching();
    let every = period(batching.max_wait);
    while !state.drain.is_draining() {
        match pass(&state, batching).await {
            Ok(0) => nap(&state.drain, &state.wake.person_events, every).await,
            Ok(_) => state.wake.callbacks.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "person event pass failed; database unavailable?");
                nap(&state.drain, &state.wake.person_events, Duration::from_secs(1)).await;
            }
        }
    }
}

/// One pass over the jobs with something to seal; returns the events sealed or released.
async fn pass(state: &AppState, batching: rules::events::Batching) -> Result<u64, job_store::StoreError> {
    let now = state.store.clock_now().await?;
    let mut n = 0;
    for job_id in state.store.jobs_to_seal(now, batching).await? {
        if state.drain.is_draining() {
            break;
        }
        let sealed = state.store.seal_person_events(job_id, now, batching, &render).await?;
        if sealed.person_events > 0 || sealed.job_events > 0 {
            tracing::debug!(%job_id, person_events = sealed.person_events, job_events = sealed.job_events, "sealed");
        }
        n += sealed.person_events + sealed.job_events;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_follows_the_wait_within_bounds() {
        assert_eq!(period(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_millis(100)), Duration::from_millis(100));
        assert_eq!(period(Duration::from_secs(1)), Duration::from_millis(200));
    }
}
