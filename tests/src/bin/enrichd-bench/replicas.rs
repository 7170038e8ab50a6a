//! Section 6: replicas. 1, 2 and 3 replicas on one PostgreSQL database sharing one key (rate use,
//! 429s, submit → first call, overhead), beside a client that sends until refused.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use apollo_sim::{CallRecord, SimConfig};
use e2e_tests::{Api, Backend, TestApp};
use enrichd::startup::{Application, Running, secret};
use serde_json::Value;

use crate::figures::ms;
use crate::overhead::unlimited_sim;
use e2e_tests::rate_matrix::steady_rate;

use crate::rate_use::{RATE_LIMIT, RATE_MINUTE_MS, limited_sim};
use crate::report::{Section, row};
use crate::stack::{self, callback_of};
use crate::workload::{job_body, person};

// 150 calls of ten under the plan's limit, 5 windows after the first.
const REPLICA_PEOPLE: usize = 1_500;
const REPLICA_OVERHEAD_PEOPLE: usize = 3_000;

/// `n` replicas (in this process, each its own pool and workers, as `enrichd serve` builds them)
/// on one PostgreSQL database; Apollo's webhooks go to the first one.
async fn replica_stack(n: usize, sim: SimConfig) -> anyhow::Result<(TestApp, Vec<Running>)> {
    let s = stack::start(Backend::Postgres, sim, |c| c.rate_per_minute = None).await?;
    let mut others = Vec::new();
    for _ in 1..n {
        others.push(Application::build((*s.app.state.config).clone()).await?.start()?);
    }
    Ok((s, others))
}

/// The API of the replica at `base`, with the stack's client.
fn on(s: &TestApp, base: &str) -> Api {
    Api { base: base.to_string(), http: s.http.clone() }
}

/// Splits `people` into one job per replica, submitted to each; returns when the first submit
/// started and the job ids.
async fn submit_across(
    s: &TestApp,
    others: &[Running],
    tag: &str,
    people: usize,
) -> anyhow::Result<(SystemTime, Vec<String>)> {
    let urls: Vec<String> = std::iter::once(s.app.url()).chain(others.iter().map(Running::url)).collect();
    let started = SystemTime::now();
    let mut ids = Vec::new();
    for (r, url) in urls.iter().enumerate() {
        let mine: Vec<Value> = (0..people).filter(|i| i % urls.len() == r).map(|i| person(tag, i)).collect();
        ids.push(stack::submit(&on(s, url), job_body(mine, s.receiver.url())).await?.0);
    }
    Ok((started, ids))
}

/// What one number of replicas measured.
struct ReplicaRun {
    n: usize,
    ratio: f64,
    limited: usize,
    calls: usize,
    first_call: Duration,
    list_secs: f64,
    people_per_s: f64,
}

/// Measures `n` replicas: submit → first call, the list under the limit, overhead.
async fn replica_run(n: usize) -> anyhow::Result<ReplicaRun> {
    // Submit → first call, on an idle stack: a 5-person job to the last replica.
    let (s, others) = replica_stack(n, limited_sim()).await?;
    let last = others.last().map_or(s.app.url(), Running::url);
    let t = SystemTime::now();
    stack::submit(&on(&s, &last), job_body((0..5).map(|i| person("first", i)).collect(), s.receiver.url())).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let first_call = loop {
        if let Some(c) = stack::bulk_calls(&s.sim).first() {
            break c.at.duration_since(t).unwrap_or_default();
        }
        anyhow::ensure!(Instant::now() < deadline, "no call 10 s after the submit");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // The list, split across the replicas, under the plan's limit, from the same instant of a
    // fresh window of the simulator as the peer's.
    at_window_phase(&s.sim).await;
    let (started, ids) = submit_across(&s, &others, &format!("rep{n}"), REPLICA_PEOPLE).await?;
    for id in &ids {
        callback_of(&s.receiver, id, Duration::from_secs(120)).await?;
    }
    let calls: Vec<CallRecord> = stack::bulk_calls(&s.sim).into_iter().filter(|c| c.at >= started).collect();
    let ok: Vec<&CallRecord> = calls.iter().filter(|c| c.status == 200).collect();
    let limited = calls.len() - ok.len();
    anyhow::ensure!(ok.len() > RATE_LIMIT as usize, "only {} successful calls", ok.len());
    let allowed = f64::from(RATE_LIMIT) / Duration::from_millis(RATE_MINUTE_MS).as_secs_f64();
    let ratio = steady_rate(&ok, RATE_LIMIT) / allowed;
    let list_secs = ok.last().map_or(0.0, |c| c.at.duration_since(started).unwrap_or_default().as_secs_f64());
    for o in others {
        o.stop().await;
    }
    s.stop().await;

    // Overhead: no limit, no delay; people per second from the first submit to the last callback.
    let (s, others) = replica_stack(n, unlimited_sim()).await?;
    let t0 = Instant::now();
    let (_, ids) = submit_across(&s, &others, &format!("ovh{n}"), REPLICA_OVERHEAD_PEOPLE).await?;
    let mut done = t0;
    for id in &ids {
        done = done.max(callback_of(&s.receiver, id, Duration::from_secs(120)).await?);
    }
    let people_per_s = REPLICA_OVERHEAD_PEOPLE as f64 / (done - t0).as_secs_f64();
    for o in others {
        o.stop().await;
    }
    s.stop().await;
    Ok(ReplicaRun { n, ratio, limited, calls: calls.len(), first_call, list_secs, people_per_s })
}

/// Where in the simulator's window both the list and the peer start: after the first quarter,
/// in a window no earlier call used.
const START_PHASE_MS: u64 = RATE_MINUTE_MS / 4;

/// Sleeps until the simulator's clock is `START_PHASE_MS` into a window that begins after now.
async fn at_window_phase(sim: &apollo_sim::SimHandle) {
    let now = sim.clock_ms();
    let next_window = now - now % RATE_MINUTE_MS + RATE_MINUTE_MS;
    tokio::time::sleep(Duration::from_millis(next_window + START_PHASE_MS - now)).await;
}

/// The peer: a client that sends the same list until refused, and on a 429 waits `retry-after`.
/// Returns the time from its first call to its last answer, and the 429s it drew.
async fn send_until_refused() -> anyhow::Result<(f64, usize)> {
    let sim = apollo_sim::spawn(limited_sim()).await?;
    let apollo = apollo_client::ApolloClient::new(sim.url(), secret(&sim.config().api_key))?;
    let flags =
        apollo_client::EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..Default::default() };
    let people: Vec<_> = (0..REPLICA_PEOPLE).map(|i| rules::records::detail_of(&person("peer", i))).collect();
    at_window_phase(&sim).await;
    let t0 = Instant::now();
    let mut refused = 0;
    for chunk in people.chunks(10) {
        loop {
            match apollo.bulk_match(chunk, &flags, None, true).await {
                Err(apollo_client::ApolloError::RateLimited { retry_after, .. }) => {
                    refused += 1;
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(100))).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
    }
    let took = t0.elapsed().as_secs_f64();
    sim.stop().await;
    Ok((took, refused))
}
/// Runs section 6.
pub async fn run() -> anyhow::Result<Section> {
    let mut runs = Vec::new();
    for n in 1..=3 {
        runs.push(replica_run(n).await?);
    }
    let (peer_secs, peer_refused) = send_until_refused().await?;
    let mut rows = Vec::new();
    for r in &runs {
        let share = r.limited as f64 / r.calls.max(1) as f64;
        rows.push(row(
            &format!("6.{}a", r.n),
            &format!("{} replica(s): calls/s ÷ allowed after the first window; 429s", r.n),
            format!("{:.3}; {} of {} calls ({:.1} %)", r.ratio, r.limited, r.calls, share * 100.0),
            "≥ 0.95; ≤ 1 %",
            Some(r.ratio >= 0.95 && share <= 0.01),
        ));
        rows.push(row(
            &format!("6.{}b", r.n),
            &format!("{} replica(s): {REPLICA_PEOPLE}-person list, submit → last call, vs send-until-refused", r.n),
            format!(
                "{:.2} s vs {peer_secs:.2} s ({:+.1} %; the peer drew {peer_refused} 429s)",
                r.list_secs,
                (r.list_secs / peer_secs - 1.0) * 100.0
            ),
            "— (the yardstick; 0 × 429 comes first)",
            None,
        ));
    }
    let mut details = format!(
        "Replicas run in this process, each built as `enrichd serve` builds it (its own pool, dispatcher and \
         workers), on one PostgreSQL database, sharing the limiter in it; Apollo's webhooks go to the first. \
         Simulator: {RATE_LIMIT} calls per {RATE_MINUTE_MS} ms fixed window; a list of {REPLICA_PEOPLE} people \
         (phone + waterfall) split into one job per replica, each submitted to its own replica. Submit → first \
         call: a 5-person job submitted to the last replica of an idle stack. Overhead: {REPLICA_OVERHEAD_PEOPLE} \
         people split the same way, simulator without limit or delay, first submit → last callback. The peer \
         client sends the same list from one process, ten a call, until refused; on a 429 it waits `retry-after`; \
         its time runs from its first call to its last answer ({peer_refused} 429s). The list and the peer both \
         start {START_PHASE_MS} ms into a window of the simulator no earlier call used, so both face the same \
         first, partial window.\n\n\
         | replicas | calls/s ÷ allowed | 429s | submit → first call | list: submit → last call | overhead people/s |\n\
         |---|---|---|---|---|---|\n"
    );
    for r in &runs {
        let _ = writeln!(
            details,
            "| {} | {:.3} | {} of {} | {:.1} ms | {:.2} s | {:.0} |",
            r.n,
            r.ratio,
            r.limited,
            r.calls,
            ms(r.first_call),
            r.list_secs,
            r.people_per_s
        );
    }
    let _ = writeln!(details, "| peer (send until refused) | | {peer_refused} | | {peer_secs:.2} s | |");
    details.push_str(
        "\nNo yardstick row: rate use is already a ratio to the allowance, and the list's time is stated against \
         the send-until-refused client, measured in the same process and run: that client is the yardstick.\n",
    );
    let limits = "The shared limiter admits a call when its sliding log has room: a window's allowance goes at \
        once, and the next one a window and the measured margin after the first call of the last, not at Apollo's \
        restart, which the peer meets by drawing 429s. Learning where Apollo's window restarts closed that gap and \
        was removed (a wrong reading cost a window of 429s, every window: section 1c). The rest is the burst \
        itself: claims, each a PostgreSQL transaction, on the same two cores as the simulator."
        .to_string();
    Ok(Section { key: "replicas".into(), title: "6. Replicas".into(), rows, details, limits, ..Section::default() })
}
