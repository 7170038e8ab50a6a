//! The dispatcher: claims batches, spends Apollo's rate allowance on them, and records answers.
//!
//! One loop per process decides *when* a call may go ([`Admission`]: this process's limiter on
//! SQLite, the one shared by all replicas on PostgreSQL); the calls themselves run concurrently up
//! to the configured limit. Each call's batch was committed as `submitting` by the
//! claim, before the HTTP request, so a crash mid-call is found later by lease expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apollo_client::{ApolloError, EnrichFlags, PersonDetail, RateLimit};
use job_store::writer::group_commit::WriteError;
use job_store::{CallError, ClaimedBatch, SyncOutcome, SyncRecorded};
use rules::lifecycle::{self, Rejection};
use rules::records::{detail_of, sync_people};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::state::AppState;
use crate::worker::admission::{Admission, Next};
use crate::worker::{db_after, jittered, nap};

/// What the dispatcher has seen, for `/readyz` and the demo's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    /// Apollo calls made.
    pub calls: u64,
    /// 429 answers drawn.
    pub rate_limited: u64,
    /// Calls that failed transiently (5xx, timeouts).
    pub transient: u64,
}

/// The limiter and counters one dispatcher shares with its call tasks.
#[derive(Debug)]
pub struct Dispatcher {
    admission: Admission,
    stats: Mutex<DispatchStats>,
    /// When Apollo last accepted a call, per set of flags (a refusal after that is about the
    /// refused details, not about the flags or our webhook URL).
    last_accepted: Mutex<HashMap<u8, Instant>>,
    /// The pause this process last saw, and when it first saw it or last probed it.
    pause_probe: Mutex<Option<(String, Instant)>>,
    /// When this process last read the pause switch for probing.
    pause_checked: Mutex<Option<Instant>>,
}

/// The claim number of probe calls' webhook URLs (real claims count from 1).
pub const PROBE_CLAIM: i32 = 0;

/// How long an accepted call vouches that Apollo accepts calls with its flags.
const ACCEPTED_VOUCHES_FOR: Duration = Duration::from_secs(60);

/// The detail of a probe call: well-formed, surely matching nobody, so it costs no credit.
fn probe_detail() -> PersonDetail {
    PersonDetail { email: Some("enrichd-probe@example.invalid".into()), ..PersonDetail::default() }
}

impl Dispatcher {
    /// A dispatcher with the configured limits.
    pub fn new(state: &AppState) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            admission: Admission::for_state(state),
            stats: Mutex::new(DispatchStats::default()),
            last_accepted: Mutex::new(HashMap::new()),
            pause_probe: Mutex::new(None),
            pause_checked: Mutex::new(None),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DispatchStats {
        *self.stats.lock().expect("dispatch stats")
    }

    /// Apollo's allowance as this dispatcher's limiter sees it (the system page).
    pub async fn allowance(&self, state: &AppState) -> job_store::StoreResult<rules::window::Allowance> {
        self.admission.allowance(state).await
    }

    fn bump(&self, f: impl FnOnce(&mut DispatchStats)) {
        f(&mut self.stats.lock().expect("dispatch stats"));
    }

    fn accepted(&self, flags: EnrichFlags, at: Instant) {
        self.last_accepted.lock().expect("last accepted").insert(flags.bits(), at);
    }

    /// Whether Apollo accepted a call with `flags` at or after `since`.
    fn accepted_since(&self, flags: EnrichFlags, since: Instant) -> bool {
        self.last_accepted.lock().expect("last accepted").get(&flags.bits()).is_some_and(|t| *t >= since)
    }

    /// Whether Apollo accepts calls like `batch`'s right now: a call with the same flags accepted
    /// within the last minute says so; else a probe decides — the same flags and webhook URL (as
    /// claim 0, which books no credits) with one plain detail that surely matches nobody, so it
    /// costs no credit. `None` when the probe could not tell (rate limited, a 5xx, a timeout).
    async fn apollo_accepts_calls(&self, state: &AppState, batch: &ClaimedBatch) -> Option<bool> {
        let flags: EnrichFlags = batch.flags;
        let recent = self
            .last_accepted
            .lock()
            .expect("last accepted")
            .get(&flags.bits())
            .is_some_and(|t| t.elapsed() < ACCEPTED_VOUCHES_FOR);
        if recent {
            return Some(true);
        }
        let probe = ClaimedBatch { claims: PROBE_CLAIM, ..batch.clone() };
        let hook =
            state.config.public_base_url.as_deref().filter(|_| flags.has_async()).map(|b| webhook_url(b, &probe));
        let poll_only = flags.has_async() && hook.is_none();
        self.admission.take_slot(state).await;
        self.bump(|s| s.calls += 1);
        let sent = Instant::now();
        match state.apollo.bulk_match(&[probe_detail()], &flags, hook.as_deref(), poll_only).await {
            Ok(outcome) => {
                self.admission.observe(state, sent, &outcome.limits).await;
                self.accepted(flags, Instant::now());
                Some(true)
            }
            Err(ApolloError::InvalidRequest { .. }) => Some(false),
            Err(e) if e.blocks_dispatch() => Some(false),
            Err(_) => None,
        }
    }
}

impl Dispatcher {
    /// While dispatch is paused, asks Apollo at most every `PAUSE_PROBE_EVERY` (one replica at a
    /// time) whether it accepts calls again. The probe is a call the pause refused, sent again
    /// (`permit` counts it in flight): only a real call proves exhausted credits back, and if
    /// Apollo accepts it, it was worth its credits. With no such call due, a call costing nothing
    /// — one detail matching nobody, with the phone flag and a webhook URL like a real batch's
    /// when webhooks are on, so a refused key or webhook URL shows. Accepted: dispatch resumes,
    /// unless it was paused again meanwhile for another reason.
    async fn probe_pause(&self, state: &AppState, permit: OwnedSemaphorePermit) -> Result<(), job_store::StoreError> {
        let every = state.config.pause_probe_every;
        {
            // The switch is read at most once a second while idle.
            let mut checked = self.pause_checked.lock().expect("pause checked");
            if every.is_zero() || checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(());
            }
            *checked = Some(Instant::now());
        }
        let Some(reason) = state.store.pause_reason().await? else {
            *self.pause_probe.lock().expect("pause probe") = None;
            return Ok(());
        };
        {
            let mut seen = self.pause_probe.lock().expect("pause probe");
            match seen.as_ref() {
                // The same pause, probed (or first seen) less than an interval ago: not yet.
                Some((s, at)) if *s == reason && at.elapsed() < every => return Ok(()),
                // The same pause, long enough: probe now.
                Some((s, _)) if *s == reason => {}
                // A new pause: first probe a whole interval later.
                _ => {
                    *seen = Some((reason.clone(), Instant::now()));
                    return Ok(());
                }
            }
            *seen = Some((reason.clone(), Instant::now()));
        }
        if !state.store.hold_task("pause-probe", &state.owner, every).await? {
            return Ok(());
        }
        // One rate slot, for the refused call or else the free one.
        self.admission.take_slot(state).await;
        let now = state.store.clock_now().await?;
        if let Some(batch) = state.store.claim_paused_retry(&state.owner, state.config.lease, now).await? {
            let flags = batch.flags;
            let sent = Instant::now();
            call(state, self, batch, permit).await;
            if self.accepted_since(flags, sent) && state.store.lift_pause(&reason).await? {
                tracing::info!(pause = %reason, "Apollo accepted a refused call again: dispatch resumed");
                state.wake.dispatch.notify_one();
            }
            return Ok(());
        }
        drop(permit);
        let (flags, hook) = match state.config.public_base_url.as_deref() {
            Some(base) => {
                // The phone flag carries the webhook URL and costs nothing without a match; a
                // waterfall may search vendors even for an unmatched detail, so it is left out.
                let flags = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
                let hook = format!(
                    "{}/v1/webhooks/apollo/{}?token=probe&claim={PROBE_CLAIM}",
                    base.trim_end_matches('/'),
                    uuid::Uuid::nil()
                );
                (flags, Some(hook))
            }
            None => (EnrichFlags::default(), None),
        };
        self.bump(|s| s.calls += 1);
        let sent = Instant::now();
        match state.apollo.bulk_match(&[probe_detail()], &flags, hook.as_deref(), false).await {
            Ok(outcome) => {
                self.admission.observe(state, sent, &outcome.limits).await;
                if state.store.lift_pause(&reason).await? {
                    tracing::info!(pause = %reason, "Apollo accepts calls again: dispatch resumed");
                    state.wake.dispatch.notify_one();
                }
            }
            Err(e) => tracing::info!(error = %e, "still paused: Apollo refused the probe"),
        }
        Ok(())
    }
}

/// Runs the dispatch loop until the process drains. Calls run as tracked tasks
/// ([`crate::shutdown::Drain`]): shutdown waits for them to be answered and recorded.
pub async fn run(state: AppState, dispatcher: Arc<Dispatcher>) {
    let permits = Arc::new(Semaphore::new(state.config.dispatch_concurrency.max(1)));
    while !state.drain.is_draining() {
        // A permit first: a claimed batch is called at once, never left on its lease. Only this
        // loop takes permits, so those free now stay free for the batches claimed with them.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = state.drain.begun() => break,
        };
        let batches = match dispatcher.admission.next(&state, 1 + permits.available_permits()).await {
            Ok(Next::Call(batches)) => batches,
            Ok(Next::WaitUntil(at)) => {
                drop(permit);
                metrics::histogram!("enrichd_limiter_wait_seconds").record((at - Instant::now()).as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = state.drain.begun() => {}
                }
                continue;
            }
            Ok(Next::Idle) => {
                if let Err(e) = dispatcher.probe_pause(&state, permit).await {
                    tracing::warn!(error = %e, "could not probe the pause; database unavailable?");
                }
                nap(&state.drain, &state.wake.dispatch, Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; database unavailable?");
                drop(permit);
                nap(&state.drain, &state.wake.dispatch, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut permit = Some(permit);
        for batch in batches {
            let permit = match permit.take() {
                Some(p) => p,
                None => permits.clone().acquire_owned().await.expect("semaphore never closes"),
            };
            let (state, dispatcher) = (state.clone(), dispatcher.clone());
            state.drain.clone().track(async move { call(&state, &dispatcher, batch, permit).await });
        }
    }
}

/// The webhook URL Apollo gets for a batch; the token is the batch's own random secret, and the
/// claim tells a retried call's deliveries from the first one's.
pub fn webhook_url(public_base_url: &str, batch: &ClaimedBatch) -> String {
    format!(
        "{}/v1/webhooks/apollo/{}?token={}&claim={}",
        public_base_url.trim_end_matches('/'),
        batch.batch_id,
        batch.webhook_secret,
        batch.claims
    )
}

/// Records an answer, offering it to the database again for up to [`RECORD_FOR`]: it was paid
/// for, so an outage must not send the call again. Past that, the lease is released and the retry
/// counts a possible double charge.
async fn record_answer(state: &AppState, outcome: SyncOutcome) -> Result<SyncRecorded, WriteError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match state.answers.record(outcome.clone()).await {
            Err(e) if started.elapsed() < RECORD_FOR => {
                tracing::warn!(batch_id = %outcome.batch_id, error = %e, "could not record a sync answer; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            recorded => return recorded,
        }
    }
}

/// How long an answer is kept and offered to the database again: longer than a database restart
/// or failover, so an answer Apollo charged for is not lost to an outage and the call sent again.
const RECORD_FOR: Duration = Duration::from_secs(300);

/// Calls Apollo with a batch and records the outcome. `permit` counts the call in flight: it is
/// let go when Apollo has answered, so recording answers never holds back the next calls.
async fn call(state: &AppState, dispatcher: &Dispatcher, batch: ClaimedBatch, permit: OwnedSemaphorePermit) {
    if state.drain.is_draining() {
        // Claimed but not sent: handed back now, so another replica (or the next start) sends it
        // without waiting the lease out and without counting an attempt.
        match state.store.hand_back_batch(batch.batch_id).await {
            Ok(_) => tracing::info!(batch_id = %batch.batch_id, "shutdown: batch handed back unsent"),
            Err(e) => {
                tracing::warn!(batch_id = %batch.batch_id, error = %e, "could not hand the batch back; its lease will expire")
            }
        }
        return;
    }
    // The lease is renewed while the call runs and its answer is recorded, never past the
    // call's timeout plus one lease to record it.
    let _holding = state.held.batch(batch.batch_id, state.config.apollo_timeout + state.config.lease);
    let flags: EnrichFlags = batch.flags;
    let details: Vec<PersonDetail> = batch.people.iter().map(|p| detail_of(&p.input)).collect();
    let hook = state.config.public_base_url.as_deref().filter(|_| flags.has_async()).map(|b| webhook_url(b, &batch));
    let poll_only = flags.has_async() && hook.is_none();
    dispatcher.bump(|s| s.calls += 1);
    let sent = Instant::now();
    let result = state.apollo.bulk_match(&details, &flags, hook.as_deref(), poll_only).await;
    drop(permit);
    match result {
        Ok(outcome) => {
            dispatcher.accepted(flags, Instant::now());
            dispatcher.admission.observe(state, sent, &outcome.limits).await;
            let people = sync_people(batch.people.iter().map(|p| p.person_id), &details, &outcome.response, &flags);
            let answer = SyncOutcome {
                batch_id: batch.batch_id,
                claim: batch.claims,
                http_status: i32::from(outcome.status),
                request_id: outcome.response.request_id.map(|r| r.0),
                phone_request_id: outcome.response.phone_enrichment.as_ref().and_then(|p| p.request_id.clone()),
                response: outcome.response.raw.clone(),
                credits: outcome.response.credits_consumed.unwrap_or_default(),
                people,
            };
            let recorded = record_answer(state, answer).await;
            match recorded {
                Ok(SyncRecorded::Recorded { completed_jobs }) => {
                    let credits = outcome.response.credits_consumed.unwrap_or_default().micros().max(0) as u64;
                    metrics::counter!("enrichd_credits_consumed_micros_total", "kind" => "sync").increment(credits);
                    // Deliveries that came before this answer can merge now.
                    state.wake.ingest.notify_one();
                    if !completed_jobs.is_empty() {
                        state.wake.callbacks.notify_one();
                        state.wake.person_events.notify_one();
                    }
                }
                Ok(other) => tracing::info!(batch_id = %batch.batch_id, ?other, "sync answer not recorded"),
                // The lease will expire and the batch be retried: counted as a possible double charge.
                Err(e) => tracing::error!(batch_id = %batch.batch_id, error = %e, "could not record a sync answer"),
            }
        }
        Err(e) => on_error(state, dispatcher, &batch, e, sent).await,
    }
}

/// A failed call sent at `sent`.
async fn on_error(state: &AppState, dispatcher: &Dispatcher, batch: &ClaimedBatch, e: ApolloError, sent: Instant) {
    let id = batch.batch_id;
    let message = e.to_string();
    // Recorded with the batch's outcome, for the system page.
    let failure = CallError { kind: e.kind(), status: e.status(), message: &message };
    let store = &state.store;
    let outcome = match &e {
        ApolloError::RateLimited { retry_after, limits, .. } => {
            dispatcher.bump(|s| s.rate_limited += 1);
            // Whatever Apollo asked for, never longer than the configured maximum.
            let wait = retry_after.unwrap_or(state.config.rate_minute).min(state.config.max_retry_after);
            let heard = RateLimit { retry_after: Some(wait), ..**limits };
            dispatcher.admission.on_rate_limited(state, sent, &heard).await;
            tracing::info!(batch_id = %id, ?wait, "rate limited by Apollo; requeued without counting an attempt");
            store.schedule_retry(id, db_after(state, wait).await, false, failure).await
        }
        e if e.blocks_dispatch() => {
            tracing::error!(batch_id = %id, error = %message, "dispatch paused");
            let paused = store.set_pause(Some(message.clone())).await;
            if let Err(pe) = paused {
                tracing::error!(error = %pe, "could not record the pause");
            }
            store.schedule_retry(id, db_after(state, Duration::ZERO).await, false, failure).await
        }
        ApolloError::Transient { .. } | ApolloError::Undecodable { .. }
            if lifecycle::retry_after_failure(batch.failures, state.config.max_attempts) =>
        {
            dispatcher.bump(|s| s.transient += 1);
            let backoff = lifecycle::retry_backoff(state.config.retry_base, batch.failures);
            let at = db_after(state, jittered(backoff)).await;
            if e.outcome_unknown() {
                metrics::counter!("enrichd_possible_double_charges_total").increment(1);
                tracing::warn!(batch_id = %id, attempt = batch.attempt, error = %message, "Apollo's answer was lost (it may have charged the call); retrying, counted as a possible double charge");
                store.retry_unknown_outcome(id, at, failure).await
            } else {
                tracing::warn!(batch_id = %id, attempt = batch.attempt, error = %message, "transient Apollo failure; retrying");
                store.schedule_retry(id, at, true, failure).await
            }
        }
        ApolloError::InvalidRequest { .. } => on_rejection(state, dispatcher, batch, failure).await,
        _ => {
            tracing::error!(batch_id = %id, attempt = batch.attempt, failures = batch.failures + 1, error = %message, "batch failed");
            let failed = store.fail_batch(id, failure).await;
            state.wake.callbacks.notify_one();
            state.wake.person_events.notify_one();
            failed
        }
    };
    if let Err(se) = outcome {
        tracing::error!(batch_id = %id, error = %se, "could not record the failed call; the lease will expire");
    }
    state.wake.dispatch.notify_one();
}

/// Apollo refused the request (400, 404, a 422 other than credits). If Apollo refuses every call
/// (a probe too), dispatch pauses and nobody fails; otherwise the batch is split until the
/// refused detail is alone, and only that person fails, with Apollo's message.
async fn on_rejection(
    state: &AppState,
    dispatcher: &Dispatcher,
    batch: &ClaimedBatch,
    failure: CallError<'_>,
) -> Result<bool, job_store::StoreError> {
    let id = batch.batch_id;
    let message = failure.message;
    let Some(accepts) = dispatcher.apollo_accepts_calls(state, batch).await else {
        // The probe could not tell (429, 5xx): ask again a little later.
        let at = db_after(state, jittered(Duration::from_secs(5))).await;
        return state.store.schedule_retry(id, at, false, failure).await;
    };
    match lifecycle::on_rejection(batch.people.len(), accepts) {
        Rejection::Pause => {
            let reason = format!(
                "Apollo refuses every call, even a plain one (check APOLLO_BASE_URL and the key's plan): {message}"
            );
            tracing::error!(batch_id = %id, error = %reason, "dispatch paused");
            state.store.set_pause(Some(reason)).await?;
            state.store.schedule_retry(id, db_after(state, Duration::ZERO).await, false, failure).await
        }
        Rejection::Split => {
            let half = state.store.split_batch(id, failure).await?;
            tracing::info!(batch_id = %id, new_batch = ?half, error = %message, "Apollo refused a detail; batch split to find it");
            Ok(half.is_some())
        }
        Rejection::FailPerson => {
            tracing::warn!(batch_id = %id, error = %message, "Apollo refused this person's detail");
            let failed = state.store.fail_batch(id, failure).await;
            state.wake.callbacks.notify_one();
            state.wake.person_events.notify_one();
            failed
        }
    }
}
