//! One parser for every asynchronous delivery: phone reveal, waterfall, and the defensive envelopes.

use serde_json::Value;

use crate::facts::{EmailFact, FactSource, PersonFacts, PhoneFact, normalize_email, normalize_phone};
use crate::lenient::{str_at, value_to_string};
use crate::numbers::{Credits, RequestId};

/// Which asynchronous part a delivery fulfils.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// The phone-reveal webhook (`reveal_phone_number`).
    Phone,
    /// The waterfall webhook (`run_waterfall_email` / `run_waterfall_phone`).
    Waterfall,
}

impl DeliveryKind {
    /// The stable name used in stored records.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Phone => "phone",
            DeliveryKind::Waterfall => "waterfall",
        }
    }
}

/// A parsed asynchronous delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Which part it fulfils.
    pub kind: DeliveryKind,
    /// Apollo's `request_id`, when the payload carries one (waterfall does, phone does not).
    pub request_id: Option<RequestId>,
    /// The payload's `credits_consumed` (the only place waterfall credits are reported).
    pub credits: Option<Credits>,
    /// The payload's top-level `status`.
    pub status: Option<String>,
    /// Per-person facts, in payload order.
    pub people: Vec<PersonFacts>,
}

/// Why a delivery body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The body is not JSON.
    #[error("delivery body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but no `people`, `person`, `matches` or `contacts` envelope.
    #[error("delivery has no people/person/matches/contacts envelope")]
    UnknownEnvelope,
    /// The envelope holds something other than person objects.
    #[error("delivery entry {index} is not a person object")]
    NotAPerson {
        /// Position in the envelope.
        index: usize,
    },
}

/// Parses a delivery body (raw bytes as received).
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, DeliveryError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| DeliveryError::NotJson(e.to_string()))?;
    parse_delivery_value(&v)
}

/// Parses an already-decoded delivery (also the `webhook_result` of a poll).
pub fn parse_delivery_value(v: &Value) -> Result<Delivery, DeliveryError> {
    let obj = v.as_object().ok_or(DeliveryError::UnknownEnvelope)?;
    let entries: Vec<&Value> = if let Some(p) = obj.get("person").filter(|p| p.is_object()) {
        vec![p]
    } else {
        let list = ["people", "matches", "contacts"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_array))
            .ok_or(DeliveryError::UnknownEnvelope)?;
        list.iter().collect()
    };
    let is_waterfall = obj.contains_key("target_fields")
        || entries.iter().any(|p| p.get("waterfall").is_some() || p.get("emails").is_some_and(Value::is_array));
    let kind = if is_waterfall { DeliveryKind::Waterfall } else { DeliveryKind::Phone };
    let mut people = Vec::with_capacity(entries.len());
    for (index, p) in entries.into_iter().enumerate() {
        if p.is_null() {
            continue;
        }
        if !p.is_object() {
            return Err(DeliveryError::NotAPerson { index });
        }
        people.push(person_facts(p, kind));
    }
    Ok(Delivery {
        kind,
        request_id: obj.get("request_id").and_then(|r| serde_json::from_value(r.clone()).ok()),
        credits: obj.get("credits_consumed").and_then(|c| serde_json::from_value(c.clone()).ok()),
        status: str_at(v, "status"),
        people,
    })
}

fn person_facts(p: &Value, kind: DeliveryKind) -> PersonFacts {
    let source = match kind {
        DeliveryKind::Phone => FactSource::PhoneWebhook,
        DeliveryKind::Waterfall => FactSource::Waterfall,
    };
    let trail = p.get("waterfall");
    let mut emails = Vec::new();
    for e in p.get("emails").and_then(Value::as_array).into_iter().flatten() {
        let address = match e {
            Value::String(s) => Some(s.clone()),
            other => str_at(other, "email"),
        };
        let Some(address) = address.as_deref().and_then(normalize_email) else { continue };
        let vendor = vendor_for(trail, "emails", |v| v.as_str().and_then(normalize_email).as_deref() == Some(&address))
            .or_else(|| str_at(e, "third_party_data_provider_id"));
        emails.push(EmailFact {
            address,
            status: str_at(e, "email_status_cd").or_else(|| str_at(e, "email_status")).map(|s| s.to_lowercase()),
            source: source.clone(),
            vendor,
            personal: false,
        });
    }
    // A person object of the sync shape inside a defensive envelope may carry a single `email`.
    if let Some(address) = str_at(p, "email").as_deref().and_then(normalize_email)
        && !emails.iter().any(|e| e.address == address)
    {
        emails.push(EmailFact {
            address,
            status: str_at(p, "email_status").map(|s| s.to_lowercase()),
            source: source.clone(),
            vendor: None,
            personal: false,
        });
    }
    let mut phones = Vec::new();
    for ph in p.get("phone_numbers").and_then(Value::as_array).into_iter().flatten() {
        let Some(mut fact) = phone_fact(ph, source.clone()) else { continue };
        if kind == DeliveryKind::Waterfall {
            let e164 = fact.e164.clone();
            fact.vendor =
                vendor_for(trail, "phone_numbers", |v| v.as_str().and_then(normalize_phone).as_deref() == Some(&e164));
        }
        if !phones.iter().any(|x: &PhoneFact| x.e164 == fact.e164) {
            phones.push(fact);
        }
    }
    PersonFacts { apollo_id: str_at(p, "id"), status: str_at(p, "status"), emails, phones, raw: p.clone() }
}

/// Reads one phone number in either spelling (`type`/`type_cd`, `status`/`status_cd`, …).
pub fn phone_fact(ph: &Value, source: FactSource) -> Option<PhoneFact> {
    let (raw, sanitized) = match ph {
        Value::String(s) => (Some(s.clone()), None),
        _ => (str_at(ph, "raw_number"), str_at(ph, "sanitized_number")),
    };
    let e164 = sanitized.as_deref().and_then(normalize_phone).or_else(|| raw.as_deref().and_then(normalize_phone))?;
    let either = |a: &str, b: &str| str_at(ph, a).or_else(|| str_at(ph, b));
    Some(PhoneFact {
        e164,
        raw,
        kind: either("type_cd", "type"),
        status: either("status_cd", "status"),
        dnc_status: either("dnc_status_cd", "dnc_status"),
        confidence: str_at(ph, "confidence_cd"),
        source,
        vendor: None,
    })
}

/// The name of the first vendor in the waterfall trail whose `field` list holds a matching value.
fn vendor_for(trail: Option<&Value>, field: &str, matches: impl Fn(&Value) -> bool) -> Option<String> {
    let steps = trail?.get(field)?.as_array()?;
    steps
        .iter()
        .filter_map(|step| step.get("vendors").and_then(Value::as_array))
        .flatten()
        .find(|vendor| vendor.get(field).and_then(Value::as_array).is_some_and(|vals| vals.iter().any(&matches)))
        .and_then(|vendor| vendor.get("name").and_then(value_to_string))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!((DeliveryKind::Phone.as_str(), DeliveryKind::Waterfall.as_str()), ("phone", "waterfall"));
    }

    #[test]
    fn an_emails_list_alone_makes_a_waterfall_delivery() {
        let d = parse_delivery_value(&json!({"people": [{"id": "a", "emails": [{"email": "x@y.io"}]}]})).unwrap();
        assert_eq!(d.kind, DeliveryKind::Waterfall);
        let d = parse_delivery_value(&json!({"people": [{"id": "a", "phone_numbers": []}]})).unwrap();
        assert_eq!(d.kind, DeliveryKind::Phone);
    }

    #[test]
    fn a_single_email_already_listed_counts_once_and_bare_phone_strings_are_read() {
        let v = json!({"people": [{
            "id": "a",
            "emails": [{"email": "x@y.io"}],
            "email": "X@y.io",
            "phone_numbers": ["+1 512-555-0142"],
        }]});
        let p = &parse_delivery_value(&v).unwrap().people[0];
        assert_eq!(p.emails.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["x@y.io"]);
        assert_eq!(p.phones.iter().map(|f| f.e164.as_str()).collect::<Vec<_>>(), ["+15125550142"]);
        assert_eq!(p.phones[0].raw.as_deref(), Some("+1 512-555-0142"));
    }
}
