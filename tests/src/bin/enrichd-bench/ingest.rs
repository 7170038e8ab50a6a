//! Section 4: webhook ingest. Durable deliveries per second and their latency, beside a bare
//! actix-web handler under the same load.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e_tests::{Backend, TestApp};
use job_store::entities::inbound_delivery;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::task::JoinSet;

use crate::figures::{ms, pct};
use crate::overhead::unlimited_sim;
use crate::procfs::cpu_seconds;
use crate::report::{Section, row};
use crate::stack::{self, callback_of};
use crate::workload::{job_body, person};
use crate::yardstick::{BareHandler, committed_inserts_per_s};

const INGEST_SETUP_PEOPLE: usize = 10_000;
const INGEST_CONNECTIONS: usize = 32;
const INGEST_SECONDS: u64 = 8;

/// What one load run measured.
struct Load {
    ok: usize,
    other: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}
impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}
/// POSTs deliveries from `connections` concurrent clients for `duration`: each request is a real
/// delivery body with a distinct `bench_seq` field first, so no two bodies are equal.
async fn load(
    http: &reqwest::Client,
    targets: Arc<Vec<(String, String)>>,
    connections: usize,
    duration: Duration,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = started + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let (http, targets, next) = (http.clone(), targets.clone(), next.clone());
        set.spawn(async move {
            let (mut ok, mut other, mut errors, mut lat) = (0, 0, 0, Vec::with_capacity(1 << 14));
            while Instant::now() < stop_at {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (url, body) = &targets[i % targets.len()];
                let body = format!("{{\"bench_seq\":{i},{}", &body[1..]);
                let t = Instant::now();
                match http.post(url).header("content-type", "application/json").body(body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed());
                        if status == 200 {
                            ok += 1;
                        } else {
                            other += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (ok, other, errors, lat)
        });
    }
    let mut out = Load { ok: 0, other: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    while let Some(r) = set.join_next().await {
        let (ok, other, errors, lat) = r.expect("load task");
        out.ok += ok;
        out.other += other;
        out.errors += errors;
        out.latencies.extend(lat);
    }
    out.elapsed = started.elapsed();
    out.latencies.sort();
    out
}
/// Delivery rows stored, in `state` or in any.
async fn count_deliveries(s: &TestApp, state: Option<&str>) -> anyhow::Result<u64> {
    let mut q = inbound_delivery::Entity::find();
    if let Some(state) = state {
        q = q.filter(inbound_delivery::Column::State.eq(state));
    }
    Ok(q.count(s.app.state.store.connection()).await?)
}
/// Runs section 4.
pub async fn run() -> anyhow::Result<Section> {
    // The database's yardstick before anything else runs, as in section 3.
    let yardstick = committed_inserts_per_s(Backend::Sqlite).await?;
    let s = stack::start(Backend::Sqlite, unlimited_sim(), |c| c.rate_per_minute = None).await?;
    // Real batches: a job whose deliveries give real URLs (batch id + token) and bodies. Many
    // batches, so that replaying their deliveries spreads over them as a real burst would.
    let body = job_body((0..INGEST_SETUP_PEOPLE).map(|i| person("w", i)).collect(), s.receiver.url());
    let (id, _) = stack::submit(&s.api(), body).await?;
    callback_of(&s.receiver, &id, Duration::from_secs(90)).await?;
    let targets: Vec<(String, String)> =
        s.sim.deliveries().into_iter().filter(|d| d.succeeded()).map(|d| (d.url, d.body)).collect();
    anyhow::ensure!(!targets.is_empty() && targets.iter().all(|(_, b)| b.starts_with('{')), "no usable deliveries");
    let batches = targets.iter().map(|(u, _)| u.split('?').next().unwrap_or_default()).collect::<Vec<_>>();
    let batches = batches.iter().collect::<HashSet<_>>().len();
    let avg_body = targets.iter().map(|(_, b)| b.len()).sum::<usize>() / targets.len();
    let stored_before = count_deliveries(&s, None).await?;

    // The bare handler first, so the service's ingest backlog cannot slow it down.
    // No job is asked of it here: only the webhook route is loaded.
    let bare = BareHandler::start("{}".into()).await?;
    let (service_base, bare_base) = (s.app.url(), bare.url());
    let bare_targets: Vec<(String, String)> =
        targets.iter().map(|(u, b)| (u.replacen(&service_base, &bare_base, 1), b.clone())).collect();
    let http = s.http.clone();
    let duration = Duration::from_secs(INGEST_SECONDS);
    let _warm = load(&http, Arc::new(bare_targets.clone()), INGEST_CONNECTIONS, Duration::from_millis(500)).await;
    let bare_load = load(&http, Arc::new(bare_targets), INGEST_CONNECTIONS, duration).await;
    bare.stop().await;
    let cpu0 = cpu_seconds(false);
    let svc = load(&http, Arc::new(targets), INGEST_CONNECTIONS, duration).await;
    let cores = (cpu_seconds(false) - cpu0) / svc.elapsed.as_secs_f64();
    let stored = count_deliveries(&s, None).await? - stored_before;
    let pending = count_deliveries(&s, Some("pending")).await?;
    // Let the ingest worker finish what it can in a few seconds, then look for parse failures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending_later = count_deliveries(&s, Some("pending")).await?;
    let failed = count_deliveries(&s, Some("failed")).await?;
    s.stop().await;

    let stored_vs = if stored == svc.ok as u64 {
        "= the 200s: every 200 is a committed row".to_string()
    } else {
        format!("the service answered {} times 200: they differ", svc.ok)
    };
    let rate = svc.rate();
    let (p50, p99, max) = (pct(&svc.latencies, 0.5), pct(&svc.latencies, 0.99), pct(&svc.latencies, 1.0));
    let bare_rate = bare_load.rate();
    let ratio = rate / bare_rate;
    let bare_p99 = pct(&bare_load.latencies, 0.99);
    let per_insert = rate / yardstick;
    let p99_ratio = p99.as_secs_f64() / bare_p99.as_secs_f64();
    let rows = vec![
        row(
            "4.1",
            "webhook ingest: durable deliveries/s, SQLite",
            format!("{rate:.0}"),
            "≥ 5,000",
            Some(rate >= 5000.0),
        ),
        row(
            "4.1y",
            "webhook ingest ÷ yardstick: durable deliveries/s per committed single-row insert/s, SQLite",
            format!("{per_insert:.3} ({rate:.0} ÷ {yardstick:.0})"),
            "— (compares machines)",
            None,
        ),
        row(
            "4.2",
            "webhook ingest: latency p50 / p99",
            format!("{:.2} ms / {:.2} ms", ms(p50), ms(p99)),
            "p99 < 20 ms",
            Some(p99 < Duration::from_millis(20)),
        ),
        row(
            "4.2y",
            "webhook ingest: latency p99 ÷ bare actix-web handler's p99",
            format!("{p99_ratio:.1} ({:.2} ÷ {:.2} ms)", ms(p99), ms(bare_p99)),
            "— (compares machines)",
            None,
        ),
        row(
            "4.3",
            "webhook ingest: ÷ bare actix-web handler",
            format!("{ratio:.2} ({rate:.0} ÷ {bare_rate:.0} req/s)"),
            "—",
            None,
        ),
    ];
    let details = format!(
        "A load generator in the same process (reqwest, {INGEST_CONNECTIONS} concurrent connections, keep-alive) \
         POSTs real deliveries to `/v1/webhooks/apollo/{{batch}}?token=…` of {batches} real batches (the simulator's \
         own deliveries of a {INGEST_SETUP_PEOPLE}-person job, average body {avg_body} bytes), each made distinct by a leading \
         `\"bench_seq\": n` field so deduplication never short-circuits. {INGEST_SECONDS} s per run; the bare handler \
         (same actix-web, same worker count, reads the body and answers the same JSON) runs first. Durable: the \
         service answers 200 only after the delivery row is committed (SQLite WAL, `synchronous=NORMAL`: survives a \
         process crash; an OS crash may lose the last transactions). The ingest worker merges stored deliveries \
         concurrently, as in production.\n\n\
         | | service | bare handler |\n|---|---|---|\n\
         | answered 200 per second | **{rate:.0}** | {bare_rate:.0} |\n\
         | latency p50 / p99 / max | {:.2} / **{:.2}** / {:.1} ms | {:.2} / {:.2} / {:.1} ms |\n\
         | requests answered 200 / other / transport errors | {} / {} / {} | {} / {} / {} |\n\
         | CPU of the process (service + load generator) | {cores:.2} cores of {} | |\n\n\
         Yardsticks, measured in this run: the bare handler above, and single-row inserts committed one by one on \
         a fresh SQLite database for 1 s before the service started: {yardstick:.0}/s. Durable deliveries/s ÷ \
         inserts/s = **{per_insert:.3}**; p99 ÷ the bare handler's p99 = **{p99_ratio:.1}**; deliveries/s ÷ the bare \
         handler's = {ratio:.2}.\n\n\
         Rows stored during the service run: {stored} ({stored_vs}). Still pending merge \
         when the load stopped: {pending}; 3 s later: {pending_later}; failed to parse: {failed}.\n",
        ms(p50),
        ms(p99),
        ms(max),
        ms(pct(&bare_load.latencies, 0.5)),
        ms(bare_p99),
        ms(pct(&bare_load.latencies, 1.0)),
        svc.ok,
        svc.other,
        svc.errors,
        bare_load.ok,
        bare_load.other,
        bare_load.errors,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    let limits = format!(
        "A delivery is durable because it is committed before the 200. The route checks the token against a cache \
         of batch secrets (a read only for a batch's first delivery), canonicalises and hashes the body on its own \
         worker thread, then hands it to one writer task (`group_commit::DeliveryWriter`, on the thread SQLite's \
         writers run on) that stores every delivery waiting at that moment with one statement, its own commit (an \
         insert of the rows of known batches that returns those it stored), and answers each request after that \
         commit. Merges are background writes: they stand aside while webhook groups wait and until the writer has \
         been free of them for 8 ms, or for at most 50 ms a turn (see the pending counts: almost nothing is merged \
         during the burst, and the backlog drains after it). The process used {cores:.2} cores, so the \
         limit is the one writer's turn-around, not CPU: with {INGEST_CONNECTIONS} requests in flight and one group \
         committed at a time, the latency is that queue (p50 ≈ connections ÷ throughput = {:.1} ms); each group \
         writes its bodies (about 4.6 KB each) through SQLite's WAL in statements that are each a round trip to \
         sqlx's SQLite thread. PostgreSQL has no single writer but pays a network round trip per statement.",
        INGEST_CONNECTIONS as f64 / rate * 1000.0,
    );
    Ok(Section { key: "4".into(), title: "4. Webhook ingest".into(), rows, details, limits, ..Section::default() })
}
