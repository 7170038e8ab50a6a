//! `bulk_match`: reading the request, and accepting it (matches, charges, asynchronous work).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apollo_client::{Credits, DeliveryKind, EnrichFlags, Flag, PersonDetail, RequestId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::async_job::AsyncJob;
use crate::faults::{DeliveryFaults, chance, server_error};
use crate::ledger::{ChargeKind, LedgerEntry};
use crate::payloads;
use crate::population::{Rates, SimPerson, person_for, resolve_alias};
use crate::records::PayloadRecord;
use crate::state::Inner;

/// Apollo's limit of details per call.
pub const MAX_DETAILS: usize = 10;

/// A readable `bulk_match` request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BulkRequest {
    pub details: Vec<PersonDetail>,
    /// The details as received, for the call record.
    pub raw_details: Vec<Value>,
    pub flags: EnrichFlags,
    pub webhook_url: Option<String>,
    pub poll_only: bool,
}

/// A refusal: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rejection {
    pub status: u16,
    pub body: Value,
}

fn reject(status: u16, body: Value) -> Rejection {
    Rejection { status, body }
}

/// Reads the query string and body. Flags may come from either (Apollo documents the query, and
/// public clients send them in the body too); a flag is on when either side turns it on.
pub(crate) fn parse_request(query: &str, body: &[u8]) -> Result<BulkRequest, Rejection> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
    let q = |name: &str| pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let json: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(reject(422, json!({"error": "The request body must be a JSON object."}))),
            Err(e) => return Err(reject(422, json!({"error": format!("The request body is not valid JSON: {e}")}))),
        }
    };
    let flag = |name: &str| {
        let from_query = q(name).is_some_and(truthy);
        let from_body = match json.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => truthy(s),
            _ => false,
        };
        from_query || from_body
    };
    let flags = EnrichFlags::of(Flag::ALL.into_iter().filter(|f| flag(f.name())));
    let poll_only = flag("poll_only");
    let webhook_url = q("webhook_url")
        .map(str::to_string)
        .or_else(|| json.get("webhook_url").and_then(Value::as_str).map(str::to_string))
        .filter(|u| !u.trim().is_empty());

    let raw = match json.get("details") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => &Vec::new(),
        Some(_) => return Err(reject(422, json!({"error": "details must be an array of objects."}))),
    };
    if raw.len() > MAX_DETAILS {
        return Err(reject(400, payloads::record_limit("You can enrich up to 10 records per request.")));
    }
    if raw.is_empty() {
        return Err(reject(
            400,
            payloads::record_limit("You must provide at least 1 and at most 10 records per request."),
        ));
    }
    let details = raw
        .iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::from_value::<PersonDetail>(d.clone())
                .map_err(|e| reject(422, json!({"error": format!("details[{i}] is malformed: {e}")})))
        })
        .collect::<Result<Vec<_>, _>>()?;

    if poll_only && webhook_url.is_some() {
        return Err(reject(
            400,
            payloads::bad_request("WEBHOOK_URL_WITH_POLL_ONLY", "Send either webhook_url or poll_only=true, not both."),
        ));
    }
    if flags.has_async() && !poll_only && webhook_url.is_none() {
        return Err(reject(
            400,
            payloads::bad_request(
                "WEBHOOK_URL_REQUIRED",
                "webhook_url is required when reveal_phone_number, run_waterfall_email or run_waterfall_phone is true (or send poll_only=true).",
            ),
        ));
    }
    if let Some(url) = &webhook_url
        && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(reject(400, payloads::bad_request("INVALID_WEBHOOK_URL", "webhook_url must be an http(s) URL.")));
    }
    Ok(BulkRequest { raw_details: raw.clone(), details, flags, webhook_url, poll_only })
}

fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(query).map(|q| q.into_inner()).unwrap_or_default()
}

fn truthy(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// What accepting a request led to.
pub(crate) enum Accepted {
    /// The 5xx fault: nothing charged, nothing scheduled.
    ServerError(u16),
    /// The charge would overdraw the balance: 422, nothing charged, nothing scheduled.
    CreditsExhausted(Value),
    /// The `reject_marker` fault: a detail carries the marker; 422, nothing charged or scheduled.
    RejectedDetail(Value),
    /// A 200 answer.
    Ok(Box<Answer>),
}

/// A 200 `bulk_match` answer and the work it started.
pub(crate) struct Answer {
    pub request_id: RequestId,
    pub body: Value,
    /// Jobs to send before answering (`early` fault).
    pub early: Vec<Arc<AsyncJob>>,
    /// Jobs to send when due.
    pub scheduled: Vec<Arc<AsyncJob>>,
    /// The `slow` fault picked this answer.
    pub slow: bool,
    /// The `charge_then_timeout` fault picked this answer.
    pub timeout: bool,
}

/// Runs the request against the population, the balance and the fault knobs. Called with the
/// state locked, so the random draws happen in request order.
pub(crate) fn accept(inner: &mut Inner, req: &BulkRequest, now: Instant) -> Accepted {
    let cfg = inner.config.clone();
    let rng = &mut inner.rng;
    if let Some(status) = server_error(rng, &cfg) {
        return Accepted::ServerError(status);
    }
    if let Some(marker) = cfg.reject_marker.as_deref()
        && let Some((position, field)) =
            req.raw_details.iter().enumerate().find_map(|(i, d)| carries_marker(d, marker).map(|f| (i, f)))
    {
        return Accepted::RejectedDetail(payloads::rejected_detail(position, &field));
    }
    let slow = chance(rng, cfg.fault_slow);
    let timeout = chance(rng, cfg.fault_charge_then_timeout);

    let rates = Rates::from(&cfg);
    let people: Vec<Option<SimPerson>> =
        req.details.iter().map(|d| person_for(&resolve_alias(d, &cfg.same_person), &rates)).collect();
    let matched: Vec<&SimPerson> = people.iter().flatten().collect();
    let flags = req.flags;
    let waterfall_requested = flags.run_waterfall_email || flags.run_waterfall_phone;
    // With a phone waterfall, phones come only through the waterfall (REFERENCE.md §2).
    let phone_requested = flags.reveal_phone_number && !flags.run_waterfall_phone && !matched.is_empty();

    let request_id = loop {
        let id = RequestId(rng.i64(..));
        if id.0 != 0 && !inner.by_request.contains_key(&id) {
            break id;
        }
    };

    let phone_skipped = phone_requested && chance(rng, cfg.fault_phone_skipped);
    let waterfall_failed = waterfall_requested && chance(rng, cfg.fault_waterfall_failed);
    let initiated = SystemTime::now();

    let mut jobs: Vec<Arc<AsyncJob>> = Vec::new();
    let mut records: Vec<PayloadRecord> = Vec::new();
    let make_job = |rng: &mut fastrand::Rng, kind: DeliveryKind, phone_job_id: Option<String>| {
        let faults = DeliveryFaults::draw(rng, &cfg, req.poll_only);
        let delay = if faults.early {
            Duration::ZERO
        } else {
            Duration::from_millis(cfg.delivery_delay_ms.saturating_add(rng.u64(0..=cfg.delivery_jitter_ms)))
        };
        let due_wall = initiated + delay;
        let payloads::Payload { body: payload, credits, facts } = match kind {
            DeliveryKind::Phone => payloads::phone_payload(&matched, &rfc3339(due_wall)),
            DeliveryKind::Waterfall => {
                payloads::waterfall_payload(request_id, &matched, &flags, &rfc3339(initiated), &rfc3339(due_wall))
            }
        };
        let people = match kind {
            DeliveryKind::Phone => matched.iter().filter(|p| p.mobile.is_some()).map(|p| p.apollo_id.clone()).collect(),
            DeliveryKind::Waterfall => matched.iter().map(|p| p.apollo_id.clone()).collect(),
        };
        let record = PayloadRecord { request_id, phone_job_id: phone_job_id.clone(), kind, credits, facts };
        let job = Arc::new(AsyncJob {
            request_id,
            kind,
            phone_job_id,
            url: if req.poll_only { None } else { req.webhook_url.clone() },
            body: payload.to_string(),
            payload,
            credits,
            people,
            due: now + delay,
            due_wall,
            faults,
            charged: AtomicBool::new(false),
            last_dispatched: Mutex::new(None),
        });
        (job, record)
    };

    let mut phone_enrichment = None;
    if phone_requested {
        phone_enrichment = Some(if phone_skipped {
            json!({"status": "skipped", "message": "Phone enrichment for these people is already in progress from an earlier request; its results will be delivered there."})
        } else {
            let job_id: String = (0..12).map(|_| format!("{:02x}", rng.u8(..))).collect();
            let (job, record) = make_job(rng, DeliveryKind::Phone, Some(job_id.clone()));
            jobs.push(job);
            records.push(record);
            json!({
                "request_id": job_id,
                "status": "pending",
                "message": "Phone enrichment is processing asynchronously. Results will be delivered to the webhook URL or can be polled with the top-level request_id.",
            })
        });
    }
    let mut waterfall = None;
    if waterfall_requested {
        waterfall = Some(if waterfall_failed {
            json!({"status": "failed", "message": "Waterfall enrichment is not configured for your team. No webhook will be sent."})
        } else {
            let (job, record) = make_job(rng, DeliveryKind::Waterfall, None);
            jobs.push(job);
            records.push(record);
            json!({"status": "accepted", "message": "Waterfall enrichment request accepted. Results will be sent to the provided webhook URL."})
        });
    }

    // Waterfall answers report no credits, so nothing is charged for them synchronously: every
    // charge in the ledger is reported in some `credits_consumed` on the wire.
    let sync_credits = if waterfall_requested { Credits::ZERO } else { Credits::whole(matched.len() as i64) };
    let needed = sync_credits + jobs.iter().map(|j| j.credits).sum::<Credits>();
    if let Some(balance) = inner.config.credit_balance {
        if needed > balance {
            let next_billing = (Utc::now() + chrono::Days::new(30)).format("%Y-%m-%d").to_string();
            return Accepted::CreditsExhausted(payloads::credits_exhausted(balance, &next_billing));
        }
        inner.config.credit_balance = Some(Credits(balance.micros() - needed.micros()));
    }
    if !waterfall_requested {
        inner.ledger.charge(LedgerEntry {
            request_id,
            kind: ChargeKind::Sync,
            credits: sync_credits,
            people: matched.iter().map(|p| p.apollo_id.clone()).collect(),
            at: initiated,
        });
    }

    let mut body = json!({
        "status": "success",
        "error_code": null,
        "error_message": null,
        "total_requested_enrichments": req.details.len(),
        "request_id": request_id.0,
        "matches": people.iter().map(|p| p.as_ref().map(|p| payloads::sync_person(p, &flags)).unwrap_or(Value::Null)).collect::<Vec<_>>(),
    });
    let obj = body.as_object_mut().expect("a JSON object literal");
    if !waterfall_requested {
        obj.insert("unique_enriched_records".into(), json!(matched.len()));
        obj.insert("missing_records".into(), json!(req.details.len() - matched.len()));
        obj.insert("credits_consumed".into(), payloads::decimal(sync_credits));
    }
    if let Some(w) = waterfall {
        obj.insert("waterfall".into(), w);
    }
    if let Some(p) = phone_enrichment {
        obj.insert("phone_enrichment".into(), p);
    }

    inner.payloads.extend(records);
    inner.by_request.insert(request_id, jobs.clone());
    for job in &jobs {
        if let Some(id) = &job.phone_job_id {
            inner.by_phone_job.insert(id.clone(), job.clone());
        }
    }
    let (early, scheduled) = jobs.into_iter().partition(|j| j.faults.early);
    Accepted::Ok(Box::new(Answer { request_id, body, early, scheduled, slow, timeout }))
}

/// The field of a detail that carries `marker`: any string value equal to it (ignoring case and
/// surrounding spaces), or an email whose domain is it.
fn carries_marker(detail: &Value, marker: &str) -> Option<String> {
    let marker = marker.trim();
    detail.as_object()?.iter().find_map(|(field, value)| {
        let v = value.as_str()?.trim();
        let domain = v.rsplit_once('@').map(|(_, d)| d);
        (v.eq_ignore_ascii_case(marker) || domain.is_some_and(|d| d.eq_ignore_ascii_case(marker)))
            .then(|| field.clone())
    })
}

/// RFC 3339 in UTC with seconds, as in Apollo's payloads.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(details: usize) -> Vec<u8> {
        let details: Vec<Value> = (0..details).map(|i| json!({"email": format!("p{i}@acme.io")})).collect();
        serde_json::to_vec(&json!({ "details": details })).unwrap()
    }

    #[test]
    fn flags_come_from_the_query_or_the_body() {
        let r = parse_request("reveal_phone_number=true&webhook_url=https%3A%2F%2Fx.io%2Fh%3Ftoken%3Dabc", &body(2))
            .unwrap();
        assert!(r.flags.reveal_phone_number && !r.flags.run_waterfall_email);
        assert_eq!(r.webhook_url.as_deref(), Some("https://x.io/h?token=abc"));
        assert_eq!(r.details.len(), 2);
        let b = json!({"details": [{"email": "a@b.io"}], "run_waterfall_email": true, "poll_only": "true"});
        let r = parse_request("", &serde_json::to_vec(&b).unwrap()).unwrap();
        assert!(r.flags.run_waterfall_email && r.poll_only && r.webhook_url.is_none());
    }

    #[test]
    fn bad_requests_are_refused_with_apollos_codes() {
        let code = |r: Result<BulkRequest, Rejection>| {
            let r = r.unwrap_err();
            (r.status, r.body["error_code"].as_str().unwrap_or_default().to_string())
        };
        assert_eq!(code(parse_request("", &body(11))), (400, "RECORD_LIMIT_EXCEEDED".into()));
        assert_eq!(code(parse_request("", &body(0))), (400, "RECORD_LIMIT_EXCEEDED".into()));
        assert_eq!(code(parse_request("reveal_phone_number=true", &body(1))), (400, "WEBHOOK_URL_REQUIRED".into()));
        assert_eq!(
            code(parse_request("poll_only=true&webhook_url=https://x.io/", &body(1))),
            (400, "WEBHOOK_URL_WITH_POLL_ONLY".into())
        );
        assert_eq!(code(parse_request("webhook_url=ftp://x", &body(1))), (400, "INVALID_WEBHOOK_URL".into()));
        assert_eq!(parse_request("", b"{not json").unwrap_err().status, 422);
        assert_eq!(parse_request("", br#"{"details":[{"email": 5}]}"#).unwrap_err().status, 422);
        assert!(parse_request("reveal_phone_number=true&poll_only=true", &body(1)).is_ok());
    }
}
