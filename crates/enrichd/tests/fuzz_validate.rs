//! Property test of the job-input validator, run for a bounded time (`FUZZ_SECONDS`, default 2;
//! `FUZZ_SEED` replays a printed seed): random bodies never panic; an accepted job has only
//! people with a usable identifier and validating it again gives the same job; a refused one names
//! problems that point inside the body.

use std::time::{Duration, Instant};

use enrichd::core::callback_url::CallbackPolicy;
use enrichd::core::validate::{PERSON_FIELDS, validate_job};
use serde_json::{Map, Value, json};

const MAX_PEOPLE: usize = 8;

fn field_value(rng: &mut fastrand::Rng, key: &str) -> Value {
    match rng.u8(..12) {
        0 => Value::Null,
        1 => json!(rng.i64(..)),
        2 => json!(""),
        3 => json!("   "),
        4 => json!("x".repeat(rng.usize(500..600))),
        5 => json!([1, 2]),
        6 => json!("email_not_unlocked@domain.com"),
        7 => json!(format!("{}@{}.com", rng.alphanumeric(), rng.alphanumeric())),
        8 => json!(format!("https://www.linkedin.com/in/{}", rng.alphanumeric())),
        9 => json!("d41d8cd98f00b204e9800998ecf8427e"),
        10 => json!(format!("{key}-{}", rng.u32(..))),
        _ => json!("Ünïcødé 漢字 \u{0}"),
    }
}

fn person(rng: &mut fastrand::Rng) -> Value {
    if rng.u8(..20) == 0 {
        return json!(rng.i32(..));
    }
    // Most people are plausible, so whole jobs pass often enough to check accepted ones.
    if rng.u8(..4) != 0 {
        return json!({"email": format!(" {}@Example.com ", rng.alphanumeric()), "external_id": rng.u32(..)});
    }
    let mut m = Map::new();
    for _ in 0..rng.usize(..5) {
        let key = if rng.u8(..15) == 0 { "title" } else { PERSON_FIELDS[rng.usize(..PERSON_FIELDS.len())] };
        m.insert(key.to_string(), field_value(rng, key));
    }
    Value::Object(m)
}

fn body(rng: &mut fastrand::Rng) -> Value {
    let mut m = Map::new();
    match rng.u8(..10) {
        0 => {}
        1 => {
            m.insert("people".into(), json!("not a list"));
        }
        _ => {
            let people: Vec<Value> = (0..rng.usize(..MAX_PEOPLE + 3)).map(|_| person(rng)).collect();
            m.insert("people".into(), Value::Array(people));
        }
    }
    for flag in ["reveal_personal_emails", "reveal_phone_number", "run_waterfall_email", "run_waterfall_phone"] {
        match rng.u8(..4) {
            0 => {}
            1 => {
                m.insert(flag.into(), json!("yes"));
            }
            _ => {
                m.insert(flag.into(), json!(rng.bool()));
            }
        }
    }
    if rng.bool() {
        let urls = [
            "https://hooks.example.com/x",
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "nope",
            "https://[::1]/",
        ];
        m.insert("callback_url".into(), json!(urls[rng.usize(..urls.len())]));
    }
    if rng.u8(..5) == 0 {
        m.insert("metadata".into(), if rng.bool() { json!({"k": rng.u32(..)}) } else { json!([1]) });
    }
    if rng.u8(..10) == 0 {
        m.insert("surprise".into(), json!(1));
    }
    Value::Object(m)
}

#[test]
fn random_jobs_never_panic_and_keep_invariants() {
    let secs = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fuzz seed {seed} for {secs} s (replay with FUZZ_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let policy = CallbackPolicy::default();
    let (started, time) = (Instant::now(), Duration::from_secs_f64(secs));
    let (mut accepted, mut refused) = (0u64, 0u64);
    while started.elapsed() < time {
        let b = body(&mut rng);
        let n = b["people"].as_array().map_or(0, Vec::len);
        match validate_job(&b, MAX_PEOPLE, &policy) {
            Ok(job) => {
                accepted += 1;
                assert!((1..=MAX_PEOPLE).contains(&job.people.len()) && job.people.len() == n, "{b}");
                assert!(job.people.iter().all(|p| job_store::person_key(p).is_some()), "{b}");
                assert!(job.callback_url.as_deref().is_none_or(|u| u.starts_with("https://hooks.example.com")), "{b}");
                // The cleaned job validates to itself.
                let again = json!({"people": job.people, "reveal_phone_number": job.reveal_phone_number});
                let job2 = validate_job(&again, MAX_PEOPLE, &policy).expect("a cleaned job stays valid");
                assert_eq!(job2.people, job.people);
            }
            Err(problems) => {
                refused += 1;
                assert!(!problems.is_empty());
                for p in &problems {
                    assert!(!p.message.is_empty(), "{p:?}");
                    if let Some(i) = p.index {
                        assert!(i < n, "index {i} outside {n} people: {p:?}");
                        assert!(p.field.starts_with(&format!("people[{i}]")), "{p:?}");
                    }
                }
                let indexes: Vec<usize> = problems.iter().filter_map(|p| p.index).collect();
                assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "problems in input order: {indexes:?}");
            }
        }
    }
    eprintln!("{accepted} accepted, {refused} refused");
    assert!(accepted > 10 && refused > 10, "the generator must reach both outcomes");
}
