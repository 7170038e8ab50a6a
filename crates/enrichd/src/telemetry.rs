//! Prometheus metrics: the process-wide recorder, the per-request counters, and `/metrics`, which
//! adds queue depths and outcomes read from the database at scrape time.
//!
//! Names are `enrichd_*` in base units (seconds; credits in millionths, so sums stay exact).
//! Labels never carry job, person, batch or key identifiers.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (tests start many apps in one process; a
/// second install would fail).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Only fails if another recorder is installed; the handle then shows nothing but works.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
        handle
    })
}

/// Counts one answered HTTP request by route pattern (never the raw path: it holds ids).
pub fn record_request(route: Option<&str>, method: &str, status: u16, elapsed: Duration) {
    let route = route.unwrap_or("unmatched").to_string();
    let (method, status) = (method.to_string(), status.to_string());
    metrics::histogram!("enrichd_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(elapsed.as_secs_f64());
    metrics::counter!("enrichd_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
}

/// The label of one callback attempt's result.
pub fn callback_result(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "delivered",
        Some(410) => "gone",
        Some(_) => "refused",
        None => "no_answer",
    }
}

/// Sets the gauges read from the database: rows per state of each table, the vendor statistics.
async fn refresh_gauges(state: &AppState) {
    match state.store.state_counts().await {
        Ok(c) => {
            let jobs: Vec<&str> = rules::JobState::ALL.iter().map(|s| s.as_str()).collect();
            let people: Vec<&str> = rules::PersonState::ALL.iter().map(|s| s.as_str()).collect();
            let batches: Vec<&str> = rules::BatchState::ALL.iter().map(|s| s.as_str()).collect();
            for (name, known, rows) in [
                ("enrichd_jobs", jobs, &c.jobs),
                ("enrichd_people", people, &c.people),
                ("enrichd_batches", batches, &c.batches),
                ("enrichd_deliveries", Vec::new(), &c.deliveries),
                ("enrichd_callbacks", Vec::new(), &c.callbacks),
            ] {
                // Every known state is listed (0 when no row is in it, e.g. `suppressed`), so a
                // state that empties reads 0 rather than its last count.
                for s in known.into_iter().filter(|k| !rows.iter().any(|(s, _)| s == k)) {
                    metrics::gauge!(name, "state" => s).set(0.0);
                }
                for (s, n) in rows {
                    metrics::gauge!(name, "state" => s.clone()).set(*n as f64);
                }
            }
            metrics::gauge!("enrichd_database_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: database unreachable");
            metrics::gauge!("enrichd_database_up").set(0.0);
        }
    }
    if let Ok(double) = state.store.possible_double_charges().await {
        metrics::gauge!("enrichd_possible_double_charge_micros").set(double.micros() as f64);
    }
    if let Ok(vendors) = state.store.vendor_usage(None, None, None).await {
        for v in vendors {
            let (vendor, kind) = (v.vendor.clone(), v.kind.as_str());
            for (name, value) in [
                ("enrichd_vendor_attempts", v.totals.attempts),
                ("enrichd_vendor_results", v.totals.results),
                ("enrichd_vendor_verified", v.totals.verified),
                ("enrichd_vendor_credits_micros", v.totals.credits.micros()),
            ] {
                metrics::gauge!(name, "vendor" => vendor.clone(), "kind" => kind).set(value as f64);
            }
        }
    }
    if let Ok(counts) = state.store.suppression_counts().await {
        for global in [false, true] {
            for kind in rules::SuppressionKind::ALL {
                let n = counts.iter().find(|(g, k, _)| *g == global && k == kind).map_or(0, |c| c.2);
                let scope = if global { "global" } else { "client" };
                metrics::gauge!("enrichd_suppressions", "scope" => scope, "kind" => kind.as_str()).set(n as f64);
            }
        }
    }
    let paused = state.store.pause_reason().await.ok().flatten().is_some();
    metrics::gauge!("enrichd_dispatch_paused").set(if paused { 1.0 } else { 0.0 });
}

/// `GET /metrics`: Prometheus text format.
#[get("/metrics")]
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    refresh_gauges(&state).await;
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle().render())
}

/// Describes the metrics (the `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("enrichd_http_requests_total", "HTTP requests answered, by route pattern, method and status");
    describe_histogram!("enrichd_http_request_duration_seconds", Unit::Seconds, "HTTP request latency");
    describe_counter!("enrichd_apollo_requests_total", "Calls to Apollo by endpoint and outcome");
    describe_histogram!("enrichd_apollo_request_duration_seconds", Unit::Seconds, "Apollo call latency");
    describe_gauge!("enrichd_apollo_rate_limit_remaining", "Calls Apollo says are left in each window");
    describe_histogram!("enrichd_limiter_wait_seconds", Unit::Seconds, "Waits of the dispatcher for the rate limiter");
    describe_gauge!(
        "enrichd_limiter_margin_seconds",
        Unit::Seconds,
        "What the rate limiter adds to each window's length, measured from Apollo's answer times"
    );
    describe_counter!("enrichd_credits_consumed_micros_total", "Credits Apollo reported, in millionths, by kind");
    describe_counter!(
        "enrichd_possible_double_charges_total",
        "Calls whose outcome was unknown and may be charged twice"
    );
    describe_gauge!(
        "enrichd_possible_double_charge_micros",
        "What calls of unknown outcome may have cost a second time, over the jobs kept, in millionths of a credit"
    );
    describe_counter!("enrichd_webhook_deliveries_total", "Apollo deliveries received, by result");
    describe_histogram!(
        "enrichd_delivery_ingest_lag_seconds",
        Unit::Seconds,
        "From an Apollo delivery's arrival to its merge"
    );
    describe_counter!("enrichd_callback_attempts_total", "Final callback attempts, by result");
    describe_gauge!("enrichd_jobs", "Jobs by state (finished jobs by outcome included)");
    describe_gauge!(
        "enrichd_people",
        "People by state (finished people by outcome included, `suppressed`: on a do-not-enrich list, never sent)"
    );
    describe_gauge!(
        "enrichd_suppressions",
        "Do-not-enrich list entries by scope (`global`, or `client`: every client's list together) and identifier kind"
    );
    describe_gauge!("enrichd_batches", "Batches by state (queue depth: queued, retry_wait)");
    describe_gauge!("enrichd_deliveries", "Stored Apollo deliveries by state (queue depth: pending)");
    describe_gauge!("enrichd_callbacks", "Final callbacks by state (queue depth: pending)");
    describe_gauge!(
        "enrichd_vendor_attempts",
        "Waterfall vendor attempts by vendor and kind (email, phone), every client, every day kept"
    );
    describe_gauge!("enrichd_vendor_results", "Waterfall vendor attempts that returned a value, by vendor and kind");
    describe_gauge!("enrichd_vendor_verified", "Waterfall vendor results called verified, by vendor and kind");
    describe_gauge!(
        "enrichd_vendor_credits_micros",
        "Waterfall credits attributed to each vendor and kind, in millionths of a credit"
    );
    describe_gauge!("enrichd_database_up", "1 when the last scrape could read the database");
    describe_gauge!("enrichd_dispatch_paused", "1 while dispatch is paused");
}
