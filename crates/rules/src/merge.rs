//! The merge rules of docs/DESIGN.md §4 as pure functions: one record per person, field-level and
//! monotonic.
//!
//! Every merge step is a *join*: commutative, associative and idempotent. So applying the same
//! facts twice changes nothing, and any order of the same deliveries gives the same record:
//! - scalar fields are never replaced by null, an empty value or the placeholder email; when two
//!   answers disagree, the one from the higher-ranked source wins (`sync` > `waterfall` >
//!   `phone_webhook` > other), ties broken by the lexically greater JSON text, then source name;
//! - `emails` and `phones` are sets keyed by the normalised value (lower-cased address, E.164);
//!   each entry keeps the sorted set of its sources and vendors, and the best status by a fixed
//!   rank (then lexical order);
//! - the output is canonical: sets sorted by key, maps ordered by key.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use apollo_client::{PersonFacts, is_placeholder_email, normalize_email, normalize_phone};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Keys that never go into [`Record::fields`]: they are carried by the email/phone sets or by
/// [`Record::apollo_id`].
const SET_KEYS: &[&str] = &["id", "email", "email_status", "emails", "personal_emails", "phone_numbers"];

/// Email statuses from best to worst; unknown statuses rank after these, `None` last.
const EMAIL_STATUS_RANK: &[&str] = &[
    "verified",
    "valid",
    "likely_to_engage",
    "accept_all",
    "catch_all",
    "guessed",
    "extrapolated",
    "unverified",
    "unknown",
    "unavailable",
    "bounced",
    "invalid",
];

/// Phone statuses from best to worst; unknown statuses rank after these, `None` last.
const PHONE_STATUS_RANK: &[&str] = &["valid_number", "verified", "no_status", "invalid_number"];

/// The merged record of one person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Apollo's person id (the lexically smallest if answers ever disagreed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apollo_id: Option<String>,
    /// Demographic fields (`name`, `title`, `organization`, `city`, …).
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
    /// The source of each field's current value (decides conflicts, so order never matters).
    #[serde(default)]
    pub field_sources: BTreeMap<String, String>,
    /// Email addresses, sorted by address.
    #[serde(default)]
    pub emails: Vec<EmailEntry>,
    /// Phone numbers, sorted by E.164.
    #[serde(default)]
    pub phones: Vec<PhoneEntry>,
}

/// One email address of a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailEntry {
    /// Lower-cased address (the set key).
    pub address: String,
    /// Best status seen.
    #[serde(default)]
    pub status: Option<String>,
    /// Whether any answer called it a personal address.
    #[serde(default)]
    pub personal: bool,
    /// Answers that carried it (`sync`, `phone_webhook`, `waterfall`).
    #[serde(default)]
    pub sources: BTreeSet<String>,
    /// Waterfall vendors that found it.
    #[serde(default)]
    pub vendors: BTreeSet<String>,
}

/// One phone number of a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneEntry {
    /// E.164 number (the set key).
    pub e164: String,
    /// The number as Apollo wrote it.
    #[serde(default)]
    pub raw: Option<String>,
    /// `mobile`, `work_hq`, …
    #[serde(default)]
    pub kind: Option<String>,
    /// Best status seen.
    #[serde(default)]
    pub status: Option<String>,
    /// Do-not-call status.
    #[serde(default)]
    pub dnc_status: Option<String>,
    /// Apollo's confidence.
    #[serde(default)]
    pub confidence: Option<String>,
    /// Answers that carried it.
    #[serde(default)]
    pub sources: BTreeSet<String>,
    /// Waterfall vendors that found it.
    #[serde(default)]
    pub vendors: BTreeSet<String>,
}

impl Record {
    /// Reads a stored record; `None` or an unreadable value gives an empty record.
    pub fn from_json(value: Option<&Value>) -> Record {
        value.and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// The stored (canonical) form, holdable by every database ([`storable`]).
    pub fn to_json(&self) -> Value {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        if needs_sanitizing(&v) { storable(v) } else { v }
    }

    /// Whether nothing has been merged yet.
    pub fn is_empty(&self) -> bool {
        self == &Record::default()
    }

    /// Merges one answer's facts about the person (emails, phones, Apollo id).
    pub fn merge_facts(&mut self, facts: &PersonFacts) {
        if let Some(id) = facts.apollo_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            self.merge_apollo_id(id);
        }
        for e in &facts.emails {
            let Some(address) = normalize_email(&e.address) else { continue };
            let incoming = EmailEntry {
                address,
                status: clean(e.status.as_deref()).map(|s| s.to_lowercase()),
                personal: e.personal,
                sources: BTreeSet::from([e.source.as_str().to_owned()]),
                vendors: clean(e.vendor.as_deref()).map(str::to_owned).into_iter().collect(),
            };
            upsert(&mut self.emails, incoming, |x| &x.address, join_email);
        }
        for p in &facts.phones {
            let Some(e164) = normalize_phone(&p.e164) else { continue };
            let incoming = PhoneEntry {
                e164,
                raw: clean(p.raw.as_deref()).map(str::to_owned),
                kind: clean(p.kind.as_deref()).map(str::to_owned),
                status: clean(p.status.as_deref()).map(str::to_owned),
                dnc_status: clean(p.dnc_status.as_deref()).map(str::to_owned),
                confidence: clean(p.confidence.as_deref()).map(str::to_owned),
                sources: BTreeSet::from([p.source.as_str().to_owned()]),
                vendors: clean(p.vendor.as_deref()).map(str::to_owned).into_iter().collect(),
            };
            upsert(&mut self.phones, incoming, |x| &x.e164, join_phone);
        }
    }

    /// Merges demographic fields (a JSON object) reported by `source`; anything else is ignored.
    pub fn merge_fields(&mut self, fields: &Value, source: &str) {
        let Some(obj) = fields.as_object() else { return };
        for (key, value) in obj {
            if SET_KEYS.contains(&key.as_str()) || is_empty_value(value) {
                continue;
            }
            let wins = match (self.fields.get(key), self.field_sources.get(key)) {
                (Some(old), old_source) => {
                    let old_source = old_source.map(String::as_str).unwrap_or("");
                    (source_rank(source), canonical(value), source)
                        > (source_rank(old_source), canonical(old), old_source)
                }
                (None, _) => true,
            };
            if wins {
                self.fields.insert(key.clone(), value.clone());
                self.field_sources.insert(key.clone(), source.to_owned());
            }
        }
    }

    /// Merges another record into this one (the same join as merging its facts one by one).
    pub fn merge_record(&mut self, other: &Record) {
        if let Some(id) = &other.apollo_id {
            self.merge_apollo_id(id);
        }
        for (key, value) in &other.fields {
            let source = other.field_sources.get(key).map(String::as_str).unwrap_or("");
            self.merge_fields(&Value::Object([(key.clone(), value.clone())].into_iter().collect()), source);
        }
        for e in &other.emails {
            upsert(&mut self.emails, e.clone(), |x| &x.address, join_email);
        }
        for p in &other.phones {
            upsert(&mut self.phones, p.clone(), |x| &x.e164, join_phone);
        }
    }

    fn merge_apollo_id(&mut self, id: &str) {
        match &self.apollo_id {
            Some(old) if old.as_str() <= id => {}
            _ => self.apollo_id = Some(id.to_owned()),
        }
    }
}

/// Inserts `incoming` keeping `list` sorted by key, or joins it into the entry with the same key.
fn upsert<T>(list: &mut Vec<T>, incoming: T, key: impl Fn(&T) -> &String, join: impl Fn(&mut T, T)) {
    match list.binary_search_by(|x| key(x).cmp(key(&incoming))) {
        Ok(i) => join(&mut list[i], incoming),
        Err(i) => list.insert(i, incoming),
    }
}

fn join_email(old: &mut EmailEntry, new: EmailEntry) {
    old.status = best_status(old.status.take(), new.status, EMAIL_STATUS_RANK);
    old.personal |= new.personal;
    old.sources.extend(new.sources);
    old.vendors.extend(new.vendors);
}

fn join_phone(old: &mut PhoneEntry, new: PhoneEntry) {
    old.status = best_status(old.status.take(), new.status, PHONE_STATUS_RANK);
    old.raw = min_some(old.raw.take(), new.raw);
    old.kind = min_some(old.kind.take(), new.kind);
    old.dnc_status = min_some(old.dnc_status.take(), new.dnc_status);
    old.confidence = min_some(old.confidence.take(), new.confidence);
    old.sources.extend(new.sources);
    old.vendors.extend(new.vendors);
}

/// The better of two statuses: by position in `rank` (unknown after known), then lexically.
fn best_status(a: Option<String>, b: Option<String>, rank: &[&str]) -> Option<String> {
    let key = |s: &String| (rank.iter().position(|r| r == s).unwrap_or(rank.len()), s.clone());
    match (a, b) {
        (Some(a), Some(b)) => Some(if key(&b) < key(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A value beats none; between two values the lexically smaller wins (any fixed rule would do).
fn min_some(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn clean(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn source_rank(source: &str) -> u8 {
    match source {
        "sync" => 3,
        "waterfall" => 2,
        "phone_webhook" => 1,
        _ => 0,
    }
}

/// The JSON text of a value; serde_json maps are ordered by key here, so equal values give equal text.
fn canonical(v: &Value) -> String {
    sort_keys(v).to_string()
}

fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// `v` with U+0000 replaced by U+FFFD in every string and key: PostgreSQL's `jsonb` refuses
/// U+0000, and one such character from Apollo must not make a write fail (and be retried) forever.
pub fn storable(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{fffd}")),
        Value::Array(a) => Value::Array(a.into_iter().map(storable).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (if k.contains('\0') { k.replace('\0', "\u{fffd}") } else { k }, storable(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Whether `v` holds a character a JSON column cannot store everywhere (U+0000 on PostgreSQL).
pub fn needs_sanitizing(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(needs_sanitizing),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || needs_sanitizing(v)),
        _ => false,
    }
}

/// Null, blank strings, empty arrays and objects, and the placeholder email carry no information.
pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty() || is_placeholder_email(s),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() || o.values().all(is_empty_value),
        _ => false,
    }
}

/// Compares two records by their canonical JSON text (a total order, used by tests and audits).
pub fn compare(a: &Record, b: &Record) -> Ordering {
    a.to_json().to_string().cmp(&b.to_json().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_client::{EmailFact, FactSource, PhoneFact};
    use serde_json::json;

    fn email(address: &str, status: Option<&str>, source: FactSource, vendor: Option<&str>) -> EmailFact {
        EmailFact {
            address: address.into(),
            status: status.map(Into::into),
            source,
            vendor: vendor.map(Into::into),
            personal: false,
        }
    }

    fn phone(e164: &str, status: Option<&str>, source: FactSource, vendor: Option<&str>) -> PhoneFact {
        PhoneFact {
            e164: e164.into(),
            raw: Some(e164.replace('+', "")),
            kind: Some("mobile".into()),
            status: status.map(Into::into),
            dnc_status: None,
            confidence: None,
            source,
            vendor: vendor.map(Into::into),
        }
    }

    fn facts(emails: Vec<EmailFact>, phones: Vec<PhoneFact>) -> PersonFacts {
        PersonFacts { apollo_id: Some("p1".into()), status: None, emails, phones, raw: Value::Null }
    }

    // Each test below pins a rule a mutation run found unpinned (scripts/mutants.sh merge).

    #[test]
    fn a_record_is_empty_until_something_is_merged() {
        let mut r = Record::default();
        assert!(r.is_empty());
        r.merge_fields(&json!({"title": "CTO"}), "sync");
        assert!(!r.is_empty());
    }

    #[test]
    fn the_smallest_apollo_id_wins_whatever_the_order_and_a_blank_one_is_no_id() {
        let with_id = |id: &str| PersonFacts { apollo_id: Some(id.into()), ..PersonFacts::default() };
        let (mut ab, mut ba) = (Record::default(), Record::default());
        ab.merge_facts(&with_id("aaa"));
        ab.merge_facts(&with_id("bbb"));
        ba.merge_facts(&with_id("bbb"));
        ba.merge_facts(&with_id("aaa"));
        assert_eq!((ab.apollo_id.as_deref(), ba.apollo_id.as_deref()), (Some("aaa"), Some("aaa")));
        let mut blank = Record::default();
        blank.merge_facts(&with_id("   "));
        assert_eq!(blank.apollo_id, None);
    }

    #[test]
    fn an_address_once_seen_as_personal_stays_personal() {
        let mut r = Record::default();
        let personal = EmailFact { personal: true, ..email("ann@gmail.com", None, FactSource::Sync, None) };
        r.merge_facts(&facts(vec![personal], vec![]));
        r.merge_facts(&facts(vec![email("ann@gmail.com", None, FactSource::Waterfall, None)], vec![]));
        assert!(r.emails[0].personal);
    }

    #[test]
    fn sources_rank_sync_then_waterfall_then_phone_webhook_then_unknown() {
        // A higher-ranked source wins even with a lexically smaller value (which would win a tie).
        for (low, high) in [("", "phone_webhook"), ("phone_webhook", "waterfall"), ("waterfall", "sync")] {
            for order in [[low, high], [high, low]] {
                let mut r = Record::default();
                for source in order {
                    let value = if source == high { "Abe" } else { "Zed" };
                    r.merge_fields(&json!({"title": value}), source);
                }
                assert_eq!(r.fields["title"], "Abe", "{high} beats {low} ({order:?})");
                assert_eq!(r.field_sources["title"], high);
            }
        }
    }

    #[test]
    fn empty_values_carry_nothing() {
        for v in [json!(null), json!(""), json!("  "), json!([]), json!({}), json!({"a": null, "b": ""})] {
            assert!(is_empty_value(&v), "{v}");
        }
        for v in [json!("x"), json!([1]), json!({"a": 1, "b": null}), json!(0), json!(false)] {
            assert!(!is_empty_value(&v), "{v}");
        }
    }

    #[test]
    fn u0000_is_replaced_everywhere_and_nothing_else_changes() {
        let clean = json!({"a": ["x", {"b": "y"}], "c": 1});
        assert!(!needs_sanitizing(&clean));
        assert_eq!(storable(clean.clone()), clean);
        for dirty in [json!("a\0b"), json!(["ok", "a\0b"]), json!({"k": {"n": "a\0b"}}), json!({"a\0": 1})] {
            assert!(needs_sanitizing(&dirty), "{dirty}");
            let fixed = storable(dirty.clone());
            assert!(!needs_sanitizing(&fixed), "{fixed}");
            assert!(fixed.to_string().contains('\u{fffd}'), "{fixed}");
        }
        let mut r = Record::default();
        r.merge_fields(&json!({"title": "C\0O"}), "sync");
        assert_eq!(r.to_json()["fields"]["title"], "C\u{fffd}O");
    }

    #[test]
    fn same_facts_twice_change_nothing() {
        let f = facts(
            vec![email("Dana@X.com", Some("guessed"), FactSource::Sync, None)],
            vec![phone("+15125550142", Some("valid_number"), FactSource::PhoneWebhook, None)],
        );
        let mut once = Record::default();
        once.merge_facts(&f);
        once.merge_fields(&json!({"title": "CTO", "city": "Austin"}), "sync");
        let mut twice = once.clone();
        twice.merge_facts(&f);
        twice.merge_fields(&json!({"title": "CTO", "city": "Austin"}), "sync");
        assert_eq!(once, twice);
        assert_eq!(once.emails.len(), 1);
        assert_eq!(once.emails[0].address, "dana@x.com");
    }

    #[test]
    fn never_replaced_by_null_empty_or_placeholder() {
        let mut r = Record::default();
        r.merge_fields(&json!({"title": "CTO", "email": "dana@x.com", "city": "Austin"}), "sync");
        r.merge_fields(
            &json!({"title": null, "city": "", "headline": "email_not_unlocked@domain.com", "organization": {}}),
            "sync",
        );
        assert_eq!(r.fields.get("title"), Some(&json!("CTO")));
        assert_eq!(r.fields.get("city"), Some(&json!("Austin")));
        assert!(!r.fields.contains_key("headline"));
        assert!(!r.fields.contains_key("organization"));
        assert!(!r.fields.contains_key("email"), "emails live in the email set");
        let mut with_placeholder = r.clone();
        let mut placeholder =
            facts(vec![email("email_not_unlocked@domain.com", Some("verified"), FactSource::Sync, None)], vec![]);
        placeholder.apollo_id = None;
        with_placeholder.merge_facts(&placeholder);
        assert_eq!(with_placeholder, r);
    }

    #[test]
    fn sets_keep_every_source_and_the_best_status() {
        let mut r = Record::default();
        r.merge_facts(&facts(vec![email("dana@x.com", Some("guessed"), FactSource::Sync, None)], vec![]));
        r.merge_facts(&facts(
            vec![email("DANA@x.com", Some("verified"), FactSource::Waterfall, Some("Hunter"))],
            vec![phone("+15125550142", None, FactSource::Waterfall, Some("Lusha"))],
        ));
        r.merge_facts(&facts(
            vec![],
            vec![phone("+15125550142", Some("valid_number"), FactSource::PhoneWebhook, None)],
        ));
        assert_eq!(r.emails.len(), 1);
        let e = &r.emails[0];
        assert_eq!(e.status.as_deref(), Some("verified"));
        assert_eq!(e.sources.iter().map(String::as_str).collect::<Vec<_>>(), ["sync", "waterfall"]);
        assert_eq!(e.vendors.iter().map(String::as_str).collect::<Vec<_>>(), ["Hunter"]);
        let p = &r.phones[0];
        assert_eq!(p.status.as_deref(), Some("valid_number"));
        assert_eq!(p.sources.iter().map(String::as_str).collect::<Vec<_>>(), ["phone_webhook", "waterfall"]);
    }

    #[test]
    fn conflicting_fields_resolve_by_source_then_text() {
        let mut a = Record::default();
        a.merge_fields(&json!({"title": "Engineer"}), "waterfall");
        a.merge_fields(&json!({"title": "CTO"}), "sync");
        let mut b = Record::default();
        b.merge_fields(&json!({"title": "CTO"}), "sync");
        b.merge_fields(&json!({"title": "Engineer"}), "waterfall");
        assert_eq!(a, b);
        assert_eq!(a.fields["title"], json!("CTO"));
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut r = Record::default();
        r.merge_facts(&facts(
            vec![email("a@x.com", Some("verified"), FactSource::Sync, None)],
            vec![phone("+15125550142", Some("valid_number"), FactSource::PhoneWebhook, None)],
        ));
        r.merge_fields(&json!({"organization": {"name": "X", "primary_domain": "x.com"}}), "sync");
        assert_eq!(Record::from_json(Some(&r.to_json())), r);
        assert_eq!(Record::from_json(None), Record::default());
        assert!(Record::from_json(Some(&json!("garbage"))).is_empty());
    }

    /// Random facts from a small pool, so collisions (same address, different status) are common.
    fn random_step(rng: &mut fastrand::Rng) -> (Option<PersonFacts>, Option<(Value, &'static str)>) {
        const ADDRS: &[&str] = &["a@x.com", "A@X.com", "b@x.com", "c@y.org", "email_not_unlocked@domain.com"];
        const STATUSES: &[Option<&str>] =
            &[None, Some("verified"), Some("guessed"), Some("weird"), Some("Unavailable")];
        const PHONES: &[&str] = &["+15125550142", "+442079460958", "2065550117", "12345"];
        const PSTATUS: &[Option<&str>] = &[None, Some("valid_number"), Some("no_status"), Some("zzz")];
        const VENDORS: &[Option<&str>] = &[None, Some("Hunter"), Some("Lusha"), Some("")];
        const SOURCES: &[FactSource] = &[FactSource::Sync, FactSource::PhoneWebhook, FactSource::Waterfall];
        const SRC_NAMES: &[&str] = &["sync", "waterfall", "phone_webhook", "vendor"];
        const FIELDS: &[&str] = &["title", "city", "name", "organization"];
        const VALUES: &[Value] = &[Value::Null, Value::Bool(true)];
        if rng.bool() {
            let emails = (0..rng.usize(0..3))
                .map(|_| {
                    let mut e = email(
                        ADDRS[rng.usize(..ADDRS.len())],
                        STATUSES[rng.usize(..STATUSES.len())],
                        SOURCES[rng.usize(..SOURCES.len())].clone(),
                        VENDORS[rng.usize(..VENDORS.len())],
                    );
                    e.personal = rng.u8(..8) == 0;
                    e
                })
                .collect();
            let phones = (0..rng.usize(0..3))
                .map(|_| {
                    let mut p = phone(
                        PHONES[rng.usize(..PHONES.len())],
                        PSTATUS[rng.usize(..PSTATUS.len())],
                        SOURCES[rng.usize(..SOURCES.len())].clone(),
                        VENDORS[rng.usize(..VENDORS.len())],
                    );
                    if rng.bool() {
                        p.kind = None;
                        p.dnc_status = Some(["a", "b"][rng.usize(..2)].into());
                    }
                    p
                })
                .collect();
            let mut f = facts(emails, phones);
            f.apollo_id = [None, Some("p1"), Some("p2")][rng.usize(..3)].map(Into::into);
            (Some(f), None)
        } else {
            let mut obj = serde_json::Map::new();
            for _ in 0..rng.usize(1..4) {
                let v = match rng.u8(..5) {
                    0 => VALUES[rng.usize(..VALUES.len())].clone(),
                    1 => json!(""),
                    2 => {
                        let name = ["X", "Y"][rng.usize(..2)];
                        json!({"name": name, "size": rng.u8(..3)})
                    }
                    _ => {
                        let word = ["CTO", "VP", "Austin", "Dana"][rng.usize(..4)];
                        json!(word)
                    }
                };
                obj.insert(FIELDS[rng.usize(..FIELDS.len())].into(), v);
            }
            (None, Some((Value::Object(obj), SRC_NAMES[rng.usize(..SRC_NAMES.len())])))
        }
    }

    fn apply(r: &mut Record, step: &(Option<PersonFacts>, Option<(Value, &'static str)>)) {
        if let Some(f) = &step.0 {
            r.merge_facts(f);
        }
        if let Some((v, s)) = &step.1 {
            r.merge_fields(v, s);
        }
    }

    #[test]
    fn any_order_and_any_repetition_give_the_same_record() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _round in 0..300 {
            let steps: Vec<_> = (0..rng.usize(1..8)).map(|_| random_step(&mut rng)).collect();
            let mut reference = Record::default();
            steps.iter().for_each(|s| apply(&mut reference, s));
            for _perm in 0..12 {
                let mut order: Vec<usize> = (0..steps.len()).collect();
                rng.shuffle(&mut order);
                // Replay some steps twice, as a retried webhook would.
                let extra: Vec<usize> = order.iter().copied().filter(|_| rng.u8(..4) == 0).collect();
                order.extend(extra);
                let mut r = Record::default();
                order.iter().for_each(|&i| apply(&mut r, &steps[i]));
                assert_eq!(r, reference, "order {order:?} gave a different record");
                assert_eq!(r.to_json().to_string(), reference.to_json().to_string());
            }
            // Merging two partial records is the same join.
            let cut = rng.usize(0..=steps.len());
            let (mut left, mut right) = (Record::default(), Record::default());
            steps[..cut].iter().for_each(|s| apply(&mut left, s));
            steps[cut..].iter().for_each(|s| apply(&mut right, s));
            right.merge_record(&left);
            assert_eq!(compare(&right, &reference), Ordering::Equal);
        }
    }
}
