//! The service as the bench runs it, on the test harness's setup ([`TestSetup`]), and what the
//! sections ask of it that the harness has no use for.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use apollo_sim::{CallRecord, SimConfig, SimHandle};
use e2e_tests::{Api, Backend, CLIENT_KEY, TestApp, TestSetup};
use enrichd::config::Config;
use enrichd::demo::receiver::CallbackReceiver;
use enrichd::startup::secret;
use serde_json::Value;

use crate::procfs::proc_status_kib;

/// Starts the service, the simulator and the callback receiver on a fresh database of `backend`.
pub async fn start(backend: Backend, sim: SimConfig, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestApp> {
    Ok(start_measured(backend, sim, tweak).await?.0)
}

/// Like [`start`], and VmRSS (KiB) just before the service was built, the simulator and the
/// receiver already running.
pub async fn start_measured(
    backend: Backend,
    sim: SimConfig,
    tweak: impl FnOnce(&mut Config),
) -> anyhow::Result<(TestApp, u64)> {
    let mut setup = TestSetup::create(backend, sim).await?;
    let config = &mut setup.config;
    // Production timings for late deliveries (reconcile after 10 minutes, deadline 2 hours),
    // not the demo's: nothing is late in these runs, and polling would only add load.
    let defaults = Config::defaults();
    config.reconcile_after = defaults.reconcile_after;
    config.reconcile_every = defaults.reconcile_every;
    config.async_deadline = defaults.async_deadline;
    config.api_keys = Some(secret(&format!("bench={CLIENT_KEY}")));
    tweak(config);
    let rss_before_app_kib = proc_status_kib("VmRSS:");
    let mut app = setup.start(true).await?;
    // A proxy in the environment must not stand between the load and the service.
    app.http = reqwest::Client::builder().no_proxy().build()?;
    Ok((app, rss_before_app_kib))
}

/// `POST /v1/jobs` with a serialised body; the job id and how long the POST took.
pub async fn submit(api: &Api, body: Vec<u8>) -> anyhow::Result<(String, Duration)> {
    let t = Instant::now();
    let resp = api.submit_bytes(body).await?;
    let status = resp.status();
    let text = resp.text().await?;
    let took = t.elapsed();
    anyhow::ensure!(status.as_u16() == 202, "submit answered {status}: {}", &text[..text.len().min(500)]);
    let v: Value = serde_json::from_str(&text)?;
    Ok((v["id"].as_str().unwrap_or_default().to_string(), took))
}

/// `GET /v1/jobs/{id}`.
pub async fn job(api: &Api, id: &str) -> anyhow::Result<Value> {
    api.try_get_json(&format!("/v1/jobs/{id}")).await.with_context(|| format!("GET /v1/jobs/{id} failed"))
}

/// The simulator's `bulk_match` calls, in the order they came.
pub fn bulk_calls(sim: &SimHandle) -> Vec<CallRecord> {
    let mut calls: Vec<CallRecord> = sim.calls().into_iter().filter(|c| c.route.ends_with("bulk_match")).collect();
    calls.sort_by_key(|c| c.since_start);
    calls
}

/// Waits for the callback of `id`; its arrival instant.
pub async fn callback_of(receiver: &CallbackReceiver, id: &str, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = receiver.received().iter().find(|r| r.answered < 300 && r.json()["data"]["id"] == id) {
            return Ok(r.at);
        }
        anyhow::ensure!(Instant::now() < deadline, "no callback for job {id} in {timeout:?}");
        receiver.wait_for(receiver.received().len() + 1, Duration::from_millis(200)).await;
    }
}
