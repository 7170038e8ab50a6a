//! The synchronous surface of the simulator, driven through the real `apollo-client` over HTTP:
//! auth, record limits, the population, rate limits, credits, usage stats, the call records and
//! the 5xx/slow/reject-marker faults.

mod common;

use std::time::{Duration, Instant};

use apollo_client::{ApolloClient, ApolloError, Credits, EnrichFlags, PersonDetail, WindowLimit, is_placeholder_email};
use apollo_sim::{ChargeKind, SimConfig};
use common::{bulk_match_usage, fast_config, people, start};
use serde_json::{Value, json};

const NO_FLAGS: EnrichFlags = EnrichFlags::NONE;

#[tokio::test]
async fn a_wrong_key_is_a_plain_text_401() {
    let (sim, _) = start(fast_config()).await;
    let wrong = ApolloClient::new(sim.url(), "not-the-key".to_string().into()).unwrap();
    match wrong.bulk_match(&people("a", 1), &NO_FLAGS, None, false).await {
        Err(ApolloError::Unauthorized { body }) => {
            assert_eq!(body.message, "Invalid API key. Please check the key you provided and try again.");
            assert_eq!(body.code, None);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // The key can be rotated at run time.
    sim.update_config(|c| c.api_key = "not-the-key".into());
    assert!(wrong.bulk_match(&people("a", 1), &NO_FLAGS, None, false).await.is_ok());
    let calls = sim.calls();
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), vec![401, 200]);
    assert_eq!(sim.ledger().total, Credits::whole(1));
    sim.stop().await;
}

#[tokio::test]
async fn eleven_details_are_a_400_record_limit() {
    let (sim, _) = start(fast_config()).await;
    let http = reqwest::Client::new();
    let send = |n: usize| {
        let details: Vec<Value> = (0..n).map(|i| json!({"email": format!("x{i}@acme.io")})).collect();
        http.post(format!("{}/api/v1/people/bulk_match", sim.url()))
            .header("x-api-key", "sim-key")
            .json(&json!({ "details": details }))
            .send()
    };
    let r = send(11).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_code"], "RECORD_LIMIT_EXCEEDED");
    assert_eq!(body["error_message"], "You can enrich up to 10 records per request.");
    assert_eq!(send(0).await.unwrap().status(), 400);
    assert_eq!(send(10).await.unwrap().status(), 200);
    assert_eq!(sim.calls()[0].details, 0, "the refused call never got as far as reading its details");
    sim.stop().await;
}

#[tokio::test]
async fn webhook_rules_and_flags_in_the_body() {
    let (sim, _) = start(fast_config()).await;
    let http = reqwest::Client::new();
    let post = |query: &'static str, body: Value| {
        http.post(format!("{}/api/v1/people/bulk_match?{query}", sim.url()))
            .header("x-api-key", "sim-key")
            .json(&body)
            .send()
    };
    let one = json!({"details": [{"email": "dana.okafor@northwind-labs.com"}]});
    let r = post("reveal_phone_number=true", one.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "WEBHOOK_URL_REQUIRED");
    let r =
        post("run_waterfall_email=true&poll_only=true&webhook_url=http%3A%2F%2Fx.io%2Fh", one.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "WEBHOOK_URL_WITH_POLL_ONLY");

    // Flags and poll_only in the JSON body work like the query string.
    let body = json!({"details": [{"email": "dana.okafor@northwind-labs.com"}], "run_waterfall_email": true, "poll_only": true});
    let r = post("", body).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["waterfall"]["status"], "accepted");
    assert!(v.get("credits_consumed").is_none() && v.get("unique_enriched_records").is_none());
    assert!(v["matches"][0].get("email").is_none(), "waterfall email answers omit the email");
    // request_id is a bare JSON number, never a string.
    let raw_id = text.split("\"request_id\":").nth(1).unwrap();
    assert!(raw_id.starts_with(|c: char| c == '-' || c.is_ascii_digit()), "{raw_id}");
    let call = sim.calls().pop().unwrap();
    assert!(call.flags.unwrap().run_waterfall_email && call.poll_only && call.webhook_url.is_none());
    sim.stop().await;
}

#[tokio::test]
async fn the_same_identifiers_give_the_same_person() {
    let details = vec![
        PersonDetail {
            first_name: Some("Dana".into()),
            last_name: Some("Okafor".into()),
            domain: Some("northwind-labs.com".into()),
            ..Default::default()
        },
        PersonDetail { email: Some("li.wei@harborfreight-analytics.io".into()), ..Default::default() },
        PersonDetail {
            linkedin_url: Some("http://www.linkedin.com/in/priya-raman-5a1b2c3d".into()),
            ..Default::default()
        },
        PersonDetail {
            name: Some("Tomasz Nowak".into()),
            organization_name: Some("Kestrel Robotics".into()),
            ..Default::default()
        },
        PersonDetail { id: Some("6501a9f2c4dfae0001a1b2c3".into()), ..Default::default() },
    ];
    let (sim, client) = start(fast_config()).await;
    let first = client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap().response;
    let again = client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap().response;
    // Another simulator with another seed: the population does not change.
    let (other, other_client) = start(SimConfig { seed: 99, ..fast_config() }).await;
    let elsewhere = other_client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap().response;
    assert_ne!(first.request_id, again.request_id);
    for ((d, a), (b, c)) in details.iter().zip(&first.matches).zip(again.matches.iter().zip(&elsewhere.matches)) {
        let (a, b, c) = (a.as_ref().unwrap(), b.as_ref().unwrap(), c.as_ref().unwrap());
        let id = a.id.clone().unwrap();
        assert!(id.len() == 24 && id.chars().all(|ch| ch.is_ascii_hexdigit()), "{id}");
        assert_eq!((b.id.as_ref(), c.id.as_ref()), (Some(&id), Some(&id)));
        assert_eq!(a.raw, b.raw);
        let truth = sim.truth_for(d).unwrap();
        assert_eq!(truth.apollo_id, id);
        assert_eq!(a.name.as_deref(), Some(truth.name.as_str()));
        assert_eq!(a.title.as_deref(), Some(truth.title.as_str()));
        assert_eq!(a.organization_domain.as_deref(), Some(truth.organization.domain.as_str()));
        assert_eq!(a.email.as_deref(), Some(truth.email.as_str()));
        assert!(a.matches_detail(d), "the answer is recognisably for {d:?}");
    }
    assert_eq!(first.matches[4].as_ref().unwrap().id.as_deref(), Some("6501a9f2c4dfae0001a1b2c3"));
    assert_eq!(first.matches[0].as_ref().unwrap().name.as_deref(), Some("Dana Okafor"));
    assert_eq!(first.matches[1].as_ref().unwrap().email.as_deref(), Some("li.wei@harborfreight-analytics.io"));
    // Sync phone numbers are NANP work numbers in both forms.
    let phones = first.matches.iter().flatten().flat_map(|p| p.facts().phones).collect::<Vec<_>>();
    assert!(!phones.is_empty());
    for ph in phones {
        assert!(ph.e164.starts_with("+1") && ph.e164.len() == 12);
        assert_eq!(ph.kind.as_deref(), Some("work_hq"));
        assert!(ph.raw.unwrap().starts_with("+1 "));
    }
    sim.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn unmatched_people_are_null_and_cost_nothing() {
    let (sim, client) = start(SimConfig { match_rate: 0.5, ..fast_config() }).await;
    let mut details = people("mix", 9);
    details.push(PersonDetail { name: Some("Bare Name".into()), ..Default::default() });
    let out = client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap();
    let r = out.response;
    assert_eq!(r.matches.len(), 10);
    assert!(r.matches[9].is_none(), "a bare name never matches");
    for (d, m) in details.iter().zip(&r.matches) {
        assert_eq!(m.as_ref().and_then(|p| p.id.clone()), sim.truth_for(d).map(|t| t.apollo_id));
    }
    let matched = r.matches.iter().flatten().count() as i64;
    assert!(matched > 0 && matched < 10, "a 0.5 rate over 9 people gives some of each: {matched}");
    assert_eq!(r.raw["matches"][9], Value::Null);
    assert_eq!(r.unique_enriched_records, Some(matched));
    assert_eq!(r.missing_records, Some(10 - matched));
    assert_eq!(r.credits_consumed, Some(Credits::whole(matched)));
    assert!(r.raw["credits_consumed"].is_f64(), "credits_consumed is sent as a decimal");
    let none = client.bulk_match(&people("none", 3), &NO_FLAGS, None, false).await;
    sim.update_config(|c| c.match_rate = 0.0);
    let none_now = client.bulk_match(&people("none", 3), &NO_FLAGS, None, false).await.unwrap().response;
    assert!(none_now.matches.iter().all(Option::is_none));
    assert_eq!(none_now.credits_consumed, Some(Credits::ZERO));
    assert_eq!(sim.ledger().total, Credits::whole(matched) + none.unwrap().response.credits_consumed.unwrap());
    sim.stop().await;
}

#[tokio::test]
async fn placeholder_emails_follow_their_rate() {
    let (sim, client) = start(SimConfig { placeholder_email_rate: 1.0, ..fast_config() }).await;
    let r = client.bulk_match(&people("locked", 10), &NO_FLAGS, None, false).await.unwrap().response;
    for p in r.matches.iter().flatten() {
        assert!(p.email_locked && p.email.is_none());
        assert_eq!(p.raw["email"], "email_not_unlocked@domain.com");
        assert_eq!(p.email_status.as_deref(), Some("unavailable"));
    }
    assert_eq!(r.matches.iter().flatten().count(), 10);
    // Roughly the configured share over many people (the truth is what the answers show).
    sim.update_config(|c| c.placeholder_email_rate = 0.2);
    let many = people("rough", 500);
    let locked = many.iter().filter(|d| sim.truth_for(d).unwrap().email_locked).count();
    assert!((60..=140).contains(&locked), "{locked} of 500 locked at rate 0.2");
    let r = client.bulk_match(&many[..10], &NO_FLAGS, None, false).await.unwrap().response;
    for (d, p) in many.iter().zip(r.matches.iter().flatten()) {
        let truth = sim.truth_for(d).unwrap();
        assert_eq!(p.email_locked, truth.email_locked);
        assert_eq!(is_placeholder_email(p.raw["email"].as_str().unwrap()), truth.email_locked);
    }
    sim.stop().await;
}

#[tokio::test]
async fn the_fourth_call_in_a_minute_is_429_with_retry_after() {
    let (sim, client) = start(SimConfig { minute_limit: Some(3), minute_ms: 1_000, ..fast_config() }).await;
    let details = people("rl", 1);
    let mut last_ok = None;
    let mut limited = None;
    // A window boundary may fall between calls; loop until a call is refused.
    for _ in 0..20 {
        match client.bulk_match(&details, &NO_FLAGS, None, false).await {
            Ok(out) => last_ok = Some(out.limits),
            Err(ApolloError::RateLimited { retry_after, limits, body }) => {
                limited = Some((retry_after, limits, body));
                break;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let ok = last_ok.unwrap();
    assert_eq!(ok.minute.limit, WindowLimit::Max(3));
    assert_eq!((ok.minute.used, ok.minute.left), (Some(3), Some(0)));
    assert_eq!(ok.hour.limit, WindowLimit::Unlimited);
    assert_eq!(ok.day.limit, WindowLimit::Unlimited);
    let (retry_after, limits, body) = limited.expect("a 4th call in the window is refused");
    let retry_after = retry_after.unwrap();
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
    assert_eq!(limits.minute.limit, WindowLimit::Max(3));
    assert_eq!(body.code.as_deref(), Some("USAGE.RATE_LIMIT.API_RATE_LIMIT_EXCEEDED"));
    assert!(body.message.contains("3 times per minute"));
    let refused = sim.calls().into_iter().filter(|c| c.status == 429).count();
    assert_eq!(refused, 1);
    // The raw answer carries `retry-after` in whole seconds as well as the exact milliseconds.
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v1/people/bulk_match", sim.url()))
        .header("x-api-key", "sim-key")
        .json(&json!({"details": [{"email": "a@b.io"}]}))
        .send()
        .await
        .unwrap();
    if raw.status() == 429 {
        assert_eq!(raw.headers()["retry-after"], "1");
        assert!(raw.headers()["x-retry-after-ms"].to_str().unwrap().parse::<u64>().unwrap() <= 1_000);
    }
    tokio::time::sleep(retry_after).await;
    let after = client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap();
    assert!(after.limits.minute.used.unwrap() <= 2);
    sim.stop().await;
}

#[tokio::test]
async fn credits_run_out_at_the_balance_boundary() {
    let (sim, client) = start(SimConfig { credit_balance: Some(Credits::whole(5)), ..fast_config() }).await;
    let r = client.bulk_match(&people("c1", 3), &NO_FLAGS, None, false).await.unwrap().response;
    assert_eq!(r.credits_consumed, Some(Credits::whole(3)));
    assert_eq!(sim.config().credit_balance, Some(Credits::whole(2)));
    // Three more would overdraw the two left: refused, nothing charged.
    match client.bulk_match(&people("c2", 3), &NO_FLAGS, None, false).await {
        Err(ApolloError::CreditsExhausted { context, body }) => {
            assert_eq!(body.code.as_deref(), Some("BILLING.LIMIT.CREDITS_EXHAUSTED"));
            assert_eq!(context.unwrap()["credits_remaining"], json!(2));
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // Exactly the balance is fine; then nothing is left.
    let r2 = client.bulk_match(&people("c3", 2), &NO_FLAGS, None, false).await.unwrap().response;
    assert_eq!(r2.credits_consumed, Some(Credits::whole(2)));
    let e = client.bulk_match(&people("c4", 1), &NO_FLAGS, None, false).await.unwrap_err();
    assert!(matches!(e, ApolloError::CreditsExhausted { .. }) && e.blocks_dispatch());
    let ledger = sim.ledger();
    assert_eq!(ledger.total, Credits::whole(5));
    assert_eq!(ledger.entries.iter().map(|e| e.credits).sum::<Credits>(), ledger.total);
    assert!(ledger.entries.iter().all(|e| e.kind == ChargeKind::Sync));
    assert_eq!(ledger.total_for(r.request_id.unwrap()), Credits::whole(3));
    assert_eq!(sim.calls().iter().filter(|c| c.status == 422).count(), 2);
    // Topping up at run time lets calls through again.
    sim.update_config(|c| c.credit_balance = Some(Credits::whole(1)));
    assert!(client.bulk_match(&people("c4", 1), &NO_FLAGS, None, false).await.is_ok());
    sim.stop().await;
}

#[tokio::test]
async fn api_usage_stats_reports_the_windows() {
    let config = SimConfig { minute_limit: Some(20), hour_limit: Some(100), day_limit: Some(600), ..fast_config() };
    let key = config.api_key.clone();
    let (sim, client) = start(config).await;
    for _ in 0..2 {
        client.bulk_match(&people("u", 1), &NO_FLAGS, None, false).await.unwrap();
    }
    let [minute, hour, day] = bulk_match_usage(&sim, &key).await;
    assert_eq!(minute, (Some(20), 2, Some(18)));
    assert_eq!(hour, (Some(100), 2, Some(98)));
    assert_eq!(day, (Some(600), 2, Some(598)));
    sim.stop().await;
}

#[tokio::test]
async fn the_counting_knobs_show_on_the_wire() {
    // Usage before the call, no exact wait, a stale usage-stats endpoint.
    let config = SimConfig {
        minute_limit: Some(2),
        minute_ms: 60_000,
        usage_header_excludes_call: true,
        retry_after_whole_seconds: true,
        usage_stats: apollo_sim::limits::UsageStats::Stale,
        ..fast_config()
    };
    let (sim, client) = start(config).await;
    let first = client.bulk_match(&people("k", 1), &NO_FLAGS, None, false).await.unwrap();
    assert_eq!((first.limits.minute.used, first.limits.minute.left), (Some(0), Some(1)));
    client.bulk_match(&people("k", 1), &NO_FLAGS, None, false).await.unwrap();
    match client.bulk_match(&people("k", 1), &NO_FLAGS, None, false).await {
        Err(ApolloError::RateLimited { retry_after: Some(wait), .. }) => {
            assert_eq!(wait.subsec_nanos(), 0, "whole seconds: {wait:?}");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    let [minute, ..] = bulk_match_usage(&sim, &fast_config().api_key).await;
    assert_eq!(minute, (Some(2), 1, Some(1)), "stale: always 1 used");
    // No headers at all.
    sim.update_config(|c| (c.no_rate_headers, c.minute_limit) = (true, None));
    let bare = client.bulk_match(&people("k", 1), &NO_FLAGS, None, false).await.unwrap();
    assert!(!bare.limits.is_known() && bare.limits.minute.used.is_none());
    sim.stop().await;
}

#[tokio::test]
async fn the_5xx_fault_is_a_transient_error_without_charge() {
    let (sim, client) = start(SimConfig { fault_5xx: 1.0, ..fast_config() }).await;
    for _ in 0..3 {
        match client.bulk_match(&people("f", 2), &NO_FLAGS, None, false).await {
            Err(e @ ApolloError::Transient { status: Some(500 | 502 | 503), .. }) => assert!(e.is_retryable()),
            other => panic!("expected a transient 5xx, got {other:?}"),
        }
    }
    assert_eq!(sim.ledger().total, Credits::ZERO);
    assert!(sim.calls().iter().all(|c| c.fault.as_deref().is_some_and(|f| f.starts_with('5'))));
    sim.update_config(|c| c.fault_5xx = 0.0);
    assert!(client.bulk_match(&people("f", 2), &NO_FLAGS, None, false).await.is_ok());
    sim.stop().await;
}

#[tokio::test]
async fn the_slow_fault_delays_the_answer() {
    let (sim, client) = start(SimConfig { fault_slow: 1.0, slow_ms: 300, ..fast_config() }).await;
    let started = Instant::now();
    let out = client.bulk_match(&people("s", 1), &NO_FLAGS, None, false).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(out.elapsed >= Duration::from_millis(300));
    assert_eq!(sim.calls()[0].fault.as_deref(), Some("slow"));
    // A client that times out meanwhile gets a transient error, yet the call was charged: the
    // "unknown outcome" a dispatcher must count as a possible double charge.
    let impatient =
        ApolloClient::with_timeout(sim.url(), "sim-key".to_string().into(), Duration::from_millis(100)).unwrap();
    let e = impatient.bulk_match(&people("s2", 2), &NO_FLAGS, None, false).await.unwrap_err();
    assert!(matches!(e, ApolloError::Transient { status: None, .. }), "{e:?}");
    assert!(common::eventually(Duration::from_secs(2), || sim.calls().len() == 2).await);
    let timed_out = &sim.calls()[1];
    assert_eq!(timed_out.status, 200);
    assert_eq!(sim.ledger().total_for(timed_out.request_id.unwrap()), Credits::whole(2));
    sim.stop().await;
}

#[tokio::test]
async fn healthz_answers() {
    let (sim, _) = start(fast_config()).await;
    let r = reqwest::get(format!("{}/healthz", sim.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn a_detail_carrying_the_reject_marker_refuses_the_call_without_charge() {
    let (sim, client) = start(SimConfig { reject_marker: Some("REJECT-ME".into()), ..fast_config() }).await;
    let mut details = people("rj", 4);
    details[2] =
        PersonDetail { first_name: Some("reject-me".into()), domain: Some("x.io".into()), ..Default::default() };
    match client.bulk_match(&details, &NO_FLAGS, None, false).await {
        Err(ApolloError::InvalidRequest { status: 422, body }) => {
            let text = &body.message;
            assert!(text.contains("details[2].first_name"), "names the detail: {text}");
        }
        other => panic!("expected a 422 naming the detail, got {other:?}"),
    }
    // An email at the marker domain is refused too; the first carrying detail is named.
    let at_domain = [PersonDetail { email: Some("a@Bad-Domain.io".into()), ..Default::default() }];
    sim.update_config(|c| c.reject_marker = Some("bad-domain.io".into()));
    let e = client.bulk_match(&at_domain, &NO_FLAGS, None, false).await.unwrap_err();
    assert!(matches!(e, ApolloError::InvalidRequest { status: 422, .. }), "{e:?}");
    assert_eq!(sim.ledger().total, Credits::ZERO, "no charge");
    let calls = sim.calls();
    assert!(calls.iter().all(|c| c.status == 422 && c.fault.as_deref() == Some("reject_marker")), "{calls:?}");
    assert!(calls.iter().all(|c| c.received.iter().all(|r| r.apollo_id.is_none())), "nothing matched");
    // Without the marker the same people are enriched.
    let fine = client.bulk_match(&details[..2], &NO_FLAGS, None, false).await.unwrap();
    assert_eq!(fine.response.credits_consumed, Some(Credits::whole(2)));
    sim.stop().await;
}

#[tokio::test]
async fn every_detail_received_is_recorded_with_the_person_answered() {
    let alias = ("linkedin:dana-okafor-77".to_string(), "email:dana.okafor@northwind-labs.com".to_string());
    let (sim, client) = start(SimConfig { match_rate: 0.5, same_person: vec![alias], ..fast_config() }).await;
    let mut details = people("rec", 6);
    details.push(PersonDetail { email: Some("dana.okafor@northwind-labs.com".into()), ..Default::default() });
    details.push(PersonDetail {
        linkedin_url: Some("https://www.linkedin.com/in/dana-okafor-77".into()),
        ..Default::default()
    });
    let out = client.bulk_match(&details, &NO_FLAGS, None, false).await.unwrap().response;
    let call = &sim.calls()[0];
    assert_eq!(call.received.len(), details.len());
    let mut matched = 0;
    for (i, (r, d)) in call.received.iter().zip(&details).enumerate() {
        assert_eq!(r.position, i);
        assert_eq!(r.detail, serde_json::to_value(d).unwrap(), "the detail as sent");
        let truth = sim.truth_for(d);
        assert_eq!(r.apollo_id, truth.as_ref().map(|t| t.apollo_id.clone()));
        assert_eq!(r.answered.as_ref().map(|a| a["id"].clone()), truth.map(|t| json!(t.apollo_id)));
        assert_eq!(r.answered.clone().unwrap_or(Value::Null), out.raw["matches"][i], "the answer as sent");
        matched += usize::from(r.apollo_id.is_some());
    }
    assert!(matched > 1 && matched < details.len(), "{matched}");
    // One person under two identifiers: one Apollo id, one person.
    let (a, b) = (&call.received[6], &call.received[7]);
    assert!(a.apollo_id.is_some());
    assert_eq!(a.apollo_id, b.apollo_id);
    assert_eq!(a.answered, b.answered);
    sim.stop().await;
}

#[tokio::test]
async fn a_key_without_the_endpoint_gets_403() {
    let (sim, client) = start(SimConfig { forbidden: true, ..fast_config() }).await;
    let e = client.bulk_match(&people("fb", 1), &NO_FLAGS, None, false).await.unwrap_err();
    assert!(matches!(e, ApolloError::Forbidden { .. }), "{e:?}");
    assert!(e.to_string().contains("API_INACCESSIBLE"), "{e}");
    assert_eq!(sim.ledger().total, Credits::ZERO);
    sim.update_config(|c| c.forbidden = false);
    assert!(client.bulk_match(&people("fb", 1), &NO_FLAGS, None, false).await.is_ok());
    sim.stop().await;
}
