//! The do-not-enrich list ([`rules::suppression`]): entries per client or global, keyed hashes
//! only; and the checks that keep listed people from Apollo: at job creation, and again when a
//! claim takes people, so an entry added after a job was submitted holds for its people not yet
//! sent.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rules::lifecycle::Event;
use rules::suppression::{SuppressionKey, parse_tokens};
use rules::{PersonState, SuppressionKind};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::counters::Tally;
use crate::entities::{job, person, suppression};
use crate::error::{StoreError, StoreResult};
use crate::people::move_primaries;
use crate::{Store, new_id};

/// Hashes per `IN (…)` list.
const IN_LIST: usize = 500;

/// The stored scope of the global list (client names cannot contain `*`).
const GLOBAL: &str = "*";

/// Whose list an entry is on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every client's people (managed with an admin key).
    Global,
    /// One client's people.
    Client(String),
}

impl Scope {
    /// The stored text.
    fn column(&self) -> &str {
        match self {
            Scope::Global => GLOBAL,
            Scope::Client(c) => c,
        }
    }

    fn of_column(s: String) -> Scope {
        if s == GLOBAL { Scope::Global } else { Scope::Client(s) }
    }
}

/// The id of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SuppressionId(pub Uuid);

/// One entry as stored: no plaintext, only what it identifies and its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionEntry {
    /// Id.
    pub id: SuppressionId,
    /// Whose list.
    pub scope: Scope,
    /// What it identifies.
    pub kind: SuppressionKind,
    /// The keyed hash (hex).
    pub hash: String,
    /// Added.
    pub created_at: DateTime<Utc>,
}

impl From<suppression::Model> for SuppressionEntry {
    fn from(m: suppression::Model) -> SuppressionEntry {
        SuppressionEntry {
            id: SuppressionId(m.id),
            scope: Scope::of_column(m.scope),
            kind: m.kind,
            hash: m.hash,
            created_at: m.created_at,
        }
    }
}

/// What adding entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedEntries {
    /// New entries.
    pub added: u64,
    /// Entries that were on the list already (or repeated in the request).
    pub already_present: u64,
}

/// Inserts `(kind, hash)` entries into `scope`'s list, in the caller's transaction.
pub(crate) async fn insert_entries<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    entries: &[(SuppressionKind, String)],
    now: DateTime<Utc>,
) -> StoreResult<AddedEntries> {
    let mut seen = HashSet::with_capacity(entries.len());
    let unique: Vec<&(SuppressionKind, String)> = entries.iter().filter(|e| seen.insert(&e.1)).collect();
    let mut added = 0;
    for chunk in unique.chunks(IN_LIST) {
        let rows = chunk.iter().map(|(kind, hash)| {
            suppression::Model {
                id: new_id(),
                scope: scope.column().to_owned(),
                kind: *kind,
                hash: hash.clone(),
                created_at: now,
            }
            .into_active_model()
        });
        added += suppression::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([suppression::Column::Scope, suppression::Column::Hash]).do_nothing().to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(AddedEntries { added, already_present: entries.len() as u64 - added })
}

/// Of `hashes`, those on the list of `client` or on the global one.
pub(crate) async fn listed<C: ConnectionTrait>(db: &C, client: &str, hashes: &[&str]) -> StoreResult<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in hashes.chunks(IN_LIST) {
        let rows: Vec<String> = suppression::Entity::find()
            .select_only()
            .column(suppression::Column::Hash)
            .filter(suppression::Column::Scope.is_in([client, GLOBAL]))
            .filter(suppression::Column::Hash.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Whether one of the hashes in `tokens` (a person's `suppress_hashes`) is in `listed`.
pub(crate) fn any_listed(tokens: Option<&str>, listed: &HashSet<String>) -> bool {
    tokens.is_some_and(|t| parse_tokens(t).any(|(_, h)| listed.contains(h)))
}

/// Of `people` (primaries read and locked in this transaction, not in a call), those on a list
/// become `suppressed` with their duplicates; the others are returned, in order. `client_of`
/// names each job's client. One indexed lookup for the people that have hashes; none without.
pub(crate) async fn drop_suppressed(
    txn: &DatabaseTransaction,
    tally: &mut Tally,
    people: Vec<person::Model>,
    client_of: &HashMap<Uuid, String>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<person::Model>> {
    let mut by_client: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in &people {
        let (Some(tokens), Some(client)) = (p.suppress_hashes.as_deref(), client_of.get(&p.job_id)) else { continue };
        by_client.entry(client).or_default().extend(parse_tokens(tokens).map(|(_, h)| h));
    }
    if by_client.is_empty() {
        return Ok(people);
    }
    let mut hits: HashMap<&str, HashSet<String>> = HashMap::new();
    for (client, hashes) in &by_client {
        let found = listed(txn, client, hashes).await?;
        if !found.is_empty() {
            hits.insert(client, found);
        }
    }
    if hits.is_empty() {
        return Ok(people);
    }
    let suppressed = |p: &person::Model| {
        client_of
            .get(&p.job_id)
            .and_then(|c| hits.get(c.as_str()))
            .is_some_and(|found| any_listed(p.suppress_hashes.as_deref(), found))
    };
    let (gone, keep): (Vec<&person::Model>, Vec<&person::Model>) = people.iter().partition(|p| suppressed(p));
    move_primaries(txn, tally, &gone, Event::Suppressed, None, None, now).await?;
    let keep: HashSet<Uuid> = keep.iter().map(|p| p.id).collect();
    Ok(people.into_iter().filter(|p| keep.contains(&p.id)).collect())
}

/// The client of each of `jobs`.
pub(crate) async fn clients_of<C: ConnectionTrait>(db: &C, jobs: &[Uuid]) -> StoreResult<HashMap<Uuid, String>> {
    let mut ids = jobs.to_vec();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .column(job::Column::Client)
        .filter(job::Column::Id.is_in(ids))
        .into_tuple::<(Uuid, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

/// The identifiers [`rules::suppression::identifiers`] reads from a person's input text, borrowed.
#[derive(Deserialize)]
struct InputIds<'a> {
    #[serde(borrow, default)]
    email: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    linkedin_url: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    domain: Option<std::borrow::Cow<'a, str>>,
}

/// The hashes of the identifiers in a person's input (JSON text) as stored tokens.
pub(crate) fn input_tokens(key: &SuppressionKey, input_json: &str) -> Option<String> {
    // Fields that are not strings (validation refuses them) count as absent.
    let ids: InputIds<'_> = serde_json::from_str(input_json).unwrap_or(InputIds {
        email: None,
        linkedin_url: None,
        id: None,
        domain: None,
    });
    key.person_tokens(|f| match f {
        "email" => ids.email.as_deref(),
        "linkedin_url" => ids.linkedin_url.as_deref(),
        "id" => ids.id.as_deref(),
        "domain" => ids.domain.as_deref(),
        _ => None,
    })
}

impl Store {
    /// The key the list's hashes are made with, if the service has one.
    pub fn suppression_key(&self) -> Option<&SuppressionKey> {
        self.suppression_key.as_deref()
    }

    /// This store, hashing people's identifiers with `key` at job creation and erasure.
    pub fn with_suppression_key(mut self, key: SuppressionKey) -> Store {
        self.suppression_key = Some(std::sync::Arc::new(key));
        self
    }

    /// Adds `(kind, hash)` entries to `scope`'s list (one transaction); entries already there
    /// stay as they were. From then on no job's person with one of them is sent: queued people
    /// are suppressed when a claim reaches them.
    pub async fn add_suppressions(
        &self,
        scope: &Scope,
        entries: &[(SuppressionKind, String)],
    ) -> StoreResult<AddedEntries> {
        let now = crate::clock::now();
        let (txn, _gate) = self.write_txn().await?;
        let added = insert_entries(&txn, scope, entries, now).await?;
        txn.commit().await?;
        Ok(added)
    }

    /// How many entries each list kind holds, by identifier kind: `(global, kind, n)`, where
    /// `global` is `false` for the clients' lists taken together (for `/metrics`; kinds with no
    /// entries are absent).
    pub async fn suppression_counts(&self) -> StoreResult<Vec<(bool, SuppressionKind, i64)>> {
        let rows: Vec<(String, SuppressionKind, i64)> = suppression::Entity::find()
            .select_only()
            .column(suppression::Column::Scope)
            .column(suppression::Column::Kind)
            .column_as(Expr::col(suppression::Column::Id).count(), "n")
            .group_by(suppression::Column::Scope)
            .group_by(suppression::Column::Kind)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut totals: HashMap<(bool, SuppressionKind), i64> = HashMap::new();
        for (scope, kind, n) in rows {
            *totals.entry((scope == GLOBAL, kind)).or_default() += n;
        }
        Ok(totals.into_iter().map(|((g, k), n)| (g, k, n)).collect())
    }

    /// `scope`'s entries in id (creation) order, after `after`, at most `limit`.
    pub async fn list_suppressions(
        &self,
        scope: &Scope,
        after: Option<SuppressionId>,
        limit: u64,
    ) -> StoreResult<Vec<SuppressionEntry>> {
        let mut q = suppression::Entity::find().filter(suppression::Column::Scope.eq(scope.column()));
        if let Some(SuppressionId(after)) = after {
            q = q.filter(suppression::Column::Id.gt(after));
        }
        let rows = q.order_by_asc(suppression::Column::Id).limit(limit).all(&self.db).await?;
        Ok(rows.into_iter().map(SuppressionEntry::from).collect())
    }

    /// The entry of `scope`'s list with this hash, if any.
    pub async fn find_suppression(&self, scope: &Scope, hash: &str) -> StoreResult<Option<SuppressionEntry>> {
        Ok(suppression::Entity::find()
            .filter(suppression::Column::Scope.eq(scope.column()))
            .filter(suppression::Column::Hash.eq(hash))
            .one(&self.db)
            .await?
            .map(SuppressionEntry::from))
    }

    /// Removes one entry of `scope`'s list by id; `false` if it is not there.
    pub async fn remove_suppression(&self, scope: &Scope, id: SuppressionId) -> StoreResult<bool> {
        let (txn, _gate) = self.write_txn().await?;
        let n = suppression::Entity::delete_many()
            .filter(suppression::Column::Scope.eq(scope.column()))
            .filter(suppression::Column::Id.eq(id.0))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(n == 1)
    }

    /// Removes the entry of `scope`'s list with this hash; `false` if it is not there.
    pub async fn remove_suppression_hash(&self, scope: &Scope, hash: &str) -> StoreResult<bool> {
        let (txn, _gate) = self.write_txn().await?;
        let n = suppression::Entity::delete_many()
            .filter(suppression::Column::Scope.eq(scope.column()))
            .filter(suppression::Column::Hash.eq(hash))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(n == 1)
    }

    /// Of `people` (input JSON texts), how many `client`'s or the global list would suppress,
    /// and the person keys of those (a dry run counts them and charges nothing for them).
    pub async fn suppressed_among<'a>(
        &self,
        client: &str,
        people: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> StoreResult<(usize, HashSet<String>)> {
        let Some(key) = self.suppression_key() else { return Ok((0, HashSet::new())) };
        let tokens: Vec<(Option<String>, Option<&str>)> =
            people.into_iter().map(|(input, pk)| (input_tokens(key, input), pk)).collect();
        let hashes: Vec<&str> =
            tokens.iter().filter_map(|(t, _)| t.as_deref()).flat_map(|t| parse_tokens(t).map(|(_, h)| h)).collect();
        if hashes.is_empty() {
            return Ok((0, HashSet::new()));
        }
        let found = listed(&self.db, client, &hashes).await?;
        let mut n = 0;
        let mut keys = HashSet::new();
        for (t, pk) in &tokens {
            if any_listed(t.as_deref(), &found) {
                n += 1;
                keys.extend(pk.map(str::to_owned));
            }
        }
        Ok((n, keys))
    }
}

/// What erasing a job with `suppress` adds to its client's list: the person hashes (email,
/// LinkedIn URL, Apollo id given) of every person, and the Apollo id each was matched to.
pub(crate) async fn erased_people_entries<C: ConnectionTrait>(
    db: &C,
    key: Option<&SuppressionKey>,
    job_id: Uuid,
) -> StoreResult<Vec<(SuppressionKind, String)>> {
    let rows: Vec<(Option<String>, Option<String>)> = person::Entity::find()
        .select_only()
        .column(person::Column::SuppressHashes)
        .column(person::Column::ApolloId)
        .filter(person::Column::JobId.eq(job_id))
        .filter(person::Column::State.ne(PersonState::Invalid))
        .order_by_asc(person::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let key = key.ok_or_else(|| StoreError::Invalid("no suppression key is configured".into()))?;
    let mut out = Vec::new();
    for (tokens, apollo_id) in rows {
        if let Some(t) = tokens.as_deref() {
            out.extend(
                parse_tokens(t)
                    .filter(|(k, _)| rules::suppression::names_one_person(*k))
                    .map(|(k, h)| (k, h.to_owned())),
            );
        }
        if let Some(h) = apollo_id.as_deref().and_then(|id| key.hash_raw(SuppressionKind::ApolloId, id)) {
            out.push((SuppressionKind::ApolloId, h));
        }
    }
    Ok(out)
}
