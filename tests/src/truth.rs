//! The end-to-end oracle: each person's record (as `GET /v1/jobs/{id}/people` shows it) against
//! what the simulator itself recorded — the details it received, the person it answered for each,
//! and every fact its asynchronous payloads carried. The expected record is found from the
//! client's input by this file's own notion of identity, never through the service's code.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use apollo_client::RequestId;
use apollo_sim::SimHandle;
use serde_json::Value;

/// What the comparison covered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Matched people compared field by field.
    pub matched: usize,
    /// People Apollo answered with no match.
    pub not_found: usize,
    /// Matched people whose phone reveal Apollo skipped and never delivered: `partial`.
    pub phone_never_came: usize,
    /// Mobiles delivered by a phone payload that had to be present.
    pub mobiles: usize,
    /// Waterfall emails that had to be present.
    pub waterfall_emails: usize,
}

/// The fields of a client's input that identify a person to Apollo (everything else, such as
/// `external_id`, stays with the service).
const IDENTIFYING: &[&str] =
    &["id", "email", "hashed_email", "linkedin_url", "first_name", "last_name", "name", "domain", "organization_name"];

/// Scalar fields of Apollo's person object that the record must carry as answered.
const PERSON_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "name",
    "title",
    "headline",
    "linkedin_url",
    "city",
    "state",
    "country",
    "seniority",
    "organization_id",
];

/// Fields of Apollo's `organization` object that the record must carry as answered.
const ORGANIZATION_FIELDS: &[&str] =
    &["id", "name", "primary_domain", "website_url", "industry", "estimated_num_employees"];

/// Apollo's placeholder for an email that exists but is not revealed: never a real address.
const PLACEHOLDER: &str = "email_not_unlocked@domain.com";

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_lowercase)
}

/// Whether a detail Apollo received is the one the client's `input` asked for: every identifying
/// field equal, ignoring case and surrounding spaces (the inputs of these tests are otherwise
/// already in the shape Apollo takes).
pub fn same_identity(input: &Value, detail: &Value) -> bool {
    IDENTIFYING.iter().all(|k| text(input.get(*k)) == text(detail.get(*k)))
}

/// One phone of the expected record: (E.164, raw, type, status, vendors).
type Phone = (String, Option<String>, Option<String>, Option<String>, BTreeSet<String>);
/// One email of the expected record: (address, status, vendors).
type Email = (String, Option<String>, BTreeSet<String>);

/// What the simulator's records say one input should have become: built from its synchronous
/// answers ([`Expected::add_answer`]) and the facts its payloads delivered ([`Expected::add_facts`]).
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// The Apollo id matched (`None`: no match).
    pub apollo_id: Option<String>,
    answered: Option<Value>,
    phones: BTreeMap<String, Phone>,
    emails: BTreeMap<String, Email>,
    mobiles: BTreeSet<String>,
    waterfall_emails: BTreeSet<String>,
    /// A call carrying the person answered `phone_enrichment.status` "skipped".
    phone_skipped: bool,
    /// A phone payload of those calls lists the person (with or without a number).
    phone_delivered: bool,
}

fn add_phone(phones: &mut BTreeMap<String, Phone>, phone: Phone) -> Result<(), String> {
    if let Some(old) = phones.get(&phone.0).filter(|old| **old != phone) {
        return Err(format!("the simulator gave one number two descriptions: {old:?} and {phone:?}"));
    }
    phones.insert(phone.0.clone(), phone);
    Ok(())
}

fn add_email(emails: &mut BTreeMap<String, Email>, email: Email) -> Result<(), String> {
    if let Some(old) = emails.get(&email.0).filter(|old| **old != email) {
        return Err(format!("the simulator gave one address two descriptions: {old:?} and {email:?}"));
    }
    emails.insert(email.0.clone(), email);
    Ok(())
}

impl Expected {
    /// Adds the person object a 200 answer gave at the input's position (its id, fields, phones,
    /// revealed and personal emails). An error when it contradicts what is already there.
    pub fn add_answer(&mut self, apollo_id: &str, answered: &Value) -> Result<(), String> {
        if self.apollo_id.as_deref().is_some_and(|id| id != apollo_id) {
            return Err(format!("one input, two Apollo ids: {:?} and {apollo_id}", self.apollo_id));
        }
        self.apollo_id = Some(apollo_id.to_string());
        for p in answered["phone_numbers"].as_array().into_iter().flatten() {
            let s = |k: &str| p[k].as_str().map(str::to_string);
            let e164 = s("sanitized_number").ok_or("an answered phone without sanitized_number")?;
            add_phone(&mut self.phones, (e164, s("raw_number"), s("type"), s("status"), BTreeSet::new()))?;
        }
        if let Some(address) = text(answered.get("email")).filter(|a| a != PLACEHOLDER) {
            add_email(&mut self.emails, (address, text(answered.get("email_status")), BTreeSet::new()))?;
        }
        for address in answered["personal_emails"].as_array().into_iter().flatten().filter_map(|e| text(Some(e))) {
            add_email(&mut self.emails, (address, None, BTreeSet::new()))?;
        }
        self.answered = Some(answered.clone());
        Ok(())
    }

    /// Notes that a call carrying the person answered its phone reveal `skipped`.
    pub fn note_phone_skipped(&mut self) {
        self.phone_skipped = true;
    }

    /// Adds what one payload delivered for the person.
    pub fn add_facts(
        &mut self,
        kind: apollo_client::DeliveryKind,
        facts: &apollo_sim::DeliveredFacts,
    ) -> Result<(), String> {
        self.phone_delivered |= kind == apollo_client::DeliveryKind::Phone;
        for p in &facts.phones {
            if p.vendor.is_none() {
                self.mobiles.insert(p.e164.clone());
            }
            let vendors = p.vendor.iter().cloned().collect();
            add_phone(
                &mut self.phones,
                (p.e164.clone(), Some(p.raw.clone()), Some(p.kind.clone()), Some(p.status.clone()), vendors),
            )?;
        }
        for e in &facts.emails {
            self.waterfall_emails.insert(e.address.to_lowercase());
            let vendors = e.vendor.iter().cloned().collect();
            add_email(&mut self.emails, (e.address.to_lowercase(), Some(e.status.to_lowercase()), vendors))?;
        }
        Ok(())
    }

    /// Whether Apollo said an earlier request would deliver the phone, and none did: the person
    /// must be `partial`, missing `phone`.
    pub fn phone_never_came(&self) -> bool {
        self.phone_skipped && !self.phone_delivered
    }

    /// Compares a person's merged record (`record` of `GET /v1/jobs/{id}/people`) with this:
    /// Apollo id, every person and organization field, every phone (type, status, raw form,
    /// vendors) and every email (status, vendors). The first difference, named.
    pub fn check_record(&self, p: &Value) -> Result<(), String> {
        let Some(apollo_id) = &self.apollo_id else {
            return if p["record"].is_null() {
                Ok(())
            } else {
                Err("a record for a person Apollo did not match".into())
            };
        };
        let record = &p["record"];
        if record["apollo_id"] != apollo_id.as_str() {
            return Err(format!("apollo_id {} instead of {apollo_id}", record["apollo_id"]));
        }
        let answered = self.answered.as_ref().ok_or("matched without an answer")?;
        let fields = &record["fields"];
        for k in PERSON_FIELDS {
            if fields[*k] != answered[*k] {
                return Err(format!("field {k}: {} instead of {}", fields[*k], answered[*k]));
            }
        }
        for k in ORGANIZATION_FIELDS {
            let (got, want) = (&fields["organization"][*k], &answered["organization"][*k]);
            if got != want {
                return Err(format!("organization.{k}: {got} instead of {want}"));
            }
        }
        let phones: BTreeMap<String, Phone> = record["phones"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e164 = opt(&e["e164"])?;
                Some((e164.clone(), (e164, opt(&e["raw"]), opt(&e["kind"]), opt(&e["status"]), strings(&e["vendors"]))))
            })
            .collect();
        if phones != self.phones {
            return Err(format!("phones {phones:?} instead of {:?}", self.phones));
        }
        let emails: BTreeMap<String, Email> = record["emails"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let address = opt(&e["address"])?;
                Some((address.clone(), (address, opt(&e["status"]), strings(&e["vendors"]))))
            })
            .collect();
        if emails != self.emails {
            return Err(format!("emails {emails:?} instead of {:?}", self.emails));
        }
        Ok(())
    }
}

/// The simulator's answer to every 200 call that carried `input`, merged.
fn expected_for(sim: &SimHandle, input: &Value) -> Result<Option<Expected>, String> {
    let mut matched_or_not: BTreeSet<Option<String>> = BTreeSet::new();
    let mut out = Expected::default();
    let mut requests: HashSet<RequestId> = HashSet::new();
    for call in sim.calls().iter().filter(|c| c.route.ends_with("bulk_match") && c.status == 200) {
        for r in call.received.iter().filter(|r| same_identity(input, &r.detail)) {
            matched_or_not.insert(r.apollo_id.clone());
            let Some(id) = &r.apollo_id else { continue };
            out.add_answer(id, r.answered.as_ref().ok_or("a matched detail without its answer")?)?;
            requests.extend(call.request_id);
            if call.answer.as_ref().and_then(|a| a["phone_enrichment"]["status"].as_str()) == Some("skipped") {
                out.note_phone_skipped();
            }
        }
    }
    if matched_or_not.is_empty() {
        return Ok(None);
    }
    if matched_or_not.len() != 1 {
        return Err(format!("one input, several answers (match and no match, or two Apollo ids): {matched_or_not:?}"));
    }
    let Some(id) = out.apollo_id.clone() else { return Ok(Some(out)) };
    // Every payload of those calls, however it reached the service (POSTed, retried or polled).
    let payloads = sim.payloads();
    for payload in payloads.iter().filter(|p| requests.contains(&p.request_id)) {
        for facts in payload.facts.iter().filter(|f| f.apollo_id == id) {
            out.add_facts(payload.kind, facts)?;
        }
    }
    // A reveal Apollo skipped for this call is delivered under the earlier request that asked for
    // the same person (another job's call, say); the person gets that phone payload.
    if out.phone_never_came() {
        let earlier = payloads.iter().filter(|p| p.kind == apollo_client::DeliveryKind::Phone);
        for facts in earlier.flat_map(|p| p.facts.iter()).filter(|f| f.apollo_id == id) {
            out.add_facts(apollo_client::DeliveryKind::Phone, facts)?;
        }
    }
    Ok(Some(out))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

fn opt(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Asserts that every person holds exactly what the simulator answered and delivered for the
/// input it was submitted with: status, Apollo id, every person and organization field, every
/// phone (type, status, raw form, vendors) and every email (status, vendors). Panics with the
/// person on the first difference.
pub fn assert_records_match(sim: &SimHandle, people: &[Value]) -> Checked {
    let mut checked = Checked::default();
    for p in people {
        let expected = expected_for(sim, &p["input"])
            .unwrap_or_else(|e| panic!("{e}: {p:#}"))
            .unwrap_or_else(|| panic!("Apollo never answered this input: {p:#}"));
        if expected.apollo_id.is_none() {
            assert_eq!(p["status"], "not_found", "{p:#}");
            checked.not_found += 1;
            continue;
        }
        checked.matched += 1;
        checked.mobiles += expected.mobiles.len();
        checked.waterfall_emails += expected.waterfall_emails.len();
        if expected.phone_never_came() {
            checked.phone_never_came += 1;
            assert_eq!(p["status"], "partial", "{p:#}");
            assert_eq!(p["missing_parts"], serde_json::json!(["phone"]), "{p:#}");
        } else {
            assert_eq!(p["status"], "complete", "{p:#}");
        }
        if let Err(e) = expected.check_record(p) {
            panic!("{e} in {p:#}");
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_is_every_identifying_field_ignoring_case_and_spaces() {
        let input = json!({"email": " Dana@X.io ", "external_id": "crm-1"});
        assert!(same_identity(&input, &json!({"email": "dana@x.io"})));
        assert!(!same_identity(&input, &json!({"email": "dana@x.io", "first_name": "Dana"})));
        assert!(!same_identity(&input, &json!({"email": "dan@x.io"})));
        let named = json!({"first_name": "Alex", "last_name": "T1", "domain": "x.io"});
        assert!(same_identity(&named, &json!({"first_name": "alex", "last_name": "t1", "domain": "X.io"})));
        assert!(!same_identity(&named, &json!({"first_name": "Alex", "last_name": "T1"})));
    }
}
