//! The callback sender: one signed POST per event of a finished job (`job.completed`, then
//! `job.updated` per later change), retried on a bounded schedule with jitter, every attempt
//! recorded. An event's body is rendered and frozen at its first send; every retry sends those
//! bytes under the same `webhook-id`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use job_store::{CallbackAttemptRecord, CallbackNext, DueCallback};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;

use crate::config::Schedule;
use crate::core::callback_url::CallbackPolicy;
use crate::models::{job_json, person_json};
use crate::state::AppState;
use crate::worker::{after, jittered, nap};

/// Most bytes of a receiver's answer kept per attempt.
const EXCERPT_BYTES: usize = 20 * 1024;

/// Resolves callback hosts and refuses internal addresses, so a public name that points inside
/// (DNS rebinding) is caught at send time too.
#[derive(Debug, Clone)]
struct GuardedResolver(Arc<CallbackPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| policy.check_resolved(&host, a.ip()).is_ok()).collect();
            if allowed.is_empty() {
                return Err(format!("callback host {host} resolves only to internal addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for callbacks: no redirects, bounded time, guarded DNS.
pub fn http_client(policy: CallbackPolicy, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver(Arc::new(policy))))
        .build()
        .expect("callback HTTP client")
}

/// What to do after attempt `attempt_no` (1-based) answered `status`: the schedule's delays
/// apply between attempts; a 410 means the receiver wants no more.
pub fn next_after(attempt_no: i32, status: Option<u16>, schedule: &Schedule) -> CallbackNext {
    match status {
        Some(s) if (200..300).contains(&s) => CallbackNext::Delivered,
        Some(410) => CallbackNext::Exhausted,
        _ => match schedule.0.get(usize::try_from(attempt_no - 1).unwrap_or(0)) {
            Some(delay) => CallbackNext::RetryAt(after(jittered(*delay))),
            None => CallbackNext::Exhausted,
        },
    }
}

/// Runs the callback loop until the process drains; sends already started finish first.
pub async fn run(state: AppState) {
    let http = http_client(state.config.callback_policy(), state.config.callback_timeout);
    while !state.drain.is_draining() {
        // Leases compare on the database's clock, shared by every replica; the heartbeat renews
        // them while a send runs.
        let due = match state.store.clock_now().await {
            Ok(now) => state.store.due_callbacks(&state.owner, state.config.lease, now, 16).await,
            Err(e) => Err(e),
        };
        match due {
            Ok(list) if list.is_empty() => nap(&state.drain, &state.wake.callbacks, Duration::from_millis(500)).await,
            Ok(list) => {
                let sends = list.into_iter().map(|cb| {
                    let (state, http) = (state.clone(), http.clone());
                    let holding =
                        state.held.callback(cb.callback_id, state.config.callback_timeout + state.config.lease);
                    state.drain.clone().track(async move {
                        send(&state, &http, cb).await;
                        drop(holding);
                    })
                });
                for s in sends.collect::<Vec<_>>() {
                    let _ = s.await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "callback pass failed; database unavailable?");
                nap(&state.drain, &state.wake.callbacks, Duration::from_secs(1)).await;
            }
        }
    }
}

/// A job event to render: which one, of which job, and when it happened.
#[derive(Clone, Copy, Debug)]
pub struct JobEvent {
    /// Its outbox row.
    pub callback_id: uuid::Uuid,
    /// The job.
    pub job_id: uuid::Uuid,
    /// `job.completed` or `job.updated`.
    pub event: rules::CallbackEvent,
    /// When it happened (the body's `timestamp`).
    pub created_at: DateTime<Utc>,
}

impl From<&DueCallback> for JobEvent {
    fn from(cb: &DueCallback) -> JobEvent {
        JobEvent { callback_id: cb.callback_id, job_id: cb.job_id, event: cb.event, created_at: cb.created_at }
    }
}

/// Renders a job event's body from the job as it is now; also returns the job's `updated_at`,
/// the version the body shows.
pub async fn callback_body(
    state: &AppState,
    cb: &JobEvent,
) -> Result<(serde_json::Value, DateTime<Utc>), job_store::StoreError> {
    let job_id = cb.job_id;
    let job = state.store.get_job(job_id).await?.ok_or_else(|| job_store::StoreError::NotFound(job_id.to_string()))?;
    let mut data = job_json(&job);
    let limit = state.config.callback_inline_limit;
    if (job.total as usize) <= limit {
        let people = state.store.list_people(job_id, None, limit as u64).await?;
        data["people"] = json!(people.iter().map(person_json).collect::<Vec<_>>());
    } else {
        data["people"] = json!(null);
        data["people_url"] = json!(format!("/v1/jobs/{job_id}/people"));
    }
    let body = json!({ "type": cb.event.as_str(), "timestamp": cb.created_at.to_rfc3339(), "data": data });
    Ok((body, job.updated_at))
}

/// Most renders of one body while the job keeps changing under it; then it is tried again after
/// [`RENDER_RETRY`].
const MAX_RENDERS: usize = 3;

/// How long an event whose body could not be rendered waits before the next try.
const RENDER_RETRY: Duration = Duration::from_millis(500);

/// The event's frozen body: the stored one, or rendered now and frozen (job events; person
/// events are frozen when sealed). The event stream shares it, so it sends the bytes the
/// callback sends.
pub async fn frozen_body(state: &AppState, cb: &JobEvent, stored: Option<&[u8]>) -> Result<Vec<u8>, String> {
    if let Some(body) = stored {
        return Ok(body.to_vec());
    }
    for _ in 0..MAX_RENDERS {
        let (body, version) = callback_body(state, cb).await.map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        if let Some(frozen) =
            state.store.freeze_callback_body(cb.callback_id, bytes, version).await.map_err(|e| e.to_string())?
        {
            return Ok(frozen);
        }
    }
    Err(format!("the job changed during each of {MAX_RENDERS} renders"))
}

async fn send(state: &AppState, http: &reqwest::Client, cb: DueCallback) {
    if state.drain.is_draining() {
        // Not started: handed back due now, for another replica or the next start.
        if let Err(e) = state.store.postpone_callback(cb.callback_id, chrono::Utc::now()).await {
            tracing::warn!(job_id = %cb.job_id, error = %e, "could not hand the callback back; its lease will expire");
        }
        return;
    }
    let body = match frozen_body(state, &JobEvent::from(&cb), cb.body.as_deref()).await {
        Ok(b) => b,
        Err(e) => {
            // Given back at once: holding the lease would delay the event by a whole lease.
            tracing::warn!(job_id = %cb.job_id, error = %e, "could not build the callback; will retry");
            if let Err(e) = state.store.postpone_callback(cb.callback_id, after(jittered(RENDER_RETRY))).await {
                tracing::warn!(job_id = %cb.job_id, error = %e, "could not give the callback back; its lease will expire");
            }
            return;
        }
    };
    let timestamp = chrono::Utc::now().timestamp();
    let request = http
        .post(&cb.callback_url)
        .header("content-type", "application/json")
        .header("user-agent", "enrichd")
        .header("webhook-id", &cb.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", state.signer.sign(&cb.webhook_id, timestamp, &body));
    let started = Instant::now();
    let result = request.body(body).send().await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let (status, excerpt, error) = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let mut cut = text.len().min(EXCERPT_BYTES);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let error = (!(200..300).contains(&status)).then(|| format!("receiver answered {status}"));
            (Some(status), Some(text[..cut].to_string()), error)
        }
        // Without the URL: a client's callback URL may carry its own secret.
        Err(e) => (None, None, Some(format!("{}", e.without_url()))),
    };
    let next = next_after(cb.attempt_no, status, &state.config.callback_schedule);
    let record = CallbackAttemptRecord {
        status_code: status.map(i32::from),
        response_excerpt: excerpt,
        duration_ms,
        error,
        manual: cb.manual,
    };
    match state.store.record_callback_attempt(cb.callback_id, record, next).await {
        Ok(_) => {
            metrics::counter!("enrichd_callback_attempts_total", "result" => crate::telemetry::callback_result(status))
                .increment(1);
            tracing::info!(job_id = %cb.job_id, event = %cb.event, attempt = cb.attempt_no, ?status, ?next, "callback attempt")
        }
        Err(e) => tracing::error!(job_id = %cb.job_id, error = %e, "could not record a callback attempt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_never_called() {
        crate::startup::install_tls();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        // `localhost` resolves to 127.0.0.1 (the hosts file), as a name rebound to an internal
        // address would; the URL check at submit is not involved here, only the send.
        let guarded = http_client(CallbackPolicy { allow_http: true, allow_hosts: vec![] }, Duration::from_secs(2));
        let url = format!("http://localhost:{port}/cb");
        let err = guarded.post(&url).body("{}").send().await.expect_err("refused before connecting");
        assert!(format!("{err:?}").contains("resolves only to internal addresses"), "{err:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!accepted.is_finished(), "the internal address was connected to");
        // The same client with the host allowed does connect: the refusal above was the guard's.
        let open = http_client(
            CallbackPolicy { allow_http: true, allow_hosts: vec!["localhost".into()] },
            Duration::from_millis(500),
        );
        let _ = open.post(&url).body("{}").send().await;
        assert!(tokio::time::timeout(Duration::from_secs(5), accepted).await.unwrap().unwrap());
    }

    #[test]
    fn the_schedule_is_bounded_and_410_stops() {
        let s = Schedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        assert_eq!(next_after(1, Some(204), &s), CallbackNext::Delivered);
        assert_eq!(next_after(1, Some(410), &s), CallbackNext::Exhausted);
        assert!(matches!(next_after(1, Some(500), &s), CallbackNext::RetryAt(_)));
        assert!(matches!(next_after(2, None, &s), CallbackNext::RetryAt(_)));
        assert_eq!(next_after(3, Some(500), &s), CallbackNext::Exhausted);
        assert!(matches!(next_after(1, Some(301), &s), CallbackNext::RetryAt(_)), "redirects are not followed");
        let CallbackNext::RetryAt(at) = next_after(1, Some(503), &s) else { unreachable!() };
        let wait = (at - chrono::Utc::now()).num_milliseconds();
        assert!((3_900..=6_100).contains(&wait), "5 s ± 20 % jitter, got {wait} ms");
    }
}
