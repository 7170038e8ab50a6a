//! The enrichment orchestrator's domain rules: the person and job lifecycle, merging a person's
//! parts into one record, the person key, reuse, prices and budgets, and the arithmetic of
//! Apollo's rate windows with the in-process limiter. Plain types and functions: no database, no
//! HTTP, no I/O, so each rule is unit-tested on its own. The store persists what they decide; the
//! service calls them.

pub mod budget;
pub mod counts;
pub mod lifecycle;
pub mod merge;
pub mod person_fields;
pub mod person_key;
pub mod ratelimit;
pub mod records;
pub mod reuse;
pub mod states;
pub mod window;

pub use counts::Counts;
pub use person_fields::PersonField;
pub use person_key::{person_key, person_key_of};
pub use states::{BatchState, CallbackEvent, CallbackState, DeliveryState, JobState, PersonState, UnknownState};
