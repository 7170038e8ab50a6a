//! Operator actions.

use actix_web::{HttpResponse, post, web};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::v1::auth::Client;

/// Resume dispatch after a pause (new key configured, credits topped up). If the cause remains,
/// the next call pauses again.
#[utoipa::path(post, path = "/v1/admin/resume", tag = "admin", responses((status = 200, description = "resumed")))]
#[post("/v1/admin/resume")]
pub async fn resume(client: Client, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let before = state.store.pause_reason().await?;
    state.store.set_pause(None).await?;
    tracing::info!(client = %client.0, ?before, "dispatch resumed");
    state.wake.dispatch.notify_one();
    Ok(HttpResponse::Ok().json(json!({ "status": "resumed", "was_paused": before })))
}
