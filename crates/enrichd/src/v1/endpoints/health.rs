//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and dispatch is not blocked.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable or dispatch paused, with the reason")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "database": "unreachable", "dispatch_paused": null }));
    }
    match state.store.pause_reason().await {
        Ok(None) => HttpResponse::Ok().json(json!({ "status": "ready", "database": "ok", "dispatch_paused": null })),
        Ok(Some(reason)) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "paused", "database": "ok", "dispatch_paused": reason })),
        Err(_) => {
            HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "database": "unreachable" }))
        }
    }
}
