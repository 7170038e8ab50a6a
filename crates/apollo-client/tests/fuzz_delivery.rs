//! Property test of the delivery parser, run for a bounded time (`FUZZ_SECONDS`, default 2; the
//! seed is printed and `FUZZ_SEED` replays it): random JSON in delivery-like shapes and byte-level
//! mutations of the real examples never panic, and whatever parses obeys the invariants.

use std::time::{Duration, Instant};

use apollo_client::{BulkMatchResponse, is_placeholder_email, parse_delivery};
use serde_json::{Map, Value, json};

fn budget() -> (Duration, u64) {
    let secs = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fuzz seed {seed} for {secs} s (replay with FUZZ_SEED={seed})");
    (Duration::from_secs_f64(secs), seed)
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
    let (time, seed) = budget();
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
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
    assert!(n > 100, "only {n} cases in {time:?}");
    eprintln!("{n} random deliveries");
}

#[test]
fn mutated_examples_never_panic() {
    let (time, seed) = budget();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
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
    assert!(n > 100, "only {n} cases in {time:?}");
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
