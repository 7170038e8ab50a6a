//! The end of the run: every property, checked against the simulator's own record and the
//! harness's book, as rows of a table (what was measured, the bound, pass or fail).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use apollo_client::Credits;
use apollo_sim::SimHandle;
use enrichd::demo::receiver::Received;
use serde_json::Value;

use crate::book::{Book, Who};
use crate::oracle::Oracle;
use crate::plan::{Args, LEASE, Sabotage};
use crate::samples::{Samples, memory_peak, memory_trend};
use crate::traffic::job_tag;

/// One row of the table.
pub struct Row {
    /// The property.
    pub check: String,
    /// What the run showed.
    pub measured: String,
    /// What it must be.
    pub bound: String,
    /// Whether it held.
    pub pass: bool,
}

fn row(check: &str, measured: String, bound: &str, pass: bool) -> Row {
    Row { check: check.into(), measured, bound: bound.into(), pass }
}

fn near_kill(book: &Book, at: SystemTime) -> bool {
    // A call whose outcome a SIGKILL made unknown was sent before the kill and again after its
    // lease ran out.
    book.kills.iter().any(|k| at <= *k + Duration::from_secs(1) && *k <= at + LEASE * 3)
}

fn in_window(book: &Book, at: SystemTime) -> Option<&'static str> {
    book.windows.iter().find(|(from, to, _)| *from <= at && at <= *to).map(|w| w.2)
}

fn cr(c: Credits) -> String {
    format!("{:.0}", c.micros() as f64 / 1e6)
}

/// Every check. `received`: every POST the callback receivers got.
pub fn all(
    args: &Args,
    book: &Book,
    oracle: &Oracle,
    sim: &SimHandle,
    received: &[Received],
    samples: &Samples,
    logs: &[String],
) -> Vec<Row> {
    let mut rows = Vec::new();
    let jobs = book.jobs.len();
    let unfinished: Vec<&String> = book.jobs.keys().filter(|id| !book.outcomes.contains_key(*id)).collect();
    rows.push(row(
        "every job finished",
        format!(
            "{} of {jobs} ({} cancelled)",
            jobs - unfinished.len(),
            book.outcomes.values().filter(|o| o.status == "cancelled").count()
        ),
        "all",
        unfinished.is_empty() && jobs > 0,
    ));
    let compared: usize = book.outcomes.values().map(|o| o.compared).sum();
    let people: usize = book.outcomes.values().map(|o| o.people.len()).sum();
    let record_problems = book.problems.iter().filter(|p| p.contains(" person ")).count();
    rows.push(row(
        "every record equals Apollo's answers and deliveries",
        format!("{compared} records compared of {people} people; {record_problems} wrong"),
        "0 wrong",
        record_problems == 0 && compared > 0,
    ));

    // Credits: the simulator's ledger, attributed by person to clients, against the service.
    let (ledger, unattributed, splits) = oracle.charges(sim, Who::of_email);
    let (by_tag, _, _) = oracle.charges(sim, |e| job_tag(e).map(str::to_string));
    // Each split charge may be rounded apart from the service's by a micro-credit per job.
    let tolerance = splits as i64;
    let mut service: BTreeMap<Who, (Credits, Credits, i64)> = BTreeMap::new();
    for (id, o) in &book.outcomes {
        let Some(j) = book.jobs.get(id) else { continue };
        let e = service.entry(j.who).or_default();
        e.0 += o.credits;
        e.1 += o.double_charge_credits;
        e.2 += o.double_charges;
    }
    let mut credit_lines = Vec::new();
    let mut credits_ok = true;
    for w in Who::ALL {
        let l = ledger.get(&w).copied().unwrap_or_default();
        let (s, pdc, n) = service.get(&w).copied().unwrap_or_default();
        let extra = Credits(l.micros() - s.micros());
        let ok = extra.micros() >= -tolerance
            && extra.micros() <= pdc.micros() + tolerance
            && (n == 0 || !book.kills.is_empty());
        credits_ok &= ok;
        credit_lines.push(format!(
            "{}: ledger {} = service {} + {} (possible double charges reported: {n}, {})",
            w.name(),
            cr(l),
            cr(s),
            cr(extra),
            cr(pdc)
        ));
    }
    if !credits_ok {
        // Where it went wrong: the jobs (by the tag their people share) charged beyond what the
        // service booked and reported.
        let mut per_tag: HashMap<String, (Credits, Credits, Vec<String>)> = HashMap::new();
        for (id, o) in &book.outcomes {
            let Some(tag) = book.jobs.get(id).and_then(|j| j.emails.first()).and_then(|e| job_tag(e)) else { continue };
            let e = per_tag.entry(tag.to_string()).or_default();
            e.0 += o.credits;
            e.1 += o.double_charge_credits;
            e.2.push(format!("{id} {} {:?}", o.status, o.states));
        }
        let mut off: Vec<String> = per_tag
            .iter()
            .filter_map(|(tag, (s, pdc, jobs))| {
                let l = by_tag.get(tag).copied().unwrap_or_default();
                let extra = l.micros() - s.micros();
                (extra < -tolerance || extra > pdc.micros() + tolerance).then(|| {
                    format!("{tag}: ledger {} service {} reported {} [{}]", cr(l), cr(*s), cr(*pdc), jobs.join("; "))
                })
            })
            .collect();
        off.extend(
            by_tag
                .iter()
                .filter(|(tag, c)| !per_tag.contains_key(*tag) && c.micros() > tolerance)
                .map(|(tag, c)| format!("{tag}: ledger {} and no checked job", cr(*c))),
        );
        off.sort();
        credit_lines.push(format!("jobs off: {}", off.join(" | ")));
    }
    let sabotage_extra = unattributed.micros().abs() > tolerance;
    rows.push(row(
        "each client's credits = ledger − reported possible double charges",
        format!("{}; not any client's: {}", credit_lines.join("; "), cr(unattributed)),
        "0 ≤ ledger − service ≤ reported amount; reported ones only after SIGKILLs or ambiguous answers (502, timeouts); nothing unattributed",
        credits_ok && !sabotage_extra,
    ));

    // Sent twice: a person in two answered calls of its batch (a batch split to find a refused
    // detail makes several calls, each person in one of them).
    let mut answered: BTreeMap<(&str, &str), Vec<SystemTime>> = BTreeMap::new();
    for c in oracle.calls.iter().filter(|c| c.status == 200) {
        // The pause's probe names no batch (the nil id) and no job's person.
        if let Some(b) = c.batch.as_ref().filter(|b| !b.starts_with("00000000-0000-0000-0000-000000000000")) {
            for e in &c.emails {
                answered.entry((b.as_str(), e.as_str())).or_default().push(c.at);
            }
        }
    }
    let twice: Vec<(&(&str, &str), &Vec<SystemTime>)> = answered.iter().filter(|(_, at)| at.len() > 1).collect();
    let since = |t: SystemTime| t.duration_since(book.started_at).unwrap_or_default().as_secs_f64();
    let unexplained: Vec<String> = twice
        .iter()
        .filter(|(_, at)| !near_kill(book, at[0]))
        .map(|((batch, _), at)| format!("batch {batch} at {:.0} s and {:.0} s", since(at[0]), since(at[1])))
        .collect();
    // People of the budget and heavy clients are each in one job: sent once.
    let mut resent = 0;
    for (email, sends) in &oracle.sent {
        if job_tag(email).is_some() && sends.len() > 1 && !sends.iter().any(|s| near_kill(book, s.at)) {
            resent += 1;
        }
    }
    rows.push(row(
        "no person sent twice except after a SIGKILL",
        format!(
            "{} people sent twice in their batch ({} not after a SIGKILL {}); {resent} one-job people sent twice",
            twice.len(),
            unexplained.len(),
            unexplained.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ),
        "0 not after a SIGKILL",
        unexplained.is_empty() && resent == 0,
    ));

    // Callbacks and events: one successful delivery per webhook id, every job and person covered.
    let ok: Vec<&Received> = received.iter().filter(|r| (200..300).contains(&r.answered)).collect();
    let unsigned = received.iter().filter(|r| !r.verified).count();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    let mut job_done: HashMap<String, usize> = HashMap::new();
    let mut person_done: HashMap<String, usize> = HashMap::new();
    for r in &ok {
        *per_id.entry(r.id.as_str()).or_default() += 1;
    }
    let mut seen_ids: BTreeSet<&str> = BTreeSet::new();
    for r in &ok {
        if !seen_ids.insert(r.id.as_str()) {
            continue;
        }
        let body: Value = r.json();
        match body["type"].as_str() {
            Some("job.completed") => {
                *job_done.entry(body["data"]["id"].as_str().unwrap_or("").to_string()).or_default() += 1
            }
            Some("person.completed") => {
                for p in body["data"]["people"].as_array().into_iter().flatten() {
                    *person_done.entry(p["id"].as_str().unwrap_or("").to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let twice_delivered = per_id.values().filter(|n| **n > 1).count();
    let with_callback: Vec<&String> = book.jobs.values().filter(|j| j.callback).map(|j| &j.id).collect();
    let missing_jobs = with_callback.iter().filter(|id| job_done.get(id.as_str()).copied().unwrap_or(0) != 1).count();
    let mut people_expected = 0;
    let mut people_wrong = 0;
    for j in book.jobs.values().filter(|j| j.events && j.callback) {
        for p in book.outcomes.get(&j.id).map(|o| o.people.as_slice()).unwrap_or(&[]) {
            people_expected += 1;
            people_wrong += usize::from(person_done.get(p).copied().unwrap_or(0) != 1);
        }
    }
    rows.push(row(
        "every callback and event delivered once per id",
        format!(
            "{} POSTs, {} ids delivered, {twice_delivered} delivered twice, {unsigned} unsigned; {} of {} jobs' job.completed missing or twice; {people_wrong} of {people_expected} people not in exactly one person.completed",
            received.len(), per_id.len(), missing_jobs, with_callback.len()
        ),
        "0 twice, 0 missing",
        twice_delivered == 0 && missing_jobs == 0 && people_wrong == 0 && unsigned == 0,
    ));

    // 429s the service drew (outside the storms and pauses caused on purpose).
    let bulk: Vec<_> = oracle.calls.iter().filter(|c| in_window(book, c.at).is_none()).collect();
    let limited = bulk.iter().filter(|c| c.status == 429).count();
    let share = limited as f64 / bulk.len().max(1) as f64;
    let statuses: BTreeMap<u16, usize> = oracle.calls.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.status).or_default() += 1;
        m
    });
    rows.push(row(
        "429s ≤ 0.5 % of calls (outside the storm and the pause)",
        format!("{limited} of {} ({:.3} %); all calls by status {statuses:?}", bulk.len(), share * 100.0),
        "≤ 0.5 %",
        share <= 0.005,
    ));
    for what in ["rate storm", "credits exhausted"] {
        let Some((from, to, _)) = book.windows.iter().find(|w| w.2 == what) else { continue };
        let inside: Vec<_> = oracle.calls.iter().filter(|c| *from <= c.at && c.at <= *to).collect();
        let refused = inside.iter().filter(|c| matches!(c.status, 429 | 422)).count();
        let secs = to.duration_since(*from).unwrap_or_default().as_secs_f64();
        // Shared: after the first refusal every replica waits (the window's reset, or the pause's
        // probe every 2.5 s): about one refused call per 2.5 s, plus the calls already in flight.
        let bound = (secs / 2.5).ceil() as usize + 4 * crate::plan::REPLICAS * 2;
        rows.push(row(
            &format!("a {what} seen by one replica stops the others"),
            format!("{refused} refused of {} calls in {secs:.0} s", inside.len()),
            &format!("≤ {bound} refused"),
            refused <= bound,
        ));
    }

    // Budgets: each budget job's charges within its budget (plus what it reports as possibly double).
    let mut over = Vec::new();
    let mut budgeted = 0;
    for (id, j) in book.jobs.iter().filter(|(_, j)| j.who == Who::Budget && j.retry_of.is_none()) {
        let Some(tag) = j.emails.first().and_then(|e| job_tag(e)) else { continue };
        let Some(max) = j.max_credits else { continue };
        budgeted += 1;
        let spent = by_tag.get(tag).copied().unwrap_or_default();
        let spent = Credits(spent.micros() - tolerance.min(spent.micros()));
        let outcome = book.outcomes.get(id);
        let pdc = outcome.map(|o| o.double_charge_credits).unwrap_or_default();
        if spent.micros() as f64 / 1e6 > max + pdc.micros() as f64 / 1e6 + 1e-6 {
            let booked = outcome.map(|o| cr(o.credits)).unwrap_or_default();
            over.push(format!("{id}: {} > {max} (the service booked {booked})", cr(spent)));
        }
    }
    let skipped: usize = book.outcomes.values().map(|o| o.states.get("skipped_budget").copied().unwrap_or(0)).sum();
    rows.push(row(
        "a job's budget holds while three replicas claim its people",
        format!(
            "{budgeted} budgeted jobs, {} over ({skipped} people skipped for budget) {}",
            over.len(),
            over.join(", ")
        ),
        "0 over",
        over.is_empty() && budgeted > 0,
    ));

    // Reuse: no person of the reuse client looked up twice inside the window.
    let window = args.reuse_window();
    let (mut lookups, mut again, mut inside) = (0, 0, Vec::new());
    for (email, sends) in oracle.sent.iter().filter(|(e, _)| Who::of_email(e) == Some(Who::Reuse)) {
        let mut at: Vec<SystemTime> = sends.iter().filter(|s| s.apollo_id.is_some()).map(|s| s.at).collect();
        at.sort();
        lookups += at.len();
        for pair in at.windows(2) {
            again += 1;
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            if gap + Duration::from_secs(2) < window && !near_kill(book, pair[0]) {
                inside.push(format!("{email} after {:.1} s", gap.as_secs_f64()));
            }
        }
    }
    let reused: usize = book.outcomes.values().map(|o| o.reused).sum();
    rows.push(row(
        "no person looked up twice inside a reuse window across replicas",
        format!(
            "{lookups} lookups, {reused} people reused, {again} looked up again, {} inside the window {}",
            inside.len(),
            inside.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ),
        &format!("0 inside {} s", window.as_secs()),
        inside.is_empty() && reused > 0,
    ));

    // The daily cap, per client and UTC day of the jobs' creation (as the service counts it). A
    // client within the cap over the whole run is within it every day; one over it is split by
    // day, which the clients whose people carry their job's tag allow.
    let cap = Credits::whole(args.daily_cap() as i64);
    let mut cap_lines = Vec::new();
    let mut cap_ok = true;
    for w in Who::ALL {
        let l = ledger.get(&w).copied().unwrap_or_default();
        let pdc = service.get(&w).map(|s| s.1).unwrap_or_default();
        let within = |c: Credits| c.micros() <= cap.micros() + pdc.micros() + tolerance;
        if within(l) {
            cap_lines.push(format!("{} {}", w.name(), cr(l)));
            continue;
        }
        let days = per_creation_day(book, &by_tag, w);
        cap_ok &= !days.is_empty() && days.values().all(|c| within(*c));
        let split: Vec<String> = days.iter().map(|(d, c)| format!("{d}: {}", cr(*c))).collect();
        cap_lines.push(format!("{} {} ({})", w.name(), cr(l), split.join(", ")));
    }
    let capped: Vec<String> = book
        .refused
        .iter()
        .filter(|(what, _)| what.ends_with("429 daily_credit_cap_reached") || what.ends_with("429 retry"))
        .map(|(what, n)| format!("{} {n}", what.split(' ').next().unwrap_or("")))
        .collect();
    rows.push(row(
        "the daily cap holds under concurrent submits",
        format!("charged: {}; jobs refused at the cap: {}", cap_lines.join(", "), capped.join(", ")),
        &format!("≤ {} each", cr(cap)),
        cap_ok,
    ));

    // Never sent: dry runs, and suppressed people after their suppression (a claim in flight aside).
    let dry_sent = book.dry_emails.iter().filter(|e| oracle.sent.contains_key(*e)).count();
    let mut late = 0;
    for (email, since) in &book.suppressed {
        late += oracle.sent.get(email).into_iter().flatten().filter(|s| s.at > *since + LEASE).count();
    }
    rows.push(row(
        "dry runs and suppressed people never sent",
        format!(
            "{dry_sent} of {} dry-run people sent; {late} sends of {} suppressed people after their suppression",
            book.dry_emails.len(),
            book.suppressed.len()
        ),
        "0",
        dry_sent == 0 && late == 0,
    ));

    // SIGTERM: every deploy exits cleanly.
    let slow = book.shutdowns.iter().filter(|(s, ok)| !ok || *s > 30.0).count();
    let longest = book.shutdowns.iter().map(|s| s.0).fold(0.0, f64::max);
    rows.push(row(
        "every SIGTERM exits 0 within 30 s",
        format!("{} shutdowns, longest {longest:.2} s, {slow} not clean", book.shutdowns.len()),
        "0 not clean",
        slow == 0,
    ));

    // Memory after warm-up. A process that lives half an hour or more is judged by its fitted
    // slope, Theil–Sen so that one step up to a plateau is not read as a leak. The restarted
    // replicas' processes live about 15 minutes (a deploy every 15): still warming up, they are
    // judged against the steady state the long-lived replica reached.
    let trends: Vec<_> = (0..logs.len()).map(|i| memory_trend(&samples.rss, i)).collect();
    let steady = (0..logs.len())
        .filter(|i| trends[*i].is_some_and(|t| t.hours >= 0.5))
        .filter_map(|i| memory_peak(&samples.rss, i))
        .reduce(f64::max);
    for (i, trend) in trends.iter().enumerate() {
        let Some(t) = *trend else { continue };
        let growth = t.per_hour * t.hours;
        let allowed = (16.0 * t.hours).max(8.0);
        let judged = t.hours * 60.0 >= 10.0;
        let short = t.hours < 0.5;
        let pass = match (judged, short, steady) {
            (false, _, _) => true,
            (true, true, Some(level)) => growth <= allowed || t.last <= level + 8.0,
            (true, _, _) => growth <= allowed,
        };
        rows.push(row(
            &format!("replica {i}: resident memory flat after warm-up (its longest-lived process)"),
            format!(
                "{:.0} → {:.0} MiB over {:.0} min; Theil–Sen slope {:+.1} MiB/h ({growth:+.1} MiB), least squares {:+.1} MiB/h{}",
                t.first,
                t.last,
                t.hours * 60.0,
                t.per_hour,
                t.least_squares,
                match (judged, short, steady) {
                    (false, _, _) => "; under 10 min after warm-up: reported, not judged".to_string(),
                    (true, true, Some(level)) => format!("; the long-lived replica's steady state: {level:.0} MiB"),
                    _ => String::new(),
                }
            ),
            "spans of 30 min or more: Theil–Sen growth ≤ 16 MiB/h × span, at least 8 MiB; shorter ones (10–30 min): that, or at most 8 MiB over the steady state of a replica that lived 30 min or more",
            pass,
        ));
    }

    // The database with retention on: the last third no bigger than the middle third's peak
    // by more than a quarter.
    let end = samples.db.last().map_or(0.0, |d| d.0);
    let peak =
        |from: f64, to: f64| samples.db.iter().filter(|d| d.0 >= from && d.0 < to).map(|d| d.1).max().unwrap_or(0);
    let (middle, last) = (peak(end / 3.0, 2.0 * end / 3.0), peak(2.0 * end / 3.0, f64::INFINITY));
    rows.push(row(
        "database size bounded with retention on",
        format!(
            "peak {:.1} MiB in the middle third, {:.1} MiB in the last; {} of {} checked jobs purged by the end (kept {})",
            middle as f64 / 1048576.0,
            last as f64 / 1048576.0,
            book.purged,
            book.outcomes.len(),
            match args.sabotage {
                Some(Sabotage::NoRetention) => "forever".to_string(),
                _ => format!("{} s", args.retention().as_secs()),
            }
        ),
        "last ≤ 1.25 × middle + 8 MiB; some jobs purged",
        book.purged > 0 && (last as f64) <= 1.25 * middle as f64 + 8.0 * 1048576.0,
    ));

    // Logs: no panic; every error line inside a fault window the run caused.
    let mut panics = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut explained = 0;
    for log in logs {
        for line in log.lines() {
            if line.contains("panicked") {
                panics += 1;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            if v["level"] != "ERROR" {
                continue;
            }
            let at = v["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(SystemTime::from);
            if at.is_some_and(|at| caused(book, at)) {
                explained += 1;
            } else {
                let message = v["fields"]["message"].as_str().or(v["message"].as_str()).unwrap_or("?").to_string();
                *errors.entry(message).or_default() += 1;
            }
        }
    }
    rows.push(row(
        "no panic, no error line the run did not cause",
        format!("{panics} panics; {explained} error lines during faults caused on purpose; others: {errors:?}"),
        "0 panics, 0 others",
        panics == 0 && errors.is_empty(),
    ));
    let others: Vec<&String> = book.problems.iter().filter(|p| !p.contains(" person ")).collect();
    rows.push(row(
        "the API answered as documented",
        format!(
            "{} bodies with a bad row refused as they should be; {} other problems {}",
            book.bad_refused,
            others.len(),
            others.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
        ),
        "0 problems",
        others.is_empty(),
    ));
    rows
}

/// Whether an error logged at `at` falls in a fault the run caused: a database outage, a crash, a
/// deploy, or Apollo's credits running out (from 5 s before to 60 s after the timeline says it
/// began or ended).
fn caused(book: &Book, at: SystemTime) -> bool {
    let faults = ["PostgreSQL", "SIGKILL", "SIGTERM", "Apollo's credits exhausted", "Apollo's credits back"];
    book.timeline.iter().filter(|(_, what)| faults.iter().any(|f| what.starts_with(f))).any(|(since, _)| {
        let t = book.started_at + *since;
        t <= at + Duration::from_secs(5) && at <= t + Duration::from_secs(60)
    })
}

/// A client's charges by the UTC day its jobs were created (each job tag's charges on the day of
/// the first job with that tag: a retry counts where its original does); empty for a client
/// whose people carry no job tag.
fn per_creation_day(book: &Book, by_tag: &HashMap<String, Credits>, who: Who) -> BTreeMap<chrono::NaiveDate, Credits> {
    let mut created: HashMap<&str, chrono::NaiveDate> = HashMap::new();
    for j in book.jobs.values().filter(|j| j.who == who) {
        let (Some(tag), Some(day)) = (j.emails.first().and_then(|e| job_tag(e)), created_day(&j.id)) else {
            continue;
        };
        created.entry(tag).and_modify(|d| *d = (*d).min(day)).or_insert(day);
    }
    let mut days: BTreeMap<chrono::NaiveDate, Credits> = BTreeMap::new();
    for (tag, day) in created {
        *days.entry(day).or_default() += by_tag.get(tag).copied().unwrap_or_default();
    }
    days
}

/// The UTC day of a job id (a UUIDv7: its first 48 bits are Unix milliseconds).
fn created_day(id: &str) -> Option<chrono::NaiveDate> {
    let (secs, _) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0).map(|t| t.date_naive())
}

#[cfg(test)]
mod tests {
    use super::created_day;

    #[test]
    fn a_job_ids_day_is_its_uuid_v7_time() {
        // 0x01a24da2974f ms = 2026-12-06T23:13:50.927Z.
        let day = created_day("01a24da2-974f-774f-a10e-7daec87d7903").unwrap();
        assert_eq!(day, chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap());
        assert_eq!(created_day("not a uuid"), None);
    }
}
