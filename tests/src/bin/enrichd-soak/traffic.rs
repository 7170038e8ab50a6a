//! The clients: each a task sending its kind of traffic until the run's end, through the balancer,
//! riding out restarts and outages (a refused connection, 502 or 503 is sent again under the same
//! `Idempotency-Key`).

use std::time::{Duration, Instant, SystemTime};

use apollo_client::EnrichFlags;
use reqwest::Method;
use serde_json::{Value, json};

use crate::book::{JobNote, Shared, Who};
use crate::plan::{Args, REFUSED_DOMAIN};

/// The API at the balancer.
#[derive(Clone)]
pub struct Caller {
    /// Base URL.
    pub base: String,
    http: reqwest::Client,
}

impl Caller {
    /// A caller of `base`.
    pub fn new(base: String) -> Caller {
        Caller { base, http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client") }
    }

    /// One request with `key`; sent again while the service is unreachable or answers 502/503
    /// (a deploy, a crash, the database restarting), for up to five minutes. (status, JSON body).
    pub async fn call(&self, key: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let idem = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        loop {
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(key);
            if let Some(b) = body {
                req = req.json(b).header("idempotency-key", &idem);
            }
            match req.send().await {
                Ok(resp) if !matches!(resp.status().as_u16(), 502 | 503) => {
                    let status = resp.status().as_u16();
                    return (status, resp.json().await.unwrap_or(Value::Null));
                }
                outcome => {
                    if started.elapsed() > Duration::from_secs(300) {
                        let what = outcome.map(|r| r.status().to_string()).unwrap_or_else(|e| e.to_string());
                        return (0, json!({"unreachable": what}));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// What every client task has.
#[derive(Clone)]
pub struct Ctx {
    /// The API.
    pub api: Caller,
    /// The book.
    pub shared: Shared,
    /// The run.
    pub args: Args,
    /// Traffic stops then.
    pub until: Instant,
    /// Where callbacks go.
    pub callback_url: String,
}

impl Ctx {
    fn running(&self) -> bool {
        Instant::now() < self.until
    }

    /// Sleeps an exponential time of mean `mean`; false when the run ended meanwhile.
    async fn pause(&self, rng: &mut fastrand::Rng, mean: Duration) -> bool {
        let wait = mean.mul_f64(-(1.0 - rng.f64()).ln()).min(self.until.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        self.running()
    }
}

fn flags_body(flags: EnrichFlags) -> Value {
    json!({
        "reveal_personal_emails": flags.reveal_personal_emails,
        "reveal_phone_number": flags.reveal_phone_number,
        "run_waterfall_email": flags.run_waterfall_email,
        "run_waterfall_phone": flags.run_waterfall_phone,
    })
}

/// A job body: the emails, the flags, and `extra` fields.
fn body(emails: &[String], flags: EnrichFlags, extra: Value) -> Value {
    let mut b = flags_body(flags);
    b["people"] = emails.iter().enumerate().map(|(i, e)| json!({"email": e, "external_id": format!("x{i}")})).collect();
    for (k, v) in extra.as_object().into_iter().flatten() {
        b[k] = v.clone();
    }
    b
}

/// Submits a job and notes it; `None` when refused (noted too).
async fn submit(ctx: &Ctx, who: Who, emails: Vec<String>, flags: EnrichFlags, extra: Value) -> Option<JobNote> {
    let b = body(&emails, flags, extra.clone());
    let (status, answer) = ctx.api.call(&who.key(), Method::POST, "/v1/jobs", Some(&b)).await;
    if status != 202 {
        let code = answer["error"]["code"].as_str().unwrap_or("?");
        *ctx.shared.book().refused.entry(format!("{} {status} {code}", who.name())).or_default() += 1;
        if !(status == 429 && code == "daily_credit_cap_reached") {
            ctx.shared.problem(format!("{} job of {} refused: {status} {answer}", who.name(), emails.len()));
        }
        return None;
    }
    let note = JobNote {
        id: answer["id"].as_str().expect("job id").to_string(),
        who,
        flags,
        emails: emails.iter().map(|e| e.to_lowercase()).collect(),
        max_credits: answer["max_credits"].as_f64(),
        events: extra.get("events").is_some(),
        callback: extra.get("callback_url").is_some(),
        cancelled: false,
        retry_of: None,
    };
    ctx.shared.book().jobs.insert(note.id.clone(), note.clone());
    Some(note)
}

fn random_flags(rng: &mut fastrand::Rng, p: f64, waterfall_phone: f64) -> EnrichFlags {
    EnrichFlags {
        reveal_personal_emails: rng.f64() < p,
        reveal_phone_number: rng.f64() < p,
        run_waterfall_email: rng.f64() < p,
        run_waterfall_phone: rng.f64() < waterfall_phone,
    }
}

/// Log-uniform from 1 to `max`.
fn size(rng: &mut fastrand::Rng, max: usize) -> usize {
    ((max as f64).ln() * rng.f64()).exp().round().clamp(1.0, max as f64) as usize
}

/// The steady client: a job every few seconds, 1–400 people from a pool of 20,000, every flag
/// combination, duplicates, refused people, bad rows, dry runs, suppressions, cancels, events.
pub async fn steady(ctx: Ctx) {
    let who = Who::Steady;
    let mut rng = fastrand::Rng::with_seed(ctx.args.seed ^ 0x5eed_0001);
    let mut j = 0u64;
    while ctx.pause(&mut rng, Duration::from_secs(5)).await {
        j += 1;
        let n = size(&mut rng, 400);
        let flags = random_flags(&mut rng, 0.4, 0.1);
        let mut emails: Vec<String> =
            (0..n).map(|_| rng.usize(..20_000)).map(|k| format!("s{k}@steady-{}.io", k % 89)).collect();
        if rng.f64() < 0.15 {
            for _ in 0..=rng.usize(..3.min(n)) {
                let again = emails[rng.usize(..emails.len())].clone();
                emails.push(again.to_uppercase());
            }
        }
        if rng.f64() < 0.04 {
            let at = rng.usize(..emails.len());
            emails[at] = format!("s{j}r@{REFUSED_DOMAIN}");
        }
        let roll = rng.f64();
        if roll < 0.05 {
            dry_run(&ctx, j, n, flags).await;
            continue;
        }
        if roll < 0.10 {
            bad_rows(&ctx, &mut rng, &emails, flags).await;
        }
        if (0.10..0.15).contains(&roll) {
            for e in emails.iter().take(2) {
                suppress(&ctx, who, e).await;
            }
        }
        let mut extra = json!({"metadata": {"soak": j}});
        if rng.f64() < 0.7 {
            extra["callback_url"] = json!(ctx.callback_url);
        }
        if rng.f64() < 0.2 {
            extra["events"] = json!(["person.completed", "person.updated"]);
        }
        let Some(note) = submit(&ctx, who, emails, flags, extra).await else { continue };
        if (0.15..0.20).contains(&roll) {
            let (ctx, wait) = (ctx.clone(), Duration::from_millis(rng.u64(..3_000)));
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                cancel(&ctx, &note).await;
            });
        }
    }
}

async fn cancel(ctx: &Ctx, note: &JobNote) {
    let (status, answer) =
        ctx.api.call(&note.who.key(), Method::POST, &format!("/v1/jobs/{}/cancel", note.id), None).await;
    if status == 200 {
        if let Some(n) = ctx.shared.book().jobs.get_mut(&note.id) {
            n.cancelled = true;
        }
    } else if status != 409 {
        ctx.shared.problem(format!("cancel of {} answered {status} {answer}", note.id));
    }
}

/// Puts an email on the client's do-not-enrich list (noted before the request: from then on a
/// claim may see it).
pub async fn suppress(ctx: &Ctx, who: Who, email: &str) {
    ctx.shared.book().suppressed.entry(email.to_lowercase()).or_insert_with(SystemTime::now);
    let (status, answer) =
        ctx.api.call(&who.key(), Method::POST, "/v1/suppressions", Some(&json!({"email": email}))).await;
    if !matches!(status, 200 | 201) {
        ctx.shared.problem(format!("suppression of an email answered {status} {answer}"));
    }
}

async fn dry_run(ctx: &Ctx, j: u64, n: usize, flags: EnrichFlags) {
    let emails: Vec<String> = (0..n).map(|i| format!("sdry{j}-{i}@steady-dry.io")).collect();
    let b = body(&emails, flags, json!({"dry_run": true}));
    let (status, answer) = ctx.api.call(&Who::Steady.key(), Method::POST, "/v1/jobs", Some(&b)).await;
    if status != 200 || answer["people"].as_i64() != Some(n as i64) {
        ctx.shared.problem(format!("dry run of {n} answered {status} {answer}"));
    }
    let mut book = ctx.shared.book();
    book.dry_runs += 1;
    book.dry_emails.extend(emails);
}

/// A body with a person without any identifier: refused whole, naming the row.
async fn bad_rows(ctx: &Ctx, rng: &mut fastrand::Rng, emails: &[String], flags: EnrichFlags) {
    let mut b = body(emails, flags, json!({}));
    let at = rng.usize(..=emails.len());
    b["people"].as_array_mut().expect("people").insert(at, json!({"first_name": "Nobody", "external_id": "bad"}));
    let (status, answer) = ctx.api.call(&Who::Steady.key(), Method::POST, "/v1/jobs", Some(&b)).await;
    if status == 422 && answer.to_string().contains(&format!("people[{at}]")) {
        ctx.shared.book().bad_refused += 1;
    } else {
        ctx.shared.problem(format!("a body with a bad row at {at} answered {status} {answer}"));
    }
}

/// The reuse client: two jobs at once from one pool of 3,000 people, phone reveal, a reuse window.
pub async fn reuse(ctx: Ctx) {
    let mut rng = fastrand::Rng::with_seed(ctx.args.seed ^ 0x5eed_0002);
    let flags = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::default() };
    let window = format!("{}s", ctx.args.reuse_window().as_secs());
    while ctx.pause(&mut rng, Duration::from_secs(8)).await {
        let jobs: Vec<Vec<String>> = (0..2)
            .map(|_| {
                let n = 20 + rng.usize(..280);
                (0..n).map(|_| rng.usize(..3_000)).map(|k| format!("r{k}@reuse-{}.io", k % 53)).collect()
            })
            .collect();
        let extra = json!({"reuse_within": window, "callback_url": ctx.callback_url});
        let (a, b) = (jobs[0].clone(), jobs[1].clone());
        tokio::join!(submit(&ctx, Who::Reuse, a, flags, extra.clone()), submit(&ctx, Who::Reuse, b, flags, extra));
    }
}

/// The budget client: expensive jobs of new people with budgets that cannot cover them all; now
/// and then three at once.
pub async fn budget(ctx: Ctx) {
    let mut rng = fastrand::Rng::with_seed(ctx.args.seed ^ 0x5eed_0003);
    let flags = EnrichFlags {
        reveal_phone_number: true,
        run_waterfall_email: true,
        run_waterfall_phone: true,
        ..Default::default()
    };
    let mut j = 0u64;
    while ctx.pause(&mut rng, Duration::from_secs(15)).await {
        let at_once = if rng.f64() < 0.3 { 3 } else { 1 };
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..at_once {
            j += 1;
            let n = 50 + rng.usize(..550);
            let emails: Vec<String> = (0..n).map(|i| format!("b{j}-{i}@budget-{}.io", i % 31)).collect();
            let max = 20 + rng.usize(..n * 8);
            let ctx = ctx.clone();
            set.spawn(async move {
                submit(&ctx, Who::Budget, emails, flags, json!({"max_credits": max, "callback_url": ctx.callback_url}))
                    .await
            });
        }
        set.join_all().await;
    }
}

/// The heavy client: three big jobs submitted at the same moment, three times in the run, against
/// the daily cap.
pub async fn heavy(ctx: Ctx) {
    let mut rng = fastrand::Rng::with_seed(ctx.args.seed ^ 0x5eed_0004);
    let start = Instant::now();
    let mut j = 0u64;
    for at in [0.05, 0.30, 0.55] {
        tokio::time::sleep_until((start + ctx.args.run().mul_f64(at)).into()).await;
        if !ctx.running() {
            return;
        }
        let biggest = ctx.args.biggest_job();
        let mut set = tokio::task::JoinSet::new();
        for k in 0..3 {
            j += 1;
            let n = if k == 0 { biggest } else { biggest / 10 + rng.usize(..biggest * 9 / 10) };
            // The biggest asks for waterfall phones too: its worst case is more than the day's cap,
            // so it takes what room is left and the two submitted with it meet the cap.
            let flags = EnrichFlags {
                reveal_personal_emails: rng.bool(),
                run_waterfall_phone: k == 0,
                ..EnrichFlags::default()
            };
            let emails: Vec<String> = (0..n).map(|i| format!("h{j}-{i}@heavy-{}.io", i % 101)).collect();
            let ctx = ctx.clone();
            set.spawn(async move {
                submit(&ctx, Who::Heavy, emails, flags, json!({"callback_url": ctx.callback_url})).await
            });
        }
        set.join_all().await;
    }
}

/// The job of a budget or heavy person's email (`b17-3@…` → `b17`), whose people are its own.
pub fn job_tag(email: &str) -> Option<&str> {
    let local = email.split('@').next()?;
    local.split_once('-').map(|(tag, _)| tag).filter(|t| t.starts_with('b') || t.starts_with('h'))
}
