//! The asynchronous surface of the simulator through the real `apollo-client`: phone and
//! waterfall deliveries, every delivery fault on the wire, and `webhook_result` polling.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apollo_client::{
    ApolloClient, Credits, DeliveryKind, EnrichFlags, PersonDetail, RequestId, WebhookResultPoll, parse_delivery,
};
use apollo_sim::{ChargeKind, SimConfig, SimHandle};
use common::{Receiver, eventually, fast_config, people, start};

const PHONE: EnrichFlags = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::NONE };
const WATERFALL: EnrichFlags =
    EnrichFlags { run_waterfall_email: true, run_waterfall_phone: true, ..EnrichFlags::NONE };
const WAIT: Duration = Duration::from_secs(5);

fn hook(rx: &Receiver, token: &str) -> String {
    format!("{}/v1/webhooks/apollo/batch-{token}?token={token}", rx.url)
}

/// The (e164, vendor) pairs and (address, vendor) pairs a delivery gives for a person.
type Facts = (BTreeSet<(String, Option<String>)>, BTreeSet<(String, Option<String>)>);

fn delivered_facts(body: &[u8], apollo_id: &str) -> Facts {
    let d = parse_delivery(body).unwrap();
    let p = d.people.iter().find(|p| p.apollo_id.as_deref() == Some(apollo_id)).expect("person in the payload");
    (
        p.phones.iter().map(|f| (f.e164.clone(), f.vendor.clone())).collect(),
        p.emails.iter().map(|f| (f.address.clone(), f.vendor.clone())).collect(),
    )
}

async fn wait_deliveries(sim: &SimHandle, n: usize) -> Vec<apollo_sim::DeliveryRecord> {
    eventually(WAIT, || sim.deliveries().len() >= n).await;
    sim.deliveries()
}

#[tokio::test]
async fn phone_deliveries_carry_the_simulated_mobiles() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { mobile_rate: 0.5, ..fast_config() }).await;
    let details = people("ph", 10);
    let url = hook(&rx, "p1");
    let out = client.bulk_match(&details, &PHONE, Some(&url), false).await.unwrap().response;
    let pe = out.phone_enrichment.clone().expect("phone_enrichment");
    assert!(pe.pending());
    let job = pe.request_id.unwrap();
    assert!(job.len() == 24 && job.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(out.credits_consumed, Some(Credits::whole(10)));

    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    // The URL arrives exactly as given, our token included.
    assert_eq!(got[0].target, "/v1/webhooks/apollo/batch-p1?token=p1");
    let raw: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert!(raw.get("request_id").is_none(), "the documented phone payload has no request_id");
    assert_eq!(
        raw["people"][0]["phone_numbers"].as_array().map(|a| a.is_empty() || a[0].get("type_cd").is_some()),
        Some(true)
    );
    let delivery = parse_delivery(&got[0].body).unwrap();
    assert_eq!(delivery.kind, DeliveryKind::Phone);
    let mut mobiles = 0;
    for d in &details {
        let truth = sim.truth_for(d).unwrap();
        let (phones, emails) = delivered_facts(&got[0].body, &truth.apollo_id);
        let want: BTreeSet<_> = truth.mobile.iter().map(|m| (m.e164.clone(), None)).collect();
        assert_eq!(phones, want);
        assert!(emails.is_empty());
        mobiles += usize::from(truth.mobile.is_some());
    }
    assert!(mobiles > 0 && mobiles < 10);
    assert_eq!(delivery.credits, Some(Credits::whole(8 * mobiles as i64)));

    let ledger = sim.ledger();
    assert_eq!(ledger.total_of(ChargeKind::Sync), Credits::whole(10));
    assert_eq!(ledger.total_of(ChargeKind::Phone), Credits::whole(8 * mobiles as i64));
    assert_eq!(ledger.total, out.credits_consumed.unwrap() + delivery.credits.unwrap());
    let records = sim.deliveries();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].attempt, records[0].status, records[0].kind), (1, Some(200), DeliveryKind::Phone));
    assert_eq!(records[0].url, url);
    assert_eq!(records[0].phone_job_id.as_deref(), Some(job.as_str()));
    sim.stop().await;
}

#[tokio::test]
async fn waterfall_deliveries_carry_vendors_and_the_request_id() {
    let rx = Receiver::start().await;
    let (sim, client) = start(fast_config()).await;
    let details = people("wf", 10);
    // reveal_phone_number with run_waterfall_phone: phones come only through the waterfall.
    let flags = EnrichFlags { reveal_phone_number: true, ..WATERFALL };
    let out = client.bulk_match(&details, &flags, Some(&hook(&rx, "w1")), false).await.unwrap().response;
    assert!(out.waterfall.as_ref().unwrap().accepted());
    assert!(out.phone_enrichment.is_none());
    assert_eq!(out.credits_consumed, None);
    assert!(out.matches.iter().flatten().all(|p| p.raw.get("email").is_none()));

    let got = rx.wait_for(1, WAIT).await;
    let payloads = sim.payloads();
    assert_eq!(payloads.iter().map(|p| p.kind).collect::<Vec<_>>(), [DeliveryKind::Waterfall], "no phone payload");
    let raw: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert!(raw["request_id"].is_i64(), "request_id is a bare JSON number");
    let delivery = parse_delivery(&got[0].body).unwrap();
    assert_eq!(delivery.kind, DeliveryKind::Waterfall);
    assert_eq!(delivery.request_id, out.request_id);
    let mut expected = Credits::ZERO;
    let (mut emails_found, mut phones_found) = (0, 0);
    for d in &details {
        let t = sim.truth_for(d).unwrap();
        let (phones, emails) = delivered_facts(&got[0].body, &t.apollo_id);
        let want_phones: BTreeSet<_> =
            t.waterfall_phone.found.iter().map(|f| (f.value.clone(), Some(f.vendor.name.clone()))).collect();
        let want_emails: BTreeSet<_> =
            t.waterfall_email.found.iter().map(|f| (f.value.clone(), Some(f.vendor.name.clone()))).collect();
        assert_eq!((phones, emails), (want_phones, want_emails));
        for s in [&t.waterfall_email, &t.waterfall_phone] {
            if s.found.is_some() {
                expected += s.credits;
            }
        }
        emails_found += usize::from(t.waterfall_email.found.is_some());
        phones_found += usize::from(t.waterfall_phone.found.is_some());
    }
    assert!(emails_found > 0 && phones_found > 0);
    assert_eq!(delivery.credits, Some(expected));
    assert_eq!(raw["email_records_enriched"], emails_found);
    assert_eq!(sim.ledger().total, expected, "waterfall credits are charged with the payload only");
    assert_eq!(sim.ledger().entries.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn the_duplicate_fault_posts_twice_identically() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { fault_duplicate: 1.0, ..fast_config() }).await;
    client.bulk_match(&people("dup", 3), &PHONE, Some(&hook(&rx, "d")), false).await.unwrap();
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!((&got[0].target, &got[0].body), (&got[1].target, &got[1].body));
    let records = sim.deliveries();
    assert_eq!(records.iter().map(|r| r.duplicate).collect::<Vec<_>>(), vec![false, true]);
    // Charged once, however often delivered.
    assert_eq!(sim.ledger().entries.iter().filter(|e| e.kind == ChargeKind::Phone).count(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn the_early_fault_posts_before_the_answer() {
    let rx = Receiver::start().await;
    // A long delivery delay: only the early fault can explain a delivery before the answer.
    let (sim, client) = start(SimConfig { fault_early: 1.0, delivery_delay_ms: 60_000, ..fast_config() }).await;
    let out = client.bulk_match(&people("early", 2), &WATERFALL, Some(&hook(&rx, "e")), false).await.unwrap();
    let returned = Instant::now();
    let got = rx.received();
    assert_eq!(got.len(), 1, "the delivery arrived before bulk_match returned");
    assert!(got[0].at <= returned);
    assert_eq!(parse_delivery(&got[0].body).unwrap().request_id, out.response.request_id);
    assert!(sim.deliveries()[0].early);
    // Already pollable.
    let id = out.response.request_id.unwrap();
    assert!(matches!(client.webhook_result_for(id).await.unwrap(), WebhookResultPoll::Ready(_)));
    // The answer waits for the first attempt only; retries of a failing receiver carry on after it.
    rx.answer(500);
    // A backoff far longer than any scheduling hiccup: had the answer waited for the retry, the
    // retry would be recorded by the time it returns.
    sim.update_config(|c| c.retry_backoff_ms = 2_000);
    client.bulk_match(&people("early2", 1), &PHONE, Some(&hook(&rx, "e2")), false).await.unwrap();
    assert_eq!(rx.received().len(), 2);
    assert_eq!(sim.deliveries().iter().filter(|d| d.url.ends_with("e2")).count(), 1, "only the first attempt");
    assert_eq!(rx.wait_for(3, WAIT).await.len(), 3, "the first retry follows after the backoff");
    sim.stop().await;
}

#[tokio::test]
async fn the_drop_fault_sends_nothing_but_the_result_is_pollable() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { fault_drop: 1.0, ..fast_config() }).await;
    let out = client.bulk_match(&people("drop", 4), &PHONE, Some(&hook(&rx, "x")), false).await.unwrap().response;
    let records = wait_deliveries(&sim, 1).await;
    assert!(records[0].dropped && records[0].attempt == 0 && records[0].status.is_none());
    assert!(eventually(WAIT, || sim.idle()).await);
    assert!(rx.received().is_empty());
    // Both the top-level id and the phone job id give the payload.
    let job = out.phone_enrichment.unwrap().request_id.unwrap();
    for id in [out.request_id.unwrap().to_string(), job] {
        match client.webhook_result(&id).await.unwrap() {
            WebhookResultPoll::Ready(r) => {
                assert_eq!(r.webhook_status.as_deref(), Some("success"));
                assert_eq!(r.request_type.as_deref(), Some("phone"));
                assert_eq!(r.request_id.as_deref(), Some(id.as_str()));
                let d = apollo_client::delivery::parse_delivery_value(&r.webhook_result.unwrap()).unwrap();
                assert_eq!(d.people.len(), 4);
            }
            other => panic!("expected the dropped result, got {other:?}"),
        }
    }
    assert_eq!(sim.ledger().entries.iter().filter(|e| e.kind == ChargeKind::Phone).count(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_gets_bounded_retries() {
    let rx = Receiver::start().await;
    rx.answer(500);
    let (sim, client) = start(SimConfig { max_delivery_retries: 3, ..fast_config() }).await;
    client.bulk_match(&people("retry", 1), &PHONE, Some(&hook(&rx, "r")), false).await.unwrap();
    let got = rx.wait_for(4, WAIT).await;
    assert!(eventually(WAIT, || sim.idle()).await);
    assert_eq!(rx.received().len(), 4, "1 attempt + 3 retries, then it gives up");
    assert!(got.windows(2).all(|w| w[0].body == w[1].body));
    // Backoff doubles: 10, 20, 40 ms between attempts.
    assert!(got[3].at - got[0].at >= Duration::from_millis(70));
    let records = sim.deliveries();
    assert_eq!(records.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(records.iter().all(|r| r.status == Some(500)));
    sim.stop().await;

    // A connection error counts as a failed attempt too.
    let (sim, client) = start(SimConfig { max_delivery_retries: 2, ..fast_config() }).await;
    let closed = format!("http://127.0.0.1:{}/gone", free_port());
    client.bulk_match(&people("retry", 1), &PHONE, Some(&closed), false).await.unwrap();
    assert!(eventually(WAIT, || sim.idle()).await);
    let records = sim.deliveries();
    assert_eq!(records.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(records.iter().all(|r| r.status.is_none() && r.error.is_some()), "{records:?}");
    sim.stop().await;
}

#[tokio::test]
async fn a_later_2xx_stops_the_retries() {
    let rx = Receiver::start().await;
    rx.script(&[500, 503]);
    let (sim, client) = start(SimConfig { max_delivery_retries: 5, ..fast_config() }).await;
    client.bulk_match(&people("stop", 1), &PHONE, Some(&hook(&rx, "s")), false).await.unwrap();
    assert!(eventually(WAIT, || sim.idle()).await, "the delivery is over");
    let records = sim.deliveries();
    let attempts: Vec<(u32, Option<u16>)> = records.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(attempts, [(1, Some(500)), (2, Some(503)), (3, Some(200))], "five retries allowed, two used");
    assert_eq!(rx.received().len(), 3);
    sim.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_reorder_fault_swaps_deliveries_of_two_requests() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { fault_reorder: 1.0, reorder_window_ms: 10_000, ..fast_config() }).await;
    client.bulk_match(&people("ro1", 1), &PHONE, Some(&hook(&rx, "first")), false).await.unwrap();
    client.bulk_match(&people("ro2", 1), &PHONE, Some(&hook(&rx, "second")), false).await.unwrap();
    let got = rx.wait_for(2, WAIT).await;
    let order: Vec<&str> = got.iter().map(|r| r.target.rsplit('=').next().unwrap()).collect();
    assert_eq!(order, vec!["second", "first"]);
    let records = sim.deliveries();
    assert_eq!(records.iter().map(|r| r.reordered).collect::<Vec<_>>(), vec![false, true]);
    sim.stop().await;
}

#[tokio::test]
async fn waterfall_failed_and_phone_skipped_send_nothing() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { fault_waterfall_failed: 1.0, ..fast_config() }).await;
    let out = client.bulk_match(&people("wff", 2), &WATERFALL, Some(&hook(&rx, "wf")), false).await.unwrap().response;
    let w = out.waterfall.unwrap();
    assert_eq!(w.status.as_deref(), Some("failed"));
    assert!(!w.accepted());
    let id = out.request_id.unwrap();
    sim.update_config(|c| {
        c.fault_waterfall_failed = 0.0;
        c.fault_phone_skipped = 1.0;
    });
    let out = client.bulk_match(&people("skip", 2), &PHONE, Some(&hook(&rx, "ps")), false).await.unwrap().response;
    let pe = out.phone_enrichment.unwrap();
    assert_eq!((pe.status.as_deref(), pe.request_id.as_deref()), (Some("skipped"), None));
    assert!(!pe.pending());
    assert!(sim.idle() && sim.payloads().is_empty(), "nothing scheduled");
    assert!(rx.received().is_empty() && sim.deliveries().is_empty());
    // No charge for the failed waterfall; the skipped phone request pays only its matches.
    let ledger = sim.ledger();
    assert_eq!(ledger.total_for(id), Credits::ZERO);
    assert_eq!(ledger.total, Credits::whole(2));
    assert!(matches!(client.webhook_result_for(id).await.unwrap(), WebhookResultPoll::Gone { .. }));
    sim.stop().await;
}

#[tokio::test]
async fn webhook_result_goes_pending_then_success_and_knows_unknown_ids() {
    let (sim, client) = start(SimConfig { delivery_delay_ms: 800, ..fast_config() }).await;
    // poll_only: nothing is POSTed, the result is only pollable.
    let out = client.bulk_match(&people("poll", 3), &WATERFALL, None, true).await.unwrap().response;
    let id = out.request_id.unwrap();
    match client.webhook_result_for(id).await.unwrap() {
        WebhookResultPoll::Pending { retry_after } => assert_eq!(retry_after, Some(Duration::from_secs(1))),
        other => panic!("expected pending, got {other:?}"),
    }
    assert_eq!(sim.ledger().total, Credits::ZERO, "charged when produced, not before");
    let deadline = Instant::now() + WAIT;
    let ready = loop {
        match client.webhook_result_for(id).await.unwrap() {
            WebhookResultPoll::Ready(r) => break r,
            WebhookResultPoll::Pending { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("expected the result, got {other:?}"),
        }
    };
    assert_eq!(ready.webhook_status.as_deref(), Some("success"));
    assert_eq!(ready.request_type.as_deref(), Some("waterfall"));
    assert_eq!(ready.request_id, Some(id.to_string()));
    assert!(ready.raw.get("last_dispatched_at").and_then(|v| v.as_str()).is_some());
    let d = apollo_client::delivery::parse_delivery_value(&ready.webhook_result.unwrap()).unwrap();
    assert_eq!(d.request_id, Some(id));
    assert_eq!(sim.ledger().total, d.credits.unwrap());
    assert!(sim.deliveries().is_empty());

    let unknown = RequestId(id.0.wrapping_add(1));
    match client.webhook_result_for(unknown).await.unwrap() {
        WebhookResultPoll::Gone { code } => assert_eq!(code, "request_id_unknown"),
        other => panic!("expected unknown, got {other:?}"),
    }
    match client.webhook_result("garbage!").await.unwrap() {
        WebhookResultPoll::Gone { code } => assert_eq!(code, "invalid_request_id"),
        other => panic!("expected invalid, got {other:?}"),
    }
    let wrong = ApolloClient::new(sim.url(), "nope".to_string().into()).unwrap();
    assert!(wrong.webhook_result_for(id).await.is_err());
    sim.stop().await;
}

#[tokio::test]
async fn every_charge_is_reported_on_the_wire() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { match_rate: 0.7, ..fast_config() }).await;
    let mut reported = Credits::ZERO;
    let flag_sets = [PHONE, WATERFALL, EnrichFlags { run_waterfall_email: true, ..PHONE }, EnrichFlags::default()];
    let mut expected_deliveries = 0;
    for (i, flags) in flag_sets.iter().enumerate() {
        let details: Vec<PersonDetail> = people(&format!("all{i}"), 10);
        let out = client.bulk_match(&details, flags, Some(&hook(&rx, &i.to_string())), false).await.unwrap();
        reported += out.response.credits_consumed.unwrap_or(Credits::ZERO);
        expected_deliveries += usize::from(out.response.phone_enrichment.is_some_and(|p| p.pending()))
            + usize::from(out.response.waterfall.is_some_and(|w| w.accepted()));
    }
    assert_eq!(expected_deliveries, 4);
    let got = rx.wait_for(expected_deliveries, WAIT).await;
    for r in &got {
        reported += parse_delivery(&r.body).unwrap().credits.unwrap();
    }
    assert_eq!(sim.ledger().total, reported);
    assert_eq!(sim.ledger().entries.iter().map(|e| e.credits).sum::<Credits>(), reported);
    sim.stop().await;
}

#[tokio::test]
async fn charge_then_timeout_charges_and_delivers_but_answers_after_the_client_gave_up() {
    let rx = Receiver::start().await;
    let (sim, _) =
        start(SimConfig { fault_charge_then_timeout: 1.0, charge_then_timeout_ms: 30_000, ..fast_config() }).await;
    let impatient =
        ApolloClient::with_timeout(sim.url(), "sim-key".to_string().into(), Duration::from_millis(500)).unwrap();
    let details = people("ctt", 3);
    let e = impatient.bulk_match(&details, &PHONE, Some(&hook(&rx, "t")), false).await.unwrap_err();
    assert!(matches!(e, apollo_client::ApolloError::Transient { status: None, .. }), "{e:?}");
    // The webhook still comes, with every mobile of the call, and everything is charged.
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let payloads = sim.payloads();
    assert_eq!(payloads.len(), 1);
    let request_id = payloads[0].request_id;
    let mobiles: usize = details.iter().filter(|d| sim.truth_for(d).unwrap().mobile.is_some()).count();
    let ledger = sim.ledger();
    assert_eq!(ledger.total_for(request_id), Credits::whole(3 + 8 * mobiles as i64));
    for d in &details {
        let t = sim.truth_for(d).unwrap();
        let (phones, _) = delivered_facts(&got[0].body, &t.apollo_id);
        assert_eq!(phones, t.mobile.iter().map(|m| (m.e164.clone(), None)).collect());
    }
    sim.stop().await;
}

#[tokio::test]
async fn payload_records_carry_every_fact_delivered() {
    let rx = Receiver::start().await;
    let (sim, client) = start(SimConfig { mobile_rate: 0.5, ..fast_config() }).await;
    let details = people("facts", 8);
    let flags = EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..PHONE };
    let out = client.bulk_match(&details, &flags, Some(&hook(&rx, "f")), false).await.unwrap().response;
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let payloads = sim.payloads();
    assert_eq!(payloads.iter().map(|p| p.kind.as_str()).collect::<BTreeSet<_>>().len(), 2, "phone and waterfall");
    for p in &payloads {
        assert_eq!(Some(p.request_id), out.request_id);
        let body = &got.iter().find(|g| parse_delivery(&g.body).unwrap().kind == p.kind).unwrap().body;
        for facts in &p.facts {
            let recorded: Facts = (
                facts.phones.iter().map(|f| (f.e164.clone(), f.vendor.clone())).collect(),
                facts.emails.iter().map(|f| (f.address.clone(), f.vendor.clone())).collect(),
            );
            assert_eq!(recorded, delivered_facts(body, &facts.apollo_id), "{:?} of {}", p.kind, facts.apollo_id);
        }
        assert_eq!(p.facts.len(), details.len());
    }
    sim.stop().await;
}

#[tokio::test]
async fn the_result_expired_fault_answers_410() {
    let (sim, client) = start(SimConfig { fault_result_expired: 1.0, delivery_delay_ms: 0, ..fast_config() }).await;
    let out = client.bulk_match(&people("exp", 2), &WATERFALL, None, true).await.unwrap().response;
    match client.webhook_result_for(out.request_id.unwrap()).await.unwrap() {
        WebhookResultPoll::Gone { code } => assert_eq!(code, "request_id_expired"),
        other => panic!("expected 410, got {other:?}"),
    }
    let poll = sim.calls().into_iter().find(|c| c.route.contains("webhook_result")).unwrap();
    assert_eq!((poll.status, poll.fault.as_deref()), (410, Some("result_expired")));
    sim.stop().await;
}
