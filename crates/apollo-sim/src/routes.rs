//! The HTTP surface, in Apollo's wire format.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use apollo_client::{DeliveryKind, RequestId};
use serde_json::{Value, json};

use crate::bulk::{self, Accepted};
use crate::faults::server_error_body;
use crate::limits::{self, Admission, HeaderStyle, Usage, UsageStats};
use crate::population::is_object_id;
use crate::records::{CallRecord, ReceivedDetail};
use crate::state::Shared;
use crate::webhooks;

/// The 401 body Apollo sends for a wrong key (plain text).
pub const INVALID_KEY: &str = "Invalid API key. Please check the key you provided and try again.";

const BULK_MATCH: &str = "/api/v1/people/bulk_match";
const WEBHOOK_RESULT: &str = "/api/v1/webhook_result/{id}";
const USAGE_STATS: &str = "/api/v1/usage_stats/api_usage_stats";

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(BULK_MATCH, web::post().to(bulk_match))
        .route(WEBHOOK_RESULT, web::get().to(webhook_result))
        .route(USAGE_STATS, web::post().to(usage_stats))
        .route(USAGE_STATS, web::get().to(usage_stats))
        .route("/healthz", web::get().to(healthz))
        .default_service(web::to(not_found));
}

type State = web::Data<Shared>;

/// Records the call when dropped, so a handler that never completes (server shutdown) still
/// leaves its record.
struct Recorder {
    shared: Arc<Shared>,
    call: CallRecord,
    started: Instant,
}

impl Recorder {
    fn new(shared: &State, req: &HttpRequest, route: &str) -> Recorder {
        let shared = shared.clone().into_inner();
        let call = CallRecord {
            method: req.method().to_string(),
            route: route.to_string(),
            path: req.path().to_string(),
            flags: None,
            details: 0,
            received: Vec::new(),
            answer: None,
            webhook_url: None,
            poll_only: false,
            status: 0,
            request_id: None,
            fault: None,
            at: SystemTime::now(),
            since_start: shared.since_start(),
            latency: Duration::ZERO,
        };
        shared.request_started();
        Recorder { shared, call, started: Instant::now() }
    }

    fn finish(mut self, response: HttpResponse) -> HttpResponse {
        self.call.status = response.status().as_u16();
        response
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut call = self.call.clone();
        call.latency = self.started.elapsed();
        tracing::debug!(
            method = %call.method, path = %call.path, status = call.status, details = call.details,
            request_id = ?call.request_id.map(|r| r.0), fault = ?call.fault, "apollo-sim call"
        );
        self.shared.lock().calls.push(call);
        self.shared.request_finished();
    }
}

/// `x-api-key`, or an OAuth-style bearer token, must equal the configured key.
fn authorized(shared: &Shared, req: &HttpRequest) -> bool {
    let key = shared.lock().config.api_key.clone();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    header("x-api-key") == Some(key.as_str())
        || header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) == Some(key.as_str())
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().content_type("text/plain; charset=utf-8").body(INVALID_KEY)
}

fn with_limits(status: u16, usage: &Usage, style: HeaderStyle) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in limits::headers(usage).into_iter().filter(|_| style.present) {
        b.insert_header((name, value));
    }
    b
}

async fn bulk_match(req: HttpRequest, body: web::Bytes, shared: State) -> HttpResponse {
    let mut rec = Recorder::new(&shared, &req, BULK_MATCH);
    let response = bulk_match_answer(&req, &body, shared.into_inner(), &mut rec.call).await;
    rec.finish(response)
}

async fn bulk_match_answer(req: &HttpRequest, body: &[u8], shared: Arc<Shared>, call: &mut CallRecord) -> HttpResponse {
    if !authorized(&shared, req) {
        return unauthorized();
    }
    if shared.lock().config.forbidden {
        return HttpResponse::Forbidden().json(crate::payloads::forbidden());
    }
    let delay = {
        let mut inner = shared.lock();
        let most = inner.config.count_delay_ms;
        inner.delay_rng.u64(0..=most)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (admission, style) = {
        let mut inner = shared.lock();
        let (rule, style, stats) = (inner.config.limit_rule(), inner.config.header_style(), inner.config.usage_stats);
        let now = shared.now_ms();
        let admission = inner.windows.admit(now, &rule);
        if let (Admission::Allowed(usage), UsageStats::Lagging(lag)) = (admission, stats) {
            inner.usage_seen.record(now, usage, lag);
        }
        (admission, style)
    };
    let usage = match admission {
        Admission::Allowed(usage) => limits::stated(&usage, style),
        Admission::Limited { usage, window, limit, retry_after_ms } => {
            let mut answer = with_limits(429, &usage, style);
            let (verbatim, whole) = {
                let c = &shared.lock().config;
                (c.retry_after_header.clone(), c.retry_after_whole_seconds)
            };
            let secs = limits::retry_after_secs(retry_after_ms).to_string();
            match verbatim {
                Some(verbatim) => answer.insert_header(("retry-after", verbatim)),
                None if whole => answer.insert_header(("retry-after", secs)),
                None => answer
                    .insert_header(("retry-after", secs))
                    .insert_header(("x-retry-after-ms", retry_after_ms.to_string())),
            };
            return answer.json(crate::payloads::rate_limited(limit, window.word()));
        }
    };
    let request = match bulk::parse_request(req.query_string(), body) {
        Ok(r) => r,
        Err(rejection) => return with_limits(rejection.status, &usage, style).json(rejection.body),
    };
    call.flags = Some(request.flags);
    call.details = request.details.len();
    call.received = request
        .raw_details
        .iter()
        .enumerate()
        .map(|(position, detail)| ReceivedDetail { position, detail: detail.clone(), apollo_id: None, answered: None })
        .collect();
    call.webhook_url = request.webhook_url.clone();
    call.poll_only = request.poll_only;

    let accepted = bulk::accept(&mut shared.lock(), &request, Instant::now());
    let answer = match accepted {
        Accepted::ServerError(status) => {
            call.fault = Some(status.to_string());
            let (content_type, text) = server_error_body(status);
            return HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .content_type(content_type)
                .body(text);
        }
        Accepted::CreditsExhausted(body) => return with_limits(422, &usage, style).json(body),
        Accepted::RejectedDetail(body) => {
            call.fault = Some("reject_marker".into());
            return with_limits(422, &usage, style).json(body);
        }
        Accepted::Ok(answer) => answer,
    };
    call.request_id = Some(answer.request_id);
    call.answer = Some(answer.body.clone());
    for (r, answered) in call.received.iter_mut().zip(answer.body["matches"].as_array().into_iter().flatten()) {
        r.apollo_id = answered["id"].as_str().map(str::to_string);
        r.answered = (!answered.is_null()).then(|| answered.clone());
    }
    for job in answer.scheduled {
        webhooks::schedule(&shared, job);
    }
    for job in answer.early {
        // Runs on the simulator's runtime like every delivery; the answer waits for it.
        let _ = shared.rt.spawn(webhooks::run_early(shared.clone(), job)).await;
    }
    let (latency_ms, slow_ms, timeout_ms) = {
        let c = &shared.lock().config;
        (c.latency_ms, c.slow_ms, c.charge_then_timeout_ms)
    };
    let mut delay = Duration::from_millis(latency_ms);
    if answer.slow {
        call.fault = Some("slow".into());
        delay += Duration::from_millis(slow_ms);
    }
    if answer.timeout {
        call.fault = Some("charge_then_timeout".into());
        delay += Duration::from_millis(timeout_ms);
    }
    if !delay.is_zero() {
        // Decided and charged already: a client that times out now never sees this 200.
        call.status = 200;
        tokio::time::sleep(delay).await;
    }
    with_limits(200, &usage, style).json(answer.body)
}

async fn webhook_result(req: HttpRequest, path: web::Path<String>, shared: State) -> HttpResponse {
    let mut rec = Recorder::new(&shared, &req, WEBHOOK_RESULT);
    let response = webhook_result_answer(&req, path.trim(), &shared, &mut rec.call);
    rec.finish(response)
}

fn webhook_result_answer(req: &HttpRequest, id: &str, shared: &Shared, call: &mut CallRecord) -> HttpResponse {
    if !authorized(shared, req) {
        return unauthorized();
    }
    let job = if let Ok(n) = id.parse::<i64>() {
        call.request_id = Some(RequestId(n));
        // The top-level id answers with the waterfall result when there is one, else the phone's.
        let inner = shared.lock();
        inner
            .by_request
            .get(&RequestId(n))
            .and_then(|jobs| jobs.iter().find(|j| j.kind == DeliveryKind::Waterfall).or_else(|| jobs.first()).cloned())
    } else if is_object_id(id) {
        shared.lock().by_phone_job.get(&id.to_ascii_lowercase()).cloned()
    } else {
        return HttpResponse::BadRequest()
            .json(json!({"error_code": "invalid_request_id", "error_message": "request_id must be a number or a 24-character hex id."}));
    };
    let Some(job) = job else {
        return HttpResponse::NotFound().json(json!({"error_code": "request_id_unknown"}));
    };
    let expired = {
        let mut inner = shared.lock();
        let p = inner.config.fault_result_expired;
        crate::faults::chance(&mut inner.rng, p)
    };
    if expired {
        call.fault = Some("result_expired".into());
        return HttpResponse::Gone().json(json!({"error_code": "request_id_expired"}));
    }
    let now = Instant::now();
    if job.due > now {
        let wait_ms = (job.due - now).as_millis() as u64;
        return HttpResponse::NotFound()
            .json(json!({"error_code": "result_pending", "retry_after_seconds": limits::retry_after_secs(wait_ms)}));
    }
    // Polling may come before the scheduler has produced it; producing charges once either way.
    shared.produce(&job);
    let last = job.last_dispatched.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(job.due_wall);
    HttpResponse::Ok().json(json!({
        "request_id": id,
        "webhook_status": "success",
        "request_type": job.kind.as_str(),
        "last_dispatched_at": bulk::rfc3339(last),
        "failure_reason": null,
        "webhook_result": job.payload,
    }))
}

async fn usage_stats(req: HttpRequest, shared: State) -> HttpResponse {
    let rec = Recorder::new(&shared, &req, USAGE_STATS);
    let response = if authorized(&shared, &req) {
        let usage = {
            let inner = shared.lock();
            let now = shared.now_ms();
            let live = inner.windows.usage(now, &inner.config.limit_rule());
            inner.usage_seen.report(now, live, inner.config.usage_stats)
        };
        // Unlimited windows have no number to report: `limit` and `left_over` are null.
        let window = |i: usize| json!({"limit": usage[i].limit, "consumed": usage[i].used, "left_over": usage[i].left});
        let mut body = serde_json::Map::new();
        body.insert(
            r#"["api/v1/people", "bulk_match"]"#.to_string(),
            json!({"minute": window(0), "hour": window(1), "day": window(2)}),
        );
        HttpResponse::Ok().json(Value::Object(body))
    } else {
        unauthorized()
    };
    rec.finish(response)
}

async fn healthz(req: HttpRequest, shared: State) -> HttpResponse {
    Recorder::new(&shared, &req, "/healthz").finish(HttpResponse::Ok().json(json!({"status": "ok"})))
}

async fn not_found(req: HttpRequest, shared: State) -> HttpResponse {
    let rec = Recorder::new(&shared, &req, "unknown");
    rec.finish(HttpResponse::NotFound().json(json!({"error": format!("No route for {} {}", req.method(), req.path())})))
}
