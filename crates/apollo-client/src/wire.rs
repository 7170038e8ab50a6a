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

/// One boolean query flag of `bulk_match`. Every list of flags (the job request, the query sent
/// to Apollo, the dashboard's checkboxes, the CLI's options, prices, reuse) is made from
/// [`Flag::ALL`] and the matches below, so a new Apollo flag is a field of [`EnrichFlags`], a
/// variant here, and whatever the compiler then points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// `reveal_personal_emails`.
    RevealPersonalEmails,
    /// `reveal_phone_number` (asynchronous: phone webhook).
    RevealPhoneNumber,
    /// `run_waterfall_email` (asynchronous: waterfall webhook).
    RunWaterfallEmail,
    /// `run_waterfall_phone` (asynchronous: waterfall webhook).
    RunWaterfallPhone,
}

impl Flag {
    /// Every flag, in Apollo's documented order (also the order of [`EnrichFlags::bits`]).
    pub const ALL: [Flag; 4] =
        [Flag::RevealPersonalEmails, Flag::RevealPhoneNumber, Flag::RunWaterfallEmail, Flag::RunWaterfallPhone];

    /// Its name on the wire: the query parameter, and the field of a job request.
    pub fn name(self) -> &'static str {
        match self {
            Flag::RevealPersonalEmails => "reveal_personal_emails",
            Flag::RevealPhoneNumber => "reveal_phone_number",
            Flag::RunWaterfallEmail => "run_waterfall_email",
            Flag::RunWaterfallPhone => "run_waterfall_phone",
        }
    }

    /// What it asks for, for people.
    pub fn label(self) -> &'static str {
        match self {
            Flag::RevealPersonalEmails => "Reveal personal emails",
            Flag::RevealPhoneNumber => "Reveal phone number",
            Flag::RunWaterfallEmail => "Waterfall email",
            Flag::RunWaterfallPhone => "Waterfall phone",
        }
    }

    /// Whether Apollo answers it later, by webhook (or `webhook_result` polling).
    pub fn asynchronous(self) -> bool {
        match self {
            Flag::RevealPersonalEmails => false,
            Flag::RevealPhoneNumber | Flag::RunWaterfallEmail | Flag::RunWaterfallPhone => true,
        }
    }

    /// The flag named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The boolean query flags of `bulk_match` (`poll_only` is a separate argument); one field per
/// [`Flag`], read and written through [`EnrichFlags::get`] and [`EnrichFlags::set`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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
    /// No flag (`Default`, usable in constants: `EnrichFlags { reveal_phone_number: true, ..EnrichFlags::NONE }`).
    pub const NONE: EnrichFlags = EnrichFlags {
        reveal_personal_emails: false,
        reveal_phone_number: false,
        run_waterfall_email: false,
        run_waterfall_phone: false,
    };

    /// Whether `flag` is asked for.
    pub fn get(&self, flag: Flag) -> bool {
        match flag {
            Flag::RevealPersonalEmails => self.reveal_personal_emails,
            Flag::RevealPhoneNumber => self.reveal_phone_number,
            Flag::RunWaterfallEmail => self.run_waterfall_email,
            Flag::RunWaterfallPhone => self.run_waterfall_phone,
        }
    }

    /// Asks for `flag`, or not.
    pub fn set(&mut self, flag: Flag, on: bool) {
        let field = match flag {
            Flag::RevealPersonalEmails => &mut self.reveal_personal_emails,
            Flag::RevealPhoneNumber => &mut self.reveal_phone_number,
            Flag::RunWaterfallEmail => &mut self.run_waterfall_email,
            Flag::RunWaterfallPhone => &mut self.run_waterfall_phone,
        };
        *field = on;
    }

    /// The flags that are on.
    pub fn on(&self) -> impl Iterator<Item = Flag> + '_ {
        Flag::ALL.into_iter().filter(|f| self.get(*f))
    }

    /// Exactly `flags` on.
    pub fn of(flags: impl IntoIterator<Item = Flag>) -> Self {
        let mut all = EnrichFlags::default();
        for f in flags {
            all.set(f, true);
        }
        all
    }

    /// Whether any flag makes Apollo answer asynchronously (and so needs a webhook or polling).
    pub fn has_async(&self) -> bool {
        self.on().any(Flag::asynchronous)
    }

    /// The flags as a small bit set: bit `i` is [`Flag::ALL`]`[i]` (stored in the database).
    pub fn bits(&self) -> u8 {
        Flag::ALL.iter().enumerate().filter(|(_, f)| self.get(**f)).fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// The inverse of [`EnrichFlags::bits`].
    pub fn from_bits(bits: u8) -> Self {
        EnrichFlags::of(Flag::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, f)| f))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_table_and_the_wire_fields_agree() {
        for f in Flag::ALL {
            let one = EnrichFlags::of([f]);
            let json = serde_json::to_value(one).unwrap();
            let on: Vec<&String> =
                json.as_object().unwrap().iter().filter(|(_, v)| **v == true).map(|(k, _)| k).collect();
            assert_eq!(on, vec![f.name()], "{f:?} is the field named {}", f.name());
            assert_eq!(Flag::from_name(f.name()), Some(f));
            assert_eq!(one.on().collect::<Vec<_>>(), vec![f]);
            assert_eq!(one.has_async(), f.asynchronous());
        }
        assert_eq!(json_keys(EnrichFlags::default()), Flag::ALL.len(), "one field per flag");
        assert_eq!(EnrichFlags::NONE, EnrichFlags::default());
        assert_eq!(Flag::from_name("poll_only"), None);
    }

    fn json_keys(flags: EnrichFlags) -> usize {
        serde_json::to_value(flags).unwrap().as_object().unwrap().len()
    }

    #[test]
    fn bits_round_trip_and_keep_their_stored_meaning() {
        for bits in 0..16u8 {
            assert_eq!(EnrichFlags::from_bits(bits).bits(), bits);
        }
        // Stored in the database: bit 0 personal emails, 1 phone, 2 waterfall email, 3 waterfall phone.
        assert_eq!(EnrichFlags { reveal_phone_number: true, ..Default::default() }.bits(), 2);
        assert_eq!(EnrichFlags { run_waterfall_phone: true, ..Default::default() }.bits(), 8);
        let mut f = EnrichFlags::default();
        f.set(Flag::RunWaterfallEmail, true);
        assert!(f.run_waterfall_email && f.get(Flag::RunWaterfallEmail));
        f.set(Flag::RunWaterfallEmail, false);
        assert_eq!(f, EnrichFlags::default());
    }
}
