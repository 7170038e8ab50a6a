//! Spreadsheet rows in and out: which column feeds which person field (by common header
//! aliases, overridable), a row as a person, and a finished person as a row of input columns
//! followed by the enriched columns. Pure functions, shared by the command-line client and (later)
//! the dashboard.

use std::collections::BTreeMap;

use rules::PersonField;
use serde_json::Value;

use crate::models::{Person, PersonInput, Record};

/// The job metadata key holding the original header row of a file submission.
pub const SOURCE_COLUMNS_KEY: &str = "source_columns";

/// Header spellings (lower-cased, letters and digits only) of each person field.
const ALIASES: &[(PersonField, &[&str])] = &[
    (PersonField::FirstName, &["firstname", "first", "givenname", "fname", "forename"]),
    (PersonField::LastName, &["lastname", "last", "surname", "familyname", "lname"]),
    (PersonField::Name, &["name", "fullname", "contactname", "personname", "contact"]),
    (PersonField::Email, &["email", "emailaddress", "workemail", "businessemail", "mail", "emailid"]),
    (PersonField::HashedEmail, &["hashedemail", "emailhash", "emailmd5", "emailsha256", "md5email", "sha256email"]),
    (
        PersonField::OrganizationName,
        &["organizationname", "organization", "company", "companyname", "account", "accountname", "employer", "org"],
    ),
    (
        PersonField::Domain,
        &["domain", "companydomain", "website", "companywebsite", "emaildomain", "organizationdomain"],
    ),
    (PersonField::Id, &["apolloid", "apollopersonid", "personid"]),
    (
        PersonField::LinkedinUrl,
        &["linkedin", "linkedinurl", "linkedinprofile", "linkedinprofileurl", "personlinkedinurl", "linkedinlink"],
    ),
    // A bare "ID" in a CRM export is the CRM's own record id, not Apollo's.
    (PersonField::ExternalId, &["externalid", "id", "crmid", "recordid", "contactid", "leadid", "rowid"]),
];

/// How a file's columns feed the person fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The header row as written (BOM removed).
    pub headers: Vec<String>,
    /// For each column, the person field it feeds, if any.
    pub fields: Vec<Option<PersonField>>,
}

/// A `--map` override that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Not `column=field`.
    #[error("--map {0:?}: expected column=field")]
    Syntax(String),
    /// The column is not in the header row.
    #[error("--map {0:?}: no column named {1:?} in the header row")]
    NoColumn(String, String),
    /// The field is not a person field.
    #[error("--map {0:?}: {1:?} is not a person field (one of {fields}, or - to ignore)", fields = PersonField::names().collect::<Vec<_>>().join(", "))]
    NoField(String, String),
}

/// A header reduced to lower-case letters and digits: `"E-mail Address "` → `emailaddress`.
pub fn header_key(header: &str) -> String {
    header.trim_start_matches('\u{feff}').chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The person field a header names, by alias.
pub fn field_for_header(header: &str) -> Option<PersonField> {
    let key = header_key(header);
    ALIASES.iter().find(|(_, aliases)| aliases.contains(&key.as_str())).map(|(field, _)| *field)
}

/// Maps a header row: aliases first, then each `column=field` override (`column=-` ignores a
/// column). When two columns feed one field, the first keeps it.
pub fn map_headers(headers: &[String], overrides: &[String]) -> Result<Mapping, MapError> {
    let headers: Vec<String> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect();
    let mut fields: Vec<Option<PersonField>> = headers.iter().map(|h| field_for_header(h)).collect();
    for raw in overrides {
        let (column, field) = raw.split_once('=').ok_or_else(|| MapError::Syntax(raw.clone()))?;
        let (column, field) = (column.trim(), field.trim());
        let at = headers
            .iter()
            .position(|h| h == column)
            .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(column)))
            .ok_or_else(|| MapError::NoColumn(raw.clone(), column.to_string()))?;
        let target = match field {
            "-" | "" => None,
            f => Some(PersonField::from_name(f).ok_or_else(|| MapError::NoField(raw.clone(), f.to_string()))?),
        };
        // The override wins: no other column keeps that field.
        if target.is_some() {
            fields.iter_mut().filter(|f| **f == target).for_each(|f| *f = None);
        }
        fields[at] = target;
    }
    for i in 0..fields.len() {
        if fields[i].is_some() && fields[..i].contains(&fields[i]) {
            fields[i] = None;
        }
    }
    Ok(Mapping { headers, fields })
}

impl Mapping {
    /// One line per column: `"First Name" -> first_name`, or `(kept, not sent)`.
    pub fn describe(&self) -> Vec<String> {
        self.headers
            .iter()
            .zip(&self.fields)
            .map(|(h, f)| match f {
                Some(f) => format!("{h:?} -> {f}"),
                None => format!("{h:?} (kept in the export, not sent to Apollo)"),
            })
            .collect()
    }

    /// The person a row describes; the whole row is kept as `source_row`.
    pub fn person(&self, row: &[&str]) -> PersonInput {
        let mut p = PersonInput::default();
        for (value, field) in row.iter().zip(&self.fields) {
            let Some(field) = field else { continue };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            p.set(*field, value.to_string());
        }
        p.source_row = Some(row.iter().map(|s| s.to_string()).collect());
        p
    }
}

/// The enriched columns of an export, after the input columns.
pub const ENRICHED_COLUMNS: [&str; 14] = [
    "status",
    "apollo_id",
    "full_name",
    "title",
    "company",
    "company_domain",
    "linkedin",
    "email",
    "email_status",
    "other_emails",
    "mobile_phone",
    "phones",
    "credits",
    "error",
];

/// The input columns of an export: the file's header row when the job came from a file, else the
/// person fields any person of the job used (in [`PersonField::ALL`] order).
pub fn input_columns(metadata: Option<&Value>, people: &[Person]) -> Vec<String> {
    if let Some(cols) = metadata.and_then(|m| m.get(SOURCE_COLUMNS_KEY)).and_then(Value::as_array) {
        return cols.iter().map(|c| c.as_str().unwrap_or_default().to_string()).collect();
    }
    PersonField::names().filter(|f| people.iter().any(|p| p.input.get(*f).is_some())).map(str::to_owned).collect()
}

/// A person's input cells under `columns` (see [`input_columns`]).
pub fn input_cells(columns: &[String], from_file: bool, person: &Person) -> Vec<String> {
    if from_file {
        let row = person.input.get("source_row").and_then(Value::as_array);
        return (0..columns.len())
            .map(|i| row.and_then(|r| r.get(i)).and_then(Value::as_str).unwrap_or_default().to_string())
            .collect();
    }
    columns.iter().map(|c| text(person.input.get(c))).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A person's enriched cells, in [`ENRICHED_COLUMNS`] order.
pub fn enriched_cells(person: &Person) -> Vec<String> {
    let record = person.typed_record().unwrap_or_default();
    let field = |k: &str| text(record.fields.get(k));
    let org = record.fields.get("organization");
    let org_text = |k: &str| text(org.and_then(|o| o.get(k)));
    let company = match org_text("name") {
        n if n.is_empty() => field("organization_name"),
        n => n,
    };
    let (email, email_status, others) = emails(&record);
    let mobile = record.phones.iter().find(|p| p.kind.as_deref() == Some("mobile")).map(|p| p.e164.clone());
    let phones = record
        .phones
        .iter()
        .map(|p| match &p.kind {
            Some(k) => format!("{} ({k})", p.e164),
            None => p.e164.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        status_text(person),
        person.apollo_id.clone().or(record.apollo_id.clone()).unwrap_or_default(),
        field("name"),
        field("title"),
        company,
        org_text("primary_domain"),
        field("linkedin_url"),
        email,
        email_status,
        others,
        mobile.unwrap_or_default(),
        phones,
        text(serde_json::to_value(person.credits_consumed).ok().as_ref()),
        person.error.clone().unwrap_or_default(),
    ]
}

fn status_text(person: &Person) -> String {
    serde_json::to_value(person.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The best work email with its status, and the others as `address (status)` joined by `; `.
fn emails(record: &Record) -> (String, String, String) {
    let primary = record.emails.iter().find(|e| !e.personal).or(record.emails.first());
    let others = record
        .emails
        .iter()
        .filter(|e| primary.is_none_or(|p| p.address != e.address))
        .map(|e| {
            let mut tags: Vec<&str> = e.status.iter().map(String::as_str).collect();
            if e.personal {
                tags.push("personal");
            }
            if tags.is_empty() { e.address.clone() } else { format!("{} ({})", e.address, tags.join(", ")) }
        })
        .collect::<Vec<_>>()
        .join("; ");
    match primary {
        Some(p) => (p.address.clone(), p.status.clone().unwrap_or_default(), others),
        None => (String::new(), String::new(), others),
    }
}

/// A person as one JSON line of an export: the input (as columns when from a file), then the
/// enriched fields by name.
pub fn export_object(columns: &[String], from_file: bool, person: &Person, with_input: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("index".into(), person.index.into());
    if with_input {
        let input: BTreeMap<&str, String> =
            columns.iter().map(String::as_str).zip(input_cells(columns, from_file, person)).collect();
        out.insert("input".into(), serde_json::to_value(input).unwrap_or_default());
    }
    for (k, v) in ENRICHED_COLUMNS.iter().zip(enriched_cells(person)) {
        out.insert(k.to_string(), Value::String(v));
    }
    out.insert("record".into(), person.record.clone().unwrap_or(Value::Null));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn common_headers_map_by_alias() {
        let m = map_headers(
            &headers(&[
                "\u{feff}First Name",
                "last_name",
                "Email Address",
                "Company Domain",
                "LinkedIn",
                "Notes",
                "ID",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(m.headers[0], "First Name", "the BOM is not part of the name");
        assert_eq!(
            m.fields.iter().map(|f| f.map(PersonField::name)).collect::<Vec<_>>(),
            vec![
                Some("first_name"),
                Some("last_name"),
                Some("email"),
                Some("domain"),
                Some("linkedin_url"),
                None,
                Some("external_id")
            ]
        );
        assert_eq!(m.describe()[5], "\"Notes\" (kept in the export, not sent to Apollo)");
    }

    #[test]
    fn overrides_win_and_a_field_has_one_column() {
        let h = headers(&["Email", "Work Email", "Org", "Apollo"]);
        let m = map_headers(&h, &["Work Email=email".into(), "Apollo=id".into(), "Org=-".into()]).unwrap();
        assert_eq!(m.fields, vec![None, Some(PersonField::Email), None, Some(PersonField::Id)]);
        // Without overrides, the first of two email columns keeps the field.
        assert_eq!(map_headers(&h, &[]).unwrap().fields[..2], [Some(PersonField::Email), None]);
        assert_eq!(
            map_headers(&h, &["Nope=email".into()]),
            Err(MapError::NoColumn("Nope=email".into(), "Nope".into()))
        );
        assert!(matches!(map_headers(&h, &["Email=mail".into()]), Err(MapError::NoField(..))));
        assert!(matches!(map_headers(&h, &["Email".into()]), Err(MapError::Syntax(_))));
    }

    #[test]
    fn a_row_becomes_a_person_and_keeps_the_whole_row() {
        let m = map_headers(&headers(&["Name", "Company", "Email", "Notes"]), &[]).unwrap();
        let p = m.person(&["  Zoë Ångström ", "Acme, Inc.", "", "met at expo"]);
        assert_eq!(p.name.as_deref(), Some("Zoë Ångström"));
        assert_eq!(p.organization_name.as_deref(), Some("Acme, Inc."));
        assert_eq!(p.email, None, "blank cells are absent");
        assert_eq!(p.source_row.as_deref().map(|r| r.len()), Some(4));
    }

    #[test]
    fn export_cells_follow_the_file_then_the_record() {
        let person: Person = serde_json::from_value(json!({
            "index": 0, "id": "018f0000-0000-7000-8000-000000000000", "external_id": null, "status": "complete",
            "input": {"email": "a@x.io", "source_row": ["a@x.io", "note"]}, "apollo_id": "6501a9f2c4dfae0001a1b2c3",
            "duplicate_of": null, "missing_parts": [], "credits_consumed": 2, "error": null,
            "updated_at": "2026-01-01T00:00:00Z",
            "record": {"fields": {"name": "Ana Lima", "title": "CTO", "organization": {"name": "X", "primary_domain": "x.io"}},
                "emails": [{"address": "ana@gmail.com", "personal": true}, {"address": "a@x.io", "status": "verified"}],
                "phones": [{"e164": "+15550001", "kind": "mobile"}, {"e164": "+15550002", "kind": "work_hq"}]}
        }))
        .unwrap();
        let meta = json!({ SOURCE_COLUMNS_KEY: ["Email", "Notes"] });
        let cols = input_columns(Some(&meta), std::slice::from_ref(&person));
        assert_eq!(input_cells(&cols, true, &person), vec!["a@x.io", "note"]);
        let cells = enriched_cells(&person);
        let by_name: BTreeMap<_, _> = ENRICHED_COLUMNS.iter().zip(&cells).collect();
        assert_eq!(by_name[&"email"], "a@x.io");
        assert_eq!(by_name[&"email_status"], "verified");
        assert_eq!(by_name[&"other_emails"], "ana@gmail.com (personal)");
        assert_eq!(by_name[&"mobile_phone"], "+15550001");
        assert_eq!(by_name[&"phones"], "+15550001 (mobile); +15550002 (work_hq)");
        assert_eq!(by_name[&"company"], "X");
        assert_eq!(by_name[&"credits"], "2");
        // Without a file, the input columns are the person fields in use.
        assert_eq!(input_columns(None, &[person]), vec!["email"]);
    }
}
