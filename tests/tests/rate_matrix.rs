//! The rate-limit matrix, CI cells: the real service (one process on SQLite, three replicas on
//! PostgreSQL) against the simulator counting its limits in each plausible way — fixed windows
//! aligned to the clock or to a first call, a sliding window, a token bucket; usage headers and
//! requests-left counting the call or not, or absent; a usage-stats endpoint live, lagging or
//! stale; `retry-after` in whole seconds; calls counted up to 40 ms after they arrive — with fixed
//! seeds, on a 4-s minute of 20 calls. Each cell: at most 0.5 % of calls refused, and at least
//! 0.95 of the allowed rate once the first window has passed. The whole matrix runs in the
//! benchmark (`enrichd-bench --only matrix`).

use e2e_tests::enrichd_binary;
use e2e_tests::rate_matrix::{CI_PLAN, ci_cells, run_cell};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_apollo_may_count_draws_no_429_at_full_rate() {
    let bin = enrichd_binary();
    let mut failures = Vec::new();
    // One cell at a time: rates are measured, and two cells would share two cores.
    for cell in ci_cells() {
        let r = run_cell(&cell, CI_PLAN, &bin).await.unwrap_or_else(|e| panic!("{e:#}"));
        let line = format!(
            "{}: {} accepted, {} refused ({:.2} %), rate use {:.3}, margin {} ms, {:.1} s",
            cell.name(),
            r.accepted,
            r.refused,
            r.refused_share() * 100.0,
            r.rate_use,
            r.margin.as_millis(),
            r.took.as_secs_f64()
        );
        eprintln!("{line}");
        if !r.passes() {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "cells over 0.5 % refused or under 0.95 of the rate:\n{}", failures.join("\n"));
}
