//! The heartbeat: every third of a lease, renews the leases this process holds on work still
//! running (batches in their call, callbacks being sent, one-replica tasks). Leases can then be
//! short, and a replica that dies loses its work to the others within seconds, not minutes.

use std::time::{Duration, Instant};

use crate::state::AppState;

/// How often leases are renewed: a third of the lease, so two renewals may fail before it runs out.
pub fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

/// Renews held leases until the process exits (it runs through the drain: calls still
/// answering keep their batches).
pub async fn run(state: AppState) {
    let every = renew_every(state.config.lease);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = renew(&state).await {
            tracing::warn!(error = %e, "could not renew leases; database unavailable?");
        }
    }
}

/// One renewal: every held lease extended to a whole lease from now (database clock).
pub async fn renew(state: &AppState) -> Result<job_store::leases::Renewed, job_store::StoreError> {
    let (batches, callbacks) = state.held.renewable(Instant::now());
    let now = state.store.clock_now().await?;
    let until = now + chrono::TimeDelta::from_std(state.config.lease).unwrap_or(chrono::TimeDelta::MAX);
    state.store.renew_leases(&state.owner, &batches, &callbacks, until).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_three_times_a_lease() {
        assert_eq!(renew_every(Duration::from_secs(10)).as_millis(), 3333);
        assert_eq!(renew_every(Duration::from_millis(30)), Duration::from_millis(100));
    }
}
