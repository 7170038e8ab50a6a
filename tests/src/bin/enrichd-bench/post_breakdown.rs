//! Section 5b (`5-post`): where the 100,000-person POST's time and memory go, step by step.

use std::fmt::Write as _;
use std::time::Instant;

use e2e_tests::{Backend, TestDb};
use serde_json::Value;

use crate::figures::mib;
use crate::procfs::proc_status_kib;
use crate::report::Section;
use crate::size::{BIG_JOB, big_body};

/// Times the steps of `POST /v1/jobs` on the big body one by one, in a fresh process: JSON
/// decoding, validation, `create_job` on a fresh SQLite database.
pub async fn run() -> anyhow::Result<Section> {
    use enrichd::core::callback_url::CallbackPolicy;
    use enrichd::core::validate::validate_job_owned;
    use job_store::Store;

    let start = proc_status_kib("VmRSS:");
    let body = big_body(BIG_JOB, "http://127.0.0.1:9/callback");
    let mut rows = String::new();
    let mut step = |name: &str, t: Instant, before: u64| {
        let peak = proc_status_kib("VmHWM:");
        let _ = writeln!(
            rows,
            "| {name} | {:.2} s | +{:.0} MiB |",
            t.elapsed().as_secs_f64(),
            mib(peak.saturating_sub(before))
        );
    };
    let reset = || {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        proc_status_kib("VmRSS:")
    };
    let before = reset();
    let t = Instant::now();
    let body_len = body.len();
    let value: Value = serde_json::from_slice(&body)?;
    step("decode the 100,000-person body into a `serde_json::Value`", t, before);
    drop(body);
    let before = reset();
    let t = Instant::now();
    let policy = CallbackPolicy { allow_http: true, allow_hosts: vec!["127.0.0.1".into()] };
    let job = validate_job_owned(value, BIG_JOB, &policy).map_err(|p| anyhow::anyhow!("invalid: {p:?}"))?;
    step("validate (`validate_job_owned`: each person cleaned by moving its strings)", t, before);
    let mut db = TestDb::create(Backend::Sqlite).await?;
    let store = Store::connect(&db.url).await?;
    let before = reset();
    let t = Instant::now();
    store.create_job(job.into_new_job("bench".into(), None)).await?;
    step("`create_job`: hash, keys, one transaction of 100,000 rows (SQLite)", t, before);
    store.close().await?;
    db.drop_db().await;
    let details = format!(
        "The steps of `POST /v1/jobs` run one by one on the same {:.1} MB body, in a fresh process (VmRSS {:.0} MiB \
         at its start): what the handler does, without HTTP. Peak = VmHWM growth over VmRSS just before the step, \
         so memory a step frees is reused by the next; a step's figure is what it adds on top.\n\n\
         | step | time | peak growth |\n|---|---|---|\n{rows}",
        body_len as f64 / 1e6,
        mib(start),
    );
    Ok(Section {
        key: "5-post".into(),
        title: "5b. Where the 100,000-person POST's time and memory go".into(),
        details,
        ..Section::default()
    })
}
