//! `GET /v1/jobs/{id}/events`: the job's events as server-sent events, live. Each event's `id:`
//! is its place in the job's sequence, so a client that reconnects with `Last-Event-ID` gets the
//! events after it, none twice and none missed; the stream ends after `job.completed`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use rules::CallbackEvent;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::ErrorBody;
use crate::state::AppState;
use crate::v1::auth::Client;
use crate::v1::endpoints::jobs::readable_job;
use crate::worker::callbacks::{JobEvent, frozen_body};

/// How often the stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read per query.
const PAGE: u64 = 100;

/// Follow a job's events live (server-sent events).
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id"),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0,
        description = "resume after this event (the `id:` of the last event received)")),
    responses(
        (status = 200, description = "`text/event-stream`: each event has `id:` (its place in the job's sequence), \
            `event:` (`person.completed`, `person.updated`, `job.completed`, `job.updated`) and `data:` (the body \
            its callback carries); `: keep-alive` comments while quiet; the stream ends after `job.completed`",
            content_type = "text/event-stream", body = String),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 410, description = "the job was erased", body = ErrorBody),
        (status = 422, description = "`Last-Event-ID` is not a non-negative integer", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/jobs/{id}/events")]
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = readable_job(&state, &client, &path).await?;
    let after = last_event_id(&req).map_err(|rule| ApiError::invalid_field("Last-Event-ID", rule))?;
    Ok(stream_response(&state, &job, after))
}

/// The job's events after `after` as a `text/event-stream` response: the one stream both this
/// route and the dashboard's `/ui/jobs/{id}/events` serve, once each has checked who may read it.
pub(crate) fn stream_response(state: &AppState, job: &job_store::JobView, after: i64) -> HttpResponse {
    let stream = Stream {
        state: state.clone(),
        job_id: job.id,
        has_log: job.callback_url.is_some() || job.events.any(),
        after,
        queue: VecDeque::new(),
        done: false,
        quiet_since: Instant::now(),
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let frame = s.next_frame().await?;
        Some((frame, s))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// The `Last-Event-ID` header: events after this place; none: from the start. The error is the
/// rule the header broke, for each route to answer in its own way.
pub(crate) fn last_event_id(req: &HttpRequest) -> Result<i64, &'static str> {
    let Some(raw) = req.headers().get("last-event-id") else { return Ok(0) };
    raw.to_str()
        .ok()
        .map(str::trim)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or("must be the id of an event: a non-negative integer")
}

/// One client's stream.
struct Stream {
    state: AppState,
    job_id: Uuid,
    /// The job keeps events (a callback URL or person events); without, only its end is awaited.
    has_log: bool,
    after: i64,
    queue: VecDeque<Bytes>,
    done: bool,
    quiet_since: Instant,
}

impl Stream {
    /// The next bytes to send; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                self.quiet_since = Instant::now();
                return Some(Ok(frame));
            }
            if self.done || self.state.drain.is_draining() {
                return None;
            }
            match self.fill().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job_id = %self.job_id, error = %e, "event stream ended");
                    return Some(Err(actix_web::error::ErrorServiceUnavailable(e)));
                }
            }
            if self.quiet_since.elapsed() >= KEEP_ALIVE {
                self.quiet_since = Instant::now();
                return Some(Ok(Bytes::from_static(b": keep-alive\n\n")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Queues the events after `after`; whether any (or the end) came.
    async fn fill(&mut self) -> Result<bool, String> {
        if !self.has_log {
            let job = self.state.store.get_job(self.job_id).await.map_err(|e| e.to_string())?;
            self.done = job.is_none_or(|j| j.completed_at.is_some());
            return Ok(self.done);
        }
        let page = self.state.store.job_events_after(self.job_id, self.after, PAGE).await.map_err(|e| e.to_string())?;
        let found = !page.is_empty();
        if !found {
            // Resumed after the completion: nothing more comes.
            let completed = self.state.store.completion_seq(self.job_id).await.map_err(|e| e.to_string())?;
            self.done = completed.is_some_and(|seq| seq <= self.after);
            return Ok(self.done);
        }
        for e in page {
            let body = match (&e.body, e.event.is_person_event()) {
                (Some(b), _) => b.clone(),
                (None, true) => b"null".to_vec(),
                (None, false) => {
                    let job_event = JobEvent {
                        callback_id: e.callback_id,
                        job_id: self.job_id,
                        event: e.event,
                        created_at: e.created_at,
                    };
                    frozen_body(&self.state, &job_event, None).await?
                }
            };
            let mut frame = format!("id: {}\nevent: {}\ndata: ", e.seq, e.event).into_bytes();
            frame.extend_from_slice(&body);
            frame.extend_from_slice(b"\n\n");
            self.queue.push_back(Bytes::from(frame));
            self.after = e.seq;
            if e.event == CallbackEvent::JobCompleted {
                self.done = true;
                break;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn last_event_id_is_a_place_in_the_sequence() {
        assert_eq!(last_event_id(&TestRequest::default().to_http_request()).unwrap(), 0);
        let with =
            |v: &str| last_event_id(&TestRequest::default().insert_header(("last-event-id", v)).to_http_request());
        assert_eq!(with(" 42 ").unwrap(), 42);
        assert!(with("-1").is_err());
        assert!(with("abc").is_err());
    }

    /// `Last-Event-ID` is documented as a non-negative integer, never `null` (a client sending the
    /// text `null` is refused, so the document must not allow it).
    #[test]
    fn the_resume_header_is_a_plain_integer() {
        use utoipa::Path;
        let op = serde_json::to_value(__path_events::operation()).expect("JSON");
        let params = op["parameters"].as_array().expect("parameters");
        let header = params.iter().find(|p| p["name"] == "Last-Event-ID").expect("the header");
        assert_eq!(header["schema"]["type"], "integer", "{header:#}");
        assert_eq!(header["schema"]["minimum"], 0, "{header:#}");
        assert_ne!(header["required"], true);
    }
}
