//! The API's error type, mapped once to an HTTP status and `{"error": {code, message, details?}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use job_store::writer::group_commit::WriteError;

use crate::core::validate::Refused;
use crate::models::Problem;
use crate::models::{ErrorBody, ErrorDetail};

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or unknown API key, or a bad webhook token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, but this key may not do that (a client key on an admin route).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405: the path exists, the method does not; `Allow` lists the methods it has.
    #[error("method not allowed; this path allows {}", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    /// 409: e.g. an idempotency key reused with another body.
    #[error("{0}")]
    Conflict(String),
    /// 410: the resource existed and its data is gone for good (an erased job's people).
    #[error("{0}")]
    Gone(String),
    /// 413: the body is over the configured size.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 429: the client's daily credit cap is reached (`CLIENT_DAILY_CREDITS`).
    #[error("{0}")]
    CreditCap(String),
    /// 415: not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 422: readable but invalid; `details` names each problem.
    #[error("{message}")]
    Unprocessable {
        /// A summary.
        message: String,
        /// Per-field or per-index problems.
        details: Vec<Problem>,
    },
    /// 503: the database is unreachable; the client (or Apollo) should retry.
    #[error("service temporarily unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> ApiError {
        match refused {
            Refused::NotJson(e) => ApiError::not_json(&e),
            Refused::Invalid(problems) => ApiError::invalid(problems),
        }
    }
}

impl ApiError {
    /// A 422 for the given problems.
    pub fn invalid(problems: Vec<Problem>) -> ApiError {
        let message = format!("the request has {} problem(s); nothing was stored", problems.len());
        ApiError::Unprocessable { message, details: problems }
    }

    /// A 422 for the problems a rule found.
    pub fn from_problems(problems: Vec<rules::problem::FieldProblem>) -> ApiError {
        ApiError::invalid(problems.into_iter().map(Problem::from).collect())
    }

    /// A 400 for a body that is not JSON at all.
    pub fn not_json(e: &serde_json::Error) -> ApiError {
        ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
    }

    /// A 422 naming one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid(vec![Problem { field: field.to_string(), index: None, message: message.into() }])
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::CreditCap(_) => "daily_credit_cap_reached",
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CreditCap(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let details = match self {
            ApiError::Unprocessable { details, .. } => Some(details.clone()),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code().into(), message: self.to_string(), details } };
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) => {
                resp.insert_header(("retry-after", "5"));
            }
            ApiError::MethodNotAllowed(allow) => {
                resp.insert_header(("allow", allow.join(", ")));
            }
            _ => {}
        }
        resp.json(body)
    }
}

impl From<job_store::StoreError> for ApiError {
    fn from(e: job_store::StoreError) -> Self {
        use job_store::StoreError as S;
        if e.is_unstorable_value() {
            tracing::warn!(error = %e, "the database refused a value");
            return ApiError::invalid_field("", "a value could not be stored by the database (for example U+0000)");
        }
        match e {
            S::NotFound(_) => ApiError::NotFound("resource"),
            S::IdempotencyConflict { key, job_id } => ApiError::Conflict(format!(
                "Idempotency-Key {key:?} was already used with a different request body (job {job_id})"
            )),
            S::DailyCapReached { cap } => ApiError::CreditCap(format!(
                "the daily credit cap of {cap} credits is reached (budgets of running jobs count in full); \
                 it resets at 00:00 UTC"
            )),
            // The store's own invariants: a bug of ours, never the client's fault.
            S::Invalid(m) => ApiError::Internal(m),
            S::Corrupt(m) => ApiError::Internal(m),
            S::InUse(m) => ApiError::Unavailable(m),
            S::Stopping => ApiError::Unavailable("the service is stopping; retry shortly".into()),
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
