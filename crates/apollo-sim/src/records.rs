//! What the simulator saw and did: every call received and every delivery attempted.

use std::time::{Duration, SystemTime};

use apollo_client::{DeliveryKind, EnrichFlags, RequestId};

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
    /// The `webhook_url` given.
    pub webhook_url: Option<String>,
    /// Whether `poll_only=true` was given.
    pub poll_only: bool,
    /// The status answered.
    pub status: u16,
    /// The `request_id` answered (bulk_match) or asked for (webhook_result).
    pub request_id: Option<RequestId>,
    /// The fault injected into this answer (`"500"`, `"502"`, `"503"`, `"slow"`), if any.
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
