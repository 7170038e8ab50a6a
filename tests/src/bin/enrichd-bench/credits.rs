//! Section 7: credits saved by the reuse window. 40 jobs of the same 5 people, and a re-run of a
//! 5,000-person list with 10 % new people, with the reuse window off and on.

use std::time::{Duration, Instant};

use apollo_sim::{CallRecord, SimConfig};
use e2e_tests::{Backend, TestApp};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::report::{Section, row};
use crate::stack;
use crate::workload::person;

const OVERLAP_JOBS: usize = 40;
const OVERLAP_PEOPLE: usize = 5;
const RERUN_PEOPLE: usize = 5_000;
const RERUN_NEW: usize = 500;

/// Calls, details sent and credits of one workload.
#[derive(Clone, Copy, Debug, Default)]
struct Spend {
    calls: usize,
    details: usize,
    credits: apollo_client::Credits,
}

/// Waits until every job is finished and the simulator is quiet with every charge booked.
async fn settle(s: &TestApp, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let api = s.api();
    for id in ids {
        api.try_wait_done(id, deadline.saturating_duration_since(Instant::now())).await?;
    }
    while !s.sim.idle() {
        anyhow::ensure!(Instant::now() < deadline, "the simulator never went quiet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// What the simulator has done so far.
fn spend(s: &TestApp) -> Spend {
    let ok: Vec<CallRecord> = stack::bulk_calls(&s.sim).into_iter().filter(|c| c.status == 200).collect();
    Spend { calls: ok.len(), details: ok.iter().map(|c| c.details).sum(), credits: s.sim.ledger().total }
}

/// The spend between two readings.
fn minus(a: Spend, b: Spend) -> Spend {
    Spend {
        calls: a.calls - b.calls,
        details: a.details - b.details,
        credits: apollo_client::Credits(a.credits.micros() - b.credits.micros()),
    }
}
/// Runs both workloads on a fresh stack; the spend of each (and of the re-run alone).
async fn credits_run(reuse: bool) -> anyhow::Result<(Spend, Spend, Spend)> {
    let sim =
        SimConfig { delivery_delay_ms: 100, delivery_jitter_ms: 100, retry_backoff_ms: 50, ..SimConfig::default() };
    let s = stack::start(Backend::Sqlite, sim, |c| {
        c.reuse_within = reuse.then(|| Duration::from_secs(30 * 86_400));
    })
    .await?;
    let with =
        |people: Vec<Value>| serde_json::to_vec(&json!({"people": people, "reveal_phone_number": true})).expect("JSON");
    // 40 jobs of the same five people, submitted together.
    let mut ids = Vec::new();
    let mut set = JoinSet::new();
    for _ in 0..OVERLAP_JOBS {
        let body = with((0..OVERLAP_PEOPLE).map(|i| person("ov", i)).collect());
        let api = s.api();
        set.spawn(async move { stack::submit(&api, body).await });
    }
    while let Some(r) = set.join_next().await {
        ids.push(r??.0);
    }
    settle(&s, &ids).await?;
    let overlap = spend(&s);
    // A 5,000-person list, then the same list with 10 % of it replaced by new people.
    let (first, _) = stack::submit(&s.api(), with((0..RERUN_PEOPLE).map(|i| person("list", i)).collect())).await?;
    settle(&s, &[first]).await?;
    let before = spend(&s);
    let rerun_people =
        (0..RERUN_PEOPLE - RERUN_NEW).map(|i| person("list", i)).chain((0..RERUN_NEW).map(|i| person("new", i)));
    let (second, _) = stack::submit(&s.api(), with(rerun_people.collect())).await?;
    settle(&s, &[second]).await?;
    let after = spend(&s);
    s.stop().await;
    Ok((overlap, minus(after, overlap), minus(after, before)))
}
/// Runs section 7.
pub async fn run() -> anyhow::Result<Section> {
    let (off_overlap, off_list, off_rerun) = credits_run(false).await?;
    let (on_overlap, on_list, on_rerun) = credits_run(true).await?;
    let saved = |off: Spend, on: Spend| 1.0 - on.credits.micros() as f64 / off.credits.micros().max(1) as f64;
    let rows = vec![
        row(
            "7.1",
            "credits saved: 40 jobs of the same 5 people, calls off → on",
            format!("{} → {}", off_overlap.calls, on_overlap.calls),
            "1 call with reuse",
            Some(on_overlap.calls == 1),
        ),
        row(
            "7.2",
            "credits saved: 40 jobs of the same 5 people, credits off → on",
            format!(
                "{} → {} ({:.0} % saved)",
                off_overlap.credits,
                on_overlap.credits,
                saved(off_overlap, on_overlap) * 100.0
            ),
            "≥ 95 % saved",
            Some(saved(off_overlap, on_overlap) >= 0.95),
        ),
        row(
            "7.3",
            "credits saved: re-run of 5,000 with 10 % new, credits off → on",
            format!("{} → {} ({:.0} % saved)", off_rerun.credits, on_rerun.credits, saved(off_rerun, on_rerun) * 100.0),
            "≥ 85 % saved",
            Some(saved(off_rerun, on_rerun) >= 0.85),
        ),
    ];
    let line = |what: &str, off: Spend, on: Spend| {
        format!(
            "| {what} | {} | {} | {} | {} | {} | {} |\n",
            off.calls, on.calls, off.details, on.details, off.credits, on.credits
        )
    };
    let details = format!(
        "Simulator defaults (85 % match, 70 % mobiles), deliveries 100–200 ms after each call, no rate limit; SQLite; \
         every job with `reveal_phone_number`. Reuse off: no `REUSE_WITHIN`; on: `REUSE_WITHIN=30d` (scope `client`). \
         The {OVERLAP_JOBS} jobs of the same {OVERLAP_PEOPLE} people are submitted together; the {RERUN_PEOPLE}-person \
         list runs, then the same list with {RERUN_NEW} people replaced by new ones. Figures are the simulator's own \
         (calls answered 200, details received, its ledger).\n\n\
         | workload | calls off | calls on | details off | details on | credits off | credits on |\n\
         |---|---|---|---|---|---|---|\n{}{}{}\n\
         With reuse on, the first job's lookup is in flight when the other 39 jobs are claimed: their people wait for it \
         and are then answered from its records. Not-found people are not reused (they cost nothing and a later \
         lookup may find them), so the re-run sends them again.\n\n\
         No yardstick row: the figures are the simulator's counts, reuse off against on, the same on any machine.\n",
        line("40 jobs × 5 same people", off_overlap, on_overlap),
        line("5,000-person list (first run + re-run)", off_list, on_list),
        line("re-run alone (10 % new)", off_rerun, on_rerun),
    );
    Ok(Section {
        key: "credits".into(),
        title: "7. Credits saved by the reuse window".into(),
        rows,
        details,
        limits: "The re-run sends its new people and the earlier run's not-found people again.".into(),
        ..Section::default()
    })
}
