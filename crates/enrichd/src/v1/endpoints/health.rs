//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};

use crate::models::{Health, Readiness};
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive", body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// Readiness: the database answers. A dispatch pause (rejected key, credits exhausted) is shown
/// (`status: "paused"` with the reason) but does not make a replica unready: a paused replica still
/// takes jobs, answers polls and stores Apollo's webhooks, and a pause is shared by every replica,
/// so answering 503 would take them all out of the load balancer and lose webhooks. A process
/// shutting down answers 503 (`status: "draining"`) from the signal on, so the balancer stops
/// sending it work, while it still serves what reaches it.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready; `dispatch_paused` holds the reason while dispatch is paused", body = Readiness),
        (status = 503, description = "database unreachable, or the process is shutting down (`status: \"draining\"`)", body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let answer = |status: &str, database: &str, paused: Option<String>| Readiness {
        status: status.into(),
        database: database.into(),
        dispatch_paused: paused,
    };
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable().json(answer("draining", "ok", None));
    }
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return HttpResponse::ServiceUnavailable().json(answer("unavailable", "unreachable", None));
    }
    match state.store.pause_reason().await {
        Ok(None) => HttpResponse::Ok().json(answer("ready", "ok", None)),
        Ok(Some(reason)) => HttpResponse::Ok().json(answer("paused", "ok", Some(reason))),
        Err(_) => HttpResponse::ServiceUnavailable().json(answer("unavailable", "unreachable", None)),
    }
}
