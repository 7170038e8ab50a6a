//! Operator actions.

use actix_web::{HttpResponse, post, web};

use crate::error::ApiError;
use crate::models::{ErrorBody, Resumed};
use crate::state::AppState;
use crate::v1::auth::Admin;

/// Resume dispatch after a pause (new key configured, credits topped up). If the cause remains,
/// the next call pauses again. Needs an admin key (`ENRICHD_ADMIN_KEYS`): a client key gets 403.
#[utoipa::path(post, path = "/v1/admin/resume", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "resumed", body = Resumed),
        (status = 401, description = "no key, or an unknown one", body = ErrorBody),
        (status = 403, description = "a client key, not an admin key", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/admin/resume")]
pub async fn resume(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let before = state.store.pause_reason().await?;
    state.store.set_pause(None).await?;
    tracing::info!(admin = %admin.0, ?before, "dispatch resumed");
    state.wake.dispatch.notify_one();
    Ok(HttpResponse::Ok().json(Resumed { status: "resumed".into(), was_paused: before }))
}
