//! The simulator's shared state: configuration, random generator, windows, ledger and records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use apollo_client::RequestId;
use tokio::sync::mpsc;

use crate::async_job::{AsyncJob, Flavor};
use crate::config::SimConfig;
use crate::ledger::{ChargeKind, Ledger, LedgerEntry};
use crate::limits::{Counters, UsageHistory};
use crate::records::{CallRecord, DeliveryRecord, PayloadRecord};

/// Mixed into the seed of the counting delays' generator.
const DELAY_SEED: u64 = 0x6c69_6d69_7473;

/// Mutable state, behind one lock that is never held across an `.await`.
pub(crate) struct Inner {
    pub config: SimConfig,
    pub rng: fastrand::Rng,
    pub windows: Counters,
    /// The usage after each counted call, for a lagging usage-stats endpoint.
    pub usage_seen: UsageHistory,
    /// The counting delays' own sequence, so that they leave the faults' sequence unchanged.
    pub delay_rng: fastrand::Rng,
    pub ledger: Ledger,
    pub calls: Vec<CallRecord>,
    pub deliveries: Vec<DeliveryRecord>,
    /// Every asynchronous payload of an accepted request, with its facts.
    pub payloads: Vec<PayloadRecord>,
    /// Asynchronous work by top-level `request_id`.
    pub by_request: HashMap<RequestId, Vec<Arc<AsyncJob>>>,
    /// Phone work by `phone_enrichment.request_id`.
    pub by_phone_job: HashMap<String, Arc<AsyncJob>>,
}

/// Everything the handlers, the delivery tasks and the handle share.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// The simulator's epoch: windows are aligned to it.
    pub started: Instant,
    /// Client for webhook deliveries.
    pub http: reqwest::Client,
    /// The runtime `spawn` was called on; delivery tasks run there, not on the server's workers.
    pub rt: tokio::runtime::Handle,
    /// Due deliveries go to the dispatcher, which applies the reorder fault.
    pub dispatch: mpsc::UnboundedSender<Arc<AsyncJob>>,
    stopped: AtomicBool,
    /// Deliveries scheduled, held or being attempted (retries included).
    pending: AtomicUsize,
    /// HTTP requests being answered.
    requests: AtomicUsize,
}

impl Shared {
    pub fn new(
        config: SimConfig,
        http: reqwest::Client,
        rt: tokio::runtime::Handle,
        dispatch: mpsc::UnboundedSender<Arc<AsyncJob>>,
    ) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                rng: fastrand::Rng::with_seed(config.seed),
                delay_rng: fastrand::Rng::with_seed(config.seed ^ DELAY_SEED),
                config,
                windows: Counters::default(),
                usage_seen: UsageHistory::default(),
                ledger: Ledger::default(),
                calls: Vec::new(),
                deliveries: Vec::new(),
                payloads: Vec::new(),
                by_request: HashMap::new(),
                by_phone_job: HashMap::new(),
            }),
            started: Instant::now(),
            http,
            rt,
            dispatch,
            stopped: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        }
    }

    /// The state; a panic elsewhere while holding the lock leaves data that is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Milliseconds since start: the clock of the rate-limit windows.
    pub fn now_ms(&self) -> u64 {
        self.since_start().as_millis() as u64
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// A delivery starts being scheduled or sent.
    pub fn delivery_started(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// A delivery is over: sent (with its retries and copy), dropped, or abandoned at stop.
    pub fn delivery_finished(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether no delivery is scheduled, held or being attempted.
    pub fn idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// An HTTP request is being answered.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    /// An HTTP request is answered (or abandoned), and recorded.
    pub fn request_finished(&self) {
        self.requests.fetch_sub(1, Ordering::SeqCst);
    }

    /// HTTP requests being answered now.
    pub fn requests_in_progress(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Applies a configuration change; a new seed restarts the random sequence.
    pub fn update_config(&self, f: impl FnOnce(&mut SimConfig)) {
        let mut inner = self.lock();
        let old_seed = inner.config.seed;
        f(&mut inner.config);
        if inner.config.seed != old_seed {
            inner.rng = fastrand::Rng::with_seed(inner.config.seed);
            inner.delay_rng = fastrand::Rng::with_seed(inner.config.seed ^ DELAY_SEED);
        }
    }

    /// Charges a payload once, when it is produced (due, polled or sent early). Its credits were
    /// reserved from the balance when the request was accepted.
    pub fn produce(&self, job: &AsyncJob) {
        if job.charged.swap(true, Ordering::SeqCst) {
            return;
        }
        self.lock().ledger.charge(LedgerEntry {
            request_id: job.request_id,
            kind: match job.kind {
                apollo_client::DeliveryKind::Phone => ChargeKind::Phone,
                apollo_client::DeliveryKind::Waterfall => ChargeKind::Waterfall,
            },
            credits: job.credits,
            people: job.people.clone(),
            at: SystemTime::now(),
        });
    }

    /// Records one delivery attempt (or a dropped delivery, attempt 0).
    pub fn record_delivery(
        &self,
        job: &AsyncJob,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        flavor: Flavor,
    ) {
        let record = DeliveryRecord {
            url: job.url.clone().unwrap_or_default(),
            request_id: job.request_id,
            phone_job_id: job.phone_job_id.clone(),
            kind: job.kind,
            attempt,
            status,
            error,
            duplicate: flavor.duplicate,
            early: flavor.early,
            reordered: flavor.reordered,
            dropped: flavor.dropped,
            body: job.body.clone(),
            at: SystemTime::now(),
            since_start: self.since_start(),
        };
        self.lock().deliveries.push(record);
    }
}
