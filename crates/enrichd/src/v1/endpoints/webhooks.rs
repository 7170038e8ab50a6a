//! `POST /v1/webhooks/apollo/{batch_id}?token=`: Apollo's asynchronous deliveries.
//!
//! Check the token, store the raw body, answer at once; the ingest worker parses and merges.

use actix_web::{HttpResponse, post, web};
use job_store::StoredDelivery;
use serde::Deserialize;
use uuid::Uuid;

use crate::core::signing::constant_time_eq;
use crate::error::ApiError;
use crate::models::{DeliveryReceipt, ErrorBody};
use crate::state::AppState;
use crate::v1::endpoints::body::read_limited;

/// The query of the webhook URL.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct Token {
    /// The batch's secret, as given to Apollo in `webhook_url`.
    pub token: Option<String>,
    /// Which call (claim) of the batch this URL was given to: a retried call's deliveries are
    /// told apart from the first one's (each may have been charged).
    #[param(minimum = -2147483648, maximum = 2147483647)]
    pub claim: Option<i32>,
}

/// Receive one Apollo delivery for a batch.
#[utoipa::path(post, path = "/v1/webhooks/apollo/{batch_id}", tag = "webhooks",
    params(("batch_id" = Uuid, Path, description = "the batch named in the URL"), Token),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "Apollo's delivery (a JSON object), stored as received. Any non-empty body with the right token \
            is kept for audit, and one that is not a usable delivery (not JSON, not an object, no people) is failed \
            with its error and listed in the job's `failed_deliveries`: the body's schema is therefore any value."),
    responses(
        (status = 200, description = "stored (or a duplicate of a stored delivery)", body = DeliveryReceipt),
        (status = 400, description = "empty body, or the body could not be read", body = ErrorBody),
        (status = 401, description = "bad token: nothing stored", body = ErrorBody),
        (status = 404, description = "unknown batch: nothing stored", body = ErrorBody),
        (status = 413, description = "body over the size limit", body = ErrorBody),
        (status = 422, description = "a query parameter of the wrong type (`claim` is a 32-bit integer)", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "database unavailable: Apollo should retry", body = ErrorBody),
    ))]
#[post("/v1/webhooks/apollo/{batch_id}")]
pub async fn apollo(
    path: web::Path<String>,
    query: web::Query<Token>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let batch_id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound("batch"))?;
    let token = query.token.as_deref().ok_or(ApiError::Unauthorized("missing webhook token"))?;
    // The secret alone, and once per batch: loading the whole batch on every delivery cost 30 % of
    // the route's throughput, and a read per delivery more (BENCHMARKS.md, section 4).
    let secret = state.webhook_secrets.get(&state.store, batch_id).await?.ok_or(ApiError::NotFound("batch"))?;
    if !constant_time_eq(token.as_bytes(), secret.as_bytes()) {
        metrics::counter!("enrichd_webhook_deliveries_total", "result" => "bad_token").increment(1);
        return Err(ApiError::Unauthorized("bad webhook token"));
    }
    let body = read_limited(payload, state.config.max_body_bytes).await?;
    if body.is_empty() {
        return Err(ApiError::BadRequest("empty delivery".into()));
    }
    // Durable before the 200, committed together with the deliveries that arrived meanwhile.
    let stored = state.deliveries.store(batch_id, query.claim, body.freeze()).await?;
    state.wake.ingest.notify_one();
    let duplicate = matches!(stored, StoredDelivery::Duplicate { .. });
    let result = if duplicate { "duplicate" } else { "stored" };
    metrics::counter!("enrichd_webhook_deliveries_total", "result" => result).increment(1);
    Ok(HttpResponse::Ok().json(DeliveryReceipt { status: "received".into(), duplicate }))
}
