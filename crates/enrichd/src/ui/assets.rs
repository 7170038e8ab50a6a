//! The dashboard's static files, compiled into the binary: nothing is fetched at run time.

use actix_web::{HttpResponse, get, web};

use crate::ui::UiError;

/// htmx 2.0.11 (`npm pack htmx.org@2.0.11`, `dist/htmx.min.js`), licence 0BSD (see
/// `assets/htmx.LICENSE`). Used only for live refresh; every page reads without it.
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
/// The one stylesheet.
const CSS: &[u8] = include_bytes!("../../assets/app.css");

/// A static file by name.
#[get("/assets/{name}")]
pub async fn file(name: web::Path<String>) -> Result<HttpResponse, UiError> {
    let (body, content_type) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "app.css" => (CSS, "text/css; charset=utf-8"),
        _ => return Err(UiError::NotFound("file")),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", content_type))
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(body))
}
