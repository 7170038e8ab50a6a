//! Typed, tolerant client for Apollo's Bulk People Enrichment API.
//!
//! The wire types follow Apollo's API reference (its recorded examples are the fixtures under
//! `tests/fixtures/`), including where live traffic differs from the documentation: `request_id` as a number or a string, `credits_consumed` as a decimal,
//! `null` matches, unknown fields kept, placeholder emails and two spellings of phone fields.

pub mod client;
pub mod delivery;
pub mod error;
pub mod facts;
pub mod lenient;
pub mod numbers;
pub mod rate_limit;
pub mod trace;
pub mod wire;

pub use client::{ApolloClient, BulkMatchOutcome, MAX_DETAILS, WebhookResultPoll};
pub use delivery::{Delivery, DeliveryError, DeliveryKind, parse_delivery};
pub use error::{ApolloError, ErrorBody};
pub use facts::{
    EmailFact, FactSource, PersonFacts, PhoneFact, is_placeholder_email, normalize_email, normalize_phone,
};
pub use numbers::{Credits, RequestId};
pub use rate_limit::{RateLimit, Window, WindowLimit};
pub use wire::{
    BulkMatchResponse, EnrichFlags, Flag, Person, PersonDetail, PhoneEnrichment, WaterfallAck, WebhookResult,
};
