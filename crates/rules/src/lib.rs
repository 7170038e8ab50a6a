//! The enrichment orchestrator's domain rules: the person and job lifecycle, merging a person's
//! parts into one record, the person fields and key, reuse, prices, budgets and estimates,
//! waterfall vendor statistics, the arithmetic of Apollo's rate windows with the in-process
//! limiter, retries and usage windows.
//! Plain types and functions: no database, no HTTP, no I/O, so each rule is unit-tested on its
//! own. The store persists what they decide; the service calls them.

pub mod budget;
pub mod counts;
pub mod estimate;
pub mod events;
pub mod lifecycle;
pub mod merge;
pub mod person_fields;
pub mod person_key;
pub mod problem;
pub mod ratelimit;
pub mod records;
pub mod retry;
pub mod reuse;
pub mod states;
pub mod suppression;
pub mod usage_window;
pub mod vendors;
pub mod window;

/// People per Apollo call: the bulk endpoint's limit.
pub const BATCH_SIZE: usize = apollo_client::MAX_DETAILS;

pub use counts::Counts;
pub use person_fields::PersonField;
pub use person_key::{person_key, person_key_of};
pub use states::{
    BatchState, CallbackEvent, CallbackState, DeliveryState, JobState, PersonState, SuppressionKind, UnknownState,
    VendorKind,
};
