//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};

use crate::state::AppState;
use crate::v1::models::{Health, Readiness};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive", body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// Readiness: the database answers and dispatch is not blocked.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready", body = Readiness),
        (status = 503, description = "database unreachable or dispatch paused, with the reason", body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let answer = |status: &str, database: &str, paused: Option<String>| Readiness {
        status: status.into(),
        database: database.into(),
        dispatch_paused: paused,
    };
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return HttpResponse::ServiceUnavailable().json(answer("unavailable", "unreachable", None));
    }
    match state.store.pause_reason().await {
        Ok(None) => HttpResponse::Ok().json(answer("ready", "ok", None)),
        Ok(Some(reason)) => HttpResponse::ServiceUnavailable().json(answer("paused", "ok", Some(reason))),
        Err(_) => HttpResponse::ServiceUnavailable().json(answer("unavailable", "unreachable", None)),
    }
}
