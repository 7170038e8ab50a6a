//! Validation of a submitted job, on one path: the body is read once, from its bytes (the API) or
//! from a decoded value (the dashboard, the CLI), each person straight into the form the store
//! keeps ([`NewPerson`]), its strings borrowed from the input while they are checked. Every problem
//! is found on the way and named by where it is, so one answer lists them all.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use apollo_client::{EnrichFlags, Flag};
use job_store::NewPerson;
use rules::PersonField;
use rules::person_fields::SOURCE_ROW;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::core::callback_url::CallbackPolicy;
use crate::models::{ExternalId, Problem};

/// A job's fields besides its people and its flags ([`Flag::ALL`]).
const JOB_FIELDS: [&str; 7] =
    ["callback_url", "metadata", "webhook_url", "max_credits", "dry_run", "reuse_within", "events"];

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
/// What a person that is not an object (nor an array of its fields in order) is told.
const NOT_AN_OBJECT: &str = "must be an object";

/// A job that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The people in their stored form, in input order.
    pub people: Vec<NewPerson>,
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
    /// The per-person events asked for.
    pub events: rules::events::PersonEvents,
}

impl ValidJob {
    /// The job to store for `client`, consuming the validated one.
    pub fn into_new_job(self, client: String, idempotency_key: Option<String>) -> job_store::NewJob {
        job_store::NewJob {
            client,
            idempotency_key,
            flags: self.flags,
            callback_url: self.callback_url,
            metadata: self.metadata,
            people: self.people,
            max_credits: self.max_credits,
            daily_cap: None,
            retry_of: None,
            reuse: None,
            events: self.events,
        }
    }

    /// The [`rules::person_key`]s of the people, each once.
    pub fn unique_keys(&self) -> Vec<String> {
        let keys: std::collections::HashSet<&str> = self.people.iter().filter_map(NewPerson::key).collect();
        keys.into_iter().map(str::to_owned).collect()
    }
}

/// Why a body given as bytes was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not JSON at all.
    #[error("{0}")]
    NotJson(serde_json::Error),
    /// JSON, with these problems.
    #[error("the job is invalid")]
    Invalid(Vec<Problem>),
}

fn problem(field: impl Into<String>, index: Option<usize>, message: impl Into<String>) -> Problem {
    Problem { field: field.into(), index, message: message.into() }
}

/// Validates the job body `bytes`: the job, or why not (every problem named).
pub fn validate_job_bytes(bytes: &[u8], max_people: usize, policy: &CallbackPolicy) -> Result<ValidJob, Refused> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = JobSeed { max_people }.deserialize(&mut de).and_then(|read| de.end().map(|()| read));
    finish(read.map_err(Refused::NotJson)?, max_people, policy).map_err(Refused::Invalid)
}

/// Validates a decoded job body: the job or every problem found.
pub fn validate_job(body: &Value, max_people: usize, policy: &CallbackPolicy) -> Result<ValidJob, Vec<Problem>> {
    match (JobSeed { max_people }).deserialize(body) {
        Ok(read) => finish(read, max_people, policy),
        // The reader takes any JSON value; a decoded one has nothing else to fail on.
        Err(e) => Err(vec![problem("", None, e.to_string())]),
    }
}

/// A job body as read: its own fields as values, its people already checked.
enum ReadJob {
    NotObject,
    Object { rest: Map<String, Value>, people: Option<ReadPeople> },
}

/// `people` as read.
enum ReadPeople {
    NotArray,
    /// `len` people given; the first `max_people` checked into `valid` and `problems`.
    Array {
        len: usize,
        valid: Vec<NewPerson>,
        problems: Vec<Problem>,
    },
}

/// The answer for a body read: problems of the job's own fields first, then of its people.
fn finish(read: ReadJob, max_people: usize, policy: &CallbackPolicy) -> Result<ValidJob, Vec<Problem>> {
    let ReadJob::Object { mut rest, people } = read else {
        return Err(vec![problem("", None, "the body must be a JSON object")]);
    };
    let mut problems = Vec::new();
    let fields = job_fields(&mut rest, policy, &mut problems);
    let people = match people {
        None => {
            problems.push(problem("people", None, "is required"));
            Vec::new()
        }
        Some(ReadPeople::NotArray) => {
            problems.push(problem("people", None, "must be an array"));
            Vec::new()
        }
        Some(ReadPeople::Array { len: 0, .. }) => {
            problems.push(problem("people", None, "must not be empty"));
            Vec::new()
        }
        Some(ReadPeople::Array { len, .. }) if len > max_people => {
            problems.push(problem("people", None, format!("has {len} people; the limit per job is {max_people}")));
            Vec::new()
        }
        Some(ReadPeople::Array { valid, problems: of_people, .. }) => {
            problems.extend(of_people);
            valid
        }
    };
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
    events: rules::events::PersonEvents,
}

impl JobFields {
    fn with_people(self, people: Vec<NewPerson>) -> ValidJob {
        ValidJob {
            people,
            flags: self.flags,
            callback_url: self.callback_url,
            metadata: self.metadata,
            max_credits: self.max_credits,
            dry_run: self.dry_run,
            reuse_within: self.reuse_within,
            events: self.events,
        }
    }
}
/// Checks (and removes) the job's own fields of `obj`, each
/// problem goes to `problems`: unknown fields first, then the fields in the order below.
fn job_fields(obj: &mut Map<String, Value>, policy: &CallbackPolicy, problems: &mut Vec<Problem>) -> JobFields {
    let known = |k: &str| Flag::from_name(k).is_some() || JOB_FIELDS.contains(&k);
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
    let mut events = rules::events::PersonEvents::default();
    for (i, name) in take::<Vec<String>>(obj, "events", problems).unwrap_or_default().iter().enumerate() {
        if let Err(m) = events.add(name) {
            problems.push(problem(format!("events[{i}]"), None, m));
        }
    }
    JobFields { flags, callback_url, metadata, max_credits, dry_run, reuse_within, events }
}

/// Reads a job body: any JSON value.
struct JobSeed {
    max_people: usize,
}

impl<'de> DeserializeSeed<'de> for JobSeed {
    type Value = ReadJob;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ReadJob, D::Error> {
        d.deserialize_any(self)
    }
}

/// The visitor methods of a reader that takes any JSON value and answers `$other` for all but
/// the kinds it reads itself (`map`, `seq`: those it lists are generated). What is skipped is read
/// as a `Value`, so serde_json's nesting limit holds for it too.
macro_rules! any_other {
    ($other:expr; $($kind:ident),*) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        $(any_other!(@$kind $other);)*
    };
    (@seq $other:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<Value>()?.is_some() {}
            Ok($other)
        }
    };
    (@map $other:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<String, Value>()?.is_some() {}
            Ok($other)
        }
    };
}

impl<'de> Visitor<'de> for JobSeed {
    type Value = ReadJob;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    any_other!(ReadJob::NotObject; seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadJob, A::Error> {
        let mut rest = Map::new();
        let mut people = None;
        while let Some(key) = map.next_key::<String>()? {
            // A repeated key's last value counts, as in a decoded body.
            if key == "people" {
                people = Some(map.next_value_seed(PeopleSeed { max_people: self.max_people })?);
            } else {
                rest.insert(key, map.next_value()?);
            }
        }
        Ok(ReadJob::Object { rest, people })
    }
}

/// Reads `people`: each of the first `max_people` checked as it is read, the rest only counted.
struct PeopleSeed {
    max_people: usize,
}

impl<'de> DeserializeSeed<'de> for PeopleSeed {
    type Value = ReadPeople;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ReadPeople, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PeopleSeed {
    type Value = ReadPeople;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    any_other!(ReadPeople::NotArray; map);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ReadPeople, A::Error> {
        let (mut len, mut valid, mut problems) = (0, Vec::new(), Vec::new());
        loop {
            if len >= self.max_people {
                if seq.next_element::<Value>()?.is_none() {
                    break;
                }
            } else {
                let Some(person) = seq.next_element_seed(PersonSeed)? else { break };
                match person {
                    Ok(p) => valid.push(p),
                    Err(list) => problems.extend(list.into_iter().map(|(f, m)| {
                        let at = if f.is_empty() { format!("people[{len}]") } else { format!("people[{len}].{f}") };
                        problem(at, Some(len), m)
                    })),
                }
            }
            len += 1;
        }
        Ok(ReadPeople::Array { len, valid, problems })
    }
}

/// Problems of one person: the field inside the person (empty for the person itself) and what.
pub type PersonProblems = Vec<(String, String)>;

/// Validates one person given as JSON text (a line of a JSON Lines file): the person, or its
/// problems; an error if the text is not JSON.
pub fn validate_person_text(text: &str) -> Result<Result<NewPerson, PersonProblems>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let person = PersonSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(person)
}

/// Validates one decoded person.
pub fn validate_person(person: &Value) -> Result<NewPerson, PersonProblems> {
    PersonSeed.deserialize(person).unwrap_or_else(|e| Err(vec![(String::new(), e.to_string())]))
}

/// Reads one element of `people`, checked into its stored form. Problems of the fields' types and
/// names (sorted by field name) come before, and instead of, those of their values.
struct PersonSeed;

impl<'de> DeserializeSeed<'de> for PersonSeed {
    type Value = Result<NewPerson, PersonProblems>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PersonSeed {
    type Value = Result<NewPerson, PersonProblems>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    any_other!(Err(vec![(String::new(), NOT_AN_OBJECT.into())]););

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut given: [Option<Cow<'de, str>>; 10] = Default::default();
        let mut row: Option<Vec<Cow<'de, str>>> = None;
        // By field name; a repeated field's last value counts, as in a decoded body.
        let mut bad: BTreeMap<String, String> = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Field(f) => {
                    let cell = map.next_value::<Cell<'de>>()?;
                    bad.remove(f.name());
                    given[f.index()] = None;
                    match field_text(f, cell) {
                        Ok(text) => given[f.index()] = text,
                        Err(message) => drop(bad.insert(f.name().into(), message)),
                    }
                }
                Key::SourceRow => {
                    bad.remove(SOURCE_ROW);
                    row = None;
                    match map.next_value::<RowCell<'de>>()? {
                        RowCell::Cells(cells) => row = cells,
                        RowCell::Other(v) => {
                            drop(bad.insert(SOURCE_ROW.into(), type_problem::<Option<Vec<String>>>(v)))
                        }
                    }
                }
                Key::Unknown(name) => {
                    map.next_value::<Value>()?;
                    bad.insert(name, "unknown field".into());
                }
            }
        }
        if !bad.is_empty() {
            return Ok(Err(bad.into_iter().collect()));
        }
        Ok(checked(&given, row.as_deref()))
    }

    /// A person as an array of its fields in [`PersonField::ALL`] order, then `source_row`.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let list = Vec::<Value>::deserialize(SeqAccessDeserializer::new(seq))?;
        let refused = || Err(vec![(String::new(), NOT_AN_OBJECT.to_string())]);
        if list.len() > PersonField::ALL.len() + 1 {
            return Ok(refused());
        }
        let mut given: [Option<Cow<'_, str>>; 10] = Default::default();
        for (f, v) in PersonField::ALL.into_iter().zip(&list) {
            match field_text(f, Cell::of(v)) {
                Ok(text) => given[f.index()] = text,
                Err(_) => return Ok(refused()),
            }
        }
        let row = match list.get(PersonField::ALL.len()) {
            None | Some(Value::Null) => None,
            Some(Value::Array(cells)) => match cells.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                Some(cells) => Some(cells),
                None => return Ok(refused()),
            },
            Some(_) => return Ok(refused()),
        };
        Ok(checked(&given, row.as_deref()))
    }
}

/// The person of `given` fields and `row`, checked into its stored form.
fn checked<S: AsRef<str>>(given: &[Option<Cow<'_, str>>; 10], row: Option<&[S]>) -> Result<NewPerson, PersonProblems> {
    clean(given.each_ref().map(|f| f.as_deref()), row).map(Clean::into_new_person)
}

/// The text of field `f` given as `cell` (`None`: absent), or why its type is wrong.
fn field_text(f: PersonField, cell: Cell<'_>) -> Result<Option<Cow<'_, str>>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Text(s) => Ok(Some(s)),
        // CRMs often use numbers for their ids: kept as the text of the number.
        Cell::Other(Value::Number(n)) if f == PersonField::ExternalId => {
            Ok(Some(Cow::Owned(ExternalId::Number(n).into_text())))
        }
        Cell::Other(v) if f == PersonField::ExternalId => Err(type_problem::<ExternalId>(v)),
        Cell::Other(v) => Err(type_problem::<String>(v)),
    }
}

/// The problem of a value that is not a `T`, in serde's words without Rust's type names.
fn type_problem<T: DeserializeOwned>(v: Value) -> String {
    match serde_json::from_value::<T>(v) {
        Ok(_) => "has the wrong type".into(),
        Err(e) => type_message(&e),
    }
}

/// A key of a person object.
enum Key {
    Field(PersonField),
    SourceRow,
    Unknown(String),
}

/// Reads a key without allocating for the known ones.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match PersonField::from_name(s) {
            Some(f) => Key::Field(f),
            None if s == SOURCE_ROW => Key::SourceRow,
            None => Key::Unknown(s.to_owned()),
        })
    }
}

/// A person field's value as read: text (borrowed from the input unless it had escapes), null,
/// or any other value, kept to say what it is.
enum Cell<'a> {
    Text(Cow<'a, str>),
    Null,
    Other(Value),
}

impl<'a> Cell<'a> {
    /// The cell of a decoded value.
    fn of(v: &'a Value) -> Cell<'a> {
        match v {
            Value::String(s) => Cell::Text(Cow::Borrowed(s)),
            Value::Null => Cell::Null,
            v => Cell::Other(v.clone()),
        }
    }
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Owned(s)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Other(Value::Bool(b)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::Other(Value::from(n)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::Other(Value::from(n)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::Other(Value::from(n)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Cell::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Cell::Other)
    }
}

/// `source_row` as read: its cells if it is null or an array of strings, otherwise the value.
enum RowCell<'a> {
    Cells(Option<Vec<Cow<'a, str>>>),
    Other(Value),
}

impl<'de> Deserialize<'de> for RowCell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Cell::deserialize(d)? {
            Cell::Null => Ok(RowCell::Cells(None)),
            Cell::Text(s) => Ok(RowCell::Other(Value::String(s.into_owned()))),
            Cell::Other(Value::Array(cells)) if cells.iter().all(Value::is_string) => Ok(RowCell::Cells(Some(
                cells.into_iter().map(|c| Cow::Owned(c.as_str().unwrap_or_default().to_owned())).collect(),
            ))),
            Cell::Other(v) => Ok(RowCell::Other(v)),
        }
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
    m.replace("untagged enum ExternalId", "a string or a number")
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

/// A person's fields after [`clean`]: trimmed, blank ones absent, borrowed from where they were
/// read; with its key.
struct Clean<'a, S> {
    /// By [`PersonField::index`].
    fields: [Option<&'a str>; 10],
    source_row: Option<&'a [S]>,
    key: String,
}

/// The rules for one person, whichever way it was read: `given` by [`PersonField::index`]. Every
/// problem found: the fields' lengths and characters by name (`external_id` last), then the
/// source row, then the identifiers' formats.
fn clean<'a, S: AsRef<str>>(
    given: [Option<&'a str>; 10],
    source_row: Option<&'a [S]>,
) -> Result<Clean<'a, S>, PersonProblems> {
    let mut problems = PersonProblems::new();
    let mut fields = [None; 10];
    let by_name = PersonField::BY_NAME.into_iter().filter(|f| *f != PersonField::ExternalId);
    for f in by_name.chain([PersonField::ExternalId]) {
        let Some(s) = given[f.index()] else { continue };
        if s.len() > MAX_FIELD_LEN {
            problems.push((f.name().into(), format!("is longer than {MAX_FIELD_LEN} bytes")));
        } else if s.contains('\0') {
            problems.push((f.name().into(), NUL_MESSAGE.into()));
        } else if !s.trim().is_empty() {
            fields[f.index()] = Some(s.trim());
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
    let field = |f: PersonField| fields[f.index()];
    let mut wrong = |f: PersonField, message: &str| problems.push((f.name().into(), message.into()));
    if field(PersonField::Email).is_some_and(|e| apollo_client::normalize_email(e).is_none()) {
        wrong(PersonField::Email, "is not an email address");
    }
    if field(PersonField::HashedEmail).is_some_and(|h| !((h.len() == 32 || h.len() == 64) && is_hex(h))) {
        wrong(PersonField::HashedEmail, "must be an MD5 (32) or SHA-256 (64) hex digest");
    }
    if field(PersonField::LinkedinUrl).is_some_and(|u| !u.to_ascii_lowercase().contains("linkedin.com/")) {
        wrong(PersonField::LinkedinUrl, "is not a LinkedIn URL");
    }
    // Apollo ids are MongoDB object ids; anything else Apollo refuses, failing the whole call.
    if field(PersonField::Id).is_some_and(|id| !(id.len() == 24 && is_hex(id))) {
        wrong(PersonField::Id, "must be an Apollo person id: 24 hexadecimal characters");
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
    /// The person in its stored form: its JSON text, written directly.
    fn into_new_person(self) -> NewPerson {
        // Writing strings into JSON text cannot fail.
        let text =
            serde_json::value::to_raw_value(&self).unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
        NewPerson::with_key(text, Some(self.key))
    }
}

/// The person as a JSON object, keys in sorted order (as a decoded `serde_json::Map` keeps them).
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
        for f in PersonField::BY_NAME {
            if let Some(s) = self.fields[f.index()] {
                map.serialize_entry(f.name(), s)?;
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
    use serde_json::json;

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
        assert_eq!(ok.people[1].input()["id"], "6501A9F2C4DFAE0001A1B2C3");
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

    /// Read from its bytes or decoded, a body gets the same answer, however it is written; the
    /// stored text is written from the input directly.
    #[test]
    fn bytes_and_decoded_bodies_get_the_same_answer() {
        let policy = CallbackPolicy::default();
        let decoded = |text: &str| {
            let body: Value = serde_json::from_str(text).unwrap();
            validate_job(&body, 5, &policy)
        };
        let bodies = [
            r#"{"people": [{"email": " Dana@Northwind-Labs.com ", "external_id": 42}], "reveal_phone_number": true}"#,
            r#"{"people": [{"email": "a@b.io", "external_id": -7}, {"email": "c@b.io", "external_id": 1.5e3}]}"#,
            r#"{"people": [{"first_name": "Z\u00f6e \"Q\"", "last_name": "N\t", "organization_name": "Ünï"}]}"#,
            r#"{"people": [{"email": "a@b.io", "name": "  ", "domain": null, "source_row": ["x", "", " y "]}]}"#,
            r#"{"people": [{"id": " 6501A9F2C4DFAE0001A1B2C3 "}, {"hashed_email": "ABCDEF0123456789abcdef0123456789"}]}"#,
            r#"{"people": [{"linkedin_url": "https://www.LinkedIn.com/in/dana/"}], "metadata": {"k": [1]}, "max_credits": 2.5}"#,
            r#"{"people": [["Dana", "Okafor", null, null, null, null, "northwind.io"]]}"#,
            r#"{"people": [{"email": "a@b.io"}], "dry_run": true, "dry_run": false, "reuse_within": "30d"}"#,
            r#"{"people": [{"email": "a@b.io", "source_row": []}], "extra": 1, "reveal_phone_number": "yes"}"#,
            r#"{"people": [{"email": "a@b.io", "title": "CTO"}]}"#,
            r#"{"people": [{"email": "a@b.io", "email": "b@b.io"}]}"#,
            r#"{"people": [{"email": 5, "email": "b@b.io", "title": 1, "source_row": [1]}]}"#,
            r#"{"people": [{"email": "a@b.io"}], "people": [{"email": "c@b.io"}]}"#,
            r#"{"people": [{"email": "not-an-email"}]}"#,
            r#"{"people": [{"email": "a@b.io"}, "a string", ["x", 1], [null, null, null, null, null, null, null, null, null, null, null, 1]]}"#,
            r#"{"people": []}"#,
            r#"{"people": {"email": "a@b.io"}}"#,
            r#"{"reveal_phone_number": true}"#,
            r#"[{"email": "a@b.io"}]"#,
            " {\"people\": [{\"email\": \"a@b.io\"}]} \n",
        ];
        for text in bodies {
            match (validate_job_bytes(text.as_bytes(), 5, &policy), decoded(text)) {
                (Ok(read), Ok(reference)) => assert_eq!(read, reference, "{text}"),
                (Err(Refused::Invalid(read)), Err(reference)) => assert_eq!(read, reference, "{text}"),
                (read, reference) => panic!("{text}: {read:?} against {reference:?}"),
            }
        }
        let job = validate_job_bytes(bodies[2].as_bytes(), 5, &policy).unwrap();
        assert_eq!(
            job.people[0].input_json(),
            r#"{"first_name":"Zöe \"Q\"","last_name":"N","organization_name":"Ünï"}"#
        );
        let repeated = validate_job_bytes(bodies[10].as_bytes(), 5, &policy).unwrap();
        assert_eq!(repeated.people[0], json!({"email": "b@b.io"}), "a repeated field's last value counts");
        let problems = decoded(bodies[11]).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["people[0].source_row", "people[0].title"], "by name; the last email counts");
        let odd = decoded(bodies[14]).unwrap_err();
        assert_eq!(odd.iter().map(|p| p.index).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
        assert!(odd.iter().all(|p| p.message == NOT_AN_OBJECT), "{odd:?}");
        let six = format!(r#"{{"people": [{}]}}"#, [r#"{"email": "a@b.io"}"#; 6].join(","));
        assert!(validate_job_bytes(six.as_bytes(), 5, &policy).is_err());
        for not_json in [&b"{\"people\": [{\"email\": \"a@b.io\"}"[..], b"{\"people\": [{\"email\": \"a@b.io\"}]} x"] {
            assert!(matches!(validate_job_bytes(not_json, 5, &policy), Err(Refused::NotJson(_))));
        }
    }

    #[test]
    fn unique_keys_count_each_person_once() {
        let mut people: Vec<_> = (0..25).map(|i| json!({"email": format!("p{i}@x.com")})).collect();
        people.push(json!({"email": "P3@X.com"}));
        let job = validate_job(&json!({"people": people}), 100, &CallbackPolicy::default()).unwrap();
        assert_eq!((job.people.len(), job.unique_keys().len()), (26, 25));
    }

    #[test]
    fn the_stored_job_keeps_what_was_validated() {
        let body = json!({"people": [{"email": "a@b.io"}], "reveal_phone_number": true, "run_waterfall_email": true,
            "metadata": {"crm": 1}, "max_credits": 12});
        let new = check(body).unwrap().into_new_job("acme".into(), Some("k-1".into()));
        assert_eq!((new.client.as_str(), new.idempotency_key.as_deref()), ("acme", Some("k-1")));
        assert!(new.flags.reveal_phone_number && new.flags.run_waterfall_email);
        assert!(!new.flags.reveal_personal_emails && !new.flags.run_waterfall_phone);
        assert_eq!(new.people, vec![json!({"email": "a@b.io"})]);
        assert_eq!(new.metadata, Some(json!({"crm": 1})));
        assert_eq!(new.max_credits, Some(apollo_client::Credits::whole(12)));
    }
}
