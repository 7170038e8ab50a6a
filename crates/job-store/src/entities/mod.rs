//! sea-orm entities, one module per table of the `migration` crate.
//!
//! State columns are plain text (see [`crate::states`]); JSON columns are `jsonb` on PostgreSQL and
//! text on SQLite; instants are `timestamp with time zone`.

pub mod apollo_error;
pub mod batch;
pub mod batch_person;
pub mod call_minute;
pub mod callback_attempt;
pub mod callback_delivery;
pub mod client_day_credits;
pub mod dispatcher_state;
pub mod inbound_delivery;
pub mod job;
pub mod person;
pub mod person_event;
pub mod rate_limit_call;
pub mod rate_limiter;
pub mod replica;
pub mod suppression;
pub mod task_lease;
pub mod vendor_usage;
