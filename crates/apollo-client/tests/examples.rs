//! Every shared Apollo example parses to the right values.

use apollo_client::{
    ApolloClient, ApolloError, BulkMatchResponse, Credits, DeliveryKind, EnrichFlags, FactSource, PersonDetail,
    RequestId, WebhookResult, parse_delivery,
};
use serde_json::Value;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn client() -> ApolloClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ApolloClient::new("https://api.example.test/", "k-secret-123".to_string().into()).unwrap()
}

#[test]
fn standard_response() {
    let r = BulkMatchResponse::from_value(json("bulk_match_response_standard.json")).unwrap();
    assert_eq!(r.request_id, Some(RequestId(-4211274463135576197)));
    assert_eq!(r.credits_consumed, Some(Credits(2_010_000)));
    assert_eq!(r.unique_enriched_records, Some(2));
    assert_eq!(r.missing_records, Some(1));
    assert_eq!(r.matches.len(), 3);
    assert!(r.matches[1].is_none(), "the null match stays an unmatched entry");
    let dana = r.matches[0].as_ref().unwrap();
    assert_eq!(dana.id.as_deref(), Some("6501a9f2c4dfae0001d0a1a1"));
    assert_eq!(dana.email.as_deref(), Some("dana.okafor@northwind-labs.com"));
    assert_eq!(dana.organization_domain.as_deref(), Some("northwind-labs.com"));
    // Unknown fields are kept in the raw object.
    assert_eq!(dana.raw["subdepartments"][0], "sales_operations");
    let facts = dana.facts();
    assert_eq!(facts.emails.len(), 1);
    assert_eq!(facts.emails[0].status.as_deref(), Some("verified"));
    assert_eq!(facts.phones.len(), 1);
    assert_eq!(facts.phones[0].e164, "+15125550142");
    assert_eq!(facts.phones[0].kind.as_deref(), Some("work_hq"));
    assert_eq!(facts.phones[0].status.as_deref(), Some("valid_number"));
    assert_eq!(facts.phones[0].source, FactSource::Sync);
    let priya = r.matches[2].as_ref().unwrap();
    assert!(priya.email_locked, "the placeholder is recognised");
    assert_eq!(priya.email, None, "the placeholder is never an address");
    assert!(priya.facts().emails.is_empty());
    assert!(r.waterfall.is_none() && r.phone_enrichment.is_none());
}

#[test]
fn phone_response() {
    let r = BulkMatchResponse::from_value(json("bulk_match_response_phone.json")).unwrap();
    assert_eq!(r.request_id, Some(RequestId(7302857720198765431)));
    assert_eq!(r.credits_consumed, Some(Credits::whole(1)));
    let pe = r.phone_enrichment.as_ref().unwrap();
    assert!(pe.pending());
    assert_eq!(pe.request_id.as_deref(), Some("6701b2c3d4e5f60718293a4b"));
    assert!(r.matches[1].is_none());
}

#[test]
fn waterfall_response() {
    let r = BulkMatchResponse::from_value(json("bulk_match_response_waterfall.json")).unwrap();
    assert_eq!(r.request_id, Some(RequestId(1039995589705121931)));
    assert_eq!(r.credits_consumed, None, "absent on waterfall requests");
    assert_eq!(r.unique_enriched_records, None);
    assert!(r.waterfall.as_ref().unwrap().accepted());
    let li = r.matches[0].as_ref().unwrap();
    assert_eq!(li.email, None);
    assert_eq!(li.name.as_deref(), Some("Li Wei"));
}

#[test]
fn request_example_round_trips() {
    let v = json("bulk_match_request.json");
    let details: Vec<PersonDetail> = serde_json::from_value(v["details"].clone()).unwrap();
    assert_eq!(details.len(), 5);
    assert_eq!(details[0].domain.as_deref(), Some("northwind-labs.com"));
    assert_eq!(details[4].id.as_deref(), Some("6501a9f2c4dfae0001a1b2c3"));
    assert_eq!(serde_json::to_value(&details).unwrap(), v["details"]);
}

#[test]
fn phone_webhook() {
    let d = parse_delivery(fixture("webhook_phone.json").as_bytes()).unwrap();
    assert_eq!(d.kind, DeliveryKind::Phone);
    assert_eq!(d.request_id, None, "the documented phone payload has no request_id");
    assert_eq!(d.credits, Some(Credits::whole(8)));
    assert_eq!(d.people.len(), 1);
    let p = &d.people[0];
    assert_eq!(p.apollo_id.as_deref(), Some("6501a9f2c4dfae0001d0a1a1"));
    assert_eq!(p.phones.len(), 1);
    let ph = &p.phones[0];
    assert_eq!(ph.e164, "+15125550199");
    assert_eq!(ph.kind.as_deref(), Some("mobile"));
    assert_eq!(ph.status.as_deref(), Some("valid_number"));
    assert_eq!(ph.dnc_status.as_deref(), Some("not_found"));
    assert_eq!(ph.confidence.as_deref(), Some("high"));
    assert_eq!(ph.source, FactSource::PhoneWebhook);
}

#[test]
fn waterfall_webhook_with_vendor_trail() {
    let d = parse_delivery(fixture("webhook_waterfall.json").as_bytes()).unwrap();
    assert_eq!(d.kind, DeliveryKind::Waterfall);
    assert_eq!(d.request_id, Some(RequestId(1039995589705121931)));
    assert_eq!(d.credits, Some(Credits::whole(12)));
    let p = &d.people[0];
    assert_eq!(p.apollo_id.as_deref(), Some("695f655dc46b8364aefc80c0"));
    assert_eq!(p.emails.len(), 1);
    assert_eq!(p.emails[0].address, "li.wei@harborfreight-analytics.io");
    assert_eq!(p.emails[0].status.as_deref(), Some("verified"));
    assert_eq!(p.emails[0].vendor.as_deref(), Some("VendorA"));
    assert_eq!(p.phones.len(), 1);
    assert_eq!(p.phones[0].e164, "+12065550117");
    assert_eq!(p.phones[0].status.as_deref(), Some("no_status"));
    assert_eq!(p.phones[0].vendor.as_deref(), Some("VendorB"), "vendor found through the trail's raw number");
    assert_eq!(p.phones[0].source, FactSource::Waterfall);
}

#[test]
fn webhook_result_success_wraps_a_delivery() {
    let w = WebhookResult::from_value(json("webhook_result_success.json"));
    assert_eq!(w.request_id.as_deref(), Some("7302857720198765431"));
    assert_eq!(w.webhook_status.as_deref(), Some("success"));
    assert_eq!(w.request_type.as_deref(), Some("phone"));
    let d = apollo_client::delivery::parse_delivery_value(w.webhook_result.as_ref().unwrap()).unwrap();
    assert_eq!(d.kind, DeliveryKind::Phone);
    assert_eq!(d.people[0].phones[0].e164, "+15125550199");
}

#[test]
fn defensive_envelopes_and_garbage() {
    let person =
        br#"{"person": {"id": "p1", "phone_numbers": [{"sanitized_number": "+15550001111", "type_cd": "mobile"}]}}"#;
    let d = parse_delivery(person).unwrap();
    assert_eq!(d.people[0].apollo_id.as_deref(), Some("p1"));
    assert_eq!(d.people[0].phones[0].kind.as_deref(), Some("mobile"));
    for key in ["matches", "contacts"] {
        let body = format!(r#"{{"{key}": [{{"id": "p2", "email": "A@B.io"}}, null]}}"#);
        let d = parse_delivery(body.as_bytes()).unwrap();
        assert_eq!(d.people.len(), 1, "{key}");
        assert_eq!(d.people[0].emails[0].address, "a@b.io");
    }
    assert!(matches!(parse_delivery(b"not json"), Err(apollo_client::DeliveryError::NotJson(_))));
    assert_eq!(parse_delivery(br#"{"status": "success"}"#), Err(apollo_client::DeliveryError::UnknownEnvelope));
    assert_eq!(parse_delivery(br#"[1, 2]"#), Err(apollo_client::DeliveryError::UnknownEnvelope));
    assert_eq!(parse_delivery(br#"{"people": [1]}"#), Err(apollo_client::DeliveryError::NotAPerson { index: 0 }));
}

#[test]
fn alignment_falls_back_when_lengths_differ() {
    let r = BulkMatchResponse::from_value(json("bulk_match_response_standard.json")).unwrap();
    let details = vec![
        PersonDetail { email: Some("nobody@x.io".into()), ..Default::default() },
        PersonDetail {
            linkedin_url: Some("https://linkedin.com/in/priya-raman-5a1b2c3d/".into()),
            ..Default::default()
        },
        PersonDetail {
            first_name: Some("Dana".into()),
            last_name: Some("Okafor".into()),
            domain: Some("northwind-labs.com".into()),
            ..Default::default()
        },
        PersonDetail { name: Some("Ghost".into()), domain: Some("x.io".into()), ..Default::default() },
    ];
    let aligned = r.align(&details);
    assert!(aligned[0].is_none());
    assert_eq!(aligned[1].unwrap().name.as_deref(), Some("Priya Raman"));
    assert_eq!(aligned[2].unwrap().name.as_deref(), Some("Dana Okafor"));
    assert!(aligned[3].is_none(), "the rest is unmatched, not guessed");
    // Same lengths: positional, unless a sent id disagrees.
    let three = &details[..3];
    assert_eq!(r.align(three)[0].unwrap().name.as_deref(), Some("Dana Okafor"));
    let with_bad_id =
        vec![PersonDetail { id: Some("other".into()), ..Default::default() }, details[0].clone(), details[1].clone()];
    assert!(r.align(&with_bad_id)[0].is_none());
}

#[test]
fn request_carries_flags_and_encoded_webhook_url() {
    let c = client();
    let details = vec![PersonDetail { email: Some("a@b.io".into()), ..Default::default() }];
    let flags = EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..Default::default() };
    let hook = "https://hooks.example.test/v1/webhooks/apollo/b-1?token=t0k&x=1";
    let req = c.build_bulk_match(&details, &flags, Some(hook), false).unwrap();
    assert_eq!(req.method(), "POST");
    assert_eq!(req.url().path(), "/api/v1/people/bulk_match");
    let q: Vec<(String, String)> = req.url().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(q.contains(&("reveal_phone_number".into(), "true".into())));
    assert!(q.contains(&("run_waterfall_email".into(), "true".into())));
    assert!(q.contains(&("run_waterfall_phone".into(), "false".into())));
    assert!(q.contains(&("webhook_url".into(), hook.into())), "the token survives as one value");
    assert!(req.url().query().unwrap().contains("token%3Dt0k%26x%3D1"), "percent-encoded in the query");
    assert_eq!(req.headers()["x-api-key"], "k-secret-123");
    let body: Value = serde_json::from_slice(req.body().unwrap().as_bytes().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"details": [{"email": "a@b.io"}]}));
    assert!(!format!("{c:?}").contains("k-secret-123"), "the key never shows in Debug");
}

#[test]
fn refuses_more_than_ten_and_webhook_with_poll_only() {
    let c = client();
    let eleven = vec![PersonDetail { email: Some("a@b.io".into()), ..Default::default() }; 11];
    assert!(matches!(
        c.build_bulk_match(&eleven, &EnrichFlags::default(), None, false),
        Err(ApolloError::TooManyDetails { count: 11 })
    ));
    assert!(matches!(c.build_bulk_match(&[], &EnrichFlags::default(), None, false), Err(ApolloError::NoDetails)));
    assert!(matches!(
        c.build_bulk_match(&eleven[..1], &EnrichFlags::default(), Some("https://x"), true),
        Err(ApolloError::WebhookWithPollOnly)
    ));
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = ApolloClient::new(&format!("http://127.0.0.1:{port}"), "k".to_string().into()).unwrap();
    let details = vec![PersonDetail { email: Some("a@b.io".into()), ..Default::default() }];
    let flags = EnrichFlags { reveal_phone_number: true, ..Default::default() };
    let hook = "https://hooks.example.test/v1/webhooks/apollo/b?token=secret-token-123";
    let err = c.bulk_match(&details, &flags, Some(hook), false).await.unwrap_err();
    assert!(matches!(err, ApolloError::Transient { status: None, .. }), "{err:?}");
    assert!(!err.to_string().contains("secret-token-123"), "the webhook token never reaches a message: {err}");
    assert!(err.to_string().contains("connection failed"), "{err}");
    assert!(err.is_retryable());
}
