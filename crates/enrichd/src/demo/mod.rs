//! `enrichd demo`: the whole flow on this machine with no set-up — SQLite in a temporary
//! directory, the Apollo simulator in-process, a job with phone and waterfall, a progress bar, the
//! signed callback received and verified, and a summary.

pub mod receiver;
#[cfg(feature = "sim")]
mod run;

#[cfg(feature = "sim")]
pub use run::run;

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::startup::secret;

/// The demo's client key (in-process only).
pub(crate) const DEMO_KEY: &str = "demo-client-key-0001";

/// A synthetic input person: a mix of the identifier kinds clients send, with a few repeats.
pub fn demo_person(i: usize) -> Value {
    const FIRST: [&str; 8] = ["Dana", "Li", "Priya", "Tomasz", "Amara", "Jonas", "Sofia", "Kenji"];
    const LAST: [&str; 8] = ["Okafor", "Wei", "Raman", "Nowak", "Diallo", "Berg", "Rossi", "Sato"];
    const DOMAINS: [&str; 5] =
        ["northwind-labs.com", "kestrel-robotics.io", "harbor-analytics.io", "bluefin.dev", "acme.co"];
    // Every 25th person repeats an earlier one: enriched once, result shared.
    let i = if i % 25 == 24 { i - 20 } else { i };
    let (first, last, domain) = (FIRST[i % 8], LAST[(i / 8) % 8], DOMAINS[i % 5]);
    let ext = format!("crm-{i}");
    match i % 3 {
        0 => {
            json!({"email": format!("{}.{}{}@{}", first.to_lowercase(), last.to_lowercase(), i, domain), "external_id": ext})
        }
        1 => json!({"first_name": first, "last_name": format!("{last}{i}"), "domain": domain, "external_id": ext}),
        _ => {
            json!({"linkedin_url": format!("https://www.linkedin.com/in/{}-{}-{i}", first.to_lowercase(), last.to_lowercase()), "external_id": ext})
        }
    }
}

/// The configuration the demo runs the service with.
pub fn demo_config(database_url: String, apollo_url: String, api_key: &str, signing: &str, minute: Duration) -> Config {
    let mut c = Config::defaults();
    c.database_url = database_url;
    c.bind = "127.0.0.1:0".parse().expect("loopback address");
    c.apollo_api_key = Some(secret(api_key));
    c.apollo_base_url = apollo_url;
    c.api_keys = Some(secret(&format!("demo={DEMO_KEY}")));
    c.callback_signing_secret = Some(secret(signing));
    // A fresh key per run: the demo's list lives as long as its database.
    c.suppression_key = Some(secret(&format!("demo-{}", uuid::Uuid::new_v4().simple())));
    c.rate_minute = minute;
    c.retry_base = Duration::from_millis(200);
    c.reconcile_after = Duration::from_secs(3);
    c.reconcile_every = Duration::from_secs(1);
    c.async_deadline = Duration::from_secs(30);
    c.callback_schedule = crate::config::Schedule(vec![Duration::from_millis(500), Duration::from_secs(2)]);
    c.callback_allow_http = true;
    c.callback_allow_hosts = vec!["127.0.0.1".into()];
    c
}
