//! Per-person facts, the one shape every Apollo answer is reduced to before merging.

use serde::{Deserialize, Serialize};

/// Where a fact came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    /// The synchronous `bulk_match` answer.
    Sync,
    /// The asynchronous phone-reveal webhook.
    PhoneWebhook,
    /// The asynchronous waterfall webhook.
    Waterfall,
}

impl FactSource {
    /// The stable name used in stored records.
    pub fn as_str(&self) -> &'static str {
        match self {
            FactSource::Sync => "sync",
            FactSource::PhoneWebhook => "phone_webhook",
            FactSource::Waterfall => "waterfall",
        }
    }
}

/// One email address Apollo gave for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailFact {
    /// The address, trimmed and lower-cased (the set key).
    pub address: String,
    /// Apollo's status (`verified`, `guessed`, …), lower-cased.
    pub status: Option<String>,
    /// Which answer carried it.
    pub source: FactSource,
    /// The waterfall vendor that found it, when known.
    pub vendor: Option<String>,
    /// Whether it is a personal (not work) address.
    pub personal: bool,
}

/// One phone number Apollo gave for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneFact {
    /// The number in E.164 (`+15125550142`), the set key.
    pub e164: String,
    /// The number as Apollo wrote it.
    pub raw: Option<String>,
    /// `mobile`, `work_hq`, … (from `type` or `type_cd`).
    pub kind: Option<String>,
    /// `valid_number`, `no_status`, … (from `status` or `status_cd`).
    pub status: Option<String>,
    /// Do-not-call status (from `dnc_status` or `dnc_status_cd`).
    pub dnc_status: Option<String>,
    /// Apollo's confidence (`confidence_cd`), when given.
    pub confidence: Option<String>,
    /// Which answer carried it.
    pub source: FactSource,
    /// The waterfall vendor that found it, when known.
    pub vendor: Option<String>,
}

/// Everything one Apollo answer says about one person.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonFacts {
    /// Apollo's person id, the correlation key for deliveries.
    pub apollo_id: Option<String>,
    /// The per-person status a delivery gave (`success`, `not_found`, …).
    pub status: Option<String>,
    /// Email addresses, placeholders already removed.
    pub emails: Vec<EmailFact>,
    /// Phone numbers in E.164.
    pub phones: Vec<PhoneFact>,
    /// The person's raw JSON object from this answer.
    pub raw: serde_json::Value,
}

/// The address Apollo sends when an email exists but was not revealed.
pub fn is_placeholder_email(email: &str) -> bool {
    let e = email.trim().to_ascii_lowercase();
    e == "email_not_unlocked@domain.com" || e.starts_with("email_not_unlocked@")
}

/// Lower-cases and trims an address; `None` for placeholders and strings that are not addresses.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    if is_placeholder_email(&e) {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || domain.contains('@') || e.contains(char::is_whitespace) {
        return None;
    }
    Some(e)
}

/// Normalises a phone number to E.164.
///
/// A leading `+` keeps its country code; ten bare digits are taken as North American (`+1`), which
/// is how Apollo's own `sanitized_number` reads such numbers; other bare digit strings are
/// refused rather than guessed.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let digits: String = trimmed.chars().filter(|c| c.is_ascii_digit()).collect();
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    let digits = if trimmed.starts_with("00") { digits[2..].to_string() } else { digits };
    if international {
        return (8..=15).contains(&digits.len()).then(|| format!("+{digits}"));
    }
    match digits.len() {
        10 => Some(format!("+1{digits}")),
        11 if digits.starts_with('1') => Some(format!("+{digits}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(normalize_phone("+1 512-555-0142").as_deref(), Some("+15125550142"));
        assert_eq!(normalize_phone("206-555-0117").as_deref(), Some("+12065550117"));
        assert_eq!(normalize_phone("1 (206) 555-0117").as_deref(), Some("+12065550117"));
        assert_eq!(normalize_phone("0044 20 7946 0958").as_deref(), Some("+442079460958"));
        assert_eq!(normalize_phone("+44 20 7946 0958").as_deref(), Some("+442079460958"));
        assert_eq!(normalize_phone("12345"), None);
        assert_eq!(normalize_phone(""), None);
        // Eleven bare digits are North American only with the leading 1.
        assert_eq!(normalize_phone("2 206 555 0117"), None);
    }

    #[test]
    fn sources_have_stable_names() {
        let names = [FactSource::Sync, FactSource::PhoneWebhook, FactSource::Waterfall].map(|s| s.as_str());
        assert_eq!(names, ["sync", "phone_webhook", "waterfall"]);
    }

    #[test]
    fn emails_normalise_and_placeholders_are_refused() {
        assert_eq!(
            normalize_email(" Dana.Okafor@Northwind-Labs.com ").as_deref(),
            Some("dana.okafor@northwind-labs.com")
        );
        assert_eq!(normalize_email("email_not_unlocked@domain.com"), None);
        assert!(is_placeholder_email("EMAIL_NOT_UNLOCKED@domain.com"));
        assert_eq!(normalize_email("not an email"), None);
        assert_eq!(normalize_email("a@b"), None);
        // Either placeholder spelling is refused; each rule alone refuses an address.
        assert!(is_placeholder_email("email_not_unlocked@other.io"));
        assert!(!is_placeholder_email("dana@domain.com"));
        assert_eq!(normalize_email("@northwind-labs.com"), None, "no local part");
        assert_eq!(normalize_email("dana@northwind@labs.com"), None, "two @");
        assert_eq!(normalize_email("da na@northwind-labs.com"), None, "a space");
    }
}
