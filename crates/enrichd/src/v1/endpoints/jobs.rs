//! `/v1/jobs`: submit, read, page people, list, cancel, erase, redeliver the callback, retry.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use job_store::NewJob;
use rules::retry::{can_retry, retry_states};
use uuid::Uuid;

use crate::core::validate::validate_job_bytes;
use crate::error::ApiError;
use crate::models::{
    DEFAULT_PAGE, EraseQuery, ErrorBody, Estimate, Job, JobPage, JobPageQuery, JobRequest, MAX_IDEMPOTENCY_KEY,
    MAX_PAGE, Person, PersonPage, PersonPageQuery, Queued, RedeliverQuery, RetryRequest,
};
use crate::state::AppState;
use crate::v1::auth::Client;
use crate::v1::endpoints::body::{decode_json, read_limited, require_json};

/// Submit a job of people to enrich.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body(content = JobRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1,
        description = "1 to 255 visible ASCII characters; the same key and body give the same job")),
    responses(
        (status = 200, description = "`dry_run`: the estimate; nothing stored, no call", body = Estimate),
        (status = 202, description = "accepted (or replayed, with `Idempotent-Replayed: true`)", body = Job),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "body over the size limit (`MAX_BODY_BYTES`, 64 MiB by default)", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "invalid people, options or Idempotency-Key; `details` names each one", body = ErrorBody),
        (status = 429, description = "the client's daily credit cap (`CLIENT_DAILY_CREDITS`) is reached", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/jobs")]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_json(&req)?;
    let idempotency_key = idempotency_key(&req)?;
    let body = read_limited(payload, state.config.max_body_bytes).await?;
    let (max_people, policy) = (state.config.max_job_people, state.config.callback_policy());
    let job = validate_job_bytes(&body, max_people, &policy)?;
    // Each person is held in its stored form now: the body goes before the insert.
    drop(body);
    if job.dry_run {
        let c = &state.config;
        let (suppressed, suppressed_keys) =
            state.store.suppressed_among(&client.0, job.people.iter().map(|p| (p.input_json(), p.key()))).await?;
        let reusable = match c.reuse_policy(job.reuse_within) {
            Some(policy) => {
                let mut keys = job.unique_keys();
                keys.retain(|k| !suppressed_keys.contains(k));
                let want = job.flags;
                state.store.reusable(&client.0, &policy, want, &keys, state.store.clock_now().await?).await?
            }
            None => 0,
        };
        let excluded = rules::estimate::Excluded { reusable, suppressed, suppressed_keys: suppressed_keys.len() };
        let estimate = rules::estimate::estimate(
            job.people.len(),
            job.unique_keys().len(),
            excluded,
            job.flags,
            c.rate_per_minute,
            c.rate_minute,
        );
        return Ok(HttpResponse::Ok().json(Estimate::from(estimate)));
    }
    let reuse_within = job.reuse_within;
    let mut new = job.into_new_job(client.0, idempotency_key);
    state.config.apply_credit_limits(&mut new);
    state.config.apply_reuse(&mut new, reuse_within);
    let created = state.store.create_job(new).await?;
    tracing::info!(job_id = %created.job.id, people = created.job.total, replayed = created.existing, "job accepted");
    state.wake.dispatch.notify_one();
    Ok(accepted(&created.job, created.existing))
}

/// Largest accepted retry body.
const MAX_RETRY_BODY: usize = 16 * 1024;

/// Send a finished job's failed (or partial, or not-found) people again, as a new job.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the job to retry"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1,
        description = "1 to 255 visible ASCII characters; the same key gives the same new job")),
    request_body(content = Option<RetryRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "the new job: the original's flags and settings, only those people, `retry_of` the original (or the one an earlier request with the same key created, with `Idempotent-Replayed: true`)", body = Job),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job is still running, was erased, or has nobody in the states asked for; or the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 413, description = "body over 16 KiB", body = ErrorBody),
        (status = 415, description = "a body that is not application/json", body = ErrorBody),
        (status = 422, description = "a state that cannot be retried; `details` names it", body = ErrorBody),
        (status = 429, description = "the client's daily credit cap (`CLIENT_DAILY_CREDITS`) is reached", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/jobs/{id}/retry")]
pub async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let original = owned_job(&state, &client, &path).await?;
    let key = idempotency_key(&req)?;
    let body = read_limited(payload, MAX_RETRY_BODY).await?;
    let asked: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        require_json(&req)?;
        // `null` is an absent body, as the document's optional body allows.
        let value = decode_json(&body)?;
        if value.is_null() {
            RetryRequest::default()
        } else {
            serde_json::from_value(value).map_err(|e| ApiError::invalid_field("states", e.to_string()))?
        }
    };
    let states = retry_states(asked.states.as_deref()).map_err(ApiError::from_problems)?;
    if let Some(k) = &key
        && let Some(earlier) = state.store.job_by_idempotency_key(&client.0, k).await?
    {
        if earlier.retry_of == Some(original.id) {
            return Ok(accepted(&earlier, true));
        }
        return Err(ApiError::Conflict(format!(
            "Idempotency-Key {k:?} was already used for another request (job {})",
            earlier.id
        )));
    }
    can_retry(original.erased_at.is_some(), original.completed_at.is_some())
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let inputs = state.store.inputs_in_states(original.id, &states).await?;
    if inputs.is_empty() {
        // A valid request the job's current state cannot serve, as while it runs: 409, not 422.
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::Conflict(format!("no person of the job is {}: nothing to retry", names.join(" or "))));
    }
    let mut new = NewJob::retry(&original, inputs, key);
    state.config.apply_credit_limits(&mut new);
    let created = state.store.create_job(new).await?;
    tracing::info!(job_id = %created.job.id, retry_of = %original.id, people = created.job.total, "retry accepted");
    state.wake.dispatch.notify_one();
    Ok(accepted(&created.job, created.existing))
}

/// The `Idempotency-Key` header, checked.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::trim).map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be visible ASCII"))?;
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    Ok(key)
}

/// A 202 with the job, marked when an earlier request created it.
fn accepted(job: &job_store::JobView, replayed: bool) -> HttpResponse {
    let mut resp = HttpResponse::Accepted();
    if replayed {
        resp.insert_header(("idempotent-replayed", "true"));
    }
    resp.json(Job::from(job))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("job"))
}

/// The job if it exists and belongs to this client (another client's job is simply not found).
async fn owned_job(state: &AppState, client: &Client, id: &str) -> Result<job_store::JobView, ApiError> {
    let job = state.store.get_job(parse_id(id)?).await?.ok_or(ApiError::NotFound("job"))?;
    if job.client != client.0 {
        return Err(ApiError::NotFound("job"));
    }
    Ok(job)
}

/// The job if this client may still read it. Once erased (`DELETE /v1/jobs/{id}`) its reads
/// answer 410: the personal data is gone for good, while its credits stay in `GET /v1/usage`.
pub(crate) async fn readable_job(state: &AppState, client: &Client, id: &str) -> Result<job_store::JobView, ApiError> {
    let job = owned_job(state, client, id).await?;
    match job.erased_at {
        Some(at) => Err(erased(&job, at)),
        None => Ok(job),
    }
}

/// The 410 for an erased job, naming it and when it was erased (written as `erased_at` is).
fn erased(job: &job_store::JobView, at: chrono::DateTime<chrono::Utc>) -> ApiError {
    ApiError::Gone(format!(
        "job {} was erased at {}: its personal data is gone; its credits stay in GET /v1/usage",
        job.id,
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    ))
}

/// A job: status, options, counters by person state, credits, callback delivery state.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, description = "the job", body = Job), (status = 404, description = "no such job", body = ErrorBody),
        (status = 410, description = "the job was erased (`DELETE /v1/jobs/{id}`); the message names it and when", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/jobs/{id}")]
pub async fn get(
    path: web::Path<String>,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = readable_job(&state, &client, &path).await?;
    Ok(HttpResponse::Ok().json(Job::from(&job)))
}

/// The page size asked for, or a 422 naming `limit`.
fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(l @ 1..=MAX_PAGE) => Ok(l),
        Some(_) => Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

/// The merged records of a job's people, in input order.
#[utoipa::path(get, path = "/v1/jobs/{id}/people", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id"), PersonPageQuery),
    responses((status = 200, description = "a page of people", body = PersonPage),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 410, description = "the job was erased (`DELETE /v1/jobs/{id}`); the message names it and when", body = ErrorBody),
        (status = 422, description = "`limit` or `after` out of range; `details` names it", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/jobs/{id}/people")]
pub async fn people(
    // Extractors run in order: the key is checked before the query is read, so a request without
    // one gets its 401 whatever its query.
    client: Client,
    path: web::Path<String>,
    page: web::Query<PersonPageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = readable_job(&state, &client, &path).await?;
    let limit = page_limit(page.limit)?;
    let after = match page.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse::<i64>().map_err(|_| ApiError::invalid_field("after", "must be a person index"))?),
    };
    let people = state.store.list_people(job.id, after, limit).await?;
    let next_after = (people.len() as u64 == limit).then(|| people.last().map(|p| p.ordinal.to_string())).flatten();
    Ok(HttpResponse::Ok().json(PersonPage { data: people.iter().map(Person::from).collect(), next_after }))
}

/// This client's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), params(JobPageQuery),
    responses((status = 200, description = "a page of jobs", body = JobPage),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 422, description = "`limit` or `after` out of range; `details` names it", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/jobs")]
pub async fn list(
    client: Client,
    page: web::Query<JobPageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(page.limit)?;
    let after = match page.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(Uuid::parse_str(a).map_err(|_| ApiError::invalid_field("after", "must be a job id"))?),
    };
    let jobs = state.store.list_jobs(client.0.as_str(), after, limit).await?;
    let next_after = (jobs.len() as u64 == limit).then(|| jobs.last().map(|j| j.id.to_string())).flatten();
    Ok(HttpResponse::Ok().json(JobPage { data: jobs.iter().map(Job::from).collect(), next_after }))
}

/// Stop dispatching a job; batches already sent still merge.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, description = "the job", body = Job), (status = 404, description = "no such job", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[post("/v1/jobs/{id}/cancel")]
pub async fn cancel(
    path: web::Path<String>,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = owned_job(&state, &client, &path).await?;
    let job = state.store.cancel_job(job.id).await?;
    state.wake.callbacks.notify_one();
    state.wake.person_events.notify_one();
    Ok(HttpResponse::Ok().json(Job::from(&job)))
}

/// Erase a job's personal data: the people's inputs and merged records, the raw Apollo payloads
/// that hold them, the job's metadata and callback URL. Counters, states and credits stay, and the
/// job shows `erased_at`. A running job is cancelled first (calls already in flight finish, their
/// results are not kept). From then on `GET /v1/jobs/{id}` and its people answer 410; the job's
/// credits stay in `GET /v1/usage` and it stays listed in `GET /v1/jobs`. Erasing again is
/// harmless: it answers the job again.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id"), EraseQuery),
    responses((status = 200, description = "the job, with `erased_at` (also when it was erased before)", body = Job), (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "`suppress=true` while the do-not-enrich list is off (`SUPPRESSION_KEY` unset)", body = ErrorBody),
        (status = 422, description = "a bad `suppress` value", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[delete("/v1/jobs/{id}")]
pub async fn erase(
    path: web::Path<String>,
    query: web::Query<EraseQuery>,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = owned_job(&state, &client, &path).await?;
    let suppress = query.suppress.unwrap_or(false);
    if suppress && state.store.suppression_key().is_none() {
        return Err(ApiError::Conflict("the do-not-enrich list is off: SUPPRESSION_KEY is not set".into()));
    }
    let erased = state.store.erase_job_with(job.id, suppress).await?;
    tracing::info!(
        job_id = %job.id,
        people = erased.people,
        cancelled = erased.cancelled,
        batches = erased.batches,
        shared_batches = erased.shared_batches,
        deliveries = erased.deliveries,
        pending_deliveries = erased.pending_deliveries,
        suppressed = erased.suppressed.map_or(0, |s| s.added),
        "job erased"
    );
    Ok(HttpResponse::Ok().json(Job::from(&erased.job)))
}

/// Send the final callback again (after it was delivered or exhausted), or one given event.
#[utoipa::path(post, path = "/v1/jobs/{id}/callback/redeliver", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "job id"), RedeliverQuery),
    responses((status = 202, description = "queued", body = Queued),
        (status = 404, description = "no such job, or no such event of it", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 409, description = "the job has no callback yet, or was erased", body = ErrorBody),
        (status = 422, description = "an unknown query parameter", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[post("/v1/jobs/{id}/callback/redeliver")]
pub async fn redeliver(
    path: web::Path<String>,
    query: web::Query<RedeliverQuery>,
    client: Client,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = owned_job(&state, &client, &path).await?;
    if job.erased_at.is_some() {
        return Err(ApiError::Conflict("the job was erased: its callback URL is gone".into()));
    }
    match query.webhook_id.as_deref() {
        Some(webhook_id) => state.store.redeliver_event(job.id, webhook_id).await.map_err(|e| match e {
            job_store::StoreError::NotFound(_) => ApiError::NotFound("event"),
            other => other.into(),
        })?,
        None => {
            if job.callback.is_none() {
                return Err(ApiError::Conflict(
                    "the job has no callback to redeliver (not finished, or no callback_url)".into(),
                ));
            }
            state.store.redeliver_callback(job.id).await?;
        }
    }
    state.wake.callbacks.notify_one();
    state.wake.person_events.notify_one();
    Ok(HttpResponse::Accepted().json(Queued { status: "queued".into() }))
}
