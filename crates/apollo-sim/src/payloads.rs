//! JSON bodies in Apollo's documented shapes: person objects, webhook payloads, error bodies.

use apollo_client::{Credits, EnrichFlags, RequestId};
use serde_json::{Value, json};

use crate::population::{PLACEHOLDER_EMAIL, SimPerson, WaterfallFind, WaterfallSearch};
use crate::records::{DeliveredEmail, DeliveredFacts, DeliveredPhone};

/// An asynchronous payload: its body, what producing it charges, and the facts it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// The JSON body.
    pub body: Value,
    /// Credits charged when it is produced.
    pub credits: Credits,
    /// Per person, what the body delivers (recorded for the tests' oracle).
    pub facts: Vec<DeliveredFacts>,
}

/// A credit amount as a JSON decimal (`3.0`), the way the synchronous answer reports it.
pub fn decimal(c: Credits) -> Value {
    serde_json::Number::from_f64(c.as_f64()).map(Value::Number).unwrap_or(Value::Null)
}

/// A person object of the synchronous `matches` array.
pub fn sync_person(p: &SimPerson, flags: &EnrichFlags) -> Value {
    let employment_id = derived_id(&p.apollo_id, 'e');
    let mut person = json!({
        "id": p.apollo_id,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "name": p.name,
        "linkedin_url": p.linkedin_url,
        "title": p.title,
        "email_status": if p.email_locked { "unavailable" } else { p.email_status.as_str() },
        "email": if p.email_locked { PLACEHOLDER_EMAIL } else { p.email.as_str() },
        "extrapolated_email_confidence": null,
        "headline": format!("{} at {}", p.title, p.organization.name),
        "photo_url": null,
        "twitter_url": null,
        "organization_id": p.organization.id,
        "employment_history": [{
            "_id": employment_id, "current": true, "organization_name": p.organization.name,
            "organization_id": p.organization.id, "start_date": "2021-03-01", "end_date": null,
            "title": p.title, "id": employment_id, "key": employment_id,
        }],
        "city": p.city,
        "state": p.state,
        "country": p.country,
        "organization": {
            "id": p.organization.id,
            "name": p.organization.name,
            "primary_domain": p.organization.domain,
            "website_url": format!("http://www.{}", p.organization.domain),
            "industry": p.organization.industry,
            "estimated_num_employees": p.organization.employees,
            "primary_phone": p.work_phone.as_ref().map(|w| json!({"number": w.raw, "sanitized_number": w.e164})).unwrap_or(json!({})),
            "phone": p.work_phone.as_ref().map(|w| w.raw.clone()),
        },
        "phone_numbers": p.work_phone.iter().map(|w| json!({
            "raw_number": w.raw, "sanitized_number": w.e164, "type": "work_hq",
            "status": "valid_number", "dnc_status": null, "position": 0,
        })).collect::<Vec<_>>(),
        "departments": p.departments,
        "subdepartments": [],
        "seniority": p.seniority,
        "functions": [],
        "show_intent": false,
        "revealed_for_current_team": true,
    });
    let obj = person.as_object_mut().expect("a JSON object literal");
    if flags.run_waterfall_email {
        // The address comes by webhook on waterfall requests.
        obj.remove("email");
        obj.remove("email_status");
    }
    if flags.reveal_personal_emails {
        obj.insert("personal_emails".into(), json!(p.personal_emails));
    }
    person
}

/// The phone-reveal webhook body: `*_cd` field names and no `request_id`, as documented.
pub fn phone_payload(people: &[&SimPerson], now: &str) -> Payload {
    let with_mobile = people.iter().filter(|p| p.mobile.is_some()).count();
    let credits = Credits::whole(8 * with_mobile as i64);
    let entries: Vec<Value> = people
        .iter()
        .map(|p| match &p.mobile {
            Some(m) => {
                let id = derived_id(&p.apollo_id, 'm');
                json!({
                    "id": p.apollo_id,
                    "status": "success",
                    "phone_numbers": [{
                        "_id": id, "confidence_cd": "high", "created_at": null,
                        "direct_dial_source_cd": "contact_trusted",
                        "dnc_other_info": {"country": p.country}, "dnc_status_cd": "not_found",
                        "dnc_status_updated_at": now, "position": 0, "raw_number": m.raw,
                        "sanitized_number": m.e164, "status_cd": "valid_number", "type_cd": "mobile",
                        "updated_at": null, "id": id, "key": id,
                    }],
                })
            }
            None => json!({"id": p.apollo_id, "status": "not_found", "phone_numbers": []}),
        })
        .collect();
    let body = json!({
        "status": "success",
        "total_requested_enrichments": people.len(),
        "unique_enriched_records": with_mobile,
        "missing_records": people.len() - with_mobile,
        "credits_consumed": credits,
        "people": entries,
    });
    let facts = people
        .iter()
        .map(|p| DeliveredFacts {
            apollo_id: p.apollo_id.clone(),
            phones: p
                .mobile
                .iter()
                .map(|m| DeliveredPhone {
                    e164: m.e164.clone(),
                    raw: m.raw.clone(),
                    kind: "mobile".into(),
                    status: "valid_number".into(),
                    vendor: None,
                })
                .collect(),
            emails: Vec::new(),
            credits: Credits::whole(if p.mobile.is_some() { 8 } else { 0 }),
        })
        .collect();
    Payload { body, credits, facts }
}

/// The waterfall webhook body, `request_id` as a bare JSON number as in live traffic.
pub fn waterfall_payload(
    request_id: RequestId,
    people: &[&SimPerson],
    flags: &EnrichFlags,
    initiated: &str,
    completed: &str,
) -> Payload {
    let (want_email, want_phone) = (flags.run_waterfall_email, flags.run_waterfall_phone);
    let mut credits = Credits::ZERO;
    let mut facts = Vec::new();
    let (mut any, mut emails_found, mut phones_found) = (0, 0, 0);
    let entries: Vec<Value> = people
        .iter()
        .map(|p| {
            let email = want_email.then_some(&p.waterfall_email);
            let phone = want_phone.then_some(&p.waterfall_phone);
            let email_hit = email.and_then(|s| s.found.as_ref());
            let phone_hit = phone.and_then(|s| s.found.as_ref());
            let mut own = Credits::ZERO;
            for search in [email, phone].into_iter().flatten().filter(|s| s.found.is_some()) {
                own += search.credits;
            }
            credits += own;
            emails_found += usize::from(email_hit.is_some());
            phones_found += usize::from(phone_hit.is_some());
            any += usize::from(email_hit.is_some() || phone_hit.is_some());
            facts.push(DeliveredFacts {
                apollo_id: p.apollo_id.clone(),
                phones: phone_hit
                    .map(|f| DeliveredPhone {
                        e164: f.value.clone(),
                        raw: f.raw.clone(),
                        kind: "mobile".into(),
                        status: "no_status".into(),
                        vendor: Some(f.vendor.name.clone()),
                    })
                    .into_iter()
                    .collect(),
                emails: email_hit
                    .map(|f| DeliveredEmail {
                        address: f.value.clone(),
                        status: email_status(f).into(),
                        vendor: Some(f.vendor.name.clone()),
                    })
                    .into_iter()
                    .collect(),
                credits: own,
            });
            let mut trail = serde_json::Map::new();
            if let Some(s) = email {
                trail.insert("emails".into(), json!([{"vendors": vendor_trail(s, "emails")}]));
            }
            if let Some(s) = phone {
                trail.insert("phone_numbers".into(), json!([{"vendors": vendor_trail(s, "phone_numbers")}]));
            }
            json!({
                "id": p.apollo_id,
                "waterfall": trail,
                "emails": email_hit.map(|f| vec![json!({
                    "email": f.value, "email_source_cd": null, "position": 0,
                    "email_status_cd": email_status(f),
                    "extrapolated_email_confidence": null,
                    "third_party_data_provider_id": f.vendor.id.trim_end_matches("-1"),
                    "waterfall_enriched_at": completed, "vendor_validation_statuses": [],
                })]).unwrap_or_default(),
                "phone_numbers": phone_hit.map(|f| {
                    let id = derived_id(&p.apollo_id, 'w');
                    vec![json!({
                        "_id": id, "confidence_cd": null, "dnc_other_info": {}, "dnc_status_cd": null,
                        "dnc_status_updated_at": null, "raw_number": f.raw, "sanitized_number": f.value,
                        "status_cd": "no_status", "type_cd": "mobile", "id": id, "key": id,
                    })]
                }).unwrap_or_default(),
            })
        })
        .collect();
    let mut target_fields = Vec::new();
    if want_email {
        target_fields.push("emails");
    }
    if want_phone {
        target_fields.push("phone_numbers");
    }
    let n = people.len();
    let body = json!({
        "status": "success",
        "total_requested_enrichments": n,
        "target_fields": target_fields,
        "records_enriched": any,
        "email_records_enriched": emails_found,
        "mobile_records_enriched": phones_found,
        "enrichment_not_found": n - any,
        "email_records_not_found": if want_email { n - emails_found } else { 0 },
        "mobile_records_not_found": if want_phone { n - phones_found } else { 0 },
        "credits_consumed": credits,
        "request_id": request_id.0,
        "request_initiated": initiated,
        "request_completed": completed,
        "people": entries,
    });
    Payload { body, credits, facts }
}

/// A waterfall email's `email_status_cd`.
fn email_status(f: &WaterfallFind) -> &'static str {
    if f.status == "VERIFIED" { "Verified" } else { "Unverified" }
}

fn vendor_trail(s: &WaterfallSearch, field: &str) -> Vec<Value> {
    let step = |id: &str, name: &str, status: &str, values: Vec<&str>| {
        let mut v = json!({
            "id": id, "name": name, "status": status, "usedForVerification": false,
            "statusCode": null, "statusMessage": null, "authMechanism": "native",
        });
        v[field] = json!(values);
        v
    };
    let mut out: Vec<Value> = s.missed.iter().map(|v| step(&v.id, &v.name, "NOT_FOUND", vec![])).collect();
    if let Some(f) = &s.found {
        out.push(step(&f.vendor.id, &f.vendor.name, &f.status, vec![f.raw.as_str()]));
    }
    out
}

/// A 24-hex id derived from a person id (sub-object ids such as `_id`); stable per person.
fn derived_id(person_id: &str, tag: char) -> String {
    let mut id: String = person_id.chars().take(16).collect();
    let tail = format!("{:08x}", (tag as u32) << 24 | (person_id.len() as u32));
    id.push_str(&tail);
    id
}

/// 400 `RECORD_LIMIT_EXCEEDED` (as in `examples/error_400_record_limit.json`).
pub fn record_limit(message: &str) -> Value {
    json!({"status": "failed", "error_code": "RECORD_LIMIT_EXCEEDED", "error_message": message})
}

/// A 400 with Apollo's `status`/`error_code`/`error_message` shape.
pub fn bad_request(code: &str, message: &str) -> Value {
    json!({"status": "failed", "error_code": code, "error_message": message})
}

/// 403 for a key without access to bulk_match (as in `examples/error_403.json`).
pub fn forbidden() -> Value {
    json!({"error": "api/v1/people/bulk_match is not accessible with this api_key", "error_code": "API_INACCESSIBLE"})
}

/// 422 for one detail Apollo refuses (the `reject_marker` fault), naming the detail.
pub fn rejected_detail(position: usize, field: &str) -> Value {
    json!({
        "status": "failed",
        "error_code": "INVALID_DETAIL",
        "error_message": format!("details[{position}].{field} cannot be enriched: the value is not accepted."),
        "details_index": position,
    })
}

/// 422 credits exhausted (as in `examples/error_422_credits_exhausted.json`).
pub fn credits_exhausted(remaining: Credits, next_billing_date: &str) -> Value {
    json!({
        "error": "You have insufficient credits to perform this action.",
        "error_details": {
            "code": "BILLING.LIMIT.CREDITS_EXHAUSTED",
            "message": "Your team has used all available credits for this billing cycle.",
            "suggestions": ["Upgrade your plan or wait for the next billing cycle."],
            "context": {"credits_remaining": remaining, "next_billing_date": next_billing_date},
        },
    })
}

/// 429 (as in `examples/error_429.json`).
pub fn rate_limited(limit: u32, per: &str) -> Value {
    json!({
        "message": format!(
            "The maximum number of api calls allowed for api/v1/people/bulk_match is {limit} times per {per}. Please upgrade your plan."
        ),
        "error_details": {"code": "USAGE.RATE_LIMIT.API_RATE_LIMIT_EXCEEDED"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::{Rates, person_for};
    use apollo_client::{DeliveryKind, PersonDetail, parse_delivery};

    fn people() -> Vec<SimPerson> {
        let rates = Rates {
            matched: 1.0,
            placeholder_email: 0.0,
            mobile: 0.5,
            personal_email: 0.5,
            waterfall_email: 0.6,
            waterfall_phone: 0.5,
        };
        (0..20)
            .filter_map(|i| {
                person_for(&PersonDetail { email: Some(format!("p{i}@acme-corp.com")), ..Default::default() }, &rates)
            })
            .collect()
    }

    #[test]
    fn sync_person_reads_back_through_the_client() {
        let ps = people();
        let flags = EnrichFlags { reveal_personal_emails: true, ..Default::default() };
        let p = apollo_client::Person::from_value(sync_person(&ps[0], &flags));
        assert_eq!(p.id.as_deref(), Some(ps[0].apollo_id.as_str()));
        assert_eq!(p.email.as_deref(), Some(ps[0].email.as_str()));
        assert_eq!(p.organization_domain.as_deref(), Some("acme-corp.com"));
        let wf = sync_person(&ps[0], &EnrichFlags { run_waterfall_email: true, ..Default::default() });
        assert!(wf.get("email").is_none() && wf.get("email_status").is_none());
    }

    #[test]
    fn phone_payload_parses_to_the_simulated_mobiles() {
        let ps = people();
        let refs: Vec<&SimPerson> = ps.iter().collect();
        let Payload { body, credits, facts } = phone_payload(&refs, "2026-01-01T00:00:00Z");
        assert!(body.get("request_id").is_none());
        let d = parse_delivery(body.to_string().as_bytes()).unwrap();
        assert_eq!(d.kind, DeliveryKind::Phone);
        assert_eq!(d.credits, Some(credits));
        let mobiles = ps.iter().filter(|p| p.mobile.is_some()).count();
        assert!(mobiles > 0 && mobiles < ps.len());
        assert_eq!(credits, Credits::whole(8 * mobiles as i64));
        assert_eq!(facts.len(), ps.len());
        assert_eq!(facts.iter().map(|f| f.credits).sum::<Credits>(), credits, "the shares add up to the charge");
        for ((parsed, p), recorded) in d.people.iter().zip(&ps).zip(&facts) {
            assert_eq!(parsed.apollo_id.as_deref(), Some(p.apollo_id.as_str()));
            assert_eq!(recorded.apollo_id, p.apollo_id);
            let phones: Vec<&str> = parsed.phones.iter().map(|f| f.e164.as_str()).collect();
            assert_eq!(phones, recorded.phones.iter().map(|f| f.e164.as_str()).collect::<Vec<_>>(), "recorded as sent");
            assert_eq!(phones, p.mobile.iter().map(|m| m.e164.as_str()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn waterfall_payload_parses_with_vendors() {
        let ps = people();
        let refs: Vec<&SimPerson> = ps.iter().collect();
        let flags = EnrichFlags { run_waterfall_email: true, run_waterfall_phone: true, ..Default::default() };
        let Payload { body, credits, facts } = waterfall_payload(RequestId(-42), &refs, &flags, "t0", "t1");
        assert_eq!(body["request_id"], json!(-42));
        let d = parse_delivery(body.to_string().as_bytes()).unwrap();
        assert_eq!((d.kind, d.request_id, d.credits), (DeliveryKind::Waterfall, Some(RequestId(-42)), Some(credits)));
        let expected: Credits = ps
            .iter()
            .flat_map(|p| [&p.waterfall_email, &p.waterfall_phone])
            .filter(|s| s.found.is_some())
            .map(|s| s.credits)
            .sum();
        assert_eq!(credits, expected);
        assert_eq!(facts.len(), ps.len());
        assert_eq!(facts.iter().map(|f| f.credits).sum::<Credits>(), credits, "the shares add up to the charge");
        for ((parsed, p), recorded) in d.people.iter().zip(&ps).zip(&facts) {
            let emails: Vec<(String, Option<String>)> =
                parsed.emails.iter().map(|e| (e.address.clone(), e.vendor.clone())).collect();
            let sent: Vec<(String, Option<String>)> =
                recorded.emails.iter().map(|e| (e.address.clone(), e.vendor.clone())).collect();
            assert_eq!(emails, sent, "recorded as sent");
            let want: Vec<(String, Option<String>)> =
                p.waterfall_email.found.iter().map(|f| (f.value.clone(), Some(f.vendor.name.clone()))).collect();
            assert_eq!(emails, want);
            let phones: Vec<(String, Option<String>)> =
                parsed.phones.iter().map(|e| (e.e164.clone(), e.vendor.clone())).collect();
            let sent: Vec<(String, Option<String>)> =
                recorded.phones.iter().map(|e| (e.e164.clone(), e.vendor.clone())).collect();
            assert_eq!(phones, sent, "recorded as sent");
            let want: Vec<(String, Option<String>)> =
                p.waterfall_phone.found.iter().map(|f| (f.value.clone(), Some(f.vendor.name.clone()))).collect();
            assert_eq!(phones, want);
        }
    }
}
