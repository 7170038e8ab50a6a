//! The dashboard's static files, compiled into the binary: nothing is fetched at run time.

use actix_web::{HttpResponse, get, web};

use crate::ui::UiError;

/// htmx 2.0.11 (`npm pack htmx.org@2.0.11`, `dist/htmx.min.js`), licence 0BSD (see
/// `assets/htmx.LICENSE`). Used only for live refresh; every page reads without it.
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
/// The job page's live refresh: follows the job's event stream and asks htmx to refresh the
/// summary on each event (a file, as the CSP refuses inline scripts).
const JOB_EVENTS: &[u8] = include_bytes!("../../assets/job-events.js");
/// The one stylesheet.
const CSS: &[u8] = include_bytes!("../../assets/app.css");

/// The tab icon (without one, browsers ask for `/favicon.ico` and log a 404).
const ICON: &[u8] = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#2456c8"/><path d="M4 4h8v2H6v1h5v2H6v1h6v2H4z" fill="#fff"/></svg>"##;

/// A static file by name.
#[get("/assets/{name}")]
pub async fn file(name: web::Path<String>) -> Result<HttpResponse, UiError> {
    let (body, content_type) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "job-events.js" => (JOB_EVENTS, "text/javascript; charset=utf-8"),
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return Err(UiError::NotFound("file")),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", content_type))
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(body))
}
