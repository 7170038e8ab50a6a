//! Section 1: rate-limit use. One 5,000-person job under the simulator's limit, then with the
//! configured limit set twice too high.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apollo_sim::{CallRecord, SimConfig};
use e2e_tests::Backend;
use e2e_tests::rate_matrix::steady_rate;

use crate::report::{Section, row};
use crate::stack::{self, callback_of};
use crate::workload::{job_body, person};

// The simulated plan, shared by sections 1, 2 and the replicas: a 2-second "minute" with 30
// calls, 15 calls/s, so the 500 calls of a 5,000-person job take about 33 s.
/// The simulator's "minute".
pub const RATE_MINUTE_MS: u64 = 2_000;
/// `bulk_match` calls allowed per "minute".
pub const RATE_LIMIT: u32 = 30;
const RATE_PEOPLE: usize = 5_000;

/// The simulator of sections 1 and 2: the plan's limit, deliveries 200–400 ms after the call.
pub fn limited_sim() -> SimConfig {
    SimConfig {
        minute_ms: RATE_MINUTE_MS,
        minute_limit: Some(RATE_LIMIT),
        delivery_delay_ms: 200,
        delivery_jitter_ms: 200,
        retry_backoff_ms: 50,
        ..SimConfig::default()
    }
}
/// Runs section 1, or with `twice_too_high` section 1b.
pub async fn run(twice_too_high: bool) -> anyhow::Result<Section> {
    let configured = if twice_too_high { RATE_LIMIT * 2 } else { RATE_LIMIT };
    let s = stack::start(Backend::Sqlite, limited_sim(), |c| c.rate_per_minute = Some(configured)).await?;
    let tag = if twice_too_high { "r2" } else { "r1" };
    let body = job_body((0..RATE_PEOPLE).map(|i| person(tag, i)).collect(), s.receiver.url());
    let t0 = Instant::now();
    let (id, _) = stack::submit(&s.api(), body).await?;
    let done = callback_of(&s.receiver, &id, Duration::from_secs(150)).await?;
    let job = stack::job(&s.api(), &id).await?;
    let calls = stack::bulk_calls(&s.sim);
    let stats = s.app.dispatcher.stats();
    s.stop().await;

    let ok: Vec<&CallRecord> = calls.iter().filter(|c| c.status == 200).collect();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    let n = ok.len();
    anyhow::ensure!(n > RATE_LIMIT as usize, "only {n} successful calls");
    let span = ok[n - 1].since_start - ok[0].since_start;
    let minute = Duration::from_millis(RATE_MINUTE_MS);
    let allowed = f64::from(RATE_LIMIT) / minute.as_secs_f64();
    // The first window's allowance goes at once; after it, calls can only come as fast as the
    // windows let them: (n - N) calls over the span from the first call to the last.
    // Sustained rate: how long N consecutive calls took, averaged over every run of N calls from
    // the first call to the last. The first window's calls go as one burst and the last window is
    // partial, so neither (n - 1) ÷ span nor n ÷ span measures the steady pace.
    let nn = RATE_LIMIT as usize;
    let steady = steady_rate(&ok, RATE_LIMIT);
    let ratio = steady / allowed;
    let lower = (n - nn) as f64 / span.as_secs_f64();
    let people_sent: usize = ok.iter().map(|c| c.details).sum();
    let per_call = people_sent as f64 / n as f64;
    // Fixed windows of the simulator strictly between the first and the last call's.
    let window = |c: &CallRecord| c.since_start.as_millis() as u64 / RATE_MINUTE_MS;
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    for c in &ok {
        *per_window.entry(window(c)).or_default() += 1;
    }
    let (w0, w1) = (window(ok[0]), window(ok[n - 1]));
    let interior: Vec<usize> = (w0 + 1..w1).map(|w| per_window.get(&w).copied().unwrap_or(0)).collect();
    let full = interior.iter().filter(|&&c| c == RATE_LIMIT as usize).count();
    let wall = done - t0;
    let share = limited as f64 / calls.len().max(1) as f64;

    let mut rows = Vec::new();
    let details = if !twice_too_high {
        rows.push(row(
            "1.1",
            "rate use: calls/s achieved ÷ allowed (5,000 people)",
            format!("{ratio:.3} ({steady:.2} of {allowed:.1} calls/s)"),
            "≥ 0.97",
            Some(ratio >= 0.97),
        ));
        rows.push(row("1.2", "rate use: 429s drawn", limited.to_string(), "0", Some(limited == 0)));
        rows.push(row("1.3", "rate use: people per call", format!("{per_call:.2}"), "≥ 9.9", Some(per_call >= 9.9)));
        format!(
            "Simulator: {RATE_LIMIT} `bulk_match` calls per {RATE_MINUTE_MS} ms \"minute\" (fixed windows, {allowed:.0} \
             calls/s), deliveries 200–400 ms after each call. Service: `APOLLO_RATE_PER_MINUTE={configured}`, \
             `APOLLO_MINUTE={RATE_MINUTE_MS}ms`, `DISPATCH_CONCURRENCY=8` (default), SQLite. One job of {RATE_PEOPLE} \
             distinct people with `reveal_phone_number` and `run_waterfall_email`.\n\n\
             | | |\n|---|---|\n\
             | successful calls | {n} ({people_sent} people sent, {per_call:.2} per call) |\n\
             | 429s | {limited} (the dispatcher counted {}) |\n\
             | span, first call → last call | {:.2} s |\n\
             | sustained calls/s: {RATE_LIMIT} ÷ mean time of {RATE_LIMIT} consecutive calls | {steady:.2} = **{ratio:.3}** of {allowed:.1} allowed |\n\
             | lower bound: (n − {RATE_LIMIT}) ÷ span (as if the first window's {RATE_LIMIT} calls took no time) | {lower:.2} = {:.3} |\n\
             | simulator windows strictly inside the span that were full ({RATE_LIMIT} calls) | {full} of {} |\n\
             | job wall time, submit → callback received | {:.1} s (ideal ≈ {:.1} s: {} windows after the first) |\n\
             | job | {} · {} complete, {} not found, {} partial · {} calls |\n\n\
             How it is measured: the limiter is a sliding log, so the first window's N calls go as one burst and each \
             later call goes one window after the call N places before it; the last window is partial. The steady \
             pace is therefore the time N consecutive calls take (call k − N to call k), averaged over every k from \
             the first call to the last; a client using every slot takes exactly one window. The limiter waits one \
             window plus a margin measured from answer times per slot, which is where the last percent goes; the simulator's \
             fixed windows strictly inside the span show whether any allowance was left unused.\n\n\
             No yardstick row: these figures are already ratios to Apollo's allowance (calls/s ÷ allowed, people \
             per call of at most ten) or counts of 429s, which a faster or slower machine does not change while it \
             keeps up.\n",
            stats.rate_limited,
            span.as_secs_f64(),
            lower / allowed,
            interior.len(),
            wall.as_secs_f64(),
            (n as f64 / f64::from(RATE_LIMIT) - 1.0) * minute.as_secs_f64(),
            (n as f64 / f64::from(RATE_LIMIT) - 1.0).ceil(),
            job["status"].as_str().unwrap_or("?"),
            job["counts"]["complete"],
            job["counts"]["not_found"],
            job["counts"]["partial"],
            job["apollo_calls"],
        )
    } else {
        rows.push(row(
            "1.4",
            "configured limit 2× too high: 429s ÷ calls",
            format!("{:.2} % ({limited} of {})", share * 100.0, calls.len()),
            "≤ 1 %",
            Some(share <= 0.01),
        ));
        rows.push(row(
            "1.5",
            "configured limit 2× too high: calls/s achieved ÷ allowed",
            format!("{ratio:.3}"),
            "(≥ 0.97)",
            Some(ratio >= 0.97),
        ));
        format!(
            "The same job and simulator, the service configured with `APOLLO_RATE_PER_MINUTE={configured}`, twice the \
             simulator's {RATE_LIMIT}. The limiter takes the minimum of the configured limit and the one Apollo's \
             headers state (`x-rate-limit-minute`), and closes a window when `x-minute-requests-left` reaches 0; a 429 \
             blocks dispatch for its `retry-after`.\n\n\
             | | |\n|---|---|\n\
             | calls | {} ({n} answered 200, **{limited}** answered 429 = {:.2} %) |\n\
             | people per call | {per_call:.2} |\n\
             | sustained calls/s ÷ allowed (as in section 1) | {steady:.2} ÷ {allowed:.1} = {ratio:.3} |\n\
             | simulator windows inside the span that were full | {full} of {} |\n\
             | job wall time, submit → callback | {:.1} s |\n\n\
             No yardstick row: as in section 1, the figures are already ratios to Apollo's allowance.\n",
            calls.len(),
            share * 100.0,
            interior.len(),
            wall.as_secs_f64(),
        )
    };
    let limits = format!(
        "The limiter spends a slot one window plus a margin (measured from answer times) after the call {RATE_LIMIT} places before it, and \
         counts a call from the moment it is claimed, so any delay between claiming and the simulator's receipt \
         (a busy CPU, a slow claim) is lost allowance; {full} of {} interior simulator windows were full.",
        interior.len()
    );
    let title = if twice_too_high {
        "1b. Rate-limit use, configured limit twice too high".to_string()
    } else {
        "1. Rate-limit use".to_string()
    };
    Ok(Section {
        key: if twice_too_high { "1x2" } else { "1" }.into(),
        title,
        rows,
        details,
        limits,
        ..Section::default()
    })
}
