//! When the next Apollo call may go, and which batch it carries.
//!
//! SQLite (one process): the in-process limiter ([`crate::core::ratelimit`]) decides, then a batch
//! is claimed. PostgreSQL (one or several replicas): the limiter shared in the database decides
//! and claims in one transaction on the database's clock ([`job_store::limiter`]), so replicas
//! sharing one Apollo key never together exceed its limits, and one replica's 429 pauses them all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use apollo_client::RateLimit;
use job_store::{Admitted, Allowance, ClaimedBatch, RateRules, StoreResult, WindowRule};
use secrecy::ExposeSecret;

use crate::core::ratelimit::{Limiter, Limits, window_margin};
use crate::state::AppState;

/// What the dispatch loop does next.
#[derive(Debug)]
pub enum Next {
    /// Call Apollo with this batch now (its rate slot is taken).
    Call(ClaimedBatch),
    /// No slot before this instant.
    WaitUntil(Instant),
    /// Nothing to send (or dispatch paused).
    Idle,
}

/// The limiter a dispatcher obeys.
#[derive(Debug)]
pub enum Admission {
    /// This process's own limiter (SQLite).
    Local(Mutex<Limiter>),
    /// The limiter shared in PostgreSQL by every replica with the same key.
    Shared(RateRules),
}

/// The shared limiter's rules: the configured limits over windows as long as the in-process
/// limiter's (margin included), under the key's fingerprint.
pub fn shared_rules(api_key: &str, limits: Limits, minute: Duration) -> RateRules {
    let margin = window_margin(minute);
    let w = |len: Duration, limit| WindowRule { len: len + margin, limit };
    RateRules {
        key: job_store::limiter::key_fingerprint(api_key),
        windows: [w(minute, limits.per_minute), w(minute * 60, limits.per_hour), w(minute * 60 * 24, limits.per_day)],
    }
}

/// A little jitter on a shared wait, so replicas refused together do not all wake in lockstep.
pub fn spread(wait: Duration) -> Duration {
    wait + Duration::from_micros(fastrand::u64(0..=5_000)) + wait.mul_f64(fastrand::f64() * 0.01)
}

impl Admission {
    /// The shared limiter on PostgreSQL, the local one otherwise.
    pub fn for_state(state: &AppState) -> Admission {
        let (limits, minute) = (state.config.limits(), state.config.rate_minute);
        match (state.store.is_shared(), state.config.apollo_api_key.as_ref()) {
            (true, Some(key)) => Admission::Shared(shared_rules(key.expose_secret(), limits, minute)),
            _ => Admission::Local(Mutex::new(Limiter::new(limits, minute))),
        }
    }

    /// Waits for nothing: decides now whether a call may go and claims its batch.
    pub async fn next(&self, state: &AppState) -> StoreResult<Next> {
        match self {
            Admission::Local(limiter) => {
                if let Some(at) = limiter.lock().expect("limiter").next_slot(Instant::now()) {
                    return Ok(Next::WaitUntil(at));
                }
                let Some(batch) =
                    state.store.claim_batch(&state.owner, state.config.lease, state.store.clock_now().await?).await?
                else {
                    return Ok(Next::Idle);
                };
                // One dispatch loop per process takes slots, so the slot seen free is still free.
                let _ = limiter.lock().expect("limiter").try_acquire(Instant::now());
                Ok(Next::Call(batch))
            }
            Admission::Shared(rules) => {
                Ok(match state.store.claim_admitted(&state.owner, state.config.lease, rules).await? {
                    Admitted::Claimed(batch) => Next::Call(batch),
                    Admitted::Wait(d) => Next::WaitUntil(Instant::now() + spread(d)),
                    Admitted::Idle => Next::Idle,
                })
            }
        }
    }

    /// Waits for a rate slot and takes it, for a call outside the claim loop (a probe).
    pub async fn take_slot(&self, state: &AppState) {
        loop {
            let wait = match self {
                Admission::Local(limiter) => {
                    let mut limiter = limiter.lock().expect("limiter");
                    let now = Instant::now();
                    limiter.try_acquire(now).err().map(|at| at.saturating_duration_since(now))
                }
                Admission::Shared(rules) => match state.store.take_rate_slot(rules).await {
                    Ok(wait) => wait.map(spread),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not take a rate slot; database unavailable?");
                        Some(Duration::from_secs(1))
                    }
                },
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// The allowance now, for operators: the local limiter's, or the shared one's counted in the
    /// database on its clock.
    pub async fn allowance(&self, state: &AppState) -> StoreResult<Allowance> {
        match self {
            Admission::Local(limiter) => {
                Ok(limiter.lock().expect("limiter").allowance(Instant::now(), chrono::Utc::now()))
            }
            Admission::Shared(rules) => state.store.allowance(rules).await,
        }
    }

    /// Learns from an answer's rate-limit headers.
    pub async fn observe(&self, state: &AppState, headers: &RateLimit) {
        match self {
            Admission::Local(limiter) => limiter.lock().expect("limiter").observe(Instant::now(), headers),
            Admission::Shared(rules) => {
                if let Err(e) = state.store.observe_rate_headers(rules, headers).await {
                    tracing::warn!(error = %e, "could not store the rate-limit headers");
                }
            }
        }
    }

    /// A 429: no call (from any replica, when shared) before its `retry-after`.
    pub async fn on_rate_limited(&self, state: &AppState, headers: &RateLimit) {
        match self {
            Admission::Local(limiter) => limiter.lock().expect("limiter").on_rate_limited(Instant::now(), headers),
            Admission::Shared(rules) => {
                if let Err(e) = state.store.record_rate_limited(rules, headers).await {
                    tracing::warn!(error = %e, "could not share a 429's retry-after");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_windows_match_the_local_limiter_and_hide_the_key() {
        let limits = Limits { per_minute: Some(20), per_hour: None, per_day: Some(600) };
        let r = shared_rules("k-123", limits, Duration::from_secs(60));
        assert_eq!(r.windows[0], WindowRule { len: Duration::from_millis(60_600), limit: Some(20) });
        assert_eq!(r.windows[1].len, Duration::from_millis(3_600_600));
        assert_eq!(r.windows[2].limit, Some(600));
        assert!(!r.key.contains("k-123"));
    }

    #[test]
    fn spread_adds_at_most_a_little() {
        for _ in 0..100 {
            let w = spread(Duration::from_secs(1));
            assert!(w >= Duration::from_secs(1) && w <= Duration::from_millis(1015), "{w:?}");
        }
    }
}
