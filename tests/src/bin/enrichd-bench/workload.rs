//! The people and job bodies the sections submit.

use serde_json::{Value, json};

/// A distinct person: one of the identifier kinds clients send, unique by `tag` and `i`.
pub fn person(tag: &str, i: usize) -> Value {
    const FIRST: [&str; 8] = ["Dana", "Li", "Priya", "Tomasz", "Amara", "Jonas", "Sofia", "Kenji"];
    const LAST: [&str; 8] = ["Okafor", "Wei", "Raman", "Nowak", "Diallo", "Berg", "Rossi", "Sato"];
    const DOMAINS: [&str; 5] =
        ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io", "bluefin.dev", "acme.co"];
    let (f, l, d) = (FIRST[i % 8], LAST[(i / 8) % 8], DOMAINS[i % 5]);
    let ext = format!("{tag}-{i}");
    match i % 3 {
        0 => json!({"email": format!("{}.{}.{tag}{i}@{d}", f.to_lowercase(), l.to_lowercase()), "external_id": ext}),
        1 => json!({"first_name": f, "last_name": format!("{l}{tag}{i}"), "domain": d, "external_id": ext}),
        _ => {
            json!({"linkedin_url": format!("https://www.linkedin.com/in/{}-{}-{tag}{i}", f.to_lowercase(), l.to_lowercase()), "external_id": ext})
        }
    }
}

/// A job body with phone reveal and the email waterfall (two deliveries per call).
pub fn job_body(people: Vec<Value>, callback_url: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "people": people,
        "reveal_phone_number": true,
        "run_waterfall_email": true,
        "callback_url": callback_url,
    }))
    .expect("JSON")
}
