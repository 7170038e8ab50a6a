//! `enrichd-soak`: a day of production compressed into an hour (issue 27). Several clients send
//! every kind of job through a balancer to three `enrichd serve` replicas on PostgreSQL (or one on
//! SQLite), against the Apollo simulator with every fault it has, while a timetable deploys,
//! crashes, restarts the database, takes the callback receiver away and has Apollo storm, pause
//! and change how it counts its limits. Durations are scaled by 24: Apollo's minute is 2.5 s.
//!
//! At the end every property is checked against the simulator's own record and the harness's
//! book, and printed as a table; the exit status is 0 only when every row passes.
//!
//! Run: `scripts/soak.sh --minutes 60 --seed 1` (`--sqlite` for one process on SQLite;
//! `--break lost-webhook|double-send|key-shared|dry-run-sent|replayed-callback|suppressed-sent|no-retention`
//! breaks a property on purpose;
//! `--out FILE` also writes the report there, and the memory and database samples to
//! `FILE.samples.csv`).
//!
//! Layout: [`plan`] (settings and the chaos timetable), [`traffic`] (the clients), [`chaos`],
//! [`verify`] (each finished job against the simulator), [`oracle`] (the simulator's record,
//! indexed), [`samples`] (memory and database size), [`checks`] (the table), [`book`] (what the
//! harness did).

mod book;
mod chaos;
mod checks;
mod oracle;
mod plan;
mod samples;
mod traffic;
mod verify;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use e2e_tests::Backend;
use e2e_tests::cluster::Cluster;
use e2e_tests::stand::{Stand, StandSpec, same_for_all};
use enrichd::core::signing::SigningSecret;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::book::{Outcome, Shared, Who};
use crate::plan::{Args, LEASE, REPLICAS, Sabotage};
use crate::traffic::{Caller, Ctx};

const APOLLO_KEY: &str = "apollo-soak-key-3c9e51";
const ADMIN_KEYS: &str = "ops=soak-admin-key-77aa0c1e";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "enrichd-soak: {e}\nusage: enrichd-soak [--minutes N] [--seed S] [--sqlite] [--break WHAT] [--out FILE]"
            );
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if rt.block_on(run(args)) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn run(args: Args) -> bool {
    let cluster = (!args.sqlite).then(|| {
        let c = Cluster::create();
        e2e_tests::set_pg_admin_url(&c.url());
        Arc::new(c)
    });
    let keys: Vec<String> = Who::ALL.iter().map(|w| format!("{}={}", w.name(), w.key())).collect();
    let env = plan::service_env(&args, &keys.join(","), ADMIN_KEYS);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let spec = StandSpec {
        name: "soak",
        backend: if args.sqlite { Backend::Sqlite } else { Backend::Postgres },
        replicas: if args.sqlite { 1 } else { REPLICAS },
        sim: plan::simulator(&args, APOLLO_KEY),
        env: &env_refs,
        replica_env: &same_for_all,
    };
    let stand = Stand::start(spec).await;
    let secret = SigningSecret::parse(&stand.signing_text).expect("signing secret");
    let shared = Shared::new();
    let api = Caller::new(stand.api().base);
    let callback_url = stand.receiver.url().to_string();
    let sim = stand.sim.clone();
    let stand = Arc::new(Mutex::new(stand));
    let start = Instant::now();
    let until = start + args.run();
    shared.note(format!(
        "soak: {} min of traffic, seed {}, {}",
        args.minutes,
        args.seed,
        if args.sqlite { "one process on SQLite" } else { "three replicas on PostgreSQL behind a balancer" }
    ));

    let ctx = Ctx { api: api.clone(), shared: shared.clone(), args: args.clone(), until, callback_url };
    let mut traffic = tokio::task::JoinSet::new();
    traffic.spawn(traffic::steady(ctx.clone()));
    traffic.spawn(traffic::reuse(ctx.clone()));
    traffic.spawn(traffic::budget(ctx.clone()));
    traffic.spawn(traffic::heavy(ctx.clone()));
    let world = Arc::new(chaos::World {
        stand: stand.clone(),
        cluster: cluster.clone(),
        receivers: Arc::default(),
        secret,
        shared: shared.clone(),
    });
    if let Some(s) = args.sabotage {
        traffic.spawn(sabotage(s, sim.clone(), world.clone(), ctx.clone()));
    }
    let timetable = tokio::spawn(chaos::run(world.clone(), args.clone(), start));
    let samples = Arc::new(std::sync::Mutex::new(samples::Samples::default()));
    let sampling_until = Instant::now() + args.run() + Duration::from_secs(3600);
    let sampler = tokio::spawn(samples::run(stand.clone(), samples.clone(), start, sampling_until));
    let oracle = Arc::new(std::sync::Mutex::new(oracle::Oracle::default()));
    let (stop, give_up) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(None)));
    let verifier = verify::Verifier {
        api: api.clone(),
        shared: shared.clone(),
        sim: sim.clone(),
        oracle: oracle.clone(),
        seed: args.seed,
    };
    let verifying = tokio::spawn(verifier.run(stop.clone(), give_up.clone()));
    let rechecking = tokio::spawn(recheck_credits(api.clone(), shared.clone(), sampling_until));

    traffic.join_all().await;
    let _ = timetable.await;
    shared.note(format!("traffic over: {} jobs accepted; draining", shared.book().jobs.len()));
    stop.store(true, Ordering::Relaxed);
    *give_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + Duration::from_secs(1200));
    let _ = verifying.await;
    shared.note("every job checked".into());

    // Late deliveries and callback retries settle.
    let quiet = Instant::now() + Duration::from_secs(600);
    while !sim.idle() && Instant::now() < quiet {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let received = settle_callbacks(&world, &shared, Instant::now() + Duration::from_secs(900)).await;
    rechecking.abort();
    refresh_credits(&api, &shared).await;
    sampler.abort();
    shared.note("settled; checking".into());

    let logs: Vec<String> = {
        let s = stand.lock().await;
        (0..s.services.len()).map(|i| s.log(i)).collect()
    };
    let rows = {
        let mut o = oracle.lock().unwrap_or_else(|p| p.into_inner());
        o.refresh(&sim);
        let book = shared.book();
        let s = samples.lock().unwrap_or_else(|p| p.into_inner());
        checks::all(&args, &book, &o, &sim, &received, &s, &logs)
    };
    let report = render(&args, &shared, &rows, start.elapsed());
    println!("{report}");
    if let Some(path) = &args.out {
        std::fs::write(path, &report).expect("write the report");
        // The samples too, so a trend can be looked at again after the run.
        let s = samples.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::write(format!("{path}.samples.csv"), s.csv()).expect("write the samples");
    }
    let passed = rows.iter().all(|r| r.pass);

    for r in world.receivers.lock().await.iter() {
        r.stop().await;
    }
    let mut stand = stand.lock().await;
    if !passed {
        let dump = stand.log_dir().join("apollo.txt");
        std::fs::write(&dump, apollo_record(&sim)).expect("write the simulator's record");
        eprintln!(
            "the replicas' logs and Apollo's record ({}) are kept in {}",
            dump.display(),
            stand.log_dir().display()
        );
    }
    stand.shut(!passed).await;
    drop(stand);
    drop(cluster);
    passed
}

/// Every POST the receivers got.
async fn received_all(world: &chaos::World) -> Vec<enrichd::demo::receiver::Received> {
    let mut all = world.stand.lock().await.receiver.received();
    for r in world.receivers.lock().await.iter() {
        all.extend(r.received());
    }
    all
}

/// Waits until every job with a callback URL has its `job.completed` accepted (or `limit`).
async fn settle_callbacks(
    world: &chaos::World,
    shared: &Shared,
    limit: Instant,
) -> Vec<enrichd::demo::receiver::Received> {
    loop {
        let got = received_all(world).await;
        let done: std::collections::HashSet<String> = got
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(|r| r.json())
            .filter(|b| b["type"] == "job.completed")
            .filter_map(|b| b["data"]["id"].as_str().map(str::to_string))
            .collect();
        let waiting = shared.book().jobs.values().filter(|j| j.callback && !done.contains(&j.id)).count();
        if waiting == 0 || Instant::now() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Reads each job's credits again at the end (late parts of a cancelled job may add some); a job
/// retention purged (404) keeps what it showed when it was checked, and is counted.
/// How long after its check a job's credits are read again: a job is final before every charge
/// of its calls is known (a cancelled person's part, a lost call's delivery), and retention may
/// purge it before the run's end.
const RECHECK_FOR: Duration = Duration::from_secs(90);

/// Reads the credits of jobs checked in the last [`RECHECK_FOR`] again, every few seconds, until
/// `until`.
async fn recheck_credits(api: Caller, shared: Shared, until: Instant) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        update_credits(&api, &shared, false, |o| o.checked_at.is_some_and(|t| t.elapsed() < RECHECK_FOR)).await;
    }
}

/// Reads every checked job's credits again at the end, counting those purged.
async fn refresh_credits(api: &Caller, shared: &Shared) {
    update_credits(api, shared, true, |_| true).await;
}

/// Reads the credits of the checked jobs `which` picks again; `count_purged`: count those gone.
async fn update_credits(api: &Caller, shared: &Shared, count_purged: bool, which: impl Fn(&Outcome) -> bool) {
    let ids: Vec<(String, Who)> = {
        let book = shared.book();
        book.outcomes
            .iter()
            .filter(|(_, o)| !o.erased && which(o))
            .filter_map(|(id, _)| book.jobs.get(id).map(|j| (id.clone(), j.who)))
            .collect()
    };
    for (id, who) in ids {
        let (status, job) = api.call(&who.key(), Method::GET, &format!("/v1/jobs/{id}"), None).await;
        if status == 404 && count_purged {
            shared.book().purged += 1;
        }
        if status != 200 {
            continue;
        }
        let credits = |v: &Value| serde_json::from_value::<apollo_client::Credits>(v.clone()).unwrap_or_default();
        if let Some(o) = shared.book().outcomes.get_mut(&id) {
            o.credits = credits(&job["credits_consumed"]);
            o.double_charges = job["possible_double_charges"].as_i64().unwrap_or(0);
            o.double_charge_credits = credits(&job["possible_double_charge_credits"]);
        }
    }
}

/// Breaks a property from outside, on purpose, until `until`.
async fn sabotage(what: Sabotage, sim: apollo_sim::SimHandle, world: Arc<chaos::World>, ctx: Ctx) {
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/people/bulk_match", sim.url());
    let mut read = 0;
    let mut n = 0u64;
    while Instant::now() < ctx.until {
        match what {
            // Configured from the start: Apollo's side in the simulator, retention in the replicas.
            Sabotage::LostWebhook | Sabotage::NoRetention => return,
            Sabotage::DoubleSend => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let calls = sim.calls_from(read);
                read += calls.len();
                let Some(c) = calls.iter().rev().find(|c| c.route.ends_with("bulk_match") && c.status == 200) else {
                    continue;
                };
                let mut body = json!({"details": c.received.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(), "webhook_url": c.webhook_url});
                for f in c.flags.unwrap_or_default().on() {
                    body[f.name()] = json!(true);
                }
                let _ = http.post(&url).header("x-api-key", APOLLO_KEY).json(&body).send().await;
            }
            Sabotage::KeyShared => {
                tokio::time::sleep(Duration::from_millis(150)).await;
                n += 1;
                let body = json!({"details": [{"email": format!("z{n}@elsewhere.io")}]});
                let _ = http.post(&url).header("x-api-key", APOLLO_KEY).json(&body).send().await;
            }
            Sabotage::DryRunSent => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let email = world.shared.book().dry_emails.last().cloned();
                let Some(email) = email else { continue };
                let body = json!({"details": [{"email": email}]});
                let _ = http.post(&url).header("x-api-key", APOLLO_KEY).json(&body).send().await;
            }
            Sabotage::SuppressedSent => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                // The latest person whose suppression is older than a lease (a claim in flight
                // may still send one inside it).
                let settled = SystemTime::now() - LEASE * 2;
                let email = {
                    let book = world.shared.book();
                    book.suppressed
                        .iter()
                        .filter(|(_, at)| **at < settled)
                        .max_by_key(|(_, at)| **at)
                        .map(|(e, _)| e.clone())
                };
                let Some(email) = email else {
                    // None yet (a short run may have none): the client suppresses one itself.
                    n += 1;
                    traffic::suppress(&ctx, Who::Steady, &format!("x{n}@suppressed-sent.io")).await;
                    continue;
                };
                let body = json!({"details": [{"email": email}]});
                let _ = http.post(&url).header("x-api-key", APOLLO_KEY).json(&body).send().await;
            }
            Sabotage::ReplayedCallback => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let (target, got) = {
                    let stand = world.stand.lock().await;
                    (stand.receiver.url().to_string(), stand.receiver.received())
                };
                let Some(r) = got.iter().rev().find(|r| (200..300).contains(&r.answered)) else { continue };
                let _ = http
                    .post(&target)
                    .header("webhook-id", &r.id)
                    .header("webhook-timestamp", r.timestamp.to_string())
                    .header("webhook-signature", &r.signature)
                    .header("content-type", "application/json")
                    .body(r.body.clone())
                    .send()
                    .await;
            }
        }
    }
}

/// The report: the run, its traffic, the faults injected, and the table.
fn render(args: &Args, shared: &Shared, rows: &[checks::Row], took: Duration) -> String {
    let book = shared.book();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let cmd = format!(
        "scripts/soak.sh --minutes {} --seed {}{}{}",
        args.minutes,
        args.seed,
        if args.sqlite { " --sqlite" } else { "" },
        args.sabotage.map(|s| format!(" --break {}", s.name())).unwrap_or_default()
    );
    line(format!("### Soak: `{cmd}`"));
    line(String::new());
    line(format!(
        "{} min of traffic, {:.1} min in all (with the drain); {}; Apollo's minute 2.5 s ({} calls/min, {} per 150 s hour).",
        args.minutes,
        took.as_secs_f64() / 60.0,
        if args.sqlite { "one process on SQLite" } else { "three replicas on PostgreSQL behind a balancer" },
        plan::PER_MINUTE,
        plan::PER_HOUR
    ));
    line(String::new());
    let mut per: std::collections::BTreeMap<&str, (usize, usize)> = std::collections::BTreeMap::new();
    for j in book.jobs.values() {
        let e = per.entry(j.who.name()).or_default();
        e.0 += 1;
        e.1 += j.emails.len();
    }
    let sizes: Vec<String> = per.iter().map(|(w, (j, p))| format!("{w} {j} jobs / {p} people")).collect();
    line(format!(
        "Traffic: {}; {} dry runs, {} bad bodies refused, {} cancels, {} retries, {} erasures ({} suppressing), {} people suppressed.",
        sizes.join(", "),
        book.dry_runs,
        book.bad_refused,
        book.jobs.values().filter(|j| j.cancelled).count(),
        book.retries,
        book.erasures.0,
        book.erasures.1,
        book.suppressed.len()
    ));
    line(String::new());
    line("Faults injected (seconds from the start):".into());
    for (at, what) in &book.timeline {
        line(format!("- {:.0} s: {what}", at.as_secs_f64()));
    }
    line(String::new());
    line("| check | measured | bound | |".into());
    line("|---|---|---|---|".into());
    for r in rows {
        line(format!(
            "| {} | {} | {} | {} |",
            r.check,
            r.measured.replace('|', "/"),
            r.bound,
            if r.pass { "pass" } else { "**FAIL**" }
        ));
    }
    out
}

/// The simulator's record as text, one line per call, charge and delivery attempt (seconds since
/// its start), for tracing a failed check after the run.
fn apollo_record(sim: &apollo_sim::SimHandle) -> String {
    let mut out = String::new();
    for c in sim.calls().iter().filter(|c| c.route.ends_with("bulk_match")) {
        let phone = c.answer.as_ref().and_then(|a| a["phone_enrichment"]["status"].as_str()).unwrap_or("-");
        let matched = c.received.iter().filter(|r| r.apollo_id.is_some()).count();
        let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &c.received {
            let email = r.detail["email"].as_str().unwrap_or_default();
            *tags.entry(traffic::job_tag(email).unwrap_or(&email[..email.len().min(1)])).or_default() += 1;
        }
        let tags: Vec<String> = tags.iter().map(|(t, n)| format!("{t}:{n}")).collect();
        out.push_str(&format!(
            "call {:.3} status={} fault={} request={} details={} matched={matched} phone={phone} tags={} url={}\n",
            c.since_start.as_secs_f64(),
            c.status,
            c.fault.as_deref().unwrap_or("-"),
            c.request_id.map(|r| r.0.to_string()).unwrap_or_default(),
            c.details,
            tags.join(","),
            c.webhook_url.as_deref().unwrap_or("-"),
        ));
    }
    for e in sim.ledger().entries {
        out.push_str(&format!(
            "charge request={} kind={:?} credits={} people={}\n",
            e.request_id.0,
            e.kind,
            e.credits,
            e.people.len()
        ));
    }
    for d in sim.deliveries() {
        out.push_str(&format!(
            "delivery {:.3} request={} kind={:?} attempt={} status={} dropped={} duplicate={} early={} url={}\n",
            d.since_start.as_secs_f64(),
            d.request_id.0,
            d.kind,
            d.attempt,
            d.status.map(|s| s.to_string()).unwrap_or_else(|| d.error.clone().unwrap_or_default()),
            d.dropped,
            d.duplicate,
            d.early,
            d.url
        ));
    }
    out
}
