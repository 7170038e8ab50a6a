//! The rescue: takes back batches whose lease ran out (their owner died mid-call) so they are
//! called again, and counts each as a possible double charge. It runs on every replica, on its own
//! tick, so it sees every database outage, whatever the dispatcher is waiting for: after one, no
//! lease is taken until the database has been reachable for a whole lease ([`Reach`]).

use std::time::{Duration, Instant};

use rules::lifecycle::Reach;

use crate::state::AppState;

/// How often expired leases are looked for: an eighth of a lease, at least 200 ms.
pub fn sweep_every(lease: Duration) -> Duration {
    (lease / 8).max(Duration::from_millis(200))
}

/// Sweeps expired leases until the process starts draining.
pub async fn run(state: AppState) {
    let lease = state.config.lease;
    let mut reach = Reach::Steady;
    while !state.drain.is_draining() {
        let probe = state.store.clock_now().await;
        reach = reach.after_probe(probe.is_ok(), Instant::now(), lease);
        let released = match probe {
            Ok(now) if reach.may_release_leases() => state.store.release_expired_leases(now).await,
            Ok(_) => Ok(0),
            Err(e) => Err(e),
        };
        match released {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("enrichd_possible_double_charges_total").increment(n);
                tracing::warn!(batches = n, "released expired leases: outcome unknown, retrying");
                state.wake.dispatch.notify_one();
            }
            Err(e) => {
                reach = reach.after_probe(false, Instant::now(), lease);
                tracing::warn!(error = %e, "could not release expired leases");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sweep_every(lease)) => {}
            _ = state.drain.begun() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_eight_times_a_lease() {
        assert_eq!(sweep_every(Duration::from_secs(10)), Duration::from_millis(1250));
        assert_eq!(sweep_every(Duration::from_millis(800)), Duration::from_millis(200));
    }
}
