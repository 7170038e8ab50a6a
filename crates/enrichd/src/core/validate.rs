//! Validation of a submitted job: the body is parsed into the typed request of the HTTP contract
//! ([`JobRequest`](crate::models::JobRequest), [`PersonInput`]) one field at a time, then each person into a [`ValidPerson`],
//! so that every problem is found at once, each naming where it is.
//!
//! Two ways in, one set of rules (`clean` for a person, `job_fields` for the rest):
//! [`validate_job_bytes`] reads a body of valid people straight from its bytes into their stored
//! form ([`NewPerson`]), no `Value` of them built; [`validate_job_owned`] checks a decoded body
//! and names every problem. The API tries the first and falls back to the second, so what the
//! first does not take is answered exactly as before.

use std::borrow::Cow;
use std::fmt;

use job_store::NewPerson;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use apollo_client::{EnrichFlags, Flag};

use crate::core::callback_url::CallbackPolicy;
use crate::models::{ExternalId, PersonInput, Problem};

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

/// Indexes into [`PERSON_FIELDS`] in the order a person's field problems are reported: by name,
/// `external_id` last.
const CHECK_ORDER: [usize; 10] = [6, 3, 0, 4, 7, 1, 8, 2, 5, 9];

/// Indexes into [`PERSON_FIELDS`] by name: the key order of a stored person's JSON (a
/// `serde_json::Map` keeps its keys sorted; `source_row` sorts after all of them).
const JSON_ORDER: [usize; 10] = [6, 3, 9, 0, 4, 7, 1, 8, 2, 5];

/// A job's fields besides its people and its flags ([`Flag::ALL`]).
const JOB_FIELDS: [&str; 6] = ["callback_url", "metadata", "webhook_url", "max_credits", "dry_run", "reuse_within"];

/// The person field holding a spreadsheet row as given (kept for exports, never sent to Apollo).
pub const SOURCE_ROW: &str = "source_row";
/// Most cells in a `source_row`.
pub const MAX_SOURCE_CELLS: usize = 200;
/// Longest accepted value of a person field.
pub const MAX_FIELD_LEN: usize = 512;
/// Longest accepted `callback_url`.
pub const MAX_CALLBACK_URL: usize = 2048;
/// Largest accepted `max_credits`, in credits.
pub const MAX_BUDGET_CREDITS: i64 = 1_000_000_000;
/// Longest accepted `reuse_within`, in days.
pub const MAX_REUSE_DAYS: u64 = 3650;
/// Largest accepted `metadata`, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Why U+0000 is refused: PostgreSQL `text` and `jsonb` cannot hold it, so the same job would be
/// accepted on SQLite and refused on PostgreSQL. Refusing it everywhere keeps one contract.
const NUL_MESSAGE: &str = "contains U+0000 (a NUL character), which the database cannot store";

/// A job that passed validation, its people as `P`: `Value`s from [`validate_job`], their stored
/// form ([`NewPerson`]) from [`validate_job_bytes`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob<P = Value> {
    /// The people, each an object of known string fields, in input order.
    pub people: Vec<P>,
    /// The Apollo flags asked for.
    pub flags: EnrichFlags,
    /// The checked callback URL.
    pub callback_url: Option<String>,
    /// Client metadata, returned as given.
    pub metadata: Option<Value>,
    /// The credit budget.
    pub max_credits: Option<apollo_client::Credits>,
    /// Answer with an estimate; store nothing, call nothing.
    pub dry_run: bool,
    /// The reuse window asked for (`0s`: no reuse, whatever the server's default).
    pub reuse_within: Option<std::time::Duration>,
}

impl<P: Into<NewPerson>> ValidJob<P> {
    /// The job to store for `client`, consuming the validated one.
    pub fn into_new_job(self, client: String, idempotency_key: Option<String>) -> job_store::NewJob {
        job_store::NewJob {
            client,
            idempotency_key,
            options: self.flags,
            callback_url: self.callback_url,
            metadata: self.metadata,
            // Each person's key and JSON text once (already so for `NewPerson`s: no copy).
            people: self.people.into_iter().map(Into::into).collect(),
            max_credits: self.max_credits,
            daily_cap: None,
            retry_of: None,
            reuse: None,
        }
    }
}

impl ValidJob<Value> {
    /// The same job with its people in their stored form, each `Value` dropped as it goes.
    pub fn into_stored(self) -> ValidJob<NewPerson> {
        ValidJob {
            people: self.people.into_iter().map(NewPerson::from).collect(),
            flags: self.flags,
            callback_url: self.callback_url,
            metadata: self.metadata,
            max_credits: self.max_credits,
            dry_run: self.dry_run,
            reuse_within: self.reuse_within,
        }
    }
}

/// The [`rules::person_key`] of a validated person, in either form.
pub trait PersonKey {
    /// The key; `None` for a person without a usable identifier (validation refuses those).
    fn person_key(&self) -> Option<Cow<'_, str>>;
}

impl PersonKey for Value {
    fn person_key(&self) -> Option<Cow<'_, str>> {
        rules::person_key(self).map(Cow::Owned)
    }
}

impl PersonKey for NewPerson {
    fn person_key(&self) -> Option<Cow<'_, str>> {
        self.key().map(Cow::Borrowed)
    }
}

fn problem(field: impl Into<String>, index: Option<usize>, message: impl Into<String>) -> Problem {
    Problem { field: field.into(), index, message: message.into() }
}

/// Checks a decoded job body against the limits; returns the job or every problem found.
pub fn validate_job(body: &Value, max_people: usize, policy: &CallbackPolicy) -> Result<ValidJob, Vec<Problem>> {
    validate_job_owned(body.clone(), max_people, policy)
}

/// [`validate_job`] consuming the body: each person is parsed by moving its strings, so a
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
    let fields = job_fields(obj, policy, &mut problems);
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
                let at = |f: &str| if f.is_empty() { format!("people[{i}]") } else { format!("people[{i}].{f}") };
                match parse_person(p).and_then(ValidPerson::try_from) {
                    Ok(clean) => people.push(clean.0),
                    Err(list) => problems.extend(list.into_iter().map(|(f, m)| problem(at(&f), Some(i), m))),
                }
            }
        }
        Some(_) => problems.push(problem("people", None, "must be an array")),
        None => problems.push(problem("people", None, "is required")),
    }
    if problems.is_empty() { Ok(fields.with_people(people)) } else { Err(problems) }
}

/// A job's own fields (all but `people`), checked.
struct JobFields {
    flags: EnrichFlags,
    callback_url: Option<String>,
    metadata: Option<Value>,
    max_credits: Option<apollo_client::Credits>,
    dry_run: bool,
    reuse_within: Option<std::time::Duration>,
}

impl JobFields {
    fn with_people<P>(self, people: Vec<P>) -> ValidJob<P> {
        ValidJob {
            people,
            flags: self.flags,
            callback_url: self.callback_url,
            metadata: self.metadata,
            max_credits: self.max_credits,
            dry_run: self.dry_run,
            reuse_within: self.reuse_within,
        }
    }
}

/// Checks (and removes) the job's own fields of `obj`, all but `people`, which it leaves; each
/// problem goes to `problems`: unknown fields first, then the fields in the order below.
fn job_fields(obj: &mut Map<String, Value>, policy: &CallbackPolicy, problems: &mut Vec<Problem>) -> JobFields {
    let known = |k: &str| k == "people" || Flag::from_name(k).is_some() || JOB_FIELDS.contains(&k);
    for key in obj.keys().filter(|k| !known(k)) {
        problems.push(problem(key.clone(), None, "unknown field"));
    }
    if obj.contains_key("webhook_url") {
        problems.push(problem("webhook_url", None, "set by the service; clients give callback_url"));
    }
    let mut flags = EnrichFlags::default();
    for f in Flag::ALL {
        flags.set(f, take::<bool>(obj, f.name(), problems).unwrap_or(false));
    }
    let callback_url = take::<String>(obj, "callback_url", problems).and_then(|s| {
        let checked = if s.contains('\0') {
            Err(NUL_MESSAGE.to_string())
        } else if s.len() > MAX_CALLBACK_URL {
            Err(format!("must be at most {MAX_CALLBACK_URL} bytes"))
        } else {
            policy.check(&s).map_err(|e| e.to_string())
        };
        checked.map(|url| url.to_string()).map_err(|m| problems.push(problem("callback_url", None, m))).ok()
    });
    let metadata = take::<Map<String, Value>>(obj, "metadata", problems).map(Value::Object);
    let dry_run = take::<bool>(obj, "dry_run", problems).unwrap_or(false);
    let reuse_within = take::<String>(obj, "reuse_within", problems).and_then(|s| {
        crate::core::duration::parse_duration(&s)
            .ok()
            .filter(|d| d.as_secs() <= MAX_REUSE_DAYS * 86_400)
            .ok_or_else(|| {
                problems.push(problem(
                    "reuse_within",
                    None,
                    format!("{s:?} is not a duration like 30d, 12h or 0s (at most {MAX_REUSE_DAYS}d)"),
                ))
            })
            .ok()
    });
    let max_credits = take::<serde_json::Number>(obj, "max_credits", problems).and_then(|n| {
        let credits = apollo_client::Credits::parse_decimal(&n.to_string())
            .filter(|c| c.micros() >= 0 && *c <= apollo_client::Credits::whole(MAX_BUDGET_CREDITS));
        credits
            .ok_or_else(|| {
                problems.push(problem(
                    "max_credits",
                    None,
                    format!("must be between 0 and {MAX_BUDGET_CREDITS} credits"),
                ))
            })
            .ok()
    });
    if let Some(m) = &metadata {
        if m.to_string().len() > MAX_METADATA_BYTES {
            problems.push(problem("metadata", None, format!("must be at most {MAX_METADATA_BYTES} bytes")));
        }
        if let Some(path) = nul_inside(m, "metadata") {
            problems.push(problem(path, None, NUL_MESSAGE));
        }
    }
    JobFields { flags, callback_url, metadata, max_credits, dry_run, reuse_within }
}

/// [`validate_job_owned`] of the body `bytes` when every person in it is valid, read straight
/// into their stored form as the body is parsed: each person's strings are borrowed from the
/// bytes, checked, and written once as the JSON text the store keeps, so no `Value` of the
/// people is built (a 100,000-person job: about 30 MB instead of 100 MiB, and a third of the
/// time). `None` for any other body (not JSON, not an object, `people` missing, empty, too long
/// or repeated, any person refused): [`validate_job_owned`] of the decoded body is then the
/// answer, naming every problem. Where this answers, it answers what that would.
pub fn validate_job_bytes(
    bytes: &[u8],
    max_people: usize,
    policy: &CallbackPolicy,
) -> Option<Result<ValidJob<NewPerson>, Vec<Problem>>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (mut obj, people) = de.deserialize_map(Body { max_people }).ok()?;
    de.end().ok()?;
    let mut problems = Vec::new();
    let fields = job_fields(&mut obj, policy, &mut problems);
    Some(if problems.is_empty() { Ok(fields.with_people(people)) } else { Err(problems) })
}

/// Why [`validate_job_bytes`] stops reading (never shown: the caller decodes the body instead).
fn not_here<E: de::Error>() -> E {
    E::custom("not a body of valid people")
}

/// The job body: `people` read by [`People`], every other field kept as a `Value`.
struct Body {
    max_people: usize,
}

impl<'de> Visitor<'de> for Body {
    type Value = (Map<String, Value>, Vec<NewPerson>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a job object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rest = Map::new();
        let mut people = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "people" {
                // As a decoded `Value` keeps it: a repeated key's last value.
                rest.insert(key, map.next_value()?);
            } else if people.is_none() {
                people = Some(map.next_value_seed(People { max_people: self.max_people })?);
            } else {
                return Err(not_here());
            }
        }
        people.map(|p| (rest, p)).ok_or_else(not_here)
    }
}

/// `people`: 1 to `max_people` valid people, each in its stored form.
struct People {
    max_people: usize,
}

impl<'de> DeserializeSeed<'de> for People {
    type Value = Vec<NewPerson>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<NewPerson>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for People {
    type Value = Vec<NewPerson>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of people")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<NewPerson>, A::Error> {
        let mut people = Vec::new();
        while let Some(p) = seq.next_element::<PersonFields<'de>>()? {
            if people.len() == self.max_people {
                return Err(not_here());
            }
            let clean = clean(p.fields(), p.source_row.as_deref()).map_err(|_| not_here())?;
            people.push(clean.into_new_person().ok_or_else(not_here)?);
        }
        if people.is_empty() { Err(not_here()) } else { Ok(people) }
    }
}

/// One element of `people` as read from the bytes: [`PersonInput`]'s fields, in its order (a
/// person given as an array is read by position, as there), the strings borrowed from the body
/// where they have no escapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonFields<'a> {
    #[serde(default, borrow)]
    first_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    last_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    email: Option<Text<'a>>,
    #[serde(default, borrow)]
    hashed_email: Option<Text<'a>>,
    #[serde(default, borrow)]
    organization_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    domain: Option<Text<'a>>,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    linkedin_url: Option<Text<'a>>,
    #[serde(default, borrow)]
    external_id: Option<IdText<'a>>,
    #[serde(default, borrow)]
    source_row: Option<Vec<Text<'a>>>,
}

impl PersonFields<'_> {
    /// The string fields in [`PERSON_FIELDS`] order.
    fn fields(&self) -> [Option<&str>; 10] {
        fn s<'s>(t: &'s Option<Text>) -> Option<&'s str> {
            t.as_ref().map(|t| &*t.0)
        }
        [
            s(&self.first_name),
            s(&self.last_name),
            s(&self.name),
            s(&self.email),
            s(&self.hashed_email),
            s(&self.organization_name),
            s(&self.domain),
            s(&self.id),
            s(&self.linkedin_url),
            self.external_id.as_ref().map(|t| &*t.0),
        ]
    }
}

/// A JSON string, borrowed from the body unless it had escapes.
struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Reads a JSON string; with `numbers`, a number too, as the text [`ExternalId::into_text`] makes.
struct TextVisitor {
    numbers: bool,
}

impl TextVisitor {
    fn number<E: de::Error>(&self, n: serde_json::Number, seen: de::Unexpected) -> Result<Cow<'static, str>, E> {
        match self.numbers {
            true => Ok(Cow::Owned(ExternalId::Number(n).into_text())),
            false => Err(E::invalid_type(seen, self)),
        }
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.numbers { "a string or a number" } else { "a string" })
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        self.number(n.into(), de::Unexpected::Unsigned(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        self.number(n.into(), de::Unexpected::Signed(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        let number = serde_json::Number::from_f64(n).ok_or_else(|| E::custom("not a finite number"))?;
        self.number(number, de::Unexpected::Float(n))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor { numbers: false }).map(Text)
    }
}

/// `external_id`: a string, or a number as the text [`ExternalId::into_text`] makes of it.
struct IdText<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for IdText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor { numbers: true }).map(IdText)
    }
}

/// Removes `key` and parses it as `T` (null is absent); a wrong type becomes a problem naming it.
fn take<T: DeserializeOwned>(obj: &mut Map<String, Value>, key: &str, problems: &mut Vec<Problem>) -> Option<T> {
    match obj.remove(key)? {
        Value::Null => None,
        v => serde_json::from_value(v).map_err(|e| problems.push(problem(key, None, type_message(&e)))).ok(),
    }
}

/// serde's message without the Rust type names it sometimes adds.
fn type_message(e: &serde_json::Error) -> String {
    let m = e.to_string();
    let m = m.strip_prefix("invalid type: ").map(|rest| format!("has the wrong type: {rest}")).unwrap_or(m);
    m.replace("expected struct PersonInput", "expected an object")
        .replace("untagged enum ExternalId", "a string or a number")
}

/// The first string or key under `v` holding U+0000, as a path.
fn nul_inside(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(at.to_string()),
        Value::Array(list) => list.iter().enumerate().find_map(|(i, x)| nul_inside(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let here = format!("{at}.{k}");
            if k.contains('\0') { Some(here) } else { nul_inside(x, &here) }
        }),
        _ => None,
    }
}

/// Problems of one person: the field inside the person (empty for the person itself) and what.
pub type PersonProblems = Vec<(String, String)>;

/// Parses one element of `people` into the wire type; on failure names every unknown or
/// mistyped field rather than only the first.
pub fn parse_person(v: Value) -> Result<PersonInput, PersonProblems> {
    let first = match PersonInput::deserialize(&v) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    let Value::Object(obj) = v else {
        return Err(vec![(String::new(), "must be an object".into())]);
    };
    let mut problems = PersonProblems::new();
    for (k, v) in obj {
        if !PERSON_FIELDS.contains(&k.as_str()) && k != SOURCE_ROW {
            problems.push((k, "unknown field".into()));
        } else if let Err(e) = serde_json::from_value::<PersonInput>(json!({ &k: v })) {
            problems.push((k, type_message(&e)));
        }
    }
    if problems.is_empty() {
        problems.push((String::new(), type_message(&first)));
    }
    Err(problems)
}

/// A person that passed validation: an object of known, trimmed, non-empty string fields, with a
/// usable identifier (the form the store keeps).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPerson(pub Value);

impl TryFrom<PersonInput> for ValidPerson {
    type Error = PersonProblems;

    fn try_from(p: PersonInput) -> Result<ValidPerson, PersonProblems> {
        let external_id = p.external_id.map(ExternalId::into_text);
        let fields = [
            p.first_name.as_deref(),
            p.last_name.as_deref(),
            p.name.as_deref(),
            p.email.as_deref(),
            p.hashed_email.as_deref(),
            p.organization_name.as_deref(),
            p.domain.as_deref(),
            p.id.as_deref(),
            p.linkedin_url.as_deref(),
            external_id.as_deref(),
        ];
        clean(fields, p.source_row.as_deref()).map(|c| ValidPerson(c.to_value()))
    }
}

/// A person's fields after [`clean`]: trimmed, blank ones absent, borrowed from where they were
/// read; with its key.
struct Clean<'a, S> {
    /// By [`PERSON_FIELDS`] index.
    fields: [Option<&'a str>; 10],
    source_row: Option<&'a [S]>,
    key: String,
}

/// The rules for one person, whichever way it was read: `fields` by [`PERSON_FIELDS`] index, as
/// given. Every problem found, in the order [`CHECK_ORDER`] gives.
fn clean<'a, S: AsRef<str>>(
    given: [Option<&'a str>; 10],
    source_row: Option<&'a [S]>,
) -> Result<Clean<'a, S>, PersonProblems> {
    let mut problems = PersonProblems::new();
    let mut fields = [None; 10];
    for i in CHECK_ORDER {
        let (k, Some(s)) = (PERSON_FIELDS[i], given[i]) else { continue };
        if s.len() > MAX_FIELD_LEN {
            problems.push((k.into(), format!("is longer than {MAX_FIELD_LEN} bytes")));
        } else if s.contains('\0') {
            problems.push((k.into(), NUL_MESSAGE.into()));
        } else if !s.trim().is_empty() {
            fields[i] = Some(s.trim());
        }
    }
    let mut row = None;
    if let Some(cells) = source_row {
        if cells.len() > MAX_SOURCE_CELLS {
            problems.push((SOURCE_ROW.into(), format!("has more than {MAX_SOURCE_CELLS} cells")));
        } else if let Some(i) = cells.iter().position(|c| c.as_ref().len() > MAX_FIELD_LEN) {
            problems.push((format!("{SOURCE_ROW}[{i}]"), format!("is longer than {MAX_FIELD_LEN} bytes")));
        } else if let Some(i) = cells.iter().position(|c| c.as_ref().contains('\0')) {
            problems.push((format!("{SOURCE_ROW}[{i}]"), NUL_MESSAGE.into()));
        } else {
            row = Some(cells);
        }
    }
    let field = |name: &str| PERSON_FIELDS.iter().position(|f| *f == name).and_then(|i| fields[i]);
    if field("email").is_some_and(|e| apollo_client::normalize_email(e).is_none()) {
        problems.push(("email".into(), "is not an email address".into()));
    }
    if field("hashed_email").is_some_and(|h| !((h.len() == 32 || h.len() == 64) && is_hex(h))) {
        problems.push(("hashed_email".into(), "must be an MD5 (32) or SHA-256 (64) hex digest".into()));
    }
    if field("linkedin_url").is_some_and(|u| !u.to_ascii_lowercase().contains("linkedin.com/")) {
        problems.push(("linkedin_url".into(), "is not a LinkedIn URL".into()));
    }
    // Apollo ids are MongoDB object ids; anything else Apollo refuses, failing the whole call.
    if field("id").is_some_and(|id| !(id.len() == 24 && is_hex(id))) {
        problems.push(("id".into(), "must be an Apollo person id: 24 hexadecimal characters".into()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(key) = rules::person_key_of(field) else {
        return Err(vec![(
            String::new(),
            "needs a usable identifier: email, hashed_email, linkedin_url, id, or a name with domain or organization_name".into(),
        )]);
    };
    Ok(Clean { fields, source_row: row, key })
}

impl<S: AsRef<str>> Clean<'_, S> {
    /// The person as a JSON object.
    fn to_value(&self) -> Value {
        let mut obj = Map::new();
        for (i, s) in self.fields.iter().enumerate() {
            if let Some(s) = s {
                obj.insert(PERSON_FIELDS[i].into(), Value::from(*s));
            }
        }
        if let Some(row) = self.source_row {
            obj.insert(SOURCE_ROW.into(), row.iter().map(|c| Value::from(c.as_ref())).collect());
        }
        Value::Object(obj)
    }

    /// The person in its stored form: the JSON text of [`Clean::to_value`], written directly.
    fn into_new_person(self) -> Option<NewPerson> {
        let text = serde_json::value::to_raw_value(&self).ok()?;
        Some(NewPerson::with_key(text, Some(self.key)))
    }
}

/// The same text as `serde_json` writes for [`Clean::to_value`]: keys in sorted order.
impl<S: AsRef<str>> Serialize for Clean<'_, S> {
    fn serialize<Z: Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        struct Cells<'r, S>(&'r [S]);
        impl<S: AsRef<str>> Serialize for Cells<'_, S> {
            fn serialize<Z: Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
                z.collect_seq(self.0.iter().map(AsRef::as_ref))
            }
        }
        let len = self.fields.iter().flatten().count() + usize::from(self.source_row.is_some());
        let mut map = z.serialize_map(Some(len))?;
        for i in JSON_ORDER {
            if let Some(s) = self.fields[i] {
                map.serialize_entry(PERSON_FIELDS[i], s)?;
            }
        }
        if let Some(row) = self.source_row {
            map.serialize_entry(SOURCE_ROW, &Cells(row))?;
        }
        map.end()
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
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
        assert!(job.flags.reveal_phone_number && !job.flags.run_waterfall_email);
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

    #[test]
    fn nul_characters_are_refused_by_field() {
        let problems = check(json!({
            "people": [{"email": "a@b.io", "first_name": "A\u{0}B"}, {"email": "a\u{0}@b.io"}],
            "metadata": {"k": ["x", "y\u{0}"]},
            "callback_url": "https://hooks.example.com/\u{0}",
        }))
        .unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["callback_url", "metadata.k[1]", "people[0].first_name", "people[1].email"]);
        assert!(problems.iter().all(|p| p.message.contains("U+0000")), "{problems:?}");
    }

    #[test]
    fn apollo_ids_must_be_object_ids() {
        let ok = check(json!({"people": [{"id": "6501a9f2c4dfae0001a1b2c3"}, {"id": " 6501A9F2C4DFAE0001A1B2C3 "}]}))
            .unwrap();
        assert_eq!(ok.people[1]["id"], "6501A9F2C4DFAE0001A1B2C3");
        let problems = check(
            json!({"people": [{"id": "6501a9f2c4dfae0001a1b2c"}, {"id": "zz01a9f2c4dfae0001a1b2c3"}, {"id": "123"}]}),
        )
        .unwrap_err();
        let indexes: Vec<_> = problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(indexes, vec![(Some(0), "people[0].id"), (Some(1), "people[1].id"), (Some(2), "people[2].id")]);
    }

    /// Every size limit holds exactly at its bound and refuses one past it (each pinned by a
    /// mutation run: `scripts/mutants.sh validate`).
    #[test]
    fn limits_hold_at_their_bound_and_refuse_one_past_it() {
        let with = |extra: Value| {
            let mut body = json!({"people": [{"email": "a@b.io"}]});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            check(body)
        };
        let person = |p: Value| check(json!({"people": [p]}));
        let field = |n: usize| json!({"email": "a@b.io", "first_name": "t".repeat(n)});
        assert!(person(field(MAX_FIELD_LEN)).is_ok());
        assert!(person(field(MAX_FIELD_LEN + 1)).unwrap_err()[0].message.contains("longer than"));
        let row = |cells: usize, len: usize| json!({"email": "a@b.io", "source_row": vec!["c".repeat(len); cells]});
        assert!(person(row(MAX_SOURCE_CELLS, MAX_FIELD_LEN)).is_ok());
        assert_eq!(person(row(MAX_SOURCE_CELLS + 1, 1)).unwrap_err()[0].field, "people[0].source_row");
        assert_eq!(person(row(2, MAX_FIELD_LEN + 1)).unwrap_err()[0].field, "people[0].source_row[0]");
        let budget = |n: Value| with(json!({"max_credits": n}));
        assert!(budget(json!(0)).is_ok() && budget(json!(MAX_BUDGET_CREDITS)).is_ok());
        assert!(budget(json!(-1)).is_err() && budget(json!(MAX_BUDGET_CREDITS + 1)).is_err());
        // Metadata of exactly the limit (serialised), then one byte more.
        let meta = |n: usize| with(json!({"metadata": {"k": "m".repeat(n - r#"{"k":""}"#.len())}}));
        assert_eq!(MAX_METADATA_BYTES, 16_384);
        assert!(meta(MAX_METADATA_BYTES).is_ok());
        assert_eq!(meta(MAX_METADATA_BYTES + 1).unwrap_err()[0].field, "metadata");
        let policy = CallbackPolicy { allow_http: true, allow_hosts: vec!["h.io".into()] };
        let url = |n: usize| format!("http://h.io/{}", "p".repeat(n - "http://h.io/".len()));
        let callback =
            |n: usize| validate_job(&json!({"people": [{"email": "a@b.io"}], "callback_url": url(n)}), 5, &policy);
        assert!(callback(MAX_CALLBACK_URL).is_ok(), "{:?}", callback(MAX_CALLBACK_URL).err());
        assert!(callback(MAX_CALLBACK_URL + 1).unwrap_err()[0].message.contains("at most"));
        let reuse = |d: String| with(json!({"reuse_within": d}));
        assert_eq!(reuse("30d".into()).unwrap().reuse_within, Some(std::time::Duration::from_secs(30 * 86_400)));
        assert!(reuse(format!("{MAX_REUSE_DAYS}d")).is_ok());
        assert_eq!(reuse(format!("{}d", MAX_REUSE_DAYS + 1)).unwrap_err()[0].field, "reuse_within");
    }

    #[test]
    fn identifier_formats() {
        let one = |p: Value| check(json!({"people": [p]}));
        assert!(one(json!({"hashed_email": "a".repeat(32)})).is_ok());
        assert!(one(json!({"hashed_email": "b".repeat(64)})).is_ok());
        for bad in ["a".repeat(40), "z".repeat(32)] {
            assert_eq!(one(json!({"hashed_email": bad})).unwrap_err()[0].field, "people[0].hashed_email");
        }
        assert!(one(json!({"linkedin_url": "https://www.LinkedIn.com/in/dana"})).is_ok());
        assert_eq!(
            one(json!({"linkedin_url": "https://example.com/in/dana"})).unwrap_err()[0].field,
            "people[0].linkedin_url"
        );
        // A wrongly typed field says what it wanted.
        let wrong = one(json!({"email": 5})).unwrap_err();
        assert!(wrong[0].message.contains("string"), "{wrong:?}");
    }

    /// Both ways in give the same answer wherever the byte reader answers, and it answers for
    /// bodies of valid people however they are written.
    #[test]
    fn the_byte_reader_agrees_with_the_decoded_body() {
        let policy = CallbackPolicy::default();
        let reference = |text: &str| {
            let body: Value = serde_json::from_str(text).unwrap();
            validate_job_owned(body, 5, &policy).map(ValidJob::into_stored)
        };
        let answered = [
            r#"{"people": [{"email": " Dana@Northwind-Labs.com ", "external_id": 42}], "reveal_phone_number": true}"#,
            r#"{"people": [{"email": "a@b.io", "external_id": -7}, {"email": "c@b.io", "external_id": 1.5e3}]}"#,
            r#"{"people": [{"first_name": "Z\u00f6e \"Q\"", "last_name": "N\t", "organization_name": "Ünï"}]}"#,
            r#"{"people": [{"email": "a@b.io", "name": "  ", "domain": null, "source_row": ["x", "", " y "]}]}"#,
            r#"{"people": [{"id": " 6501A9F2C4DFAE0001A1B2C3 "}, {"hashed_email": "ABCDEF0123456789abcdef0123456789"}]}"#,
            r#"{"people": [{"linkedin_url": "https://www.LinkedIn.com/in/dana/"}], "metadata": {"k": [1]}, "max_credits": 2.5}"#,
            r#"{"people": [["Dana", "Okafor", null, null, null, null, "northwind.io"]]}"#,
            r#"{"people": [{"email": "a@b.io"}], "dry_run": true, "dry_run": false, "reuse_within": "30d"}"#,
            r#"{"people": [{"email": "a@b.io", "source_row": []}], "extra": 1, "reveal_phone_number": "yes"}"#,
            " {\"people\": [{\"email\": \"a@b.io\"}]} \n",
        ];
        for text in answered {
            let fast = validate_job_bytes(text.as_bytes(), 5, &policy);
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast.unwrap(), reference(text), "{text}");
        }
        let job = validate_job_bytes(answered[2].as_bytes(), 5, &policy).unwrap().unwrap();
        assert_eq!(
            job.people[0].input_json(),
            r#"{"first_name":"Zöe \"Q\"","last_name":"N","organization_name":"Ünï"}"#
        );
        let left = [
            r#"{"people": [{"email": "a@b.io", "title": "CTO"}]}"#,
            r#"{"people": [{"email": "a@b.io", "email": "b@b.io"}]}"#,
            r#"{"people": [{"email": "a@b.io"}], "people": [{"email": "c@b.io"}]}"#,
            r#"{"people": [{"email": "not-an-email"}]}"#,
            r#"{"people": [{"email": "a@b.io"}, "a string"]}"#,
            r#"{"people": []}"#,
            r#"{"people": {"email": "a@b.io"}}"#,
            r#"{"reveal_phone_number": true}"#,
            r#"[{"email": "a@b.io"}]"#,
            r#"{"people": [{"email": "a@b.io"}]} x"#,
        ];
        for text in left {
            let fast = validate_job_bytes(text.as_bytes(), 5, &policy);
            assert!(fast.is_none(), "{text}: {fast:?}");
        }
        let six = format!(r#"{{"people": [{}]}}"#, [r#"{"email": "a@b.io"}"#; 6].join(","));
        assert!(validate_job_bytes(six.as_bytes(), 5, &policy).is_none());
        assert!(validate_job_bytes(b"{\"people\": [{\"email\": \"a@b.io\"}", 5, &policy).is_none());
    }

    #[test]
    fn field_orders_are_by_name() {
        let names = |order: &[usize]| order.iter().map(|&i| PERSON_FIELDS[i]).collect::<Vec<_>>();
        let mut sorted = PERSON_FIELDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(names(&JSON_ORDER), sorted);
        assert!(sorted.iter().all(|f| *f < SOURCE_ROW));
        let mut checked = PERSON_FIELDS[..9].to_vec();
        checked.sort_unstable();
        checked.push("external_id");
        assert_eq!(names(&CHECK_ORDER), checked);
    }

    #[test]
    fn the_stored_job_keeps_what_was_validated() {
        let body = json!({"people": [{"email": "a@b.io"}], "reveal_phone_number": true, "run_waterfall_email": true,
            "metadata": {"crm": 1}, "max_credits": 12});
        let new = check(body).unwrap().into_new_job("acme".into(), Some("k-1".into()));
        assert_eq!((new.client.as_str(), new.idempotency_key.as_deref()), ("acme", Some("k-1")));
        assert!(new.options.reveal_phone_number && new.options.run_waterfall_email);
        assert!(!new.options.reveal_personal_emails && !new.options.run_waterfall_phone);
        assert_eq!(new.people, vec![json!({"email": "a@b.io"})]);
        assert_eq!(new.metadata, Some(json!({"crm": 1})));
        assert_eq!(new.max_credits, Some(apollo_client::Credits::whole(12)));
    }
}
