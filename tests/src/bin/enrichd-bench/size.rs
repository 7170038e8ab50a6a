//! Section 5: size. Submitting a 100,000-person job (its time and the process's peak memory),
//! idle memory, and `GET /v1/jobs/{id}` while ten jobs run.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use apollo_sim::SimConfig;
use e2e_tests::{Api, Backend, CLIENT_KEY};
use serde_json::Value;

use crate::figures::{mib, ms, pct};
use crate::procfs::proc_status_kib;
use crate::report::{Section, row};
use crate::stack;
use crate::workload::{job_body, person};
use crate::yardstick::{BareHandler, committed_inserts_per_s};

/// People in the big job (also section 5b's body).
pub const BIG_JOB: usize = 100_000;
const OTHER_JOBS: usize = 9;
const OTHER_JOB_PEOPLE: usize = 3_000;
const POLL_SECONDS: u64 = 8;
/// How long the bare handler is polled for the GET yardstick: its p99 settles in far less.
const BARE_POLL_SECONDS: u64 = 2;

/// The big job's body: `n` full CRM rows (every field, about 200 bytes each), phone + waterfall.
/// Written as text, so the runner's own footprint is the body's bytes and nothing more.
pub fn big_body(n: usize, callback_url: &str) -> Vec<u8> {
    let mut s = String::with_capacity(n * 210 + 200);
    let _ = write!(
        s,
        r#"{{"reveal_phone_number":true,"run_waterfall_email":true,"callback_url":{},"people":["#,
        Value::from(callback_url)
    );
    for i in 0..n {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            s,
            r#"{sep}{{"first_name":"Dana","last_name":"Okafor{i}","email":"dana.okafor.{i}@northwind-labs.com","organization_name":"Northwind Labs","domain":"northwind-labs.com","external_id":"crm-{i}"}}"#
        );
    }
    s.push_str("]}");
    s.into_bytes()
}
/// GETs `/v1/jobs/{id}` of the jobs in turn, one at a time, for `duration`.
async fn poll_jobs(api: &Api, ids: &[String], duration: Duration) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::new();
    let stop_at = Instant::now() + duration;
    let mut i = 0;
    while Instant::now() < stop_at {
        let url = format!("{}/v1/jobs/{}", api.base, ids[i % ids.len()]);
        i += 1;
        let t = Instant::now();
        let resp = api.http.get(url).bearer_auth(CLIENT_KEY).send().await?;
        anyhow::ensure!(resp.status() == 200, "GET job answered {}", resp.status());
        let _ = resp.bytes().await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// How many of the jobs are still queued or running.
async fn running_jobs(api: &Api, ids: &[String]) -> anyhow::Result<usize> {
    let mut n = 0;
    for id in ids {
        if matches!(stack::job(api, id).await?["status"].as_str(), Some("running" | "queued")) {
            n += 1;
        }
    }
    Ok(n)
}

/// Runs section 5.
pub async fn run() -> anyhow::Result<Section> {
    let rss_start = proc_status_kib("VmRSS:");
    // Apollo's largest plan: 1,000 calls a minute, about 17 calls/s.
    let sim = SimConfig {
        minute_ms: 1_000,
        minute_limit: Some(17),
        delivery_delay_ms: 200,
        delivery_jitter_ms: 200,
        retry_backoff_ms: 50,
        ..SimConfig::default()
    };
    let (s, before_app) = stack::start_measured(Backend::Sqlite, sim, |c| c.rate_per_minute = None).await?;
    let api = s.api();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = proc_status_kib("VmRSS:");
    let idle_delta = idle.saturating_sub(before_app);

    // The 100,000-person job: the body is built first, so it is in the baseline.
    let body = big_body(BIG_JOB, s.receiver.url());
    let body_bytes = body.len();
    let before = proc_status_kib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let hwm_reset = proc_status_kib("VmHWM:");
    let (big, post) = stack::submit(&api, body).await?;
    let peak_post = proc_status_kib("VmHWM:");
    let after_post = proc_status_kib("VmRSS:");
    let post_delta = peak_post.saturating_sub(before);

    // Nine more jobs: ten run at once.
    let mut ids = vec![big.clone()];
    for j in 0..OTHER_JOBS {
        let people = (0..OTHER_JOB_PEOPLE).map(|i| person(&format!("j{j}x"), i)).collect();
        ids.push(stack::submit(&api, job_body(people, s.receiver.url())).await?.0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running_a = running_jobs(&api, &ids).await?;
    let calm = poll_jobs(&api, &ids, Duration::from_secs(POLL_SECONDS)).await?;
    // Then at full speed: the simulator's limit lifted (the limiter learns it from the headers).
    s.sim.update_config(|c| c.minute_limit = None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = poll_jobs(&api, &ids, Duration::from_secs(POLL_SECONDS)).await?;
    let running_b = running_jobs(&api, &ids).await?;
    let big_job = stack::job(&api, &big).await?;
    let peak_all = proc_status_kib("VmHWM:");
    let calls = stack::bulk_calls(&s.sim).len();
    // The same body with one bad job-level field: answered 422 after reading, decoding and
    // validating it, so the time is the POST's minus `create_job`'s.
    let mut bad = big_body(BIG_JOB, s.receiver.url());
    bad.splice(1..1, br#""extra":1,"#.iter().copied());
    let t = Instant::now();
    let resp = api.submit_bytes(bad).await?;
    let refused = resp.status().as_u16();
    let _ = resp.bytes().await?;
    let refused_in = t.elapsed();
    s.stop().await;
    // The yardsticks once the service has stopped, so that they neither disturb nor enter the
    // figures above: a bare handler answering the big job's JSON to the same polling, and the
    // database's committed inserts.
    let bare = BareHandler::start(serde_json::to_string(&big_job)?).await?;
    let bare_api = Api { base: bare.url(), http: api.http.clone() };
    let bare_calm = poll_jobs(&bare_api, &ids, Duration::from_secs(BARE_POLL_SECONDS)).await?;
    bare.stop().await;
    let yardstick = committed_inserts_per_s(Backend::Sqlite).await?;

    let p99 = pct(&calm, 0.99);
    let p99_busy = pct(&busy, 0.99);
    let bare_p99 = pct(&bare_calm, 0.99);
    let p99_ratio = p99.as_secs_f64() / bare_p99.as_secs_f64();
    let post_rate = BIG_JOB as f64 / post.as_secs_f64();
    let per_insert = post_rate / yardstick;
    let rows = vec![
        row(
            "5.1",
            "size: POST of a 100,000-person job",
            format!("{:.2} s ({:.1} MB body)", post.as_secs_f64(), body_bytes as f64 / 1e6),
            "< 2 s",
            Some(post < Duration::from_secs(2)),
        ),
        row(
            "5.1y",
            "size: POST ÷ yardstick: people/s per committed single-row insert/s, SQLite",
            format!("{per_insert:.2} ({post_rate:.0} ÷ {yardstick:.0})"),
            "— (compares machines)",
            None,
        ),
        row(
            "5.2",
            "size: peak RSS during that POST (whole process)",
            format!(
                "{:.0} MiB = {:.0} MB (+{:.0} MiB over before)",
                mib(peak_post),
                peak_post as f64 * 1024.0 / 1e6,
                mib(post_delta)
            ),
            "< 200 MB",
            Some((peak_post as f64 * 1024.0) < 200e6),
        ),
        row(
            "5.3",
            "size: GET /v1/jobs/{id} p99, ten jobs running",
            format!("{:.2} ms (at full speed: {:.2} ms)", ms(p99), ms(p99_busy)),
            "< 5 ms",
            Some(p99 < Duration::from_millis(5)),
        ),
        row(
            "5.3y",
            "size: GET /v1/jobs/{id} p99 ÷ bare actix-web handler's p99, same polling",
            format!("{p99_ratio:.1} ({:.2} ÷ {:.2} ms)", ms(p99), ms(bare_p99)),
            "— (compares machines)",
            None,
        ),
        row(
            "5.4",
            "size: idle RSS of the service",
            format!("{:.0} MiB (whole process {:.0} MiB)", mib(idle_delta), mib(idle)),
            "—",
            None,
        ),
    ];
    let details = format!(
        "SQLite. The service runs in the runner's process, so memory is read from `/proc/self/status`: the peak \
         (`VmHWM`) is reset through `/proc/self/clear_refs` just before the POST, after the runner has built the \
         request body, so the peak covers the service's work on the request plus everything already resident (the \
         simulator, the receiver, the runner's copy of the body). Idle is `VmRSS` 2 s after start-up, before any \
         job; \"of the service\" is the growth over `VmRSS` just before `Application::build` (the runtime, \
         simulator and receiver already running).\n\n\
         | | |\n|---|---|\n\
         | process VmRSS at start of the section (runtime only) | {:.0} MiB |\n\
         | … with the simulator and receiver running | {:.0} MiB |\n\
         | … service started, idle 2 s | {:.0} MiB (service: **+{:.0} MiB**) |\n\
         | 100,000-person body built by the runner ({:.1} MB of JSON) | VmRSS {:.0} MiB (VmHWM after reset {:.0} MiB) |\n\
         | `POST /v1/jobs` answered 202 | **{:.2} s**; peak VmHWM **{:.0} MiB** (+{:.0} MiB); VmRSS after {:.0} MiB |\n\
         | the same body with one unknown job field, answered {refused} after reading, decoding, validating | {:.2} s (so `create_job` ≈ {:.2} s) |\n\
         | peak VmHWM through the end of the section (ten jobs running) | {:.0} MiB |\n\n\
         `GET /v1/jobs/{{id}}` while ten jobs run (the 100,000-person job and {OTHER_JOBS} of {OTHER_JOB_PEOPLE} \
         people, phone + waterfall, deliveries 200–400 ms after each call), one client polling the ten in turn, \
         back to back, {POLL_SECONDS} s per phase:\n\n\
         | phase | jobs running | GETs | p50 | p99 | max |\n|---|---|---|---|---|---|\n\
         | Apollo's largest plan: 17 calls/s (1,000 a minute) | {running_a} | {} | {:.2} ms | **{:.2} ms** | {:.1} ms |\n\
         | full speed: simulator limit lifted, service saturating both cores | {running_b} | {} | {:.2} ms | {:.2} ms | {:.1} ms |\n\
         | yardstick: a bare actix-web handler answering the big job's JSON, after the service stopped, {BARE_POLL_SECONDS} s | — | {} | {:.2} ms | {:.2} ms | {:.1} ms |\n\n\
         Yardsticks, measured in this run once the service had stopped (so they stay out of the memory figures): \
         the GET p99 of the first phase ÷ the bare handler's = **{p99_ratio:.1}**; single-row inserts committed one \
         by one on a fresh SQLite database for 1 s: {yardstick:.0}/s, and the POST's {post_rate:.0} people/s ÷ \
         that = **{per_insert:.2}**. The memory figures need none: they do not depend on the machine's speed.\n\n\
         The job's counters live in its row (updated in the same transaction as each person), so a GET reads one \
         row whatever the job's size. By the end the 100,000-person job had {} complete, {} not found, {} queued; \
         {calls} calls made.\n",
        mib(rss_start),
        mib(before_app),
        mib(idle),
        mib(idle_delta),
        body_bytes as f64 / 1e6,
        mib(before),
        mib(hwm_reset),
        post.as_secs_f64(),
        mib(peak_post),
        mib(post_delta),
        mib(after_post),
        refused_in.as_secs_f64(),
        (post.as_secs_f64() - refused_in.as_secs_f64()).max(0.0),
        mib(peak_all),
        calm.len(),
        ms(pct(&calm, 0.5)),
        ms(p99),
        ms(pct(&calm, 1.0)),
        busy.len(),
        ms(pct(&busy, 0.5)),
        ms(p99_busy),
        ms(pct(&busy, 1.0)),
        bare_calm.len(),
        ms(pct(&bare_calm, 0.5)),
        ms(bare_p99),
        ms(pct(&bare_calm, 1.0)),
        big_job["counts"]["complete"],
        big_job["counts"]["not_found"],
        big_job["counts"]["queued"],
    );
    let limits = format!(
        "Of the POST's {:.2} s, reading, decoding and validating the 18.8 MB body take {:.2} s (the 422 row above); \
         the rest is `create_job`: 100,000 rows of 25 columns in one transaction, as `INSERT … SELECT … FROM \
         (VALUES …)` statements sized to SQLite's bind limit (5,460 people each), six values bound per person \
         (0.6 million in all: the job id and times once per statement, the state derived from the key, the rest \
         literals), the inputs bound as the JSON text validation wrote. A profile of that step (section 5b times it \
         alone) is flat: copies and malloc/free (sea-orm clones every bound value), SQLite's inserts into the table \
         and its indexes, and SQLite's automatic checkpoint inside the commit. Memory: the peak is the body with its \
         people read into their stored form beside it (section 5b: about 300 bytes a person, the JSON text the row \
         keeps and its key); the body is dropped before `create_job`, which adds the ids and the map of keys that \
         finds duplicates.",
        post.as_secs_f64(),
        refused_in.as_secs_f64(),
    );
    Ok(Section { key: "5".into(), title: "5. Size".into(), rows, details, limits, ..Section::default() })
}
