//! Request and response bodies of `bulk_match` and `webhook_result`, typed views over raw JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delivery::phone_fact;
use crate::facts::{EmailFact, FactSource, PersonFacts, is_placeholder_email, normalize_email};
use crate::lenient::{self, str_at};
use crate::numbers::{Credits, RequestId};

/// One entry of `details` in a `bulk_match` request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonDetail {
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// MD5 or SHA-256 of the email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_email: Option<String>,
    /// Employer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    /// Employer domain, without `www.` or `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Apollo person id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// LinkedIn profile URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkedin_url: Option<String>,
}

/// The four boolean query flags of `bulk_match` (`poll_only` is a separate argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnrichFlags {
    /// `reveal_personal_emails`.
    #[serde(default)]
    pub reveal_personal_emails: bool,
    /// `reveal_phone_number` (asynchronous: phone webhook).
    #[serde(default)]
    pub reveal_phone_number: bool,
    /// `run_waterfall_email` (asynchronous: waterfall webhook).
    #[serde(default)]
    pub run_waterfall_email: bool,
    /// `run_waterfall_phone` (asynchronous: waterfall webhook).
    #[serde(default)]
    pub run_waterfall_phone: bool,
}

impl EnrichFlags {
    /// Whether any flag makes Apollo answer asynchronously (and so needs a webhook or polling).
    pub fn has_async(&self) -> bool {
        self.reveal_phone_number || self.run_waterfall_email || self.run_waterfall_phone
    }

    /// The flags as a small bit set (bit 0 personal emails, 1 phone, 2 waterfall email, 3 waterfall phone).
    pub fn bits(&self) -> u8 {
        u8::from(self.reveal_personal_emails)
            | u8::from(self.reveal_phone_number) << 1
            | u8::from(self.run_waterfall_email) << 2
            | u8::from(self.run_waterfall_phone) << 3
    }

    /// The inverse of [`EnrichFlags::bits`].
    pub fn from_bits(bits: u8) -> Self {
        EnrichFlags {
            reveal_personal_emails: bits & 1 != 0,
            reveal_phone_number: bits & 2 != 0,
            run_waterfall_email: bits & 4 != 0,
            run_waterfall_phone: bits & 8 != 0,
        }
    }
}

/// The `waterfall` object of a synchronous answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WaterfallAck {
    /// `accepted` means a webhook will come; anything else means none will.
    #[serde(default, deserialize_with = "lenient::string")]
    pub status: Option<String>,
    /// Apollo's message.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
}

impl WaterfallAck {
    /// Whether a waterfall webhook will follow.
    pub fn accepted(&self) -> bool {
        self.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("accepted"))
    }
}

/// The `phone_enrichment` object of a synchronous answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PhoneEnrichment {
    /// Apollo's job id for the phone reveal (a string), only when pending.
    #[serde(default, deserialize_with = "lenient::string")]
    pub request_id: Option<String>,
    /// `pending` (a webhook will come) or `skipped` (an earlier request will deliver instead).
    #[serde(default, deserialize_with = "lenient::string")]
    pub status: Option<String>,
    /// Apollo's message.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
}

impl PhoneEnrichment {
    /// Whether a phone webhook will follow for this request.
    pub fn pending(&self) -> bool {
        self.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("pending"))
    }

    /// Whether Apollo skipped this request's reveal: an earlier request is enriching these
    /// people and delivers their phones instead.
    pub fn skipped(&self) -> bool {
        self.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("skipped"))
    }
}

/// A person object from `matches`: the fields we use, and the whole raw object.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// Apollo person id.
    pub id: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// LinkedIn URL.
    pub linkedin_url: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Work email, `None` when absent or the placeholder.
    pub email: Option<String>,
    /// Apollo's email status.
    pub email_status: Option<String>,
    /// Whether Apollo sent the `email_not_unlocked@…` placeholder.
    pub email_locked: bool,
    /// Employer name (`organization.name`).
    pub organization_name: Option<String>,
    /// Employer domain (`organization.primary_domain`).
    pub organization_domain: Option<String>,
    /// The raw object, unknown fields included.
    pub raw: Value,
}

impl Person {
    /// Reads a person object; never fails, since every field is optional.
    pub fn from_value(raw: Value) -> Person {
        let email_raw = str_at(&raw, "email");
        let email_locked = email_raw.as_deref().is_some_and(is_placeholder_email);
        let org = raw.get("organization").filter(|o| o.is_object());
        Person {
            id: str_at(&raw, "id"),
            first_name: str_at(&raw, "first_name"),
            last_name: str_at(&raw, "last_name"),
            name: str_at(&raw, "name"),
            linkedin_url: str_at(&raw, "linkedin_url"),
            title: str_at(&raw, "title"),
            email: email_raw.as_deref().and_then(normalize_email),
            email_status: str_at(&raw, "email_status"),
            email_locked,
            organization_name: org.and_then(|o| str_at(o, "name")),
            organization_domain: org.and_then(|o| str_at(o, "primary_domain")),
            raw,
        }
    }

    /// The emails and phones of this synchronous answer as facts.
    pub fn facts(&self) -> PersonFacts {
        let mut emails = Vec::new();
        if let Some(address) = &self.email {
            emails.push(EmailFact {
                address: address.clone(),
                status: self.email_status.as_ref().map(|s| s.to_lowercase()),
                source: FactSource::Sync,
                vendor: None,
                personal: false,
            });
        }
        for e in self.raw.get("personal_emails").and_then(Value::as_array).into_iter().flatten() {
            let addr = e.as_str().map(str::to_string).or_else(|| str_at(e, "email"));
            if let Some(address) = addr.as_deref().and_then(normalize_email)
                && !emails.iter().any(|x: &EmailFact| x.address == address)
            {
                emails.push(EmailFact {
                    address,
                    status: None,
                    source: FactSource::Sync,
                    vendor: None,
                    personal: true,
                });
            }
        }
        let mut phones = Vec::new();
        for ph in self.raw.get("phone_numbers").and_then(Value::as_array).into_iter().flatten() {
            if let Some(f) = phone_fact(ph, FactSource::Sync)
                && !phones.iter().any(|x: &crate::PhoneFact| x.e164 == f.e164)
            {
                phones.push(f);
            }
        }
        PersonFacts { apollo_id: self.id.clone(), status: None, emails, phones, raw: self.raw.clone() }
    }

    /// Whether this answer is plausibly for `detail` (used when positional alignment is in doubt).
    pub fn matches_detail(&self, d: &PersonDetail) -> bool {
        let eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
            _ => false,
        };
        if d.id.is_some() {
            return eq(&d.id, &self.id);
        }
        if let Some(e) = d.email.as_deref().and_then(normalize_email)
            && self.email.as_deref() == Some(e.as_str())
        {
            return true;
        }
        if let (Some(a), Some(b)) = (&d.linkedin_url, &self.linkedin_url)
            && linkedin_slug(a) == linkedin_slug(b)
        {
            return true;
        }
        let name = d.name.clone().or_else(|| Some(format!("{} {}", d.first_name.as_deref()?, d.last_name.as_deref()?)));
        let org_ok = eq(&d.domain, &self.organization_domain) || eq(&d.organization_name, &self.organization_name);
        eq(&name, &self.name) && org_ok
    }
}

/// The profile part of a LinkedIn URL, for comparing URLs that differ in scheme, host or slash.
pub fn linkedin_slug(url: &str) -> String {
    let u = url.trim().to_lowercase();
    let u = u.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    u.rsplit_once("/in/").map(|(_, slug)| slug.to_string()).unwrap_or_else(|| u.to_string())
}

/// A synchronous 200 answer of `bulk_match`.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkMatchResponse {
    /// `success` on every 200.
    pub status: Option<String>,
    /// Apollo's request id (for `webhook_result` polling).
    pub request_id: Option<RequestId>,
    /// Credits charged by this call (absent on waterfall requests).
    pub credits_consumed: Option<Credits>,
    /// `total_requested_enrichments`.
    pub total_requested_enrichments: Option<i64>,
    /// `unique_enriched_records` (a billing count).
    pub unique_enriched_records: Option<i64>,
    /// `missing_records`.
    pub missing_records: Option<i64>,
    /// One entry per detail sent, `None` where Apollo returned `null`.
    pub matches: Vec<Option<Person>>,
    /// Present with a waterfall flag.
    pub waterfall: Option<WaterfallAck>,
    /// Present with `reveal_phone_number` when someone matched.
    pub phone_enrichment: Option<PhoneEnrichment>,
    /// The whole body.
    pub raw: Value,
}

#[derive(Deserialize)]
struct ResponseView {
    #[serde(default, deserialize_with = "lenient::string")]
    status: Option<String>,
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    credits_consumed: Option<Value>,
    #[serde(default, deserialize_with = "lenient::int")]
    total_requested_enrichments: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    unique_enriched_records: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    missing_records: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    matches: Vec<Value>,
    #[serde(default)]
    waterfall: Option<Value>,
    #[serde(default)]
    phone_enrichment: Option<Value>,
}

impl BulkMatchResponse {
    /// Reads a 200 body; fails only when it is not a JSON object.
    pub fn from_value(raw: Value) -> Result<Self, serde_json::Error> {
        let view: ResponseView = serde_json::from_value(raw.clone())?;
        Ok(BulkMatchResponse {
            status: view.status,
            request_id: view.request_id.and_then(|r| serde_json::from_value(r).ok()),
            credits_consumed: view.credits_consumed.and_then(|c| serde_json::from_value(c).ok()),
            total_requested_enrichments: view.total_requested_enrichments,
            unique_enriched_records: view.unique_enriched_records,
            missing_records: view.missing_records,
            matches: view.matches.into_iter().map(|m| m.is_object().then(|| Person::from_value(m))).collect(),
            waterfall: view.waterfall.and_then(|w| serde_json::from_value(w).ok()),
            phone_enrichment: view.phone_enrichment.and_then(|p| serde_json::from_value(p).ok()),
            raw,
        })
    }

    /// Pairs each detail sent with its match.
    ///
    /// Positional when the lengths agree and every sent `id` checks out; otherwise each detail takes
    /// the first unused match that plausibly belongs to it, and the rest are unmatched, not guessed.
    pub fn align<'a>(&'a self, details: &[PersonDetail]) -> Vec<Option<&'a Person>> {
        let positional_ok = self.matches.len() == details.len()
            && details.iter().zip(&self.matches).all(|(d, m)| match (d.id.as_deref(), m) {
                (Some(id), Some(p)) => p.id.as_deref() == Some(id),
                _ => true,
            });
        if positional_ok {
            return self.matches.iter().map(Option::as_ref).collect();
        }
        let mut used = vec![false; self.matches.len()];
        details
            .iter()
            .map(|d| {
                let i = self
                    .matches
                    .iter()
                    .enumerate()
                    .position(|(i, m)| !used[i] && m.as_ref().is_some_and(|p| p.matches_detail(d)))?;
                used[i] = true;
                self.matches[i].as_ref()
            })
            .collect()
    }
}

/// A 200 answer of `GET /api/v1/webhook_result/{request_id}`.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookResult {
    /// The id polled.
    pub request_id: Option<String>,
    /// `in_progress`, `success` or `failed`.
    pub webhook_status: Option<String>,
    /// `email`, `phone` or `waterfall`.
    pub request_type: Option<String>,
    /// Why it failed, when it did.
    pub failure_reason: Option<String>,
    /// The payload that was (or would have been) delivered.
    pub webhook_result: Option<Value>,
    /// The whole body.
    pub raw: Value,
}

impl WebhookResult {
    /// Reads a 200 body of `webhook_result`.
    pub fn from_value(raw: Value) -> WebhookResult {
        WebhookResult {
            request_id: str_at(&raw, "request_id"),
            webhook_status: str_at(&raw, "webhook_status"),
            request_type: str_at(&raw, "request_type"),
            failure_reason: str_at(&raw, "failure_reason"),
            webhook_result: raw.get("webhook_result").filter(|v| v.is_object()).cloned(),
            raw,
        }
    }
}
