//! From a synchronous Apollo answer to what the store records per person: alignment, the
//! demographic fields, which asynchronous parts to expect, and the credit attribution.

use apollo_client::{BulkMatchResponse, Credits, EnrichFlags, Person, PersonDetail, PersonFacts};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Whether Apollo matched a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMatch {
    /// A person object came back.
    Matched,
    /// `null` (or no usable alignment).
    NotFound,
}

/// The synchronous answer about one person of the batch (built by the caller).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncPerson {
    /// The person (must be in the batch).
    pub person_id: Uuid,
    /// Matched or not.
    pub outcome: SyncMatch,
    /// Apollo's person id (deliveries are correlated by it).
    pub apollo_id: Option<String>,
    /// Emails and phones of the answer.
    pub facts: PersonFacts,
    /// Demographic fields (`name`, `title`, `linkedin_url`, `organization`, `city`, …): a JSON object.
    pub fields: Value,
    /// A phone delivery will follow for this person (`phone_enrichment` pending, or skipped:
    /// then see `phone_elsewhere`).
    pub expect_phone: bool,
    /// Apollo skipped this request's phone reveal: an earlier request delivers the phone.
    #[serde(default)]
    pub phone_elsewhere: bool,
    /// A waterfall delivery will follow for this person.
    pub expect_waterfall: bool,
    /// Credits attributed to the person.
    pub credits: Credits,
}

/// The Apollo detail for one input person (our own fields such as `external_id` stay home).
pub fn detail_of(input: &Value) -> PersonDetail {
    let s = |k: &str| input.get(k).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    PersonDetail {
        first_name: s("first_name"),
        last_name: s("last_name"),
        name: s("name"),
        email: s("email"),
        hashed_email: s("hashed_email"),
        organization_name: s("organization_name"),
        // Apollo wants a bare domain: no scheme, `www.` or `@`.
        domain: s("domain").map(|d| {
            let d = d.to_lowercase();
            let d = d.trim_start_matches("https://").trim_start_matches("http://");
            let d = d.trim_start_matches('@').trim_start_matches("www.");
            d.split('/').next().unwrap_or_default().to_string()
        }),
        id: s("id"),
        linkedin_url: s("linkedin_url"),
    }
}

/// The scalar fields of a matched person kept in the merged record.
pub fn fields_of(p: &Person) -> Value {
    let mut out = Map::new();
    for key in [
        "id",
        "first_name",
        "last_name",
        "name",
        "title",
        "headline",
        "linkedin_url",
        "photo_url",
        "city",
        "state",
        "country",
        "seniority",
        "organization_id",
    ] {
        if let Some(v) = p.raw.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_string(), v.clone());
        }
    }
    if let Some(org) = p.raw.get("organization").filter(|o| o.is_object()) {
        let pick = |k: &str| org.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(Value::Null);
        out.insert(
            "organization".into(),
            json!({
                "id": pick("id"),
                "name": pick("name"),
                "primary_domain": pick("primary_domain"),
                "website_url": pick("website_url"),
                "industry": pick("industry"),
                "estimated_num_employees": pick("estimated_num_employees"),
            }),
        );
    }
    if p.email_locked {
        out.insert("email_locked".into(), Value::Bool(true));
    }
    Value::Object(out)
}

/// Per-person results of one synchronous answer, for the people of the call in the order sent.
///
/// A matched person expects the phone part when the phone reveal is pending for this request, or
/// skipped (then from the earlier request that Apollo says delivers it), and the waterfall part
/// when Apollo accepted the waterfall. Credits of the call are attributed evenly to the matched people (unmatched cost
/// nothing), remainder to the first, so the people of a call always add up to the call.
pub fn sync_people(
    person_ids: impl IntoIterator<Item = Uuid>,
    details: &[PersonDetail],
    response: &BulkMatchResponse,
    flags: &EnrichFlags,
) -> Vec<SyncPerson> {
    let aligned = response.align(details);
    // `pending` means a phone webhook follows, whatever the flags; `skipped` means an earlier
    // request delivers it: still expected, from elsewhere (never complete without it).
    let phone_elsewhere = response.phone_enrichment.as_ref().is_some_and(|p| p.skipped());
    let expect_phone = response.phone_enrichment.as_ref().is_some_and(|p| p.pending()) || phone_elsewhere;
    let asks_waterfall = flags.on().any(|f| crate::reuse::part_of(f) == Some(crate::lifecycle::Part::Waterfall));
    let expect_waterfall = asks_waterfall && response.waterfall.as_ref().is_some_and(|w| w.accepted());
    let matched = aligned.iter().filter(|m| m.is_some()).count() as i64;
    let total = response.credits_consumed.unwrap_or(Credits::ZERO).micros();
    let (share, mut remainder) = if matched > 0 { (total / matched, total % matched) } else { (0, 0) };
    person_ids
        .into_iter()
        .zip(aligned)
        .map(|(person_id, m)| match m {
            Some(p) => {
                let credits = Credits(share + std::mem::take(&mut remainder));
                SyncPerson {
                    person_id,
                    outcome: SyncMatch::Matched,
                    apollo_id: p.id.clone(),
                    facts: p.facts(),
                    fields: fields_of(p),
                    expect_phone,
                    phone_elsewhere,
                    expect_waterfall,
                    credits,
                }
            }
            None => SyncPerson {
                person_id,
                outcome: SyncMatch::NotFound,
                apollo_id: None,
                facts: Default::default(),
                fields: json!({}),
                expect_phone: false,
                phone_elsewhere: false,
                expect_waterfall: false,
                credits: Credits::ZERO,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../apollo-client/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn claimed(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn details_drop_our_fields_and_clean_domains() {
        let d =
            detail_of(&json!({"email": " a@b.io ", "external_id": "crm-1", "domain": "https://www.Acme.com/about"}));
        assert_eq!(d.email.as_deref(), Some("a@b.io"));
        assert_eq!(d.domain.as_deref(), Some("acme.com"));
        assert_eq!(serde_json::to_value(&d).unwrap(), json!({"email": "a@b.io", "domain": "acme.com"}));
    }

    #[test]
    fn standard_answer_attributes_credits_to_matched_people() {
        let r = BulkMatchResponse::from_value(fixture("bulk_match_response_standard.json")).unwrap();
        let details = vec![PersonDetail::default(); 3];
        let people = sync_people(claimed(3), &details, &r, &EnrichFlags::default());
        assert_eq!(people[0].outcome, SyncMatch::Matched);
        assert_eq!(people[1].outcome, SyncMatch::NotFound);
        assert_eq!(people[1].credits, Credits::ZERO);
        let sum: Credits = people.iter().map(|p| p.credits).sum();
        assert_eq!(sum, Credits(2_010_000), "the people add up to the call");
        assert_eq!(people[0].fields["organization"]["primary_domain"], "northwind-labs.com");
        assert_eq!(people[2].fields["email_locked"], true);
        assert!(!people[0].expect_phone && !people[0].expect_waterfall);
    }

    #[test]
    fn async_parts_follow_the_answer_not_only_the_flags() {
        let flags = EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..Default::default() };
        let phone = BulkMatchResponse::from_value(fixture("bulk_match_response_phone.json")).unwrap();
        let people = sync_people(claimed(2), &[PersonDetail::default(), PersonDetail::default()], &phone, &flags);
        assert!(people[0].expect_phone, "pending phone reveal");
        assert!(!people[0].expect_waterfall, "no waterfall object in this answer: none will come");
        assert!(!people[1].expect_phone, "unmatched people expect nothing");

        let wf = BulkMatchResponse::from_value(fixture("bulk_match_response_waterfall.json")).unwrap();
        let people = sync_people(claimed(1), &[PersonDetail::default()], &wf, &flags);
        assert!(people[0].expect_waterfall && !people[0].expect_phone);
        let mut skipped = fixture("bulk_match_response_phone.json");
        skipped["phone_enrichment"] = json!({"status": "skipped", "message": "an earlier request delivers"});
        let skipped = BulkMatchResponse::from_value(skipped).unwrap();
        let people = sync_people(claimed(2), &[PersonDetail::default(), PersonDetail::default()], &skipped, &flags);
        assert!(people[0].expect_phone && people[0].phone_elsewhere, "skipped: still expected, from elsewhere");
        assert!(!people[1].expect_phone && !people[1].phone_elsewhere);
        let both = EnrichFlags { run_waterfall_phone: true, ..flags };
        let people = sync_people(claimed(2), &[PersonDetail::default(), PersonDetail::default()], &phone, &both);
        assert!(people[0].expect_phone, "pending waits for the phone whatever the flags");
        assert!(!people[0].phone_elsewhere);
        let mut failed = fixture("bulk_match_response_waterfall.json");
        failed["waterfall"]["status"] = json!("failed");
        let failed = BulkMatchResponse::from_value(failed).unwrap();
        assert!(!sync_people(claimed(1), &[PersonDetail::default()], &failed, &flags)[0].expect_waterfall);
    }
}
