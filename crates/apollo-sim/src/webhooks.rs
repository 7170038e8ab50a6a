//! Asynchronous deliveries: scheduling, the reorder fault, POSTs with bounded retries.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::async_job::{AsyncJob, Flavor};
use crate::state::Shared;

/// Waits until the job is due, charges it, then hands it to the dispatcher (or records the drop).
pub(crate) fn schedule(shared: &Arc<Shared>, job: Arc<AsyncJob>) {
    let shared = shared.clone();
    shared.delivery_started();
    shared.rt.clone().spawn(async move {
        tokio::time::sleep_until(job.due.into()).await;
        if shared.stopped() {
            shared.delivery_finished();
            return;
        }
        shared.produce(&job);
        if job.url.is_none() {
            shared.delivery_finished();
            return;
        }
        if job.faults.drop {
            shared.record_delivery(&job, 0, None, None, Flavor { dropped: true, ..Flavor::default() });
            shared.delivery_finished();
            return;
        }
        // The dispatcher lives as long as the simulator; after `stop` nothing needs sending.
        if shared.dispatch.send(job).is_err() {
            shared.delivery_finished();
        }
    });
}

/// The `early` fault: charge and POST now. The synchronous answer waits for the first attempt
/// only (awaiting this function); retries and the duplicate, if any, carry on in the background.
pub(crate) async fn run_early(shared: Arc<Shared>, job: Arc<AsyncJob>) {
    shared.delivery_started();
    shared.produce(&job);
    let (first_done, first) = oneshot::channel();
    let background = shared.clone();
    tokio::spawn(async move {
        deliver(&background, &job, Flavor { early: true, ..Flavor::default() }, Some(first_done)).await;
        if job.faults.duplicate {
            deliver(&background, &job, Flavor { duplicate: true, ..Flavor::default() }, None).await;
        }
        background.delivery_finished();
    });
    let _ = first.await;
}

/// Sends due deliveries in order, except that one picked for reordering is held until the next
/// delivery of another request has gone out (or `reorder_window_ms` passes).
pub(crate) async fn dispatcher(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Arc<AsyncJob>>) {
    let mut held: Option<(Arc<AsyncJob>, Instant)> = None;
    loop {
        let next = match &held {
            Some((_, until)) => tokio::select! {
                job = rx.recv() => Some(job),
                () = tokio::time::sleep_until((*until).into()) => None,
            },
            None => Some(rx.recv().await),
        };
        match next {
            // Channel closed: the simulator is gone.
            Some(None) => return,
            // Nobody overtook the held delivery in time: send it anyway.
            None => {
                if let Some((h, _)) = held.take() {
                    tokio::spawn(run_job(shared.clone(), h, false));
                }
            }
            Some(Some(job)) => match held.take() {
                Some((h, _)) if h.request_id != job.request_id => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        run_job(shared.clone(), job, false).await;
                        run_job(shared, h, true).await;
                    });
                }
                earlier => {
                    if let Some((h, _)) = earlier {
                        tokio::spawn(run_job(shared.clone(), h, false));
                    }
                    if job.faults.reorder {
                        let window = Duration::from_millis(shared.lock().config.reorder_window_ms);
                        held = Some((job, Instant::now() + window));
                    } else {
                        tokio::spawn(run_job(shared.clone(), job, false));
                    }
                }
            },
        }
    }
}

/// One delivery, then its copy when the `duplicate` fault picked it.
async fn run_job(shared: Arc<Shared>, job: Arc<AsyncJob>, reordered: bool) {
    deliver(&shared, &job, Flavor { reordered, ..Flavor::default() }, None).await;
    if job.faults.duplicate {
        deliver(&shared, &job, Flavor { duplicate: true, reordered, ..Flavor::default() }, None).await;
    }
    shared.delivery_finished();
}

/// POSTs the payload; a non-2xx answer or a transport error is retried up to
/// `max_delivery_retries` times, waiting `retry_backoff_ms` and doubling. Every attempt is recorded;
/// `first_done` is told when the first attempt is over.
async fn deliver(shared: &Arc<Shared>, job: &AsyncJob, flavor: Flavor, mut first_done: Option<oneshot::Sender<()>>) {
    let Some(url) = job.url.as_deref() else { return };
    let (retries, backoff_ms, timeout_ms) = {
        let c = &shared.lock().config;
        (c.max_delivery_retries, c.retry_backoff_ms, c.delivery_timeout_ms)
    };
    for attempt in 1..=retries.saturating_add(1) {
        if shared.stopped() {
            return;
        }
        let sent = shared
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(Duration::from_millis(timeout_ms.max(1)))
            .body(job.body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Drain the body so the connection can be reused.
                let _ = response.bytes().await;
                (Some(status), None)
            }
            Err(e) => (None, Some(error_chain(&e))),
        };
        *job.last_dispatched.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        tracing::debug!(request_id = %job.request_id, kind = job.kind.as_str(), attempt, ?status, ?error, "delivery attempt");
        shared.record_delivery(job, attempt, status, error, flavor);
        if let Some(tx) = first_done.take() {
            let _ = tx.send(());
        }
        if ok {
            return;
        }
        if attempt <= retries {
            let factor = 1u64 << (attempt - 1).min(20);
            tokio::time::sleep(Duration::from_millis(backoff_ms.saturating_mul(factor))).await;
        }
    }
    tracing::warn!(request_id = %job.request_id, kind = job.kind.as_str(), url, "delivery gave up after retries");
}

/// An error with its causes (reqwest's own message hides them: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
