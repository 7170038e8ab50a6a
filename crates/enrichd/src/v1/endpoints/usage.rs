//! `/v1/usage`: the calling client's credits, calls and people over a window.

use actix_web::{HttpResponse, get, web};

use crate::error::ApiError;
use crate::models::{ErrorBody, UsageQuery, UsageReport};
use crate::state::AppState;
use crate::v1::auth::Client;
use rules::usage_window::window;

/// The calling client's usage over its jobs created in the window (default: this UTC month).
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("bearer" = [])), params(UsageQuery),
    responses((status = 200, description = "sums over the client's jobs created in `[from, to)`", body = UsageReport),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "an admin key: this route needs a client key", body = ErrorBody),
        (status = 422, description = "`from` or `to` unreadable, or `to` before `from`; `details` names it", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/usage")]
pub async fn usage(
    // Before the query: a request without a key gets its 401 whatever its query.
    client: Client,
    query: web::Query<UsageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) =
        window(query.from.as_deref(), query.to.as_deref(), chrono::Utc::now()).map_err(ApiError::from_problems)?;
    let usage = state.store.usage(&client.0, from, to).await?;
    Ok(HttpResponse::Ok().json(UsageReport::new(from, to, &usage)))
}
