//! Waterfall vendor statistics: what each vendor of a waterfall payload's trail was asked, whether
//! it returned a value and whether the value was verified, and the credits each is attributed.
//!
//! A waterfall payload names, per person, the vendors it asked in order
//! (`people[].waterfall.emails[].vendors[]`, `…phone_numbers[].vendors[]`), each with a `name`, a
//! `status` (`VERIFIED`, `UNVERIFIED`, `NOT_FOUND`, …) and the values it found. One entry is one
//! **attempt**; an attempt that returned at least one value is a **result**; a result whose status
//! is `VERIFIED` is a **verified result**. Apollo states credits only for the whole payload, so
//! they are **attributed** by rule ([`attribute_credits`]): split evenly (in micro-credits, exactly)
//! over the attempts that returned a result, or over every attempt when none did (some vendors
//! charge on a miss); a payload with no trail attributes nothing.
//!
//! Read tolerantly, as every payload is: the envelope may be `people`, `matches`, `contacts` or a
//! single `person`; a trail's kind may be spelt `emails`/`email` or `phone_numbers`/`phones`/`phone`;
//! a step may hold a `vendors` list or be a vendor itself; a vendor's name may be `name`,
//! `vendor_name`, `vendor` or, failing those, its `id`; its values may sit under the kind's field
//! names, `values` or `results`, and without any list its status alone tells whether it found one.

use std::collections::BTreeMap;

use apollo_client::Credits;
use serde_json::Value;

use crate::states::VendorKind;

/// Characters of a vendor name kept (names are labels of metrics and keys of stored rows).
pub const VENDOR_NAME_MAX: usize = 64;

/// The name given to a vendor entry that names no vendor.
pub const UNKNOWN_VENDOR: &str = "unknown";

/// One vendor asked for one person's value of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorAttempt {
    /// The vendor's display name (at most [`VENDOR_NAME_MAX`] characters).
    pub vendor: String,
    /// What it was asked to find.
    pub kind: VendorKind,
    /// It returned at least one value.
    pub returned: bool,
    /// It returned a value and called it verified.
    pub verified: bool,
}

/// Sums for one vendor and kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VendorTotals {
    /// Attempts.
    pub attempts: i64,
    /// Attempts that returned a value.
    pub results: i64,
    /// Results the vendor called verified.
    pub verified: i64,
    /// Credits attributed ([`attribute_credits`]).
    pub credits: Credits,
}

impl VendorTotals {
    /// Adds one attempt and the credits attributed to it.
    pub fn add_attempt(&mut self, a: &VendorAttempt, credits: Credits) {
        self.attempts += 1;
        self.results += i64::from(a.returned);
        self.verified += i64::from(a.verified);
        self.credits += credits;
    }

    /// Adds another set of sums.
    pub fn add(&mut self, o: &VendorTotals) {
        self.attempts += o.attempts;
        self.results += o.results;
        self.verified += o.verified;
        self.credits += o.credits;
    }

    /// Credits attributed per verified result ([`cost_per_verified`]).
    pub fn cost_per_verified(&self) -> Option<Credits> {
        cost_per_verified(self.credits, self.verified)
    }
}

/// Credits per verified result, rounded down to the micro-credit; `None` without a verified result.
pub fn cost_per_verified(credits: Credits, verified: i64) -> Option<Credits> {
    (verified > 0).then(|| Credits(credits.micros().div_euclid(verified)))
}

/// The field names a trail uses for a kind (the first is Apollo's).
fn kind_fields(kind: VendorKind) -> &'static [&'static str] {
    match kind {
        VendorKind::Email => &["emails", "email"],
        VendorKind::Phone => &["phone_numbers", "phones", "phone"],
    }
}

/// The vendor attempts of one person entry of a waterfall payload, email steps first, each kind
/// in trail order. An entry without a trail has none.
pub fn person_attempts(person: &Value) -> Vec<VendorAttempt> {
    let Some(trail) = person.get("waterfall").filter(|t| t.is_object()) else { return Vec::new() };
    let mut out = Vec::new();
    for kind in [VendorKind::Email, VendorKind::Phone] {
        let Some(steps) = kind_fields(kind).iter().find_map(|f| trail.get(*f)) else { continue };
        for step in as_list(steps) {
            match step.get("vendors") {
                Some(vendors) => out.extend(as_list(vendors).filter_map(|v| attempt(v, kind))),
                None => out.extend(attempt(step, kind)),
            }
        }
    }
    out
}

/// The vendor attempts of a whole waterfall payload (every person entry, in order).
pub fn payload_attempts(payload: &Value) -> Vec<VendorAttempt> {
    let entries: Vec<&Value> = match payload.get("person").filter(|p| p.is_object()) {
        Some(p) => vec![p],
        None => ["people", "matches", "contacts"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(Value::as_array))
            .map(|l| l.iter().collect())
            .unwrap_or_default(),
    };
    entries.into_iter().flat_map(person_attempts).collect()
}

/// A list, or one object read as a list of one.
fn as_list(v: &Value) -> impl Iterator<Item = &Value> {
    let items: &[Value] = match v {
        Value::Array(a) => a,
        Value::Object(_) => std::slice::from_ref(v),
        _ => &[],
    };
    items.iter()
}

/// One vendor entry, if it is an object.
fn attempt(v: &Value, kind: VendorKind) -> Option<VendorAttempt> {
    if !v.is_object() {
        return None;
    }
    let vendor = ["name", "vendor_name", "vendor", "id"]
        .iter()
        .find_map(|k| text(v.get(*k)))
        .map(|n| n.chars().take(VENDOR_NAME_MAX).collect())
        .unwrap_or_else(|| UNKNOWN_VENDOR.to_owned());
    let status = text(v.get("status")).unwrap_or_default().to_ascii_uppercase();
    let values =
        kind_fields(kind).iter().chain(&["values", "results"]).find_map(|k| v.get(*k)).filter(|l| !l.is_null());
    let returned = match values {
        Some(Value::Array(l)) => l.iter().any(|x| !x.is_null() && x.as_str() != Some("")),
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(other) => other.is_object(),
        None => matches!(status.as_str(), "VERIFIED" | "UNVERIFIED" | "FOUND" | "SUCCESS"),
    };
    Some(VendorAttempt { vendor, kind, returned, verified: returned && status == "VERIFIED" })
}

/// A non-empty string (trimmed), or a number written out.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Each attempt's share of a payload's `total` credits: evenly over the attempts that returned a
/// value, or over all of them when none did; exact (the shares add up to `total`, the first ones
/// taking a micro-credit more). No attempts: no shares (the credits stay unattributed).
pub fn attribute_credits(total: Credits, attempts: &[VendorAttempt]) -> Vec<Credits> {
    let any_returned = attempts.iter().any(|a| a.returned);
    let weights: Vec<i64> = attempts.iter().map(|a| i64::from(a.returned || !any_returned)).collect();
    let n: i64 = weights.iter().sum();
    if n == 0 {
        return vec![Credits::ZERO; attempts.len()];
    }
    let (each, mut rest) = (total.micros().div_euclid(n), total.micros().rem_euclid(n));
    weights
        .iter()
        .map(|w| {
            if *w == 0 {
                return Credits::ZERO;
            }
            let extra = i64::from(rest > 0);
            rest -= extra;
            Credits(each + extra)
        })
        .collect()
}

/// Sums attempts (with their attributed credits) per vendor and kind.
pub fn totals<'a>(
    attempts: impl IntoIterator<Item = (&'a VendorAttempt, Credits)>,
) -> BTreeMap<(String, VendorKind), VendorTotals> {
    let mut out: BTreeMap<(String, VendorKind), VendorTotals> = BTreeMap::new();
    for (a, credits) in attempts {
        out.entry((a.vendor.clone(), a.kind)).or_default().add_attempt(a, credits);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EXAMPLE: &str = include_str!("../../apollo-client/tests/fixtures/webhook_waterfall.json");

    fn example() -> Value {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    fn a(vendor: &str, kind: VendorKind, returned: bool, verified: bool) -> VendorAttempt {
        VendorAttempt { vendor: vendor.into(), kind, returned, verified }
    }

    #[test]
    fn the_example_payload_has_one_verified_email_and_one_unverified_phone() {
        let got = payload_attempts(&example());
        assert_eq!(got, [a("VendorA", VendorKind::Email, true, true), a("VendorB", VendorKind::Phone, true, false)]);
        let shares = attribute_credits(Credits::whole(12), &got);
        assert_eq!(shares, [Credits::whole(6), Credits::whole(6)]);
        let t = totals(got.iter().zip(shares));
        let email = t[&("VendorA".to_owned(), VendorKind::Email)];
        assert_eq!((email.attempts, email.results, email.verified), (1, 1, 1));
        assert_eq!(email.cost_per_verified(), Some(Credits::whole(6)));
        assert_eq!(t[&("VendorB".to_owned(), VendorKind::Phone)].cost_per_verified(), None);
    }

    #[test]
    fn misses_are_attempts_without_results() {
        let person = json!({"id": "x", "waterfall": {"emails": [{"vendors": [
            {"name": "Hunter", "status": "NOT_FOUND", "emails": []},
            {"name": "Dropcontact", "status": "VERIFIED", "emails": ["a@b.io"]},
        ]}]}});
        assert_eq!(
            person_attempts(&person),
            [a("Hunter", VendorKind::Email, false, false), a("Dropcontact", VendorKind::Email, true, true)]
        );
    }

    #[test]
    fn renamed_and_missing_fields_are_read() {
        // A bare `person` envelope, singular kind names, steps that are vendors, names under other
        // keys or only an id, values under `values`, and a status alone.
        let payload = json!({"person": {"waterfall": {
            "email": [{"vendor_name": "A", "status": "verified", "values": ["a@b.io"]}],
            "phones": {"vendors": {"id": "vendor_b_mobile-1", "status": "UNVERIFIED"}},
        }}});
        assert_eq!(
            payload_attempts(&payload),
            [a("A", VendorKind::Email, true, true), a("vendor_b_mobile-1", VendorKind::Phone, true, false)]
        );
        let nameless = json!({"waterfall": {"phone_numbers": [{"vendors": [{"status": "NOT_FOUND"}, 7, null]}]}});
        assert_eq!(person_attempts(&nameless), [a(UNKNOWN_VENDOR, VendorKind::Phone, false, false)]);
        // A verified status without a value is no result.
        let empty =
            json!({"waterfall": {"emails": [{"vendors": [{"name": "C", "status": "VERIFIED", "emails": [""]}]}]}});
        assert_eq!(person_attempts(&empty), [a("C", VendorKind::Email, false, false)]);
        assert!(person_attempts(&json!({"id": "x", "emails": []})).is_empty());
        assert!(payload_attempts(&json!({"people": "no"})).is_empty());
        assert!(payload_attempts(&json!({"matches": [{"waterfall": null}, 3]})).is_empty());
        let long = "v".repeat(500);
        let named = json!({"waterfall": {"emails": [{"name": long}]}});
        assert_eq!(person_attempts(&named)[0].vendor.len(), VENDOR_NAME_MAX);
    }

    #[test]
    fn credits_split_exactly_over_results_or_over_misses() {
        let hits = [
            a("A", VendorKind::Email, false, false),
            a("B", VendorKind::Email, true, true),
            a("C", VendorKind::Phone, true, false),
            a("D", VendorKind::Phone, true, false),
        ];
        let shares = attribute_credits(Credits(10), &hits);
        assert_eq!(shares, [Credits(0), Credits(4), Credits(3), Credits(3)]);
        assert_eq!(shares.iter().copied().sum::<Credits>(), Credits(10));
        let misses = [a("A", VendorKind::Email, false, false), a("B", VendorKind::Email, false, false)];
        assert_eq!(attribute_credits(Credits::whole(3), &misses), [Credits(1_500_000), Credits(1_500_000)]);
        assert!(attribute_credits(Credits::whole(3), &[]).is_empty());
        assert_eq!(attribute_credits(Credits::ZERO, &hits), [Credits::ZERO; 4]);
    }

    #[test]
    fn cost_per_verified_needs_a_verified_result() {
        assert_eq!(cost_per_verified(Credits::whole(10), 0), None);
        assert_eq!(cost_per_verified(Credits::whole(10), 3), Some(Credits(3_333_333)));
        let mut t = VendorTotals::default();
        t.add(&VendorTotals { attempts: 2, results: 1, verified: 1, credits: Credits::whole(4) });
        t.add(&VendorTotals { attempts: 1, results: 1, verified: 1, credits: Credits::whole(2) });
        assert_eq!((t.attempts, t.results, t.verified, t.cost_per_verified()), (3, 2, 2, Some(Credits::whole(3))));
    }
}
