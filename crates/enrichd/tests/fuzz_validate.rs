//! Property test of the job-input validator. Jobs are generated from a model that knows, by the
//! rule docs/DESIGN.md §5 states (not by calling the service's code), which people and job fields are
//! valid and what each cleaned person must hold: every accepted job must carry every fact of its
//! input, and every refused one must name exactly the bad people and fields. Then random JSON
//! mutations of those bodies must never panic and keep the problems pointing inside the body.
//!
//! CI runs fixed seeds and a fixed number of cases; `scripts/fuzz.sh` runs it for `FUZZ_SECONDS`
//! from a random seed (printed; `FUZZ_SEED` replays it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use enrichd::core::callback_url::CallbackPolicy;
use enrichd::core::validate::{Refused, validate_job, validate_job_bytes};
use enrichd::models::Problem;
use rules::PersonField;
use serde_json::{Map, Value, json};

const MAX_PEOPLE: usize = 8;
/// Cases per fixed seed in CI.
const CI_CASES: u64 = 3_000;
const CI_SEEDS: [u64; 3] = [16, 10_016, 0x5eed];

/// One generated person field: what is sent and what the cleaned person must hold (`None`: absent).
struct Field {
    key: &'static str,
    sent: Value,
    kept: Option<Value>,
    /// Whether the validator must refuse this value (wrong type, too long, malformed).
    bad: bool,
}

fn pad(rng: &mut fastrand::Rng, s: &str) -> String {
    let ws = [" ", "  ", "\t", ""];
    format!("{}{s}{}", ws[rng.usize(..ws.len())], ws[rng.usize(..ws.len())])
}

fn word(rng: &mut fastrand::Rng) -> String {
    (0..rng.usize(3..9)).map(|_| rng.lowercase()).collect()
}

/// A value for `key`: well formed (usable), blank (dropped), or malformed (refused).
fn field(rng: &mut fastrand::Rng, key: &'static str) -> Field {
    let good = |v: String| Field { key, sent: json!(v.clone()), kept: Some(json!(v.trim())), bad: false };
    match rng.u8(..10) {
        0 => Field { key, sent: Value::Null, kept: None, bad: false },
        1 => Field { key, sent: json!(pad(rng, "")), kept: None, bad: false },
        2 if key == "external_id" => {
            let n = rng.u32(..);
            Field { key, sent: json!(n), kept: Some(json!(n.to_string())), bad: false }
        }
        2 => Field { key, sent: json!(rng.i64(..)), kept: None, bad: true },
        3 => Field { key, sent: json!("y".repeat(rng.usize(513..700))), kept: None, bad: true },
        4 => {
            let malformed = match key {
                "email" => Some(word(rng)),
                "hashed_email" => Some(format!("{}z", "a".repeat(31))),
                "linkedin_url" => Some(format!("https://example.com/in/{}", word(rng))),
                _ => None,
            };
            match malformed {
                Some(v) => Field { key, sent: json!(pad(rng, &v)), kept: None, bad: true },
                None => Field { key, sent: json!([1]), kept: None, bad: true },
            }
        }
        _ => {
            let v = match key {
                "email" => format!("{}.{}@{}.io", word(rng), word(rng), word(rng)),
                "hashed_email" => (0..if rng.bool() { 32 } else { 64 }).map(|_| hex(rng)).collect(),
                "linkedin_url" => format!("https://www.linkedin.com/in/{}-{}", word(rng), rng.u16(..)),
                "domain" => format!("{}.com", word(rng)),
                "id" => (0..24).map(|_| hex(rng)).collect(),
                "external_id" => format!("crm-{}", rng.u32(..)),
                "name" => format!("{} {}", word(rng), word(rng)),
                _ => format!("{} Ünïcødé", word(rng)),
            };
            let sent = pad(rng, &v);
            Field { key, sent: json!(sent), ..good(v) }
        }
    }
}

/// A person as sent, the cleaned person the validator must return, and whether it must be refused.
fn person(rng: &mut fastrand::Rng) -> (Value, Value, bool) {
    if rng.u8(..25) == 0 {
        return (json!(rng.i32(..)), Value::Null, true);
    }
    let mut keys: Vec<&'static str> = PersonField::names().collect();
    rng.shuffle(&mut keys);
    let fields: Vec<Field> = keys.into_iter().take(rng.usize(1..6)).map(|k| field(rng, k)).collect();
    let mut sent = Map::new();
    let mut kept = Map::new();
    let mut bad = false;
    for f in fields {
        bad |= f.bad;
        if let Some(v) = f.kept {
            kept.insert(f.key.to_string(), v);
        }
        sent.insert(f.key.to_string(), f.sent);
    }
    if rng.u8(..20) == 0 {
        sent.insert("title".into(), json!("CTO"));
        bad = true;
    }
    // docs/DESIGN.md §5: email, hashed_email, linkedin_url, id, or a name with domain or organization.
    let has = |k: &str| kept.contains_key(k);
    let named = (has("first_name") && has("last_name")) || has("name");
    let usable = ["email", "hashed_email", "linkedin_url", "id"].iter().any(|k| has(k))
        || (named && (has("domain") || has("organization_name")));
    (Value::Object(sent), Value::Object(kept), bad || !usable)
}

/// A job body, the people it must be cleaned to, and the problems it must get: the indexes of
/// bad people and the job-level fields at fault.
struct Case {
    body: Value,
    people: Vec<Value>,
    bad_people: BTreeSet<usize>,
    bad_fields: BTreeSet<String>,
}

fn case(rng: &mut fastrand::Rng) -> Case {
    let mut body = Map::new();
    let (mut people, mut bad_people, mut bad_fields) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    let n = match rng.u8(..20) {
        0 => 0,
        1 => MAX_PEOPLE + 1,
        _ => rng.usize(1..=MAX_PEOPLE),
    };
    let mut sent = Vec::new();
    for i in 0..n {
        // Mostly good people, so whole jobs pass often enough.
        let (s, kept, bad) = if rng.u8(..3) == 0 {
            person(rng)
        } else {
            let email = format!("{}@{}.com", word(rng), word(rng));
            (json!({"email": pad(rng, &email)}), json!({"email": email}), false)
        };
        if bad {
            bad_people.insert(i);
        }
        sent.push(s);
        people.push(kept);
    }
    if n == 0 || n > MAX_PEOPLE {
        bad_fields.insert("people".to_string());
        bad_people.clear();
    }
    body.insert("people".into(), Value::Array(sent));
    for flag in ["reveal_personal_emails", "reveal_phone_number", "run_waterfall_email", "run_waterfall_phone"] {
        match rng.u8(..8) {
            0 => {
                body.insert(flag.into(), json!("yes"));
                bad_fields.insert(flag.into());
            }
            1..=3 => {}
            _ => {
                body.insert(flag.into(), json!(rng.bool()));
            }
        }
    }
    match rng.u8(..6) {
        0 => {
            body.insert("callback_url".into(), json!("https://127.0.0.1/x"));
            bad_fields.insert("callback_url".into());
        }
        1 => {
            body.insert("callback_url".into(), json!("http://hooks.example.com/x"));
            bad_fields.insert("callback_url".into());
        }
        2 => {
            body.insert("callback_url".into(), json!(format!("https://hooks.example.com/{}", word(rng))));
        }
        _ => {}
    }
    match rng.u8(..8) {
        0 => {
            body.insert("metadata".into(), json!([1]));
            bad_fields.insert("metadata".into());
        }
        1 | 2 => {
            body.insert("metadata".into(), json!({"k": rng.u32(..), "tag": word(rng)}));
        }
        _ => {}
    }
    if rng.u8(..15) == 0 {
        body.insert("surprise".into(), json!(1));
        bad_fields.insert("surprise".into());
    }
    Case { body: Value::Object(body), people, bad_people, bad_fields }
}

/// Problems must point inside the body: person indexes in range, in input order.
fn check_problem_shape(problems: &[Problem], n: usize, body: &Value) {
    assert!(!problems.is_empty(), "{body}");
    for p in problems {
        assert!(!p.message.is_empty(), "{p:?}");
        if let Some(i) = p.index {
            assert!(i < n, "index {i} outside {n} people: {p:?}");
            assert!(p.field.starts_with(&format!("people[{i}]")), "{p:?}");
        }
    }
    let indexes: Vec<usize> = problems.iter().filter_map(|p| p.index).collect();
    assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "problems in input order: {indexes:?}");
}

/// Checks one generated case against its model; returns whether it was accepted.
fn check_case(c: &Case, policy: &CallbackPolicy) -> bool {
    let b = &c.body;
    let n = b["people"].as_array().map_or(0, Vec::len);
    match validate_job(b, MAX_PEOPLE, policy) {
        Ok(job) => {
            assert!(c.bad_people.is_empty() && c.bad_fields.is_empty(), "accepted a bad job: {b:#}");
            // Every fact of the input is in the cleaned job, and nothing else.
            assert_eq!(job.people, c.people, "{b:#}");
            for flag in apollo_client::Flag::ALL {
                let got = job.flags.get(flag);
                assert_eq!(got, b[flag.name()].as_bool().unwrap_or(false), "{} of {b:#}", flag.name());
            }
            assert_eq!(job.callback_url.as_deref(), b["callback_url"].as_str(), "{b:#}");
            assert_eq!(job.metadata.as_ref(), b.get("metadata"), "{b:#}");
            true
        }
        Err(problems) => {
            check_problem_shape(&problems, n, b);
            let people: BTreeSet<usize> = problems.iter().filter_map(|p| p.index).collect();
            let fields: BTreeSet<String> =
                problems.iter().filter(|p| p.index.is_none()).map(|p| p.field.clone()).collect();
            assert_eq!(people, c.bad_people, "the people named: {problems:#?} for {b:#}");
            assert_eq!(fields, c.bad_fields, "the job fields named: {problems:#?} for {b:#}");
            false
        }
    }
}

/// A random JSON value, for mutations.
fn junk(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..7) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!([word(rng)]),
        4 => json!({"k": word(rng)}),
        5 => json!("\u{0}漢字"),
        _ => {
            let w = word(rng);
            json!(pad(rng, &w))
        }
    }
}

/// Replaces, removes or adds one value somewhere in `v`.
fn mutate(rng: &mut fastrand::Rng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.u8(..3) != 0 => {
            let key = m.keys().nth(rng.usize(..m.len())).cloned().expect("a key");
            match rng.u8(..3) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(key, junk(rng));
                }
                _ => mutate(rng, m.get_mut(&key).expect("the key")),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.bool() => {
            let i = rng.usize(..a.len());
            mutate(rng, &mut a[i]);
        }
        Value::Object(m) => {
            m.insert(word(rng), junk(rng));
        }
        other => *other = junk(rng),
    }
}

fn check_mutated(body: &Value, policy: &CallbackPolicy) {
    let n = body["people"].as_array().map_or(0, Vec::len);
    match validate_job(body, MAX_PEOPLE, policy) {
        Ok(job) => {
            assert_eq!(job.people.len(), n, "{body}");
            assert!(job.people.iter().all(|p| p.input().as_object().is_some_and(|o| !o.is_empty())), "{body}");
        }
        Err(problems) => check_problem_shape(&problems, n, body),
    }
}

/// Runs `cases` cases from `seed`, or until `until`; returns (accepted, refused).
fn run(seed: u64, cases: Option<u64>, until: Option<Instant>) -> (u64, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let policy = CallbackPolicy::default();
    let (mut accepted, mut refused, mut done) = (0, 0, 0);
    while cases.is_none_or(|n| done < n) && until.is_none_or(|t| Instant::now() < t) {
        let c = case(&mut rng);
        if check_case(&c, &policy) {
            accepted += 1;
        } else {
            refused += 1;
        }
        let mut body = c.body;
        for _ in 0..rng.usize(1..4) {
            mutate(&mut rng, &mut body);
        }
        check_mutated(&body, &policy);
        done += 1;
    }
    (accepted, refused)
}

#[test]
fn generated_jobs_keep_every_fact_and_name_every_problem() {
    let secs: Option<f64> = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok());
    let replay: Option<u64> = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok());
    let (accepted, refused) = match (secs, replay) {
        (Some(secs), seed) => {
            let seed = seed.unwrap_or_else(|| fastrand::u64(..));
            eprintln!("fuzz seed {seed} for {secs} s (replay with FUZZ_SEED={seed})");
            run(seed, None, Some(Instant::now() + Duration::from_secs_f64(secs)))
        }
        (None, Some(seed)) => run(seed, Some(CI_CASES), None),
        (None, None) => {
            CI_SEEDS.iter().map(|&s| run(s, Some(CI_CASES), None)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        }
    };
    eprintln!("{accepted} accepted, {refused} refused");
    assert!(accepted > 10 && refused > 10, "the generator must reach both outcomes");
}

fn hex(rng: &mut fastrand::Rng) -> char {
    char::from_digit(rng.u32(..16), 16).expect("a hex digit")
}

/// The API reads a body from its bytes; the dashboard from a decoded value: the same answer for
/// every generated job and every mutation of it.
#[test]
fn bytes_and_decoded_bodies_agree_on_generated_jobs() {
    let mut rng = fastrand::Rng::with_seed(CI_SEEDS[0]);
    let policy = CallbackPolicy::default();
    let (mut compared, mut accepted) = (0, 0);
    let mut agree = |body: &Value| {
        let bytes = serde_json::to_vec(body).expect("JSON");
        let reference = validate_job(body, MAX_PEOPLE, &policy);
        match (validate_job_bytes(&bytes, MAX_PEOPLE, &policy), &reference) {
            (Ok(read), Ok(reference)) => assert_eq!(&read, reference, "{body:#}"),
            (Err(Refused::Invalid(read)), Err(reference)) => assert_eq!(&read, reference, "{body:#}"),
            (read, reference) => panic!("{body:#}: {read:?} against {reference:?}"),
        }
        compared += 1;
        accepted += u64::from(reference.is_ok());
    };
    for _ in 0..CI_CASES {
        let mut body = case(&mut rng).body;
        agree(&body);
        for _ in 0..rng.usize(1..4) {
            mutate(&mut rng, &mut body);
        }
        agree(&body);
    }
    eprintln!("{compared} compared, {accepted} accepted");
    assert!(accepted > 10 && compared > accepted, "the generator must reach both");
}
