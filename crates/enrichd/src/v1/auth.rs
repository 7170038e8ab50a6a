//! Client authentication: `Authorization: Bearer <api key>`.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated client (its name), extracted from the bearer key.
#[derive(Debug, Clone)]
pub struct Client(pub String);

impl FromRequest for Client {
    type Error = ApiError;
    type Future = Ready<Result<Client, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Internal("application state missing".into())));
        };
        let key = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        ready(match key {
            None => Err(ApiError::Unauthorized("missing `Authorization: Bearer <api key>`")),
            Some(k) => match state.keys.client_for(k) {
                Some(name) => Ok(Client(name.to_string())),
                None => Err(ApiError::Unauthorized("unknown API key")),
            },
        })
    }
}
