//! Who is looking at the dashboard: a signed, HttpOnly, SameSite=Strict session cookie (the key
//! itself never leaves the sign-in form) and the CSRF token every form POST carries.
//!
//! The signing key is derived from the configured keys, so every replica accepts every session
//! and changing the keys signs everyone out.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::state::AppState;
use crate::ui::UiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "enrichd_session";
/// The cookie binding the sign-in form's CSRF token before there is a session.
pub const SIGN_IN_COOKIE: &str = "enrichd_signin";
/// How long a session lasts.
const SESSION_SECONDS: i64 = 12 * 3600;

/// A signed-in viewer: a client (its own jobs) or an operator (every job, the system page).
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The key's name.
    pub name: String,
    /// Whether the key is an admin key.
    pub admin: bool,
    /// The CSRF token of this session, for forms.
    pub csrf: String,
}

/// Who a key signs in as: a client key (`ENRICHD_API_KEYS`), else an admin key
/// (`ENRICHD_ADMIN_KEYS`). The one place that knows about key kinds.
pub fn identify(state: &AppState, key: &str) -> Option<(String, bool)> {
    if let Some(name) = state.keys.client_for(key) {
        return Some((name.to_string(), false));
    }
    state.admin_keys.client_for(key).map(|name| (name.to_string(), true))
}

fn signing_key(state: &AppState) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"enrichd dashboard sessions v1\0");
    for keys in [&state.config.api_keys, &state.config.admin_keys].into_iter().flatten() {
        h.update(keys.expose_secret().as_bytes());
        h.update(b"\0");
    }
    h.finalize().into()
}

fn mac(state: &AppState, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&signing_key(state)).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
        mac.update(b"\0");
    }
    mac
}

fn tag(state: &AppState, parts: &[&[u8]]) -> String {
    URL_SAFE_NO_PAD.encode(mac(state, parts).finalize().into_bytes())
}

fn verify(state: &AppState, parts: &[&[u8]], tag: &str) -> bool {
    URL_SAFE_NO_PAD.decode(tag).is_ok_and(|t| mac(state, parts).verify_slice(&t).is_ok())
}

/// A new session cookie value for a viewer.
pub fn issue(state: &AppState, name: &str, admin: bool, now: i64) -> String {
    let kind = if admin { "a" } else { "c" };
    let name = URL_SAFE_NO_PAD.encode(name);
    let expires = (now + SESSION_SECONDS).to_string();
    let sig = tag(state, &[b"session", kind.as_bytes(), name.as_bytes(), expires.as_bytes()]);
    format!("{kind}.{name}.{expires}.{sig}")
}

/// The viewer a cookie value stands for, if it is genuine and not expired.
pub fn open(state: &AppState, cookie: &str, now: i64) -> Option<Viewer> {
    let mut it = cookie.split('.');
    let (kind, name, expires, sig) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !verify(state, &[b"session", kind.as_bytes(), name.as_bytes(), expires.as_bytes()], sig) {
        return None;
    }
    if expires.parse::<i64>().ok()? <= now {
        return None;
    }
    let name = String::from_utf8(URL_SAFE_NO_PAD.decode(name).ok()?).ok()?;
    let admin = match kind {
        "a" => true,
        "c" => false,
        _ => return None,
    };
    Some(Viewer { name, admin, csrf: tag(state, &[b"csrf", cookie.as_bytes()]) })
}

/// The CSRF token for the sign-in form bound to a pre-session nonce.
pub fn sign_in_token(state: &AppState, nonce: &str) -> String {
    tag(state, &[b"sign-in", nonce.as_bytes()])
}

/// Whether a sign-in form's token matches its nonce cookie.
pub fn sign_in_token_ok(state: &AppState, nonce: &str, token: &str) -> bool {
    !nonce.is_empty() && verify(state, &[b"sign-in", nonce.as_bytes()], token)
}

/// A cookie's value from the `Cookie` header.
pub fn cookie<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, scoped to the dashboard.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// The session's lifetime, for the cookie's `Max-Age`.
pub fn session_max_age() -> i64 {
    SESSION_SECONDS
}

impl Viewer {
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        // Constant time, so the comparison says nothing about how much of a guess was right.
        let same = token.len() == self.csrf.len()
            && token.bytes().zip(self.csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(UiError::Csrf) }
    }

    /// Whether this viewer may see a job of `client`.
    pub fn may_see(&self, client: &str) -> bool {
        self.admin || self.name == client
    }
}

impl FromRequest for Viewer {
    type Error = UiError;
    type Future = Ready<Result<Viewer, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(UiError::Internal("application state missing".into())));
        };
        let now = chrono::Utc::now().timestamp();
        ready(cookie(req, SESSION_COOKIE).and_then(|c| open(state, c, now)).ok_or(UiError::SignIn))
    }
}
