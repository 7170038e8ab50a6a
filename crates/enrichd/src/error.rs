//! The API's error type, mapped once to an HTTP status and `{"error": {code, message, details?}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::delivery_writer::WriteError;

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or unknown API key, or a bad webhook token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: e.g. an idempotency key reused with another body.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the configured size.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 422: readable but invalid; `details` names each problem.
    #[error("{message}")]
    Unprocessable {
        /// A summary.
        message: String,
        /// Per-field or per-index problems.
        details: Value,
    },
    /// 503: the database is unreachable; the client (or Apollo) should retry.
    #[error("service temporarily unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable { .. } => "validation_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::Unprocessable { details, .. } = self {
            error["details"] = details.clone();
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable(_)) {
            resp.insert_header(("retry-after", "5"));
        }
        resp.json(json!({ "error": error }))
    }
}

impl From<job_store::StoreError> for ApiError {
    fn from(e: job_store::StoreError) -> Self {
        use job_store::StoreError as S;
        match e {
            S::NotFound(_) => ApiError::NotFound("resource"),
            S::IdempotencyConflict { key, job_id } => ApiError::Conflict(format!(
                "Idempotency-Key {key:?} was already used with a different request body (job {job_id})"
            )),
            S::Invalid(m) => ApiError::BadRequest(m),
            S::Corrupt(m) => ApiError::Internal(m),
            // Whatever the database said, the request may succeed later: tell the caller to retry.
            S::Db(db) => {
                tracing::warn!(error = %db, "database error");
                ApiError::Unavailable("the database is unreachable; retry shortly".into())
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(s) => s.into(),
            WriteError::Failed(m) => {
                tracing::warn!(error = %m, "delivery not stored");
                ApiError::Unavailable("the delivery could not be stored; retry shortly".into())
            }
        }
    }
}
