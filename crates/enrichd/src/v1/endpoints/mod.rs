//! One module per resource.

pub mod admin;
pub mod body;
pub mod docs;
pub mod events;
pub mod health;
pub mod jobs;
pub mod suppressions;
pub mod usage;
pub mod webhooks;
