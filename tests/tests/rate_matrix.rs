//! The rate-limit matrix, CI cells: the real service (one process on SQLite, three replicas on
//! PostgreSQL) against the simulator counting its limits in each plausible way — fixed windows
//! aligned to the clock or to a first call, a sliding window, a token bucket; usage headers and
//! requests-left counting the call or not, or absent; a usage-stats endpoint live, lagging or
//! stale; `retry-after` in whole seconds; calls counted up to 40 ms after they arrive — with fixed
//! seeds, on a 4-s minute of 20 calls. Each cell: at most 0.5 % of calls refused, and at least
//! 0.95 of the allowed rate once the first window has passed. The whole matrix runs in the
//! benchmark (`enrichd-bench --only matrix`).

use apollo_sim::SimConfig;
use e2e_tests::enrichd_binary;
use e2e_tests::rate_matrix::{CI_PLAN, ci_cells, run_against, run_cell};

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

/// A rate-limit trace replayed: the simulator counts as the committed synthetic trace shows
/// Apollo counted (20 calls a minute, usage not counting the call it answers, requests-left
/// counting it, `retry-after` in whole seconds, answers 6-46 ms after sending), and the service
/// draws no 429 from it. The service's own trace of that run (`APOLLO_TRACE_FILE`) holds one line
/// per call, nothing secret or personal, and replays to the same counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_trace_draws_no_429_and_the_run_traces_itself() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rate-trace.jsonl");
    let sim = SimConfig { replay_trace: Some(fixture), ..SimConfig::default() };
    let replayed = apollo_sim::spawn(sim.clone()).await.unwrap();
    let c = replayed.config();
    replayed.stop().await;
    assert_eq!((c.minute_limit, c.hour_limit, c.day_limit), (Some(20), None, None));
    assert!(c.usage_header_excludes_call && !c.left_header_excludes_call && c.retry_after_whole_seconds);
    assert_eq!(c.count_delay_ms, 40);

    let out = std::env::temp_dir().join(format!("enrichd-trace-{}.jsonl", std::process::id()));
    let plan = e2e_tests::rate_matrix::Plan { windows: 3, ..CI_PLAN };
    let r = run_against(sim, 1, plan, &enrichd_binary(), Some(&out)).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((r.refused, r.accepted), (0, 60), "{r:?}");
    assert!(r.rate_use >= 0.95, "{r:?}");

    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(!text.contains("apollo-matrix-key") && !text.contains('@'), "a key or an address in the trace");
    let lines = apollo_client::trace::parse_trace(&text).unwrap();
    assert_eq!(lines.len(), 60);
    assert!(lines.iter().all(|l| l.status == 200 && l.answered_ms >= l.sent_ms));
    let seen = apollo_sim::replay::behaviour(&lines);
    assert_eq!(seen.limits[0], Some(20));
    assert!(seen.usage_excludes_call && !seen.left_excludes_call);
}
