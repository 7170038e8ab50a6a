//! `/v1/usage`: credits, calls, people and waterfall vendors over a window — the calling
//! client's, or with an admin key one client's or everyone's.

use actix_web::{HttpResponse, get, web};

use crate::core::keys::is_client_name;
use crate::error::ApiError;
use crate::models::{ErrorBody, UsageQuery, UsageReport};
use crate::state::AppState;
use crate::v1::auth::Caller;
use rules::usage_window::{vendor_days, window};

/// Usage over the jobs created in the window (default: this UTC month), and the waterfall vendors
/// over the days it touches.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("bearer" = [])), params(UsageQuery),
    responses((status = 200, description = "sums over the jobs created in `[from, to)` (the client's; with an admin key `client`'s or everyone's), and the vendors", body = UsageReport),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 422, description = "`from` or `to` unreadable, `to` before `from`, `client` not a client name, or given with a client key; `details` names it", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody)))]
#[get("/v1/usage")]
pub async fn usage(
    // Before the query: a request without a key gets its 401 whatever its query.
    caller: Caller,
    query: web::Query<UsageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) =
        window(query.from.as_deref(), query.to.as_deref(), chrono::Utc::now()).map_err(ApiError::from_problems)?;
    let client = match (caller, query.into_inner().client) {
        (Caller::Client(own), None) => Some(own),
        (Caller::Client(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "client",
                "only an admin key may name a client; a client sees its own usage",
            ));
        }
        (Caller::Admin(_), Some(named)) if !is_client_name(&named) => {
            return Err(ApiError::invalid_field("client", "a client name is letters, digits, `-`, `_` and `.`"));
        }
        (Caller::Admin(_), named) => named,
    };
    let usage = state.store.usage_of(client.as_deref(), from, to).await?;
    let (first, last) = vendor_days(from, to);
    let vendors = state.store.vendor_usage(client.as_deref(), Some(first), Some(last)).await?;
    Ok(HttpResponse::Ok().json(UsageReport::new(from, to, client, &usage, &vendors)))
}
