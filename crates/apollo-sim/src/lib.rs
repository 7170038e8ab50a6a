//! Apollo simulator: Apollo's Bulk People Enrichment API on `127.0.0.1`, with a deterministic
//! synthetic population, rate limits on a scaled clock counted in every way Apollo plausibly counts
//! them, a credits ledger,
//! asynchronous webhook deliveries and fault injection — the Apollo that tests, the demo and
//! benchmarks talk to.
//!
//! What it models, in brief (the knobs are [`SimConfig`]; `apollo-sim --help` lists them):
//! - `POST /api/v1/people/bulk_match`: `x-api-key` checked (401 plain text), 1–10 details (400
//!   `RECORD_LIMIT_EXCEEDED`), flags from the query or the body, `webhook_url` required with phone
//!   or waterfall flags unless `poll_only=true`; a random `i64` `request_id` sent as a JSON number.
//! - A population derived from a SHA-256 of the detail's identifier ([`population`]): same
//!   identifiers, same person and 24-hex id; unmatched entries are `null`.
//! - Minute/hour/day limits on a scaled clock with every header; 429 with `retry-after`
//!   (seconds, at least 1) and `x-retry-after-ms` (exact). How they count is a knob each
//!   ([`limits`]): fixed windows (aligned to the clock or to a first call), a sliding window or a
//!   token bucket; a random delay before a call is counted; headers counting the call they answer
//!   or not, or absent; `retry-after` alone in whole seconds; a usage-stats endpoint that is live,
//!   lagging or stale.
//! - Credits: 1 per match on the synchronous answer (none on waterfall requests, whose answer
//!   reports no credits), 8 per mobile in the phone payload, 1–4 per email and 8–25 per phone in
//!   the waterfall payload; every charge is in the [`Ledger`] and in some `credits_consumed` on
//!   the wire. A call that would overdraw `credit_balance` gets 422 `BILLING.LIMIT.CREDITS_EXHAUSTED`.
//! - Phone and waterfall payloads POSTed to `webhook_url` after `delivery_delay_ms` (+ jitter),
//!   retried on non-2xx or connection errors; `GET /api/v1/webhook_result/{id}` from the due time.
//!
//! Faults, each with its own probability:
//! - `duplicate`: the same body POSTed twice to the same URL (second record `duplicate`).
//! - `reorder`: a delivery is held until the next due delivery of another request has been
//!   POSTed, so the two arrive swapped (held record `reordered`).
//! - `early`: the delivery's first attempt is POSTed before the `bulk_match` answer is sent.
//! - `drop`: nothing is POSTed (a record with `dropped`, attempt 0); `webhook_result` still has it.
//! - `5xx`: `bulk_match` answers 500 (JSON), 502 (HTML) or 503 (text); no charge, no async work.
//! - `slow`: the `bulk_match` answer comes `slow_ms` late (already charged if the client gives up).
//! - `charge_then_timeout`: charged and deliveries scheduled, but the answer comes only after
//!   `charge_then_timeout_ms`, longer than a client waits: an outcome the client cannot know.
//! - `forbidden`: every bulk_match answers 403 `API_INACCESSIBLE` (a key without the endpoint).
//! - `result_expired`: `webhook_result` answers 410 `request_id_expired`.
//! - `reject_marker`: a call with a detail carrying the marker value is refused with 422 naming
//!   that detail; nothing charged.
//!
//! Every call's details and matches ([`CallRecord::received`]) and every payload's facts
//! ([`SimHandle::payloads`]) are recorded: the tests' oracle. `same_person` aliases let two
//! identifiers (an email and a LinkedIn URL) name one person.
//! - `waterfall_failed`: `waterfall.status` is `failed`; no webhook, no charge.
//! - `phone_skipped`: `phone_enrichment.status` is `skipped` with no `request_id`; no webhook.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = apollo_sim::spawn(apollo_sim::SimConfig { minute_limit: Some(20), ..Default::default() }).await?;
//! println!("Apollo at {}", sim.url());
//! sim.update_config(|c| c.fault_duplicate = 0.5);
//! let charged = sim.ledger().total;
//! # let _ = charged;
//! sim.stop().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod faults;
pub mod ledger;
pub mod limits;
pub mod payloads;
pub mod population;
pub mod records;
pub mod replay;
pub mod routes;

mod async_job;
mod bulk;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use apollo_client::PersonDetail;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub use config::SimConfig;
pub use ledger::{ChargeKind, Ledger, LedgerEntry};
pub use population::{SimOrg, SimPerson, SimPhone, Vendor, WaterfallFind, WaterfallSearch};
pub use records::{
    CallRecord, DeliveredEmail, DeliveredFacts, DeliveredPhone, DeliveryRecord, PayloadRecord, ReceivedDetail,
};

use state::Shared;

/// Starts a simulator on `127.0.0.1` with a free port, on the current tokio runtime.
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

/// Starts a simulator on `addr`. The HTTP server runs on its own worker threads; deliveries run
/// as tasks of the current tokio runtime, so it must keep running while the simulator is used.
pub async fn spawn_on(addr: SocketAddr, config: SimConfig) -> anyhow::Result<SimHandle> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| anyhow::anyhow!("apollo_sim::spawn must be called inside a tokio runtime: {e}"))?;
    let mut config = config;
    if let Some(path) = &config.replay_trace {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let lines = apollo_client::trace::parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let behaviour = replay::behaviour(&lines);
        tracing::info!(?behaviour, trace = %path.display(), "replaying a rate-limit trace");
        replay::apply(&mut config, &behaviour);
    }
    // reqwest is built without a default TLS provider; installing one twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .user_agent("apollo-sim webhook")
        .build()?;
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let workers = usize::from(config.workers.max(1));

    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(config, http, rt.clone(), tx));
    let dispatcher = rt.spawn(webhooks::dispatcher(shared.clone(), rx)).abort_handle();

    let data = web::Data::from(shared.clone());
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes::configure))
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    let server_handle = server.handle();
    rt.spawn(server);
    tracing::info!(%local, "apollo-sim listening");
    Ok(SimHandle {
        shared,
        addr: local,
        url: format!("http://{local}"),
        server: server_handle,
        dispatcher: Arc::new(Mutex::new(Some(dispatcher))),
    })
}

/// A running simulator: its address, its knobs, and what it has done. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    server: ServerHandle,
    dispatcher: Arc<Mutex<Option<AbortHandle>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("url", &self.url).finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:40123` (what `ApolloClient::new` takes).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current configuration (`credit_balance` is the remaining balance).
    pub fn config(&self) -> SimConfig {
        self.shared.lock().config.clone()
    }

    /// Changes knobs at run time, e.g. `sim.update_config(|c| c.credit_balance = Some(Credits::whole(5)))`.
    /// A new `seed` restarts the random sequence.
    pub fn update_config(&self, f: impl FnOnce(&mut SimConfig)) {
        self.shared.update_config(f);
    }

    /// Every charge so far and their total.
    pub fn ledger(&self) -> Ledger {
        self.shared.lock().ledger.clone()
    }

    /// Every HTTP request received, in order of completion.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// The HTTP requests received after the first `from` (in [`SimHandle::calls`] order): a
    /// long run reads what is new without copying everything each time.
    pub fn calls_from(&self, from: usize) -> Vec<CallRecord> {
        self.shared.lock().calls.get(from..).map(<[CallRecord]>::to_vec).unwrap_or_default()
    }

    /// The payloads recorded after the first `from` (in [`SimHandle::payloads`] order).
    pub fn payloads_from(&self, from: usize) -> Vec<PayloadRecord> {
        self.shared.lock().payloads.get(from..).map(<[PayloadRecord]>::to_vec).unwrap_or_default()
    }

    /// The delivery attempts after the first `from` (in [`SimHandle::deliveries`] order).
    pub fn deliveries_from(&self, from: usize) -> Vec<DeliveryRecord> {
        self.shared.lock().deliveries.get(from..).map(<[DeliveryRecord]>::to_vec).unwrap_or_default()
    }

    /// Every delivery attempt (and dropped delivery), in order.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.lock().deliveries.clone()
    }

    /// What the simulator holds for the person a detail identifies, under the current rates;
    /// `None` when that detail does not match.
    pub fn truth_for(&self, detail: &PersonDetail) -> Option<SimPerson> {
        let config = self.shared.lock().config.clone();
        population::person_for(&population::resolve_alias(detail, &config.same_person), &(&config).into())
    }

    /// Whether no delivery is scheduled, held back or being attempted (retries included): once
    /// true, nothing more is POSTed until the next accepted request.
    pub fn idle(&self) -> bool {
        self.shared.idle()
    }

    /// Milliseconds on the simulator's clock, the one its rate-limit windows count on: each
    /// window restarts at the multiples of its length.
    pub fn clock_ms(&self) -> u64 {
        self.shared.now_ms()
    }

    /// HTTP requests being answered right now (each is in [`SimHandle::calls`] once answered).
    pub fn requests_in_progress(&self) -> usize {
        self.shared.requests_in_progress()
    }

    /// Every asynchronous payload of an accepted request, with the facts it carries per person.
    pub fn payloads(&self) -> Vec<PayloadRecord> {
        self.shared.lock().payloads.clone()
    }

    /// Stops the server and every pending delivery.
    pub async fn stop(&self) {
        self.shared.stop();
        if let Some(d) = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            d.abort();
        }
        self.server.stop(false).await;
    }
}
