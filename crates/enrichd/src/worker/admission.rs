//! When the next Apollo call may go, and which batch it carries.
//!
//! SQLite (one process): the in-process limiter ([`crate::core::ratelimit`]) decides, then a batch
//! is claimed. PostgreSQL (one or several replicas): the limiter shared in the database decides
//! and claims in one transaction on the database's clock ([`job_store::limiter`]), so replicas
//! sharing one Apollo key never together exceed its limits, and one replica's 429 pauses them all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use apollo_client::RateLimit;
use job_store::limiter::{RestartFinder, UsageReading, usable};
use job_store::{Admitted, Allowance, ClaimedBatch, RateRules, StoreResult, WindowRule};
use secrecy::ExposeSecret;

use crate::core::ratelimit::{Clock, Limiter, Limits, window_margin};
use crate::state::AppState;

/// What the dispatch loop does next.
#[derive(Debug)]
pub enum Next {
    /// Call Apollo with these batches now (at least one; their rate slots are taken).
    Call(Vec<ClaimedBatch>),
    /// No slot before this instant.
    WaitUntil(Instant),
    /// Nothing to send (or dispatch paused).
    Idle,
}

/// The limiter a dispatcher obeys.
#[derive(Debug)]
pub enum Admission {
    /// This process's own limiter (SQLite).
    Local(Box<Mutex<Limiter>>),
    /// The limiter shared in PostgreSQL by every replica with the same key, and this replica's
    /// usage readings, from which it finds where Apollo's windows restart for all of them.
    Shared(RateRules, Box<Mutex<Readings>>),
}

/// One replica's usage readings, timed on the database's clock.
#[derive(Debug, Default)]
pub struct Readings {
    finders: [RestartFinder; 3],
    /// The database's clock at an instant of this process: readings are timed from it with this
    /// process's monotonic clock, so a host whose wall clock is off (by less than the skew
    /// correction notices) cannot misplace Apollo's restarts.
    anchor: Option<Clock>,
}

/// How long one reading of the database's clock times readings (monotonic clocks drift by
/// millionths).
const ANCHOR_FOR: Duration = Duration::from_secs(30);

/// The shared limiter's rules: the configured limits over windows as long as the in-process
/// limiter's (margin included), under the key's fingerprint.
pub fn shared_rules(api_key: &str, limits: Limits, minute: Duration) -> RateRules {
    let margin = window_margin(minute);
    let w = |len: Duration, limit| WindowRule { len: len + margin, limit };
    RateRules {
        key: job_store::limiter::key_fingerprint(api_key),
        windows: [w(minute, limits.per_minute), w(minute * 60, limits.per_hour), w(minute * 60 * 24, limits.per_day)],
        margin,
    }
}

/// A little jitter on a shared wait, so replicas refused together do not all wake in lockstep;
/// little enough that a window Apollo restarts is used within milliseconds.
pub fn spread(wait: Duration) -> Duration {
    wait + Duration::from_micros(fastrand::u64(0..=5_000)) + wait.mul_f64(fastrand::f64() * 0.001)
}

impl Admission {
    /// The shared limiter on PostgreSQL, the local one otherwise.
    pub fn for_state(state: &AppState) -> Admission {
        let (limits, minute) = (state.config.limits(), state.config.rate_minute);
        match (state.store.is_shared(), state.config.apollo_api_key.as_ref()) {
            (true, Some(key)) => Admission::Shared(
                shared_rules(key.expose_secret(), limits, minute),
                Box::new(Mutex::new(Readings::default())),
            ),
            _ => Admission::Local(Box::new(Mutex::new(Limiter::new(limits, minute)))),
        }
    }

    /// Waits for nothing: decides now whether calls may go and claims their batches, up to `max`
    /// and as many as have room, in one transaction.
    pub async fn next(&self, state: &AppState, max: usize) -> StoreResult<Next> {
        match self {
            Admission::Local(limiter) => {
                let free = {
                    let mut limiter = limiter.lock().expect("limiter");
                    let now = Instant::now();
                    if let Some(at) = limiter.next_slot(now) {
                        return Ok(Next::WaitUntil(at));
                    }
                    limiter.free_slots(now, max.max(1))
                };
                let (store, owner, lease) = (state.store.clone(), state.owner.clone(), state.config.lease);
                let claim = async move { store.claim_batches(&owner, lease, store.clock_now().await?, free).await };
                let batches = state.writer.write(claim).await?;
                if batches.is_empty() {
                    return Ok(Next::Idle);
                }
                // One dispatch loop per process takes slots, so the slots seen free are still free.
                let mut limiter = limiter.lock().expect("limiter");
                for _ in &batches {
                    let _ = limiter.try_acquire(Instant::now());
                }
                Ok(Next::Call(batches))
            }
            Admission::Shared(rules, _) => {
                Ok(match state.store.claim_admitted(&state.owner, state.config.lease, rules, max).await? {
                    Admitted::Claimed(batches) => Next::Call(batches),
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
                Admission::Shared(rules, _) => match state.store.take_rate_slot(rules).await {
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
            Admission::Shared(rules, _) => state.store.allowance(rules).await,
        }
    }

    /// Learns from the rate-limit headers of a call sent at `sent` and answered just now
    /// (`counted`: Apollo counted it, i.e. it was not a 429).
    pub async fn observe(&self, state: &AppState, sent: Instant, headers: &RateLimit, counted: bool) {
        match self {
            Admission::Local(limiter) => {
                limiter.lock().expect("limiter").observe(sent, Instant::now(), headers, counted)
            }
            Admission::Shared(rules, _) => {
                let used = headers.windows().map(|w| w.used);
                self.learn_restarts(state, sent, used, counted).await;
                if let Err(e) = state.store.observe_rate_headers(rules, headers).await {
                    tracing::warn!(error = %e, "could not store the rate-limit headers");
                }
            }
        }
    }

    /// Learns from the usage-stats endpoint's counts (minute, hour, day), asked at `sent`.
    pub async fn observe_usage(&self, state: &AppState, sent: Instant, used: [Option<u64>; 3]) {
        match self {
            Admission::Local(limiter) => limiter.lock().expect("limiter").observe_usage(sent, Instant::now(), used),
            Admission::Shared(..) => self.learn_restarts(state, sent, used, false).await,
        }
    }

    /// Shared: adds this replica's readings, on the database's clock, and stores any restart they
    /// prove.
    async fn learn_restarts(&self, state: &AppState, sent: Instant, used: [Option<u64>; 3], counted: bool) {
        let Admission::Shared(rules, readings) = self else { return };
        let answered = Instant::now();
        let stale = readings.lock().expect("readings").anchor.is_none_or(|c| c.age() > ANCHOR_FOR);
        if stale {
            let before = Instant::now();
            match state.store.clock_now().await {
                Ok(db) => {
                    let mid = before + before.elapsed() / 2;
                    // Readings timed from another anchor may be off by its round trip: pairs
                    // across anchors could look ordered when they were not, so start afresh.
                    let mut r = readings.lock().expect("readings");
                    *r = Readings { anchor: Some(Clock::new(mid, db.timestamp_micros())), ..Readings::default() };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the database's clock");
                    return;
                }
            }
        }
        let found = {
            let mut r = readings.lock().expect("readings");
            let Some(clock) = r.anchor else { return };
            let (sent, answered) = clock.reading(sent, answered);
            let mut found = [None; 3];
            for ((f, used), out) in r.finders.iter_mut().zip(used).zip(&mut found) {
                if let Some(used) = used {
                    *out = f.add(UsageReading::of(sent, answered, used, counted));
                }
            }
            found
        };
        if let Err(e) = state.store.learn_restarts(rules, found).await {
            tracing::warn!(error = %e, "could not store where Apollo's window restarts");
        }
    }

    /// Whether the minute window's restart is known precisely enough to count by it.
    pub async fn restart_known(&self, state: &AppState) -> StoreResult<bool> {
        match self {
            Admission::Local(limiter) => Ok(limiter.lock().expect("limiter").restart_known()),
            Admission::Shared(rules, _) => {
                let period = i64::try_from(state.config.rate_minute.as_millis()).unwrap_or(i64::MAX);
                Ok(state.store.window_restarts(&rules.key).await?[0].is_some_and(|r| usable(r, period)))
            }
        }
    }

    /// A 429 sent at `sent`: no call (from any replica, when shared) before its `retry-after`.
    pub async fn on_rate_limited(&self, state: &AppState, sent: Instant, headers: &RateLimit) {
        match self {
            Admission::Local(limiter) => {
                limiter.lock().expect("limiter").on_rate_limited(sent, Instant::now(), headers)
            }
            Admission::Shared(rules, _) => {
                if let Err(e) = state.store.record_rate_limited(rules, headers).await {
                    tracing::warn!(error = %e, "could not share a 429's retry-after");
                }
                let used = headers.windows().map(|w| w.used);
                self.learn_restarts(state, sent, used, false).await;
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
        assert_eq!(r.margin, Duration::from_millis(600));
        assert!(!r.key.contains("k-123"));
    }

    #[test]
    fn spread_adds_at_most_a_little() {
        for _ in 0..100 {
            let w = spread(Duration::from_secs(1));
            assert!(w >= Duration::from_secs(1) && w <= Duration::from_millis(1006), "{w:?}");
        }
    }
}
