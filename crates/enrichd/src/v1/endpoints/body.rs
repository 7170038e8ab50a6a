//! Reading request bodies ourselves, so size, content type and JSON errors get our error shape.

use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// Reads at most `limit` bytes of the body; more is a 413 without reading the rest.
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Requires `Content-Type: application/json` (a charset parameter is fine).
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// Decodes a JSON body, naming where it is broken (invalid UTF-8, syntax, nesting too deep).
pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::not_json(&e))
}
