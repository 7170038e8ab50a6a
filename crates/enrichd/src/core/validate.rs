//! Validation of a submitted job: every problem found at once, each naming where it is.

use serde_json::{Value, json};

use crate::core::callback_url::CallbackPolicy;

/// Fields a person may carry.
pub const PERSON_FIELDS: [&str; 10] = [
    "first_name",
    "last_name",
    "name",
    "email",
    "hashed_email",
    "organization_name",
    "domain",
    "id",
    "linkedin_url",
    "external_id",
];

const JOB_FIELDS: [&str; 8] = [
    "people",
    "reveal_personal_emails",
    "reveal_phone_number",
    "run_waterfall_email",
    "run_waterfall_phone",
    "callback_url",
    "metadata",
    "webhook_url",
];

/// Longest accepted value of a person field.
const MAX_FIELD_LEN: usize = 512;
/// Largest accepted `metadata`, serialised.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A job that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The people, each an object of known string fields, in input order.
    pub people: Vec<Value>,
    /// `reveal_personal_emails`.
    pub reveal_personal_emails: bool,
    /// `reveal_phone_number`.
    pub reveal_phone_number: bool,
    /// `run_waterfall_email`.
    pub run_waterfall_email: bool,
    /// `run_waterfall_phone`.
    pub run_waterfall_phone: bool,
    /// The checked callback URL.
    pub callback_url: Option<String>,
    /// Client metadata, returned as given.
    pub metadata: Option<Value>,
}

impl ValidJob {
    /// The job to store for `client`, consuming the validated one.
    pub fn into_new_job(self, client: String, idempotency_key: Option<String>) -> job_store::NewJob {
        job_store::NewJob {
            client,
            idempotency_key,
            options: job_store::JobOptions {
                reveal_personal_emails: self.reveal_personal_emails,
                reveal_phone_number: self.reveal_phone_number,
                run_waterfall_email: self.run_waterfall_email,
                run_waterfall_phone: self.run_waterfall_phone,
            },
            callback_url: self.callback_url,
            metadata: self.metadata,
            people: self.people,
        }
    }
}

/// One problem: where (`people[3].email`, `callback_url`) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// JSON path of the offending value.
    pub field: String,
    /// The person's index, for problems inside `people`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

fn problem(field: impl Into<String>, index: Option<usize>, message: impl Into<String>) -> Problem {
    Problem { field: field.into(), index, message: message.into() }
}

/// Checks a decoded job body against the limits; returns the job or every problem found.
pub fn validate_job(body: &Value, max_people: usize, policy: &CallbackPolicy) -> Result<ValidJob, Vec<Problem>> {
    validate_job_owned(body.clone(), max_people, policy)
}

/// [`validate_job`] consuming the body: each person is cleaned by moving its strings, so a
/// 100,000-person job is held once rather than twice (about 100 MiB less at the peak).
pub fn validate_job_owned(
    mut body: Value,
    max_people: usize,
    policy: &CallbackPolicy,
) -> Result<ValidJob, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(obj) = body.as_object_mut() else {
        return Err(vec![problem("", None, "the body must be a JSON object")]);
    };
    for key in obj.keys().filter(|k| !JOB_FIELDS.contains(&k.as_str())) {
        problems.push(problem(key.clone(), None, "unknown field"));
    }
    if obj.contains_key("webhook_url") {
        problems.push(problem("webhook_url", None, "set by the service; clients give callback_url"));
    }
    let flag = |name: &str, problems: &mut Vec<Problem>| match obj.get(name) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(problem(name, None, "must be a boolean"));
            false
        }
    };
    let reveal_personal_emails = flag("reveal_personal_emails", &mut problems);
    let reveal_phone_number = flag("reveal_phone_number", &mut problems);
    let run_waterfall_email = flag("run_waterfall_email", &mut problems);
    let run_waterfall_phone = flag("run_waterfall_phone", &mut problems);

    let callback_url = match obj.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match policy.check(s) {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                problems.push(problem("callback_url", None, e.to_string()));
                None
            }
        },
        Some(_) => {
            problems.push(problem("callback_url", None, "must be a string"));
            None
        }
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => {
            if m.to_string().len() > MAX_METADATA_BYTES {
                problems.push(problem("metadata", None, format!("must be at most {MAX_METADATA_BYTES} bytes")));
            }
            Some(m.clone())
        }
        Some(_) => {
            problems.push(problem("metadata", None, "must be an object"));
            None
        }
    };

    let mut people = Vec::new();
    match obj.remove("people") {
        Some(Value::Array(list)) if list.is_empty() => problems.push(problem("people", None, "must not be empty")),
        Some(Value::Array(list)) if list.len() > max_people => problems.push(problem(
            "people",
            None,
            format!("has {} people; the limit per job is {max_people}", list.len()),
        )),
        Some(Value::Array(list)) => {
            people.reserve(list.len());
            for (i, p) in list.into_iter().enumerate() {
                match validate_person(i, p) {
                    Ok(clean) => people.push(clean),
                    Err(mut ps) => problems.append(&mut ps),
                }
            }
        }
        Some(_) => problems.push(problem("people", None, "must be an array")),
        None => problems.push(problem("people", None, "is required")),
    }
    if problems.is_empty() {
        Ok(ValidJob {
            people,
            reveal_personal_emails,
            reveal_phone_number,
            run_waterfall_email,
            run_waterfall_phone,
            callback_url,
            metadata,
        })
    } else {
        Err(problems)
    }
}

fn validate_person(i: usize, p: Value) -> Result<Value, Vec<Problem>> {
    let at = |f: &str| format!("people[{i}].{f}");
    let Value::Object(obj) = p else {
        return Err(vec![problem(format!("people[{i}]"), Some(i), "must be an object")]);
    };
    let mut problems = Vec::new();
    let mut clean = serde_json::Map::new();
    for (k, v) in obj {
        if !PERSON_FIELDS.contains(&k.as_str()) {
            problems.push(problem(at(&k), Some(i), "unknown field"));
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) if s.len() > MAX_FIELD_LEN => {
                problems.push(problem(at(&k), Some(i), format!("is longer than {MAX_FIELD_LEN} bytes")))
            }
            Value::String(s) if s.trim().is_empty() => {}
            Value::String(s) => {
                let s = if s.trim().len() == s.len() { s } else { s.trim().to_string() };
                clean.insert(k, Value::String(s));
            }
            // External ids are often numbers in CRMs: accept them as given.
            Value::Number(n) if k == "external_id" => {
                clean.insert(k, json!(n.to_string()));
            }
            _ => problems.push(problem(at(&k), Some(i), "must be a string")),
        }
    }
    if let Some(email) = clean.get("email").and_then(Value::as_str)
        && apollo_client::normalize_email(email).is_none()
    {
        problems.push(problem(at("email"), Some(i), "is not an email address"));
    }
    if let Some(h) = clean.get("hashed_email").and_then(Value::as_str)
        && !((h.len() == 32 || h.len() == 64) && h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        problems.push(problem(at("hashed_email"), Some(i), "must be an MD5 (32) or SHA-256 (64) hex digest"));
    }
    if let Some(url) = clean.get("linkedin_url").and_then(Value::as_str)
        && !url.to_ascii_lowercase().contains("linkedin.com/")
    {
        problems.push(problem(at("linkedin_url"), Some(i), "is not a LinkedIn URL"));
    }
    let clean = Value::Object(clean);
    if problems.is_empty() && job_store::person_key(&clean).is_none() {
        problems.push(problem(
            format!("people[{i}]"),
            Some(i),
            "needs a usable identifier: email, hashed_email, linkedin_url, id, or a name with domain or organization_name",
        ));
    }
    if problems.is_empty() { Ok(clean) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<ValidJob, Vec<Problem>> {
        validate_job(&body, 5, &CallbackPolicy::default())
    }

    #[test]
    fn a_good_job_passes_and_is_cleaned() {
        let job = check(json!({
            "people": [
                {"email": " Dana@Northwind-Labs.com ", "external_id": 42},
                {"first_name": "Tomasz", "last_name": "Nowak", "organization_name": "Kestrel Robotics", "title": null},
            ],
            "reveal_phone_number": true,
            "callback_url": "https://hooks.example.com/done",
            "metadata": {"campaign": "q4"}
        }));
        // `title` is not a person field: refused by name.
        let problems = job.unwrap_err();
        assert_eq!(problems, vec![problem("people[1].title", Some(1), "unknown field")]);

        let job = check(json!({
            "people": [{"email": " Dana@Northwind-Labs.com ", "external_id": 42}],
            "reveal_phone_number": true,
            "callback_url": "https://hooks.example.com/done",
        }))
        .unwrap();
        assert_eq!(job.people[0], json!({"email": "Dana@Northwind-Labs.com", "external_id": "42"}));
        assert!(job.reveal_phone_number && !job.run_waterfall_email);
        assert_eq!(job.callback_url.as_deref(), Some("https://hooks.example.com/done"));
    }

    #[test]
    fn every_bad_index_is_named() {
        let problems = check(json!({
            "people": [
                {"email": "ok@x.io"},
                {"first_name": "Only", "last_name": "Name"},
                {"email": "not-an-email"},
                "a string",
                {"email": 5},
            ]
        }))
        .unwrap_err();
        let indexes: Vec<_> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indexes, vec![Some(1), Some(2), Some(3), Some(4)]);
        assert!(problems[0].message.contains("usable identifier"));
        assert_eq!(problems[2].field, "people[3]");
        assert_eq!(problems[3].field, "people[4].email");
    }

    #[test]
    fn job_level_problems() {
        assert_eq!(check(json!([])).unwrap_err()[0].message, "the body must be a JSON object");
        assert_eq!(check(json!({})).unwrap_err()[0].field, "people");
        assert!(check(json!({"people": []})).unwrap_err()[0].message.contains("empty"));
        let six = vec![json!({"email": "a@b.io"}); 6];
        assert!(check(json!({"people": six})).unwrap_err()[0].message.contains("limit per job is 5"));
        let p = check(json!({"people": [{"email": "a@b.io"}], "reveal_phone_number": "yes", "callback_url": "http://127.0.0.1/x", "extra": 1}))
            .unwrap_err();
        let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["extra", "reveal_phone_number", "callback_url"]);
    }
}
