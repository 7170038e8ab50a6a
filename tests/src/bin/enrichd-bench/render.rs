//! The markdown: the header with the machine table, the summary table beside the previous run's
//! results, each section's text, and what limits the missed targets.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::procfs::read;
use crate::report::{Row, Section};

/// The machine table's rows: date, cores, memory, CPU, kernel, compiler, commit.
pub fn machine() -> Vec<(&'static str, String)> {
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let dirty = !run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    vec![
        ("date (UTC)", chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string()),
        ("nproc", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0).to_string()),
        ("memory", format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0)),
        ("CPU", cpu),
        ("kernel", read("/proc/sys/kernel/osrelease").trim().to_string()),
        ("rustc", run("rustc", &["--version"])),
        (
            "commit",
            format!("{}{}", run("git", &["rev-parse", "--short", "HEAD"]), if dirty { " + local changes" } else { "" }),
        ),
    ]
}

/// The summary of the file being replaced: figure id → (result, whether its target was missed),
/// shown as "previous run".
pub fn previous_results(path: &std::path::Path) -> HashMap<String, (String, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = HashMap::new();
    let mut in_summary = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            in_summary = line.starts_with("## Summary");
            continue;
        }
        if !in_summary || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() >= 5 && cells[0].chars().next().is_some_and(|c| c.is_ascii_digit()) {
            out.insert(cells[0].to_string(), (cells[2].to_string(), cells[4].contains("no")));
        }
    }
    out
}

/// The whole file.
pub fn render(
    machine: &[(&str, String)],
    sections: &[Section],
    previous: &HashMap<String, (String, bool)>,
    total: Duration,
    load_before: &str,
    load_after: &str,
) -> String {
    let mut d = String::new();
    let _ = writeln!(d, "# Benchmarks\n");
    let _ = writeln!(
        d,
        "Written by the benchmark runner; do not edit by hand. Rerun (about {:.0} minutes on the machine below):\n",
        (total.as_secs_f64() / 60.0).ceil()
    );
    let _ = writeln!(
        d,
        "```sh\nexport CARGO_TARGET_DIR=/root/.cache/enrichd-target   # optional\ncargo run --release -p e2e-tests --bin enrichd-bench\n```\n"
    );
    let _ = writeln!(
        d,
        "PostgreSQL at `TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`). Everything runs in one \
         process per section: the service (`Application::build` + `start`, the same code as `enrichd serve`), the \
         Apollo simulator, the callback receiver and the load generators, talking HTTP on loopback. So the service \
         shares the two cores with its own load, and memory figures are the whole process's.\n"
    );
    let _ = writeln!(d, "## Machine\n");
    let _ = writeln!(d, "| | |\n|---|---|");
    for (k, v) in machine {
        let _ = writeln!(d, "| {k} | {v} |");
    }
    let _ = writeln!(
        d,
        "| run time | {:.0} s (load average before {load_before}, after {load_after}) |\n",
        total.as_secs_f64()
    );
    let _ = writeln!(d, "## Summary\n");
    let _ = writeln!(d, "| # | figure | result | target | met | previous run |\n|---|---|---|---|---|---|");
    for s in sections {
        for r in &s.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let prev = match previous.get(&r.id) {
                Some((value, true)) => format!("{value} (missed)"),
                Some((value, false)) => value.clone(),
                None => "—".into(),
            };
            let _ = writeln!(d, "| {} | {} | {} | {} | {met} | {prev} |", r.id, r.figure, r.value, r.target);
        }
    }
    let _ = writeln!(
        d,
        "\n\"previous run\" is the result the file held before this run (same machine unless the machine table \
         changed): the run-to-run variance. A row whose `#` ends in `y` states a figure over a yardstick from the \
         same run: a bare actix-web handler under the same load, single-row inserts committed one by one on a fresh \
         database of the same kind, or (2.2y) the wait the plan's rate limit alone imposes; so runs on different \
         machines compare. Figures stated against Apollo's allowance, a peer client or each other are ratios \
         already.\n"
    );
    for s in sections {
        let _ = writeln!(d, "## {}\n", s.title);
        let _ = writeln!(d, "{}", s.details.trim_end());
        let _ = writeln!(d, "\n_Section run time {:.0} s; load average at its start {}._\n", s.seconds, s.load);
    }
    let _ = writeln!(d, "## What limits the missed targets\n");
    // Missed in this run, or met now but missed in the previous run (a borderline figure).
    let missed_before = |r: &Row| r.met == Some(true) && previous.get(&r.id).is_some_and(|(_, missed)| *missed);
    let missed: Vec<&Section> =
        sections.iter().filter(|s| s.rows.iter().any(|r| r.met == Some(false) || missed_before(r))).collect();
    if missed.is_empty() {
        let _ = writeln!(d, "Every target was met in this run and in the previous one.\n");
    }
    for s in missed {
        let ids: Vec<String> = s
            .rows
            .iter()
            .filter_map(|r| match r.met {
                Some(false) => Some(r.id.clone()),
                Some(true) if missed_before(r) => {
                    Some(format!("{} (met in this run, missed in the previous one: borderline)", r.id))
                }
                _ => None,
            })
            .collect();
        let text = if s.limits.is_empty() { "No analysis recorded for this section." } else { s.limits.trim_end() };
        let _ = writeln!(d, "**{}** ({}): {text}\n", ids.join(", "), s.title);
    }
    let _ = writeln!(d, "{CHANGES}");
    d
}

/// The service changes these measurements led to (issue 6).
const CHANGES: &str = "## Changes made from these measurements\n\n\
- The webhook route compared the token after loading the whole batch (Apollo's stored answer, decoded, and a \
  second query for its people); it now reads the batch's secret alone (`Store::batch_webhook_secret`). Section 4 \
  went from about 1,380 to 1,930 durable deliveries/s with p99 from 36 to 27 ms (same machine, same run \
  configuration).\n\
- Job validation cloned every person while the decoded body was still held, so a 100,000-person POST held the \
  people twice (+210 MiB at the peak); `validate_job_owned` consumes the body and cleans each person by moving its \
  strings: the POST's peak went from 249 to about 175 MiB for the whole process, and validation from 0.19 to 0.09 s.\n\
- `create_job` bound all 21 columns of every new person; it now binds the 11 that differ and writes the rest as \
  literals: about 15 % off the step (section 5b, relative to decoding the same body).\n\
- Webhook deliveries are stored by group commit (one transaction for all deliveries waiting, hashing outside the \
  writer): no measurable change in section 4 (see what limits it).\n\
- Issue 15, measured before/after on one quiet machine (178756a → this state): SQLite's writers (the group \
  commits, the merges, the claims) run on a thread of their own, where each statement's answer no longer waits \
  behind HTTP work; merges are background writes in groups that stand aside for storing deliveries, recording \
  answers and claiming; answers are group-committed like deliveries; the in-process limiter claims every free \
  slot's batch in one transaction; the webhook route hashes bodies on its own thread and caches batch secrets. \
  Overhead on SQLite 1,306 → 2,176 people/s (3.1); ingest 3,848 → 5,695 deliveries/s with p99 19.9 → 17.3 ms \
  (4.1, 4.2); PostgreSQL 1,043 → 1,065 people/s (3.2, unchanged: its merges are round trips, not the writer).\n\
- Issue 15, the 100,000-person POST: the people are read from the body straight into their stored form (no \
  `serde_json::Value`), and the body is dropped before `create_job`: 0.93–1.04 s → 0.63 s, peak growth \
  +124 → +47 MiB (5.1, 5.2).\n\
- Issue 15, merges set-wise (a group of deliveries reads and writes its rows in a few multi-row statements; \
  SQLite groups capped at 8, one when a writer waits) and the job-counter update returning the row: A/B on the \
  slower machine above, f77b899 → this state, two runs each. Statements per call 38.4 → 21.8 on SQLite and \
  42.2 → 22.2 on PostgreSQL (3.1s, 3.2s); PostgreSQL 596–624 → 655–706 people/s (3.2); SQLite 1,218–1,336 → \
  1,079–1,277 (3.1, within the noise: statements were not its limit); ingest 2,948–3,054 → 2,833–2,905 \
  deliveries/s (4.1, within the noise; uncapped groups held SQLite's writer and cost ingest about a third).\n\
- Issue 15, the queues behind the writer and the job row, measured on one machine in the same session (runs \
  before → after each change): merges wait for 8 ms free of webhook groups before taking SQLite's writer, not \
  2 ms, and a group of deliveries is stored by one statement instead of five: ingest 3,082-3,234 → \
  5,359-5,650 deliveries/s, p99 23.5-25.7 → 18.9-20.1 ms (4.1, 4.2). On PostgreSQL, pending deliveries are read \
  through a partial index (the old plan walked every answered batch: 40-230 ms a page), a claim transaction \
  writes its job counters once at its end (it locked the job row while forming its other batches), and ingest \
  merges a page of 100 per transaction instead of groups of 32: 692-769 → 1,300-1,447 people/s, the merges \
  ending under 1 s after the last delivery instead of 8-15 s (3.2).";
