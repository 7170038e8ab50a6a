//! Section 5b (`5-post`): where the 100,000-person POST's time and memory go, step by step.

use std::fmt::Write as _;
use std::time::Instant;

use e2e_tests::{Backend, TestDb};

use crate::figures::mib;
use crate::procfs::proc_status_kib;
use crate::report::{Section, row};
use crate::size::{BIG_JOB, big_body};
use crate::yardstick::committed_inserts_per_s;

/// Times the steps of `POST /v1/jobs` on the big body one by one, in a fresh process: decoding
/// and validation (one pass), `create_job` on a fresh SQLite database.
pub async fn run() -> anyhow::Result<Section> {
    use enrichd::core::callback_url::CallbackPolicy;
    use enrichd::core::validate::validate_job_bytes;
    use job_store::Store;

    let start = proc_status_kib("VmRSS:");
    let body = big_body(BIG_JOB, "http://127.0.0.1:9/callback");
    let mut rows = String::new();
    // Prints a step's row; its time in seconds.
    let mut step = |name: &str, t: Instant, before: u64| {
        let took = t.elapsed().as_secs_f64();
        let peak = proc_status_kib("VmHWM:");
        let _ = writeln!(rows, "| {name} | {took:.2} s | +{:.0} MiB |", mib(peak.saturating_sub(before)));
        took
    };
    let reset = || {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        proc_status_kib("VmRSS:")
    };
    let before = reset();
    let t = Instant::now();
    let body_len = body.len();
    let policy = CallbackPolicy { allow_http: true, allow_hosts: vec!["127.0.0.1".into()] };
    let job = validate_job_bytes(&body, BIG_JOB, &policy).map_err(|e| anyhow::anyhow!("refused: {e:?}"))?;
    step("decode and validate (`validate_job_bytes`: each person read straight into its stored form)", t, before);
    drop(body);
    let mut db = TestDb::create(Backend::Sqlite).await?;
    let store = Store::connect(&db.url).await?;
    let before = reset();
    let t = Instant::now();
    store.create_job(job.into_new_job("bench".into(), None)).await?;
    let create_secs = step("`create_job`: hash, keys, one transaction of 100,000 rows (SQLite)", t, before);
    store.close().await?;
    db.drop_db().await;
    // Last, so that it enters none of the steps' memory figures.
    let yardstick = committed_inserts_per_s(Backend::Sqlite).await?;
    let create_rate = BIG_JOB as f64 / create_secs;
    let per_insert = create_rate / yardstick;
    let summary = vec![row(
        "5b.1y",
        "POST steps: `create_job` people/s ÷ committed single-row insert/s, SQLite",
        format!("{per_insert:.2} ({create_rate:.0} ÷ {yardstick:.0})"),
        "— (compares machines)",
        None,
    )];
    let details = format!(
        "The steps of `POST /v1/jobs` run one by one on the same {:.1} MB body, in a fresh process (VmRSS {:.0} MiB \
         at its start): what the handler does, without HTTP. Peak = VmHWM growth over VmRSS just before the step, \
         so memory a step frees is reused by the next; a step's figure is what it adds on top.\n\n\
         | step | time | peak growth |\n|---|---|---|\n{rows}\n\
         Yardstick, measured in this process after the steps: single-row inserts committed one by one on a fresh \
         SQLite database for 1 s, {yardstick:.0}/s; `create_job` wrote {create_rate:.0} people/s, **{per_insert:.2}** \
         times that. It writes them in one transaction, so the ratio weighs this machine's CPU more than its \
         commits.\n",
        body_len as f64 / 1e6,
        mib(start),
    );
    Ok(Section {
        key: "5-post".into(),
        title: "5b. Where the 100,000-person POST's time and memory go".into(),
        rows: summary,
        details,
        ..Section::default()
    })
}
