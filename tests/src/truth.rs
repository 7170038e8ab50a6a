//! Holding the service's merged records against what the simulator holds for each person.

use std::collections::BTreeSet;

use apollo_client::BulkMatchResponse;
use apollo_sim::SimHandle;
use enrichd::core::records::detail_of;
use job_store::Store;
use serde_json::{Value, json};

/// What the comparison covered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Matched people compared field by field.
    pub matched: usize,
    /// Mobiles that had to be present (delivered by the phone webhook or polled).
    pub mobiles: usize,
    /// Waterfall emails that had to be present.
    pub waterfall_emails: usize,
    /// Matched people whose call's phone reveal Apollo skipped: `partial`, waiting in vain.
    pub phone_skipped: usize,
}

fn set_of(v: &Value, list: &str, key: &str) -> BTreeSet<String> {
    v[list].as_array().into_iter().flatten().filter_map(|e| e[key].as_str().map(str::to_string)).collect()
}

/// Asserts that every person (as `GET /v1/jobs/{id}/people` shows them) holds exactly what the
/// simulator holds for them, given what the call that carried them answered (a skipped phone
/// reveal or a failed waterfall sends nothing). Panics with the person on the first difference.
pub async fn assert_records_match(store: &Store, sim: &SimHandle, people: &[Value]) -> Checked {
    let mut checked = Checked::default();
    for p in people {
        let Some(truth) = sim.truth_for(&detail_of(&p["input"])) else {
            assert_eq!(p["status"], "not_found", "{p:#}");
            continue;
        };
        checked.matched += 1;
        let record = &p["record"];
        assert_eq!(record["apollo_id"], truth.apollo_id.as_str(), "{p:#}");
        assert_eq!(record["fields"]["name"], truth.name.as_str(), "{p:#}");
        // The call that carried this person (its own, or its primary's for a duplicate).
        let pid = p["duplicate_of"].as_str().unwrap_or_else(|| p["id"].as_str().expect("person id"));
        let person = store.get_person(uuid::Uuid::parse_str(pid).expect("uuid")).await.expect("store").expect("person");
        let batch = store.get_batch(person.batch_id.expect("batch")).await.expect("store").expect("batch");
        let answer = BulkMatchResponse::from_value(batch.response.expect("sync answer")).expect("answer");
        let phone_pending = answer.phone_enrichment.as_ref().is_some_and(|p| p.pending());
        // A skipped reveal promises the phone from an earlier request; the simulator has none, so
        // the person waits until the deadline and ends partial, never complete without it.
        let phone_skipped = answer.phone_enrichment.as_ref().is_some_and(|p| p.skipped());
        let status = if phone_skipped { "partial" } else { "complete" };
        checked.phone_skipped += usize::from(phone_skipped);
        assert_eq!(p["status"], status, "{p:#}");
        let waterfall_accepted = answer.waterfall.as_ref().is_some_and(|w| w.accepted());

        let mut phones: BTreeSet<String> = truth.work_phone.iter().map(|w| w.e164.clone()).collect();
        if phone_pending && let Some(m) = &truth.mobile {
            phones.insert(m.e164.clone());
            checked.mobiles += 1;
        }
        assert_eq!(set_of(record, "phones", "e164"), phones, "phones of {p:#}");
        let mut emails = BTreeSet::new();
        if waterfall_accepted && let Some(found) = &truth.waterfall_email.found {
            emails.insert(found.value.clone());
            checked.waterfall_emails += 1;
            let entry = record["emails"]
                .as_array()
                .and_then(|list| list.iter().find(|e| e["address"] == found.value.as_str()))
                .unwrap_or_else(|| panic!("waterfall email missing in {p:#}"));
            assert_eq!(entry["vendors"], json!([found.vendor.name]), "the vendor is kept");
        }
        assert_eq!(set_of(record, "emails", "address"), emails, "emails of {p:#}");
    }
    checked
}
