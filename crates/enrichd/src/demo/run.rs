//! The demo's run: the simulator and the service in this process, a job, a progress bar, the
//! callback checked, a summary (built with the default `sim` feature).

use std::time::{Duration, Instant};

use anyhow::Context;
use apollo_sim::SimConfig;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::receiver::CallbackReceiver;
use super::{DEMO_KEY, demo_config, demo_person};
use crate::core::signing::SigningSecret;
use crate::startup::Application;

/// Runs the demo with `people` people and prints a summary; with `keep_running`, then serves
/// (the dashboard included) until Ctrl-C.
pub async fn run(people: usize, keep_running: bool) -> anyhow::Result<()> {
    crate::startup::install_tls();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("enrichd-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let db_url = format!("sqlite://{}?mode=rwc", dir.join("enrichd.db").display());

    // Apollo as a small paid plan with a 1-second "minute", a few faults of every kind.
    let sim = apollo_sim::spawn(SimConfig {
        minute_ms: 1000,
        minute_limit: Some(10),
        delivery_delay_ms: 400,
        delivery_jitter_ms: 400,
        retry_backoff_ms: 100,
        fault_duplicate: 0.1,
        fault_reorder: 0.1,
        fault_early: 0.1,
        fault_drop: 0.05,
        fault_5xx: 0.05,
        ..SimConfig::default()
    })
    .await?;
    let sim_key = sim.config().api_key.clone();
    let (signer, signing_text) = SigningSecret::generate();
    let receiver = CallbackReceiver::start(signer).await?;

    let config = demo_config(db_url, sim.url().to_string(), &sim_key, &signing_text, Duration::from_millis(1000));
    // One build: the SQLite file is held by one process (and one store) at a time.
    let mut app = Application::build(config).await?;
    let port = app.port();
    app.set_public_base_url(format!("http://127.0.0.1:{port}"));
    let app = app.start()?;
    println!("enrichd demo: service {} · Apollo simulator {} · database {}", app.url(), sim.url(), dir.display());

    let http = reqwest::Client::new();
    let body = json!({
        "people": (0..people).map(demo_person).collect::<Vec<_>>(),
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": receiver.url(),
        "metadata": {"source": "enrichd demo"},
    });
    let resp = http.post(format!("{}/v1/jobs", app.url())).bearer_auth(DEMO_KEY).json(&body).send().await?;
    anyhow::ensure!(resp.status() == 202, "submit answered {}: {}", resp.status(), resp.text().await?);
    let job: Value = resp.json().await?;
    let id = job["id"].as_str().context("job id")?.to_string();

    let bar = ProgressBar::new(people as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} people · {msg}")?);
    let job = loop {
        let job: Value =
            http.get(format!("{}/v1/jobs/{id}", app.url())).bearer_auth(DEMO_KEY).send().await?.json().await?;
        let c = &job["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let done = n("complete") + n("partial") + n("not_found") + n("invalid") + n("failed") + n("cancelled");
        bar.set_position(done);
        bar.set_message(format!(
            "{} · {} awaiting webhooks · {} calls",
            job["status"].as_str().unwrap_or("?"),
            n("awaiting_async"),
            job["apollo_calls"]
        ));
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            break job;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "the demo job did not finish in 5 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish();

    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    let callback = got.iter().find(|r| r.answered < 300).context("no callback arrived")?;
    let records = callback.json()["data"]["people"].as_array().cloned().unwrap_or_default();
    let count = |pred: &dyn Fn(&Value) -> bool| records.iter().filter(|p| pred(p)).count();
    let phones: usize = records.iter().map(|p| p["record"]["phones"].as_array().map_or(0, Vec::len)).sum();
    let emails: usize = records.iter().map(|p| p["record"]["emails"].as_array().map_or(0, Vec::len)).sum();
    let calls = sim.calls();
    let bulk_calls = calls.iter().filter(|c| c.path.ends_with("bulk_match")).count();
    let rate_limited = calls.iter().filter(|c| c.status == 429).count();
    let c = &job["counts"];
    println!();
    println!("job {id}: {}", job["status"].as_str().unwrap_or("?"));
    println!(
        "  people            {people} ({} complete, {} partial, {} not found, {} failed)",
        c["complete"], c["partial"], c["not_found"], c["failed"]
    );
    println!("  matched           {}", count(&|p| matches!(p["status"].as_str(), Some("complete" | "partial"))));
    println!("  phones / emails   {phones} / {emails}");
    println!("  credits           {} (simulator's ledger: {})", job["credits_consumed"], sim.ledger().total);
    println!(
        "  Apollo calls      {bulk_calls} bulk_match ({} counted by the job), {rate_limited} answered 429",
        job["apollo_calls"]
    );
    println!(
        "  callback          {} attempt(s), signature {}",
        got.len(),
        if callback.verified { "verified" } else { "INVALID" }
    );
    println!("  elapsed           {:.1} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(callback.verified, "the callback's signature did not verify");
    if keep_running {
        println!();
        println!("dashboard: {}/ui/jobs/{id} (sign in with the key {DEMO_KEY}); Ctrl-C stops the demo", app.url());
        tokio::signal::ctrl_c().await?;
    }
    app.stop().await;
    receiver.stop().await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
