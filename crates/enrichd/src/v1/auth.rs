//! Authentication: `Authorization: Bearer <key>`, checked against the client keys or, for
//! operator routes, the admin keys ([`crate::core::keys`]).

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::error::ApiError;
use crate::state::AppState;

/// The bearer token of a request, if any.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// The authenticated client (its name), extracted from the bearer key.
#[derive(Debug, Clone)]
pub struct Client(pub String);

impl FromRequest for Client {
    type Error = ApiError;
    type Future = Ready<Result<Client, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(app_state(req).and_then(|state| match bearer(req) {
            None => Err(ApiError::Unauthorized("missing `Authorization: Bearer <api key>`")),
            Some(k) => match state.keys.client_for(k) {
                Some(name) => Ok(Client(name.to_string())),
                // A known key of the wrong kind is refused as the admin route refuses a client key.
                None if state.admin_keys.client_for(k).is_some() => {
                    Err(ApiError::Forbidden("this route needs a client key (ENRICHD_API_KEYS), not an admin key"))
                }
                None => Err(ApiError::Unauthorized("unknown API key")),
            },
        }))
    }
}

/// A client or an operator: routes where a client sees its own figures and an operator anyone's.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client key (the client's name).
    Client(String),
    /// An admin key (its name).
    Admin(String),
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(app_state(req).and_then(|state| match bearer(req) {
            None => Err(ApiError::Unauthorized("missing `Authorization: Bearer <api key>`")),
            Some(k) => match (state.keys.client_for(k), state.admin_keys.client_for(k)) {
                (Some(name), _) => Ok(Caller::Client(name.to_string())),
                (None, Some(name)) => Ok(Caller::Admin(name.to_string())),
                (None, None) => Err(ApiError::Unauthorized("unknown API key")),
            },
        }))
    }
}

/// An authenticated operator (the admin key's name), for `/v1/admin/*`.
#[derive(Debug, Clone)]
pub struct Admin(pub String);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(app_state(req).and_then(|state| match bearer(req) {
            None => Err(ApiError::Unauthorized("missing `Authorization: Bearer <admin key>`")),
            Some(k) => match state.admin_keys.client_for(k) {
                Some(name) => Ok(Admin(name.to_string())),
                None if state.keys.client_for(k).is_some() => {
                    Err(ApiError::Forbidden("this route needs an admin key (ENRICHD_ADMIN_KEYS), not a client key"))
                }
                None => Err(ApiError::Unauthorized("unknown admin key")),
            },
        }))
    }
}
