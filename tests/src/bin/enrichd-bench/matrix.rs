//! Section 1c: the rate-limit matrix. The release `enrichd` binary (one process on SQLite, three
//! replicas on PostgreSQL) against the simulator counting its limits in each plausible way
//! ([`e2e_tests::rate_matrix::full_matrix`]), beside a client that sends until refused.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use apollo_sim::CallRecord;
use apollo_sim::limits::{Alignment, Shape};
use e2e_tests::rate_matrix::{BENCH_PLAN, Cell, MAX_REFUSED, MIN_RATE_USE, Plan, full_matrix, run_cell, steady_rate};
use enrichd::startup::secret;

use crate::report::{Section, row};

/// Builds the release service binary beside this one and returns its path.
fn release_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "enrichd", "--bin", "enrichd"])
        .status()?;
    anyhow::ensure!(status.success(), "building the release enrichd failed");
    let exe = std::env::current_exe()?;
    let bin = exe.parent().map(|d| d.join("enrichd")).ok_or_else(|| anyhow::anyhow!("no directory for {exe:?}"))?;
    anyhow::ensure!(bin.exists(), "{} missing", bin.display());
    Ok(bin)
}

/// The yardstick: one client sending the same work back to back until refused, waiting each
/// 429's `retry-after`. Returns its calls refused, its calls accepted and its rate use.
async fn send_until_refused(cell: &Cell, plan: Plan) -> anyhow::Result<(usize, usize, f64)> {
    let sim = apollo_sim::spawn(cell.sim(plan)).await?;
    let apollo = apollo_client::ApolloClient::new(sim.url(), secret(&sim.config().api_key))?;
    let calls = plan.limit as usize * plan.windows as usize;
    let detail = |i: usize| apollo_client::PersonDetail {
        email: Some(format!("peer-{i}@matrix.io")),
        ..apollo_client::PersonDetail::default()
    };
    for c in 0..calls {
        let chunk: Vec<_> = (c * 10..c * 10 + 10).map(detail).collect();
        loop {
            match apollo.bulk_match(&chunk, &apollo_client::EnrichFlags::default(), None, false).await {
                Err(apollo_client::ApolloError::RateLimited { retry_after, .. }) => {
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(100))).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
    }
    let mut records: Vec<CallRecord> = sim.calls().into_iter().filter(|c| c.path.ends_with("/bulk_match")).collect();
    records.sort_by_key(|c| c.since_start);
    sim.stop().await;
    let accepted: Vec<&CallRecord> = records.iter().filter(|c| c.status == 200).collect();
    let refused = records.iter().filter(|c| c.status == 429).count();
    let allowed = f64::from(plan.limit) / plan.minute.as_secs_f64();
    Ok((refused, accepted.len(), steady_rate(&accepted, plan.limit) / allowed))
}

/// Runs section 1c.
pub async fn run() -> anyhow::Result<Section> {
    let bin = release_binary()?;
    let plan = BENCH_PLAN;
    let cells = full_matrix();
    let mut table = String::from(
        "| # | limit | usage-stats | headers (usage, left) | retry-after | counting delay | processes | calls | 429s | rate use | margin | passes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let (mut passing, mut refused_total, mut calls_total, mut lowest) = (0, 0, 0, f64::MAX);
    for (i, cell) in cells.iter().enumerate() {
        let r = match run_cell(cell, plan, &bin).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("   cell {}: {e:#}", i + 1);
                let _ = writeln!(table, "| {} | {} | | | | | | | | | | **no**: {e} |", i + 1, cell.name());
                continue;
            }
        };
        eprintln!("   cell {}: {} → {} refused, rate use {:.3}", i + 1, cell.name(), r.refused, r.rate_use);
        passing += usize::from(r.passes());
        refused_total += r.refused;
        calls_total += r.accepted + r.refused;
        lowest = lowest.min(r.rate_use);
        let name = cell.name();
        let parts: Vec<&str> = name.split(" · ").collect();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.2} %) | {:.3} | {} ms | {} |",
            i + 1,
            parts[0],
            parts[1].trim_start_matches("stats "),
            parts[2],
            parts[3].trim_start_matches("retry-after "),
            parts[4].trim_start_matches("delay "),
            cell.replicas,
            r.accepted + r.refused,
            r.refused,
            r.refused_share() * 100.0,
            r.rate_use,
            r.margin.as_millis(),
            if r.passes() { "yes" } else { "**no**" },
        );
    }
    let mut peers = String::from("| limit | 429s ÷ calls | rate use |\n|---|---|---|\n");
    let mut peer_refused = Vec::new();
    let shapes = [
        (Shape::Fixed, Alignment::Clock),
        (Shape::Fixed, Alignment::FirstCall),
        (Shape::Sliding, Alignment::Clock),
        (Shape::Bucket, Alignment::Clock),
    ];
    for (shape, align) in shapes {
        let cell = Cell { shape, align, ..Cell::default() };
        let (refused, accepted, rate) = send_until_refused(&cell, plan).await?;
        let share = refused as f64 / (refused + accepted).max(1) as f64;
        let name = cell.name();
        let limit = name.split(" · ").next().unwrap_or_default();
        let _ =
            writeln!(peers, "| {limit} | {:.1} % ({refused} of {}) | {rate:.3} |", share * 100.0, refused + accepted);
        peer_refused.push(share);
    }
    let n = cells.len();
    let rows = vec![
        row(
            "1c.1",
            "rate matrix: cells with ≤ 0.5 % 429s and ≥ 0.95 of the allowed rate",
            format!("{passing} of {n}"),
            &format!("{n} of {n}"),
            Some(passing == n),
        ),
        row(
            "1c.2",
            "rate matrix: 429s drawn in all cells",
            format!("{refused_total} of {calls_total} calls"),
            "≤ 0.5 % per cell",
            Some(refused_total as f64 <= MAX_REFUSED * calls_total as f64),
        ),
        row(
            "1c.3",
            "rate matrix: lowest rate use of a cell after the first window",
            format!("{lowest:.3}"),
            "≥ 0.95",
            Some(lowest >= MIN_RATE_USE),
        ),
        row(
            "1c.4",
            "send-until-refused client, same plans: 429s ÷ calls",
            peer_refused.iter().map(|s| format!("{:.1} %", s * 100.0)).collect::<Vec<_>>().join(", "),
            "— (the yardstick)",
            None,
        ),
    ];
    let details = format!(
        "Simulator: {} `bulk_match` calls per {} ms \"minute\", counted in each way the matrix combines: the shape of \
         the limit (fixed windows aligned to the simulator's clock or opened by a first call, a sliding window of \
         the minute's length, a token bucket of {} tokens refilled at that many a minute), a random delay of up to \
         40 ms between a call's arrival and its count (seeded, the answer after the count), the usage-stats \
         endpoint (live, 500 ms late, or stale: always 1 used), the headers (usage and requests-left counting the \
         call they answer or only the calls before it, or no rate-limit headers at all) and `retry-after` (with \
         the exact `x-retry-after-ms`, or alone in whole seconds). Each shape × processes × delay is run with four \
         ways of reporting that pair every reporting choice with every other. Service: the release binary, \
         `APOLLO_RATE_PER_MINUTE={}`, `APOLLO_MINUTE={}ms`, `DISPATCH_CONCURRENCY=8`; one process on SQLite or three \
         replicas on one PostgreSQL database; one job of {} people (ten per call, no asynchronous flags) submitted \
         to the first. A cell passes with at most 0.5 % of its calls answered 429 and at least 0.95 of the allowed \
         rate once the first window has passed (the rate is measured as in section 1: the limit ÷ the mean time \
         that many consecutive accepted calls took). The margin is the largest any process measured (its \
         `enrichd_limiter_margin_seconds`).\n\n{table}\n\
         The yardstick, a client that sends the same calls one after another until refused and then waits \
         `retry-after`, against the same simulator (no counting delay, live usage, headers counting the call):\n\n\
         {peers}\n\
         No yardstick row beyond that client: the figures are counts of 429s and ratios to Apollo's allowance.\n",
        plan.limit,
        plan.minute.as_millis(),
        plan.limit,
        plan.limit,
        plan.minute.as_millis(),
        plan.limit as usize * plan.windows as usize * 10,
    );
    let limits = "The limiter loses the margin it adds to each window (the 99th percentile of its send-to-answer \
                  times plus 5 ms, shown per cell) and the time from a slot freeing to the call's claim; on a \
                  2-s minute both are percents, on Apollo's 60-s minute tenths of a percent."
        .to_string();
    Ok(Section {
        key: "matrix".into(),
        title: "1c. Rate-limit matrix: every way Apollo may count".into(),
        rows,
        details,
        limits,
        ..Section::default()
    })
}
