//! Property test of the delivery parser. Structured deliveries are generated from known facts
//! (people, their phones with type and status, their emails with status and the vendor that found
//! them), written in Apollo's shapes with random spellings, order and extra keys: every fact must
//! come out of the parser as it went in, by this file's own reckoning. Then random JSON and
//! byte-level mutations of the real examples must never panic and keep the invariants.
//!
//! CI runs a fixed seed and a fixed number of cases; `scripts/fuzz.sh` runs each target for
//! `FUZZ_SECONDS` from a random seed (printed; `FUZZ_SEED` replays it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apollo_client::{BulkMatchResponse, Credits, DeliveryKind, RequestId, is_placeholder_email, parse_delivery};
use serde_json::{Map, Value, json};

/// Cases of each target in CI (fixed seed).
const CI_CASES: u64 = 3_000;
const CI_SEED: u64 = 16;

/// A fixed number of cases from a fixed seed, or (`FUZZ_SECONDS`) a time budget from a random one.
struct Budget {
    seed: u64,
    cases: Option<u64>,
    until: Option<Instant>,
}

impl Budget {
    fn more(&self, done: u64) -> bool {
        self.cases.is_none_or(|n| done < n) && self.until.is_none_or(|t| Instant::now() < t)
    }
}

fn budget() -> Budget {
    let secs: Option<f64> = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok());
    let replay: Option<u64> = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok());
    match secs {
        Some(secs) => {
            let seed = replay.unwrap_or_else(|| fastrand::u64(..));
            eprintln!("fuzz seed {seed} for {secs} s (replay with FUZZ_SEED={seed})");
            Budget { seed, cases: None, until: Some(Instant::now() + Duration::from_secs_f64(secs)) }
        }
        None => Budget { seed: replay.unwrap_or(CI_SEED), cases: Some(CI_CASES), until: None },
    }
}

/// A phone as generated: its E.164 form (built from the digits, not parsed), how it is written.
#[derive(Clone, Debug)]
struct Phone {
    e164: String,
    raw: String,
    sanitized: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    vendor: Option<String>,
}

/// An email as generated: the lower-case address, how it is written, status and vendor.
#[derive(Clone, Debug)]
struct Email {
    address: String,
    written: String,
    status: Option<String>,
    vendor: Option<String>,
    /// The vendor is given only as `third_party_data_provider_id`, not in the trail.
    provider_only: bool,
}

#[derive(Clone, Debug)]
struct Person {
    id: String,
    phones: Vec<Phone>,
    emails: Vec<Email>,
}

const VENDORS: &[&str] = &["MailScout", "Prospectly", "Clearbridge", "DialSource", "RingWise"];

fn digits(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.u8(..10))).collect()
}

fn phone(rng: &mut fastrand::Rng, waterfall: bool) -> Phone {
    let (e164, raw) = if rng.u8(..4) == 0 {
        let national = format!("20{}", digits(rng, 8));
        let raw = match rng.u8(..2) {
            0 => format!("+44 {} {} {}", &national[..2], &national[2..6], &national[6..]),
            _ => format!("0044{national}"),
        };
        (format!("+44{national}"), raw)
    } else {
        let (a, e, l) = (format!("{}", rng.u16(200..1000)), format!("{}", rng.u16(200..1000)), digits(rng, 4));
        let raw = match rng.u8(..4) {
            0 => format!("+1 {a}-{e}-{l}"),
            1 => format!("({a}) {e}-{l}"),
            2 => format!("{a}.{e}.{l}"),
            _ => format!("1 {a} {e} {l}"),
        };
        (format!("+1{a}{e}{l}"), raw)
    };
    let pick = |rng: &mut fastrand::Rng, options: &[&str]| {
        (rng.u8(..4) != 0).then(|| options[rng.usize(..options.len())].to_string())
    };
    Phone {
        sanitized: rng.bool().then(|| e164.clone()),
        e164,
        raw,
        kind: pick(rng, &["mobile", "work_hq", "home", "other"]),
        status: pick(rng, &["valid_number", "no_status", "invalid_number"]),
        vendor: (waterfall && rng.u8(..3) != 0).then(|| VENDORS[rng.usize(..VENDORS.len())].to_string()),
    }
}

fn email(rng: &mut fastrand::Rng, n: usize) -> Email {
    let local: String = (0..rng.usize(3..10)).map(|_| rng.lowercase()).collect();
    let address = format!("{local}.{n}@{}.io", (0..rng.usize(3..8)).map(|_| rng.lowercase()).collect::<String>());
    let written = match rng.u8(..3) {
        0 => address.to_uppercase(),
        1 => format!("  {address} "),
        _ => address.clone(),
    };
    let vendor = (rng.u8(..4) != 0).then(|| VENDORS[rng.usize(..VENDORS.len())].to_string());
    Email {
        address,
        written,
        status: (rng.u8(..4) != 0).then(|| ["Verified", "Unverified", "guessed"][rng.usize(..3)].to_string()),
        provider_only: vendor.is_some() && rng.u8(..4) == 0,
        vendor,
    }
}

fn people(rng: &mut fastrand::Rng, waterfall: bool) -> Vec<Person> {
    (0..rng.usize(..6))
        .map(|i| {
            let mut phones: Vec<Phone> = Vec::new();
            for _ in 0..rng.usize(..3) {
                let p = phone(rng, waterfall);
                if phones.iter().all(|x| x.e164 != p.e164) {
                    phones.push(p);
                }
            }
            let emails = if waterfall { (0..rng.usize(..3)).map(|n| email(rng, n)).collect() } else { Vec::new() };
            Person {
                id: format!(
                    "{i:02}{}",
                    (0..22).map(|_| char::from_digit(rng.u32(..16), 16).expect("hex")).collect::<String>()
                ),
                phones,
                emails,
            }
        })
        .collect()
}

/// Inserts a few keys the parser does not know, to be ignored.
fn extra_keys(rng: &mut fastrand::Rng, m: &mut Map<String, Value>) {
    for _ in 0..rng.usize(..3) {
        m.insert(format!("x_{}", rng.u16(..)), scalar(rng));
    }
}

/// The delivery body for `people`, in the phone payload's or the waterfall payload's shape.
fn delivery_body(rng: &mut fastrand::Rng, people: &[Person], waterfall: bool, request_id: i64, credits: u32) -> Value {
    let mut entries: Vec<Value> = Vec::new();
    for p in people {
        let mut m = Map::new();
        m.insert("id".into(), json!(p.id));
        m.insert("status".into(), json!("success"));
        let suffix = if waterfall || rng.bool() { "_cd" } else { "" };
        let phones: Vec<Value> = p
            .phones
            .iter()
            .map(|ph| {
                let mut o = Map::new();
                o.insert("raw_number".into(), json!(ph.raw));
                match &ph.sanitized {
                    Some(s) => o.insert("sanitized_number".into(), json!(s)),
                    None if rng.bool() => o.insert("sanitized_number".into(), Value::Null),
                    None => None,
                };
                if let Some(k) = &ph.kind {
                    o.insert(format!("type{suffix}"), json!(k));
                }
                if let Some(s) = &ph.status {
                    o.insert(format!("status{suffix}"), json!(s));
                }
                extra_keys(rng, &mut o);
                Value::Object(o)
            })
            .collect();
        m.insert("phone_numbers".into(), Value::Array(phones));
        if waterfall {
            let emails: Vec<Value> = p
                .emails
                .iter()
                .map(|e| {
                    let mut o = Map::new();
                    o.insert("email".into(), json!(e.written));
                    if let Some(s) = &e.status {
                        o.insert("email_status_cd".into(), json!(s));
                    }
                    if let (Some(v), true) = (&e.vendor, e.provider_only) {
                        o.insert("third_party_data_provider_id".into(), json!(v));
                    }
                    extra_keys(rng, &mut o);
                    Value::Object(o)
                })
                .collect();
            m.insert("emails".into(), Value::Array(emails));
            // The trail: vendors that missed, then each value's vendor with the value as written.
            let step = |name: &str, field: &str, values: Vec<String>| json!({"name": name, "status": if values.is_empty() { "NOT_FOUND" } else { "VERIFIED" }, field: values});
            let mut email_steps = vec![step("Nobody", "emails", vec![])];
            for e in p.emails.iter().filter(|e| !e.provider_only) {
                if let Some(v) = &e.vendor {
                    email_steps.push(step(v, "emails", vec![e.written.clone()]));
                }
            }
            let mut phone_steps = vec![step("Nobody", "phone_numbers", vec![])];
            for ph in &p.phones {
                if let Some(v) = &ph.vendor {
                    phone_steps.push(step(v, "phone_numbers", vec![ph.raw.clone()]));
                }
            }
            m.insert(
                "waterfall".into(),
                json!({"emails": [{"vendors": email_steps}], "phone_numbers": [{"vendors": phone_steps}]}),
            );
        }
        extra_keys(rng, &mut m);
        entries.push(Value::Object(m));
    }
    let mut top = Map::new();
    top.insert("status".into(), json!("success"));
    top.insert("people".into(), Value::Array(entries));
    top.insert("credits_consumed".into(), if rng.bool() { json!(credits) } else { json!(format!("{credits}.0")) });
    if waterfall {
        top.insert("target_fields".into(), json!(["emails", "phone_numbers"]));
        top.insert("request_id".into(), if rng.bool() { json!(request_id) } else { json!(request_id.to_string()) });
    }
    extra_keys(rng, &mut top);
    Value::Object(top)
}

/// Asserts that every generated fact came out of the parser as it went in.
fn check_facts(body: &Value, people: &[Person], waterfall: bool, request_id: i64, credits: u32) {
    let text = serde_json::to_vec(body).unwrap();
    let d = parse_delivery(&text).unwrap_or_else(|e| panic!("a well-formed delivery was refused ({e}): {body:#}"));
    let kind = if waterfall { DeliveryKind::Waterfall } else { DeliveryKind::Phone };
    assert_eq!(d.kind, kind, "{body:#}");
    assert_eq!(d.credits, Some(Credits::whole(i64::from(credits))), "{body:#}");
    if waterfall {
        assert_eq!(d.request_id, Some(RequestId(request_id)), "{body:#}");
    }
    assert_eq!(d.people.len(), people.len(), "{body:#}");
    for (p, got) in people.iter().zip(&d.people) {
        assert_eq!(got.apollo_id.as_deref(), Some(p.id.as_str()), "{body:#}");
        let phones: BTreeMap<&str, _> = got
            .phones
            .iter()
            .map(|f| (f.e164.as_str(), (f.raw.as_deref(), f.kind.as_deref(), f.status.as_deref(), f.vendor.as_deref())))
            .collect();
        let want: BTreeMap<&str, _> = p
            .phones
            .iter()
            .map(|f| {
                let vendor = if waterfall { f.vendor.as_deref() } else { None };
                (f.e164.as_str(), (Some(f.raw.as_str()), f.kind.as_deref(), f.status.as_deref(), vendor))
            })
            .collect();
        assert_eq!(phones, want, "phones of {} in {body:#}", p.id);
        let emails: BTreeMap<&str, _> =
            got.emails.iter().map(|e| (e.address.as_str(), (e.status.clone(), e.vendor.as_deref()))).collect();
        let want: BTreeMap<&str, _> = p
            .emails
            .iter()
            .map(|e| (e.address.as_str(), (e.status.as_ref().map(|s| s.to_lowercase()), e.vendor.as_deref())))
            .collect();
        assert_eq!(emails, want, "emails of {} in {body:#}", p.id);
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
                    m.insert(key, value(rng, 2));
                }
                _ => mutate(rng, m.get_mut(&key).expect("the key")),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.bool() => {
            let i = rng.usize(..a.len());
            mutate(rng, &mut a[i]);
        }
        Value::Object(m) => {
            m.insert(KEYS[rng.usize(..KEYS.len())].into(), value(rng, 2));
        }
        other => *other = value(rng, 2),
    }
}

#[test]
fn structured_deliveries_keep_every_fact() {
    let b = budget();
    let mut rng = fastrand::Rng::with_seed(b.seed);
    let mut n = 0u64;
    let mut facts = 0usize;
    while b.more(n) {
        let waterfall = rng.bool();
        let people = people(&mut rng, waterfall);
        let (request_id, credits) = (rng.i64(..), rng.u32(..10_000));
        let mut body = delivery_body(&mut rng, &people, waterfall, request_id, credits);
        check_facts(&body, &people, waterfall, request_id, credits);
        facts += people.iter().map(|p| p.phones.len() + p.emails.len()).sum::<usize>();
        // Then mutated: it may or may not parse, but never panics and keeps the invariants.
        for _ in 0..rng.usize(1..4) {
            mutate(&mut rng, &mut body);
        }
        check_invariants(&serde_json::to_vec(&body).unwrap());
        n += 1;
    }
    assert!(n > 100 && facts > n as usize, "only {n} cases, {facts} facts");
    eprintln!("{n} structured deliveries, {facts} facts checked");
}

const KEYS: &[&str] = &[
    "people",
    "person",
    "matches",
    "contacts",
    "id",
    "status",
    "request_id",
    "credits_consumed",
    "emails",
    "email",
    "email_status_cd",
    "phone_numbers",
    "raw_number",
    "sanitized_number",
    "type_cd",
    "status_cd",
    "waterfall",
    "vendors",
    "name",
    "target_fields",
    "third_party_data_provider_id",
    "dnc_status_cd",
    "position",
];

fn scalar(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..10) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e6 - 5e5),
        4 => json!(format!("+1 {}-555-{:04}", rng.u16(200..999), rng.u16(..10000))),
        5 => json!(format!("{}@{}.io", rng.alphanumeric(), rng.alphanumeric())),
        6 => json!("email_not_unlocked@domain.com"),
        7 => json!(u64::MAX),
        8 => json!("\u{0}\u{ffff}é漢字"),
        _ => json!((0..rng.usize(..12)).map(|_| rng.alphanumeric()).collect::<String>()),
    }
}

fn value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    if depth == 0 || rng.u8(..3) == 0 {
        return scalar(rng);
    }
    if rng.bool() {
        Value::Array((0..rng.usize(..5)).map(|_| value(rng, depth - 1)).collect())
    } else {
        let mut m = Map::new();
        for _ in 0..rng.usize(..6) {
            m.insert(KEYS[rng.usize(..KEYS.len())].to_string(), value(rng, depth - 1));
        }
        Value::Object(m)
    }
}

fn check_invariants(body: &[u8]) {
    if let Ok(d) = parse_delivery(body) {
        for p in &d.people {
            for e in &p.emails {
                assert!(e.address.contains('@') && !is_placeholder_email(&e.address), "{e:?}");
                assert_eq!(e.address, e.address.to_lowercase());
            }
            for ph in &p.phones {
                let digits = &ph.e164[1..];
                assert!(ph.e164.starts_with('+') && (8..=15).contains(&digits.len()), "{ph:?}");
                assert!(digits.chars().all(|c| c.is_ascii_digit()), "{ph:?}");
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        // The sync parser is as tolerant: anything that is an object parses, and facts hold.
        if let Ok(r) = BulkMatchResponse::from_value(v) {
            for p in r.matches.iter().flatten() {
                let f = p.facts();
                assert!(f.emails.iter().all(|e| !is_placeholder_email(&e.address)));
            }
        }
    }
}

#[test]
fn random_deliveries_never_panic_and_keep_invariants() {
    let b = budget();
    let mut rng = fastrand::Rng::with_seed(b.seed ^ 0xde11);
    let mut n = 0u64;
    while b.more(n) {
        let mut top = Map::new();
        let envelope = ["people", "matches", "contacts", "person"][rng.usize(..4)];
        let people: Vec<Value> = (0..rng.usize(..4)).map(|_| value(&mut rng, 4)).collect();
        top.insert(envelope.into(), if envelope == "person" { value(&mut rng, 4) } else { Value::Array(people) });
        for _ in 0..rng.usize(..4) {
            top.insert(KEYS[rng.usize(..KEYS.len())].into(), value(&mut rng, 2));
        }
        check_invariants(&serde_json::to_vec(&Value::Object(top)).unwrap());
        n += 1;
    }
    assert!(n > 100, "only {n} cases");
    eprintln!("{n} random deliveries");
}

#[test]
fn mutated_examples_never_panic() {
    let b = budget();
    let mut rng = fastrand::Rng::with_seed(b.seed ^ 0x5eed);
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    let mut n = 0u64;
    while b.more(n) {
        let mut body = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..8) {
            if body.is_empty() {
                break;
            }
            let i = rng.usize(..body.len());
            match rng.u8(..4) {
                0 => body[i] = rng.u8(..),
                1 => {
                    body.remove(i);
                }
                2 => {
                    const JSONISH: &[u8] = b"{}[]\",:0-e.\\";
                    body.insert(i, JSONISH[rng.usize(..JSONISH.len())]);
                }
                _ => {
                    let j = rng.usize(..body.len());
                    body.swap(i, j);
                }
            }
        }
        check_invariants(&body);
        n += 1;
    }
    assert!(n > 100, "only {n} cases");
    eprintln!("{n} mutated examples");
}

/// Findings kept as tests: inputs that once broke an invariant.
#[test]
fn kept_findings() {
    // A sanitized number that is not a number at all, with a raw one that is.
    check_invariants(
        br#"{"people":[{"id":"p","phone_numbers":[{"sanitized_number":"+","raw_number":"+1 206 555 0117"}]}]}"#,
    );
    // Deep nesting inside a person.
    let deep = format!(r#"{{"people":[{{"id":"p","emails":{}1{}}}]}}"#, "[".repeat(100), "]".repeat(100));
    check_invariants(deep.as_bytes());
}
