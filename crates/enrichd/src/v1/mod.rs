//! Version 1 of the HTTP API.

pub mod auth;
pub mod endpoints;
