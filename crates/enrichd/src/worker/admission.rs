//! When the next Apollo call may go, and which batch it carries.
//!
//! SQLite (one process): the in-process limiter ([`rules::ratelimit`]) decides, then a batch
//! is claimed. PostgreSQL (one or several replicas): the limiter shared in the database decides
//! and claims in one transaction on the database's clock ([`job_store::limiter`]), so replicas
//! sharing one Apollo key never together exceed its limits, and one replica's 429 pauses them all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use apollo_client::RateLimit;
use apollo_client::trace::TraceLine;
use job_store::{Admitted, ClaimedBatch, StoreResult};
use rules::ratelimit::{Limiter, Limits};
use rules::window::{Allowance, AnswerTimes, RateRules, WindowRule};
use secrecy::ExposeSecret;

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

/// The limiter a dispatcher obeys, and the trace it writes.
#[derive(Debug)]
pub struct Admission {
    decider: Decider,
    trace: Option<Mutex<Trace>>,
}

/// Who decides.
#[derive(Debug)]
enum Decider {
    /// This process's own limiter (SQLite).
    Local(Box<Mutex<Limiter>>),
    /// The limiter shared in PostgreSQL by every replica with the same key, and this replica's
    /// answer times, from which it measures its margin.
    Shared(RateRules, Box<Mutex<AnswerTimes>>),
}

/// The shared limiter's rules: the configured limits over Apollo's windows, under the key's
/// fingerprint, with the margin of a limiter that has seen no answer yet.
pub fn shared_rules(api_key: &str, limits: Limits, minute: Duration) -> RateRules {
    let w = |len: Duration, limit| WindowRule { len, limit };
    RateRules {
        key: job_store::limiter::key_fingerprint(api_key),
        windows: [w(minute, limits.per_minute), w(minute * 60, limits.per_hour), w(minute * 60 * 24, limits.per_day)],
        margin: AnswerTimes::default().margin(minute),
    }
}

/// A little jitter on a shared wait, so replicas refused together do not all wake in lockstep;
/// little enough that a window Apollo restarts is used within milliseconds.
pub fn spread(wait: Duration) -> Duration {
    wait + Duration::from_micros(fastrand::u64(0..=5_000)) + wait.mul_f64(fastrand::f64() * 0.001)
}

/// The margin this process measured, on `/metrics`.
fn show_margin(margin: Duration) {
    metrics::gauge!("enrichd_limiter_margin_seconds").set(margin.as_secs_f64());
}

/// The rate-limit trace file (`APOLLO_TRACE_FILE`): times count from the first call traced.
#[derive(Debug)]
struct Trace {
    file: std::fs::File,
    origin: Option<Instant>,
}

impl Trace {
    /// Appends one call's line; a trace that cannot be written is logged, never fatal.
    fn write(&mut self, sent: Instant, status: u16, headers: &RateLimit) {
        let origin = *self.origin.get_or_insert(sent);
        let line = TraceLine::new(sent.saturating_duration_since(origin), origin.elapsed(), status, headers);
        let text = serde_json::to_string(&line).expect("a trace line is JSON") + "\n";
        if let Err(e) = std::io::Write::write_all(&mut self.file, text.as_bytes()) {
            tracing::warn!(error = %e, "could not write the rate-limit trace");
        }
    }
}

impl Admission {
    /// The shared limiter on PostgreSQL, the local one otherwise; tracing calls when configured
    /// (a trace file that cannot be opened is logged as an error; dispatch goes on untraced).
    pub fn for_state(state: &AppState) -> Admission {
        let (limits, minute) = (state.config.limits(), state.config.rate_minute);
        let decider = match (state.store.is_shared(), state.config.apollo_api_key.as_ref()) {
            (true, Some(key)) => Decider::Shared(
                shared_rules(key.expose_secret(), limits, minute),
                Box::new(Mutex::new(AnswerTimes::default())),
            ),
            _ => Decider::Local(Box::new(Mutex::new(Limiter::new(limits, minute)))),
        };
        let trace = state.config.apollo_trace_file.as_ref().and_then(|path| {
            match std::fs::OpenOptions::new().create(true).append(true).open(path) {
                Ok(file) => Some(Mutex::new(Trace { file, origin: None })),
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "cannot open APOLLO_TRACE_FILE: calls are not traced");
                    None
                }
            }
        });
        Admission { decider, trace }
    }

    fn trace(&self, sent: Instant, status: u16, headers: &RateLimit) {
        if let Some(t) = &self.trace {
            t.lock().expect("trace").write(sent, status, headers);
        }
    }

    /// The shared rules with the margin this replica measures now.
    fn measured(rules: &RateRules, answers: &Mutex<AnswerTimes>) -> RateRules {
        let margin = answers.lock().expect("answer times").margin(rules.windows[0].len);
        RateRules { margin, ..rules.clone() }
    }

    /// Waits for nothing: decides now whether calls may go and claims their batches, up to `max`
    /// and as many as have room, in one transaction.
    pub async fn next(&self, state: &AppState, max: usize) -> StoreResult<Next> {
        match &self.decider {
            Decider::Local(limiter) => {
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
            Decider::Shared(rules, answers) => {
                let rules = Admission::measured(rules, answers);
                Ok(match state.store.claim_admitted(&state.owner, state.config.lease, &rules, max).await? {
                    Admitted::Claimed(batches) => {
                        let now = Instant::now();
                        let mut answers = answers.lock().expect("answer times");
                        batches.iter().for_each(|_| answers.admit(now));
                        Next::Call(batches)
                    }
                    Admitted::Wait(d) => Next::WaitUntil(Instant::now() + spread(d)),
                    Admitted::Idle => Next::Idle,
                })
            }
        }
    }

    /// Waits for a rate slot and takes it, for a call outside the claim loop (a probe).
    pub async fn take_slot(&self, state: &AppState) {
        loop {
            let wait = match &self.decider {
                Decider::Local(limiter) => {
                    let mut limiter = limiter.lock().expect("limiter");
                    let now = Instant::now();
                    limiter.try_acquire(now).err().map(|at| at.saturating_duration_since(now))
                }
                Decider::Shared(rules, answers) => {
                    match state.store.take_rate_slot(&Admission::measured(rules, answers)).await {
                        Ok(None) => {
                            answers.lock().expect("answer times").admit(Instant::now());
                            None
                        }
                        Ok(wait) => wait.map(spread),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not take a rate slot; database unavailable?");
                            Some(Duration::from_secs(1))
                        }
                    }
                }
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
        match &self.decider {
            Decider::Local(limiter) => {
                Ok(limiter.lock().expect("limiter").allowance(Instant::now(), chrono::Utc::now()))
            }
            Decider::Shared(rules, answers) => state.store.allowance(&Admission::measured(rules, answers)).await,
        }
    }

    /// Takes in an answer (`status`) to a call sent at `sent`: traces it, and either lets the
    /// local limiter learn from it (`local`) or records its time and returns the shared rules
    /// with the margin measured now, for the caller to store what it learned.
    fn answered(
        &self,
        sent: Instant,
        status: u16,
        headers: &RateLimit,
        local: impl FnOnce(&mut Limiter),
    ) -> Option<RateRules> {
        self.trace(sent, status, headers);
        match &self.decider {
            Decider::Local(limiter) => {
                let mut limiter = limiter.lock().expect("limiter");
                local(&mut limiter);
                show_margin(limiter.margin());
                None
            }
            Decider::Shared(rules, answers) => {
                answers.lock().expect("answer times").record(sent, Instant::now());
                let rules = Admission::measured(rules, answers);
                show_margin(rules.margin);
                Some(rules)
            }
        }
    }

    /// Learns from the answer to a call sent at `sent` and answered just now: its time and its
    /// rate-limit headers.
    pub async fn observe(&self, state: &AppState, sent: Instant, headers: &RateLimit) {
        let local = |l: &mut Limiter| l.observe(sent, Instant::now(), headers);
        if let Some(rules) = self.answered(sent, 200, headers, local)
            && let Err(e) = state.store.observe_rate_headers(&rules, headers).await
        {
            tracing::warn!(error = %e, "could not store the rate-limit headers");
        }
    }

    /// A 429 sent at `sent`: no call (from any replica, when shared) before its `retry-after`.
    pub async fn on_rate_limited(&self, state: &AppState, sent: Instant, headers: &RateLimit) {
        let local = |l: &mut Limiter| l.on_rate_limited(sent, Instant::now(), headers);
        if let Some(rules) = self.answered(sent, 429, headers, local)
            && let Err(e) = state.store.record_rate_limited(&rules, headers).await
        {
            tracing::warn!(error = %e, "could not share a 429's retry-after");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_windows_are_apollos_and_hide_the_key() {
        let limits = Limits { per_minute: Some(20), per_hour: None, per_day: Some(600) };
        let r = shared_rules("k-123", limits, Duration::from_secs(60));
        assert_eq!(r.windows[0], WindowRule { len: Duration::from_secs(60), limit: Some(20) });
        assert_eq!(r.windows[1].len, Duration::from_secs(3_600));
        assert_eq!(r.windows[2].limit, Some(600));
        // No answer measured yet: a twentieth of a minute.
        assert_eq!(r.margin, Duration::from_secs(3));
        assert!(!r.key.contains("k-123"));
        let answers = Mutex::new(AnswerTimes::default());
        let t0 = Instant::now();
        answers.lock().unwrap().record(t0, t0 + Duration::from_millis(40));
        assert_eq!(Admission::measured(&r, &answers).margin, Duration::from_millis(45));
    }

    #[test]
    fn spread_adds_at_most_a_little() {
        for _ in 0..100 {
            let w = spread(Duration::from_secs(1));
            assert!(w >= Duration::from_secs(1) && w <= Duration::from_millis(1006), "{w:?}");
        }
    }
}
