//! The verifier: as each job finishes, its people are read and every record is held against the
//! simulator's record (before retention purges the job); then the steady client's follow-ups run:
//! a retry of its failed people now and then, an erasure now and then.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apollo_client::Credits;
use apollo_sim::SimHandle;
use reqwest::Method;
use serde_json::{Value, json};

use crate::book::{JobNote, Outcome, Shared, Who};
use crate::oracle::Oracle;
use crate::plan::REFUSED_DOMAIN;
use crate::traffic::Caller;

/// What the verifier works with.
#[derive(Clone)]
pub struct Verifier {
    /// The API.
    pub api: Caller,
    /// The book.
    pub shared: Shared,
    /// The judge.
    pub sim: SimHandle,
    /// The judge's record, indexed.
    pub oracle: Arc<Mutex<Oracle>>,
    /// Seeds the follow-ups.
    pub seed: u64,
}

const FINAL_STATES: [&str; 3] = ["completed", "failed", "cancelled"];

/// Not ready to check yet: people still moving, or a call not yet in the simulator's record.
struct NotYet;

impl Verifier {
    /// Checks finished jobs until `stop` says so and none is left (or `give_up` passes).
    pub async fn run(self, stop: Arc<std::sync::atomic::AtomicBool>, give_up: Arc<Mutex<Option<Instant>>>) {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ 0x5eed_00f0);
        let mut waiting: BTreeMap<String, u32> = BTreeMap::new();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let pending: Vec<JobNote> = {
                let book = self.shared.book();
                book.jobs.values().filter(|j| !book.outcomes.contains_key(&j.id)).cloned().collect()
            };
            let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
            if stopping && pending.is_empty() {
                return;
            }
            if let Some(limit) = *give_up.lock().unwrap_or_else(|p| p.into_inner())
                && Instant::now() > limit
            {
                for j in &pending {
                    self.shared.problem(format!("job {} ({}) never finished", j.id, j.who.name()));
                }
                return;
            }
            for note in pending {
                let (status, job) =
                    self.api.call(&note.who.key(), Method::GET, &format!("/v1/jobs/{}", note.id), None).await;
                if status != 200 {
                    self.shared.problem(format!("GET job {} answered {status} {job}", note.id));
                    self.shared
                        .book()
                        .outcomes
                        .insert(note.id.clone(), Outcome { status: "unreadable".into(), ..Default::default() });
                    continue;
                }
                if !FINAL_STATES.contains(&job["status"].as_str().unwrap_or("")) {
                    continue;
                }
                match self.check(&note, &job).await {
                    Ok(outcome) => {
                        self.shared.book().outcomes.insert(note.id.clone(), outcome.clone());
                        self.follow_up(&mut rng, &note, &outcome).await;
                    }
                    Err(NotYet) => {
                        let tries = waiting.entry(note.id.clone()).or_default();
                        *tries += 1;
                        // A call's record lags its answer by microseconds; people of a cancelled
                        // job may still be waiting for parts until the deadline (300 s).
                        if *tries > 200 {
                            self.shared.problem(format!("job {} is {} but never settled", note.id, job["status"]));
                            self.shared.book().outcomes.insert(note.id.clone(), Outcome::default());
                        }
                    }
                }
            }
        }
    }

    async fn people(&self, note: &JobNote) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let path = format!("/v1/jobs/{}/people?limit=1000&after={after}", note.id);
            let (status, page) = self.api.call(&note.who.key(), Method::GET, &path, None).await;
            if status != 200 {
                self.shared.problem(format!("people of {} answered {status}", note.id));
                return out;
            }
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_str() {
                Some(a) => after = a.to_string(),
                None => return out,
            }
        }
    }

    /// Every person of a finished job against the simulator's record and the book.
    async fn check(&self, note: &JobNote, job: &Value) -> Result<Outcome, NotYet> {
        let people = self.people(note).await;
        if people.iter().any(|p| matches!(p["status"].as_str(), Some("queued" | "submitted" | "awaiting_async"))) {
            return Err(NotYet);
        }
        let suppressed = self.shared.book().suppressed.clone();
        let mut oracle = self.oracle.lock().unwrap_or_else(|p| p.into_inner());
        oracle.refresh(&self.sim);
        let credits = |v: &Value| serde_json::from_value::<Credits>(v.clone()).unwrap_or_default();
        let mut outcome = Outcome {
            status: job["status"].as_str().unwrap_or("").to_string(),
            credits: credits(&job["credits_consumed"]),
            double_charges: job["possible_double_charges"].as_i64().unwrap_or(0),
            double_charge_credits: credits(&job["possible_double_charge_credits"]),
            checked_at: Some(Instant::now()),
            ..Default::default()
        };
        if people.len() != note.emails.len() {
            self.shared.problem(format!("job {}: {} people, {} submitted", note.id, people.len(), note.emails.len()));
        }
        for (p, email) in people.iter().zip(&note.emails) {
            let status = p["status"].as_str().unwrap_or("").to_string();
            *outcome.states.entry(status.clone()).or_default() += 1;
            outcome.people.push(p["id"].as_str().unwrap_or("").to_string());
            let wrong = |why: String| {
                format!("job {} ({}) person {} <{email}> {status}: {why}", note.id, note.who.name(), p["index"])
            };
            let said = p["input"]["email"].as_str().map(str::to_lowercase);
            if said.as_deref() != Some(email.as_str()) {
                self.shared.problem(wrong(format!("input email {said:?}")));
                continue;
            }
            match status.as_str() {
                "complete" | "not_found" | "partial" => {
                    if !p["reused_from"].is_null() {
                        outcome.reused += 1;
                    }
                    let expected = match oracle.expected(email, note.flags) {
                        Ok(Some(e)) => e,
                        Ok(None) => return Err(NotYet),
                        Err(e) => {
                            self.shared.problem(wrong(e));
                            continue;
                        }
                    };
                    let verdict = match (&expected.apollo_id, status.as_str()) {
                        (None, "not_found") => Ok(()),
                        (Some(_), "complete") if !expected.phone_never_came() => expected.check_record(p),
                        (Some(_), "partial") if expected.phone_never_came() => expected.check_record(p),
                        (id, _) => Err(format!("Apollo answered {id:?}; missing {}", p["missing_parts"])),
                    };
                    match verdict {
                        Ok(()) => outcome.compared += 1,
                        Err(e) => self.shared.problem(wrong(format!("record differs from Apollo's: {e}"))),
                    }
                }
                "failed" if email.ends_with(REFUSED_DOMAIN) => {}
                "suppressed" if suppressed.contains_key(email) => {}
                "cancelled" if outcome.status == "cancelled" || note.cancelled => {}
                "skipped_budget" if job["max_credits"].is_number() => {}
                _ => self.shared.problem(wrong("not a state this person can end in".into())),
            }
        }
        Ok(outcome)
    }

    /// The steady client's follow-ups on a checked job: retry the failed people (half the time),
    /// erase the job (one in twenty, without a callback, half of them also suppressing).
    async fn follow_up(&self, rng: &mut fastrand::Rng, note: &JobNote, outcome: &Outcome) {
        if note.who != Who::Steady {
            return;
        }
        let key = note.who.key();
        if outcome.states.get("failed").is_some_and(|n| *n > 0) && rng.bool() {
            let failed: Vec<String> = note.emails.iter().filter(|e| e.ends_with(REFUSED_DOMAIN)).cloned().collect();
            let path = format!("/v1/jobs/{}/retry", note.id);
            let (status, answer) = self.api.call(&key, Method::POST, &path, Some(&json!({"states": ["failed"]}))).await;
            match answer["id"].as_str() {
                Some(id) if status == 202 => {
                    let retry = JobNote {
                        id: id.to_string(),
                        emails: failed,
                        cancelled: false,
                        events: false,
                        callback: note.callback,
                        retry_of: Some(note.id.clone()),
                        ..note.clone()
                    };
                    let mut book = self.shared.book();
                    book.retries += 1;
                    book.jobs.insert(retry.id.clone(), retry);
                }
                // The day's cap may be reached meanwhile: refused like any new job.
                _ if status == 429 && answer["error"]["code"] == "daily_credit_cap_reached" => {
                    *self.shared.book().refused.entry(format!("{} {status} retry", note.who.name())).or_default() += 1;
                }
                _ => self.shared.problem(format!("retry of {} answered {status} {answer}", note.id)),
            }
        } else if !note.callback && rng.f64() < 0.05 {
            let suppress = rng.bool();
            if suppress {
                let mut book = self.shared.book();
                for e in &note.emails {
                    book.suppressed.entry(e.clone()).or_insert_with(SystemTime::now);
                }
            }
            let path = format!("/v1/jobs/{}?suppress={suppress}", note.id);
            let (status, answer) = self.api.call(&key, Method::DELETE, &path, None).await;
            if status != 200 || answer["erased_at"].is_null() {
                self.shared.problem(format!("erasure of {} answered {status} {answer}", note.id));
                return;
            }
            let (gone, _) = self.api.call(&key, Method::GET, &format!("/v1/jobs/{}/people", note.id), None).await;
            if gone != 410 {
                self.shared.problem(format!("people of erased job {} answered {gone}, not 410", note.id));
            }
            let mut book = self.shared.book();
            book.erasures.0 += 1;
            book.erasures.1 += usize::from(suppress);
            if let Some(o) = book.outcomes.get_mut(&note.id) {
                o.erased = true;
            }
        }
    }
}
