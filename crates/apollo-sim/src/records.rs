//! What the simulator saw and did: every call received and every delivery attempted.

use std::time::{Duration, SystemTime};

use apollo_client::{Credits, DeliveryKind, EnrichFlags, RequestId};
use serde_json::Value;

/// One HTTP request the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// HTTP method.
    pub method: String,
    /// The route template, e.g. `/api/v1/people/bulk_match` or `/api/v1/webhook_result/{id}`.
    pub route: String,
    /// The path as requested.
    pub path: String,
    /// `bulk_match` flags, once the request could be read.
    pub flags: Option<EnrichFlags>,
    /// Number of `details` sent to `bulk_match`.
    pub details: usize,
    /// Each detail received, in request order, with the person it matched on a 200 answer.
    pub received: Vec<ReceivedDetail>,
    /// The body of a 200 `bulk_match` answer (sent, or due when the client gave up).
    pub answer: Option<Value>,
    /// The `webhook_url` given.
    pub webhook_url: Option<String>,
    /// Whether `poll_only=true` was given.
    pub poll_only: bool,
    /// The status answered.
    pub status: u16,
    /// The `request_id` answered (bulk_match) or asked for (webhook_result).
    pub request_id: Option<RequestId>,
    /// The fault injected into this answer (`"500"`, `"502"`, `"503"`, `"slow"`,
    /// `"charge_then_timeout"`, `"reject_marker"`), if any.
    pub fault: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
    /// When it arrived, on the simulator's monotonic clock.
    pub since_start: Duration,
    /// How long the answer took, injected latency included.
    pub latency: Duration,
}

/// One webhook POST attempt (or a delivery dropped by the `drop` fault).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRecord {
    /// The `webhook_url`, exactly as given.
    pub url: String,
    /// The `bulk_match` request it belongs to.
    pub request_id: RequestId,
    /// The phone job id (`phone_enrichment.request_id`) for phone deliveries.
    pub phone_job_id: Option<String>,
    /// Phone or waterfall.
    pub kind: DeliveryKind,
    /// 1 for the first attempt, 2 for the first retry, …; 0 for a dropped delivery.
    pub attempt: u32,
    /// The status the receiver answered.
    pub status: Option<u16>,
    /// The transport error, when no status came.
    pub error: Option<String>,
    /// A second copy sent by the `duplicate` fault.
    pub duplicate: bool,
    /// Sent before the synchronous answer was returned (`early` fault).
    pub early: bool,
    /// Held back and sent after a later delivery (`reorder` fault).
    pub reordered: bool,
    /// Never sent (`drop` fault); only pollable.
    pub dropped: bool,
    /// The body POSTed (identical for every attempt and copy).
    pub body: String,
    /// When the attempt was made.
    pub at: SystemTime,
    /// When the attempt was made, on the simulator's monotonic clock.
    pub since_start: Duration,
}

impl DeliveryRecord {
    /// Whether the receiver accepted this attempt (2xx).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One detail of a `bulk_match` request and what the simulator answered for it: the oracle tests
/// hold the service's records against.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedDetail {
    /// Position in the request's `details`.
    pub position: usize,
    /// The detail as received (raw JSON).
    pub detail: Value,
    /// The Apollo id matched, on a 200 answer; `None` for no match or no 200.
    pub apollo_id: Option<String>,
    /// The person object answered in `matches` at this position, on a 200 answer.
    pub answered: Option<Value>,
}

/// One asynchronous payload (phone reveal or waterfall) of an accepted request and every fact it
/// carries, recorded when the request is accepted, whether it is then POSTed, dropped or polled.
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadRecord {
    /// The `bulk_match` request it belongs to.
    pub request_id: RequestId,
    /// The phone job id (`phone_enrichment.request_id`) for phone payloads.
    pub phone_job_id: Option<String>,
    /// Phone or waterfall.
    pub kind: DeliveryKind,
    /// What producing it charges.
    pub credits: Credits,
    /// Per person in the payload, what it delivers.
    pub facts: Vec<DeliveredFacts>,
}

/// The facts a payload delivers for one person.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveredFacts {
    /// Apollo person id.
    pub apollo_id: String,
    /// Phone numbers delivered.
    pub phones: Vec<DeliveredPhone>,
    /// Email addresses delivered.
    pub emails: Vec<DeliveredEmail>,
    /// What this person's part of the payload charges (its share of the payload's credits).
    pub credits: Credits,
}

/// A phone number as a payload delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredPhone {
    /// E.164.
    pub e164: String,
    /// As written in the payload.
    pub raw: String,
    /// `mobile`, …
    pub kind: String,
    /// `valid_number`, `no_status`, …
    pub status: String,
    /// The waterfall vendor's display name that found it.
    pub vendor: Option<String>,
}

/// An email address as a payload delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredEmail {
    /// The address.
    pub address: String,
    /// The status as written in the payload (`Verified`, …).
    pub status: String,
    /// The waterfall vendor's display name that found it.
    pub vendor: Option<String>,
}
