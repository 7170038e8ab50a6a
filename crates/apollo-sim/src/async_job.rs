//! An accepted request's asynchronous payload (phone reveal or waterfall), as the state keeps it and
//! the deliverer sends it, and how each attempt came about.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use apollo_client::{Credits, DeliveryKind, RequestId};
use serde_json::Value;

use crate::faults::DeliveryFaults;

/// One asynchronous payload of an accepted request (phone reveal or waterfall).
pub(crate) struct AsyncJob {
    pub request_id: RequestId,
    pub kind: DeliveryKind,
    /// `phone_enrichment.request_id` for phone work.
    pub phone_job_id: Option<String>,
    /// Where to POST; `None` for poll-only requests.
    pub url: Option<String>,
    /// The payload, and its serialisation sent byte for byte on every attempt.
    pub payload: Value,
    pub body: String,
    /// What producing the payload charges.
    pub credits: Credits,
    /// Apollo ids of the people in it.
    pub people: Vec<String>,
    /// When it is sent and becomes pollable.
    pub due: Instant,
    pub due_wall: SystemTime,
    pub faults: DeliveryFaults,
    pub charged: AtomicBool,
    pub last_dispatched: Mutex<Option<SystemTime>>,
}

/// How an attempt came about, for the delivery record.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flavor {
    pub duplicate: bool,
    pub early: bool,
    pub reordered: bool,
    pub dropped: bool,
}
