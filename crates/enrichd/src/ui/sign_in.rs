//! Signing in with an API key and out again.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use maud::html;
use serde::Deserialize;

use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav};
use crate::ui::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, Viewer};

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
    #[serde(default)]
    csrf: String,
}

/// A form that only carries its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

fn form_page(state: &AppState, status: StatusCode, problem: Option<&str>) -> HttpResponse {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let token = session::sign_in_token(state, &nonce);
    let body = html! {
        h1 { "Sign in" }
        @if let Some(p) = problem { p.error { (p) } }
        form.stack method="post" action="/ui/sign-in" {
            input type="hidden" name="csrf" value=(token);
            label for="key" { "API key" }
            input #key type="password" name="key" autocomplete="current-password" required;
            p { button type="submit" { "Sign in" } }
        }
        p.muted { "Your key stays on this form: the session cookie holds only a signed name." }
    };
    let mut resp = layout::html(status, layout::page("Sign in", None, Nav::None, body));
    if let Ok(v) = session::set_cookie(SIGN_IN_COOKIE, &nonce, 3600).parse() {
        resp.headers_mut().append(actix_web::http::header::SET_COOKIE, v);
    }
    resp
}

/// The sign-in form.
#[get("/sign-in")]
pub async fn page(state: web::Data<AppState>) -> HttpResponse {
    form_page(&state, StatusCode::OK, None)
}

/// Checks the key and sets the session cookie.
#[post("/sign-in")]
pub async fn submit(
    req: HttpRequest,
    form: web::Form<SignInForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let nonce = session::cookie(&req, SIGN_IN_COOKIE).unwrap_or_default();
    if !session::sign_in_token_ok(&state, nonce, &form.csrf) {
        return Err(UiError::Csrf);
    }
    let Some((name, admin)) = session::identify(&state, form.key.trim()) else {
        return Ok(form_page(&state, StatusCode::UNAUTHORIZED, Some("Unknown API key.")));
    };
    tracing::info!(client = %name, admin, "dashboard sign-in");
    let value = session::issue(&state, &name, admin, chrono::Utc::now().timestamp());
    Ok(HttpResponse::SeeOther()
        .insert_header(("location", "/ui/jobs"))
        .append_header(("set-cookie", session::set_cookie(SESSION_COOKIE, &value, session::session_max_age())))
        .append_header(("set-cookie", session::set_cookie(SIGN_IN_COOKIE, "", 0)))
        .finish())
}

/// Clears the session cookie.
#[post("/sign-out")]
pub async fn sign_out(viewer: Viewer, form: web::Form<CsrfForm>) -> Result<HttpResponse, UiError> {
    viewer.check_csrf(&form.csrf)?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("location", "/ui/sign-in"))
        .insert_header(("set-cookie", session::set_cookie(SESSION_COOKIE, "", 0)))
        .finish())
}
