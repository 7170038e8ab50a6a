//! The dashboard under `/ui`: server-rendered pages (maud escapes every value), a signed session
//! cookie, CSRF tokens on every form, a strict Content-Security-Policy, and htmx (vendored,
//! embedded) only to refresh running jobs in place. Everything reads without JavaScript; charts
//! are SVG drawn on the server ([`charts`]).

pub mod assets;
pub mod charts;
pub mod jobs;
pub mod layout;
pub mod new_job;
pub mod session;
pub mod sign_in;
pub mod suppressions;
pub mod system;
pub mod usage;

use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, ResponseError, web};

/// No inline script or style, nothing from elsewhere: htmx and the stylesheet come from `/ui/assets`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One field of a multipart form: its name and bytes, at most `limit` of them.
pub async fn form_field(
    field: Result<actix_multipart::Field, actix_multipart::MultipartError>,
    limit: usize,
) -> Result<(String, web::Bytes), UiError> {
    let mut field = field.map_err(|e| UiError::BadRequest(format!("reading the form: {e}")))?;
    let name = field.name().unwrap_or_default().to_string();
    let bytes = field
        .bytes(limit)
        .await
        .map_err(|_| UiError::BadRequest(format!("the file is larger than {limit} bytes")))?
        .map_err(|e| UiError::BadRequest(format!("reading the form: {e}")))?;
    Ok((name, bytes))
}

/// Everything a dashboard handler can answer with besides a page.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No valid session: go to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A form without this session's CSRF token.
    #[error("the form expired or did not come from this dashboard; reload the page and try again")]
    Csrf,
    /// The page is for operators.
    #[error("this page needs an admin key")]
    Forbidden,
    /// No such thing, or not this viewer's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The job's personal data was erased: its people, records and CSV are gone for good.
    #[error("{0}")]
    Gone(String),
    /// The request cannot be acted on as sent.
    #[error("{0}")]
    BadRequest(String),
    /// The database is unreachable.
    #[error("the database is unavailable; try again")]
    Unavailable,
    /// A bug or an unexpected failure; details go to the log.
    #[error("internal error")]
    Internal(String),
}

impl From<job_store::StoreError> for UiError {
    fn from(e: job_store::StoreError) -> Self {
        match e {
            job_store::StoreError::NotFound(_) => UiError::NotFound("job"),
            job_store::StoreError::Db(e) => {
                tracing::error!(error = %e, "dashboard: database error");
                UiError::Unavailable
            }
            other => UiError::Internal(other.to_string()),
        }
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn => StatusCode::SEE_OTHER,
            UiError::Csrf | UiError::Forbidden => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Gone(_) => StatusCode::GONE,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let UiError::SignIn = self {
            return HttpResponse::SeeOther().insert_header(("location", "/ui/sign-in")).finish();
        }
        if let UiError::Internal(detail) = self {
            tracing::error!(%detail, "dashboard: internal error");
        }
        let page = layout::page(
            "Error",
            None,
            layout::Nav::None,
            maud::html! {
                h1 { (self.status_code().canonical_reason().unwrap_or("Error")) }
                p.error { (self.to_string()) }
                p { a href="/ui/jobs" { "Back to jobs" } }
            },
        );
        layout::html(self.status_code(), page)
    }
}

/// Registers the dashboard's routes under `/ui`, every response with the security headers.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ui",
        web::get().to(|| async { HttpResponse::SeeOther().insert_header(("location", "/ui/jobs")).finish() }),
    );
    cfg.service(
        web::scope("/ui")
            .wrap(
                DefaultHeaders::new()
                    .add(("content-security-policy", CONTENT_SECURITY_POLICY))
                    .add(("x-content-type-options", "nosniff"))
                    .add(("referrer-policy", "no-referrer"))
                    .add(("x-frame-options", "DENY"))
                    .add(("cache-control", "no-store")),
            )
            .service(assets::file)
            .service(sign_in::page)
            .service(sign_in::submit)
            .service(sign_in::sign_out)
            .service(jobs::list)
            .service(jobs::rows)
            .service(new_job::page)
            .service(new_job::submit)
            .service(jobs::show)
            .service(jobs::summary)
            .service(jobs::events)
            .service(jobs::person)
            .service(jobs::cancel)
            .service(jobs::redeliver)
            .service(jobs::export_csv)
            .service(usage::show)
            .service(suppressions::show)
            .service(suppressions::add)
            .service(suppressions::import)
            .service(suppressions::remove)
            .service(system::show)
            .service(system::resume),
    );
}
