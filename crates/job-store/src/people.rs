//! Writing person rows: every state change goes through here, so it is tallied on the job and
//! mirrored onto the person's duplicates (which are never sent and always show the primary's result).

use std::borrow::Borrow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rules::PersonState;
use rules::lifecycle::{self, Event, Life};
use sea_orm::sea_query::{Expr, IntoCondition, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable, QueryFilter, QueryOrder, QuerySelect,
    Statement, Value,
};
use uuid::Uuid;

use crate::counters::Tally;
use crate::entities::person;
use crate::error::{StoreError, StoreResult};

/// The lifecycle columns of a stored person.
pub(crate) fn life_of(p: &person::Model) -> Life {
    Life {
        state: p.state,
        expect_phone: p.expect_phone,
        expect_waterfall: p.expect_waterfall,
        got_phone: p.got_phone,
        got_waterfall: p.got_waterfall,
        phone_elsewhere: p.phone_elsewhere,
    }
}

/// Asks the lifecycle what `event` does to `p` and writes the answer into its columns, with
/// what follows from the state: `awaiting_since` only while awaiting parts (so the deadline
/// index stays small), `missing_parts` only when partial.
pub(crate) fn apply_event(p: &mut person::Model, event: Event, now: DateTime<Utc>) -> StoreResult<()> {
    let life = lifecycle::step(life_of(p), event);
    p.state = life.state;
    p.expect_phone = life.expect_phone;
    p.expect_waterfall = life.expect_waterfall;
    p.got_phone = life.got_phone;
    p.got_waterfall = life.got_waterfall;
    p.phone_elsewhere = life.phone_elsewhere;
    p.awaiting_since = match life.state {
        PersonState::AwaitingAsync => p.awaiting_since.or(Some(now)),
        _ => None,
    };
    p.missing_parts = match life.state {
        PersonState::Partial => {
            Some(serde_json::Value::from(life.missing().iter().map(|m| m.as_str()).collect::<Vec<_>>()))
        }
        _ => None,
    };
    Ok(())
}

/// The people of a batch (primaries only: duplicates never get a batch id), locked (PostgreSQL)
/// in id order. Their `input` is not read (it is JSON `null` here): answers, merges and failures
/// never need the client's input, and reading it would cost a JSON decoding per person.
pub(crate) async fn lock_batch_primaries<C: ConnectionTrait>(
    db: &C,
    batch_id: Uuid,
) -> StoreResult<Vec<person::Model>> {
    lock_people_where(db, person::Column::BatchId.eq(batch_id)).await
}

/// The people `condition` picks, locked (PostgreSQL) in id order, without their `input` (JSON
/// `null` here), as [`lock_batch_primaries`] reads them.
pub(crate) async fn lock_people_where<C: ConnectionTrait>(
    db: &C,
    condition: impl IntoCondition,
) -> StoreResult<Vec<person::Model>> {
    let null_json = match db.get_database_backend() {
        DbBackend::Postgres => "'null'::jsonb",
        _ => "'null'",
    };
    let mut q = person::Entity::find().select_only();
    for column in person::Column::iter().filter(|c| !matches!(c, person::Column::Input)) {
        q = q.column(column);
    }
    Ok(q.column_as(Expr::cust(null_json), person::Column::Input.as_str())
        .filter(condition)
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?)
}

/// Writes `new` over `old` (a primary read in this transaction), tallies the state change, and
/// mirrors the result onto the duplicates.
pub(crate) async fn update_person<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    old: &person::Model,
    new: &person::Model,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    update_people(db, tally, &[(old, new)], now).await
}

/// [`update_person`] for many people at once, in a constant number of statements: one multi-row
/// `UPDATE … FROM (VALUES …)` per [`ROWS_PER_UPDATE`] people, and, when some have duplicates,
/// one read and one update for all their duplicates. Each pair is (`old`, `new`) of one primary;
/// a row is written only if it is still in `old`'s state.
pub(crate) async fn update_people<C: ConnectionTrait, N: Borrow<person::Model>>(
    db: &C,
    tally: &mut Tally,
    changes: &[(&person::Model, N)],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Value>> = changes
        .iter()
        .map(|(old, new)| {
            let mut row = vec![old.id.into(), old.state.as_str().into()];
            row.extend(WRITTEN.iter().map(|c| column_value(new.borrow(), *c)));
            row
        })
        .collect();
    let set: Vec<(person::Column, Assign)> = WRITTEN.iter().map(|c| (*c, Assign::of(*c))).collect();
    let changed = update_from_rows::<person::Entity, _>(db, person::Column::Id, true, &set, rows, Some(now)).await?;
    if changed != changes.len() as u64 {
        // Rows are locked (PostgreSQL) or the writer is alone (SQLite): this means a bug upstream.
        return Err(StoreError::Invalid(format!(
            "{changed} of {} people updated: changed concurrently (expected states {:?})",
            changes.len(),
            changes.iter().map(|(old, _)| (old.id, old.state)).collect::<Vec<_>>()
        )));
    }
    for (old, new) in changes {
        tally.moved_person(old.job_id, old.id, old.state, new.borrow().state);
    }
    let with_dups: Vec<&person::Model> =
        changes.iter().filter(|(old, _)| old.has_dups).map(|(_, new)| new.borrow()).collect();
    if !with_dups.is_empty() {
        copy_to_duplicates(db, tally, &with_dups, now).await?;
    }
    Ok(())
}

/// People per multi-row update: a call's ten in one statement, and few statement sizes to prepare.
const ROWS_PER_UPDATE: usize = 64;

/// The columns a person's change writes ([`update_people`]).
const WRITTEN: [person::Column; 13] = [
    person::Column::State,
    person::Column::ApolloId,
    person::Column::BatchId,
    person::Column::Record,
    person::Column::ExpectPhone,
    person::Column::ExpectWaterfall,
    person::Column::GotPhone,
    person::Column::GotWaterfall,
    person::Column::MissingParts,
    person::Column::CreditsMicros,
    person::Column::LastError,
    person::Column::AwaitingSince,
    person::Column::PhoneElsewhere,
];

/// The columns duplicates take from their primary: [`WRITTEN`] but credits and batch, which stay
/// on the primary, the only one sent.
const MIRRORED: [person::Column; 11] = [
    person::Column::State,
    person::Column::ApolloId,
    person::Column::Record,
    person::Column::ExpectPhone,
    person::Column::ExpectWaterfall,
    person::Column::GotPhone,
    person::Column::GotWaterfall,
    person::Column::MissingParts,
    person::Column::LastError,
    person::Column::AwaitingSince,
    person::Column::PhoneElsewhere,
];

/// The value `p` binds for one of the [`WRITTEN`] columns (JSON as text).
fn column_value(p: &person::Model, c: person::Column) -> Value {
    use person::Column as C;
    match c {
        C::State => p.state.as_str().into(),
        C::ApolloId => p.apollo_id.clone().into(),
        C::BatchId => p.batch_id.into(),
        C::Record => json_text(p.record.as_ref()),
        C::ExpectPhone => p.expect_phone.into(),
        C::ExpectWaterfall => p.expect_waterfall.into(),
        C::GotPhone => p.got_phone.into(),
        C::GotWaterfall => p.got_waterfall.into(),
        C::MissingParts => json_text(p.missing_parts.as_ref()),
        C::CreditsMicros => p.credits_micros.into(),
        C::LastError => p.last_error.clone().into(),
        C::AwaitingSince => p.awaiting_since.into(),
        C::PhoneElsewhere => p.phone_elsewhere.into(),
        other => unreachable!("{other:?} is not a column a person's change writes"),
    }
}

/// A JSON column's value bound as text: binding the JSON value itself costs a deep copy of it
/// (sea-orm clones every bound value) and encodes it to the same text on SQLite.
fn json_text(v: Option<&serde_json::Value>) -> Value {
    // Serializing a `Value` cannot fail.
    v.map(|v| serde_json::to_string(v).unwrap_or_default()).into()
}

/// How [`update_from_rows`] sets a column from its bound value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assign {
    /// To the value.
    Value,
    /// To the value, JSON bound as text.
    Json,
    /// To the column plus the value.
    Add,
}

impl Assign {
    /// Plain or JSON, as the column holds.
    fn of(c: person::Column) -> Assign {
        match c {
            person::Column::Record | person::Column::MissingParts | person::Column::Input => Assign::Json,
            _ => Assign::Value,
        }
    }
}

/// `UPDATE <table> SET … FROM (VALUES …) AS v WHERE <table>.<key> = v.column1 [AND <table>.state =
/// v.column2]`, in statements of at most [`ROWS_PER_UPDATE`] rows. Each row binds the key, the
/// state it must still be in (with `guard`), then one value per column of `set`; `updated_at`
/// becomes `now` when given. Returns how many rows changed.
pub(crate) async fn update_from_rows<E: EntityTrait, C: ConnectionTrait>(
    db: &C,
    key: E::Column,
    guard: bool,
    set: &[(E::Column, Assign)],
    rows: Vec<Vec<Value>>,
    now: Option<DateTime<Utc>>,
) -> StoreResult<u64> {
    let backend = db.get_database_backend();
    let table = E::default().table_name();
    let key = key.as_str();
    let set: Vec<(&str, Assign)> = set.iter().map(|(c, a)| (c.as_str(), *a)).collect();
    let mut changed = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_UPDATE).collect();
        let sql = update_from_rows_sql(backend, table, key, guard, &set, now.is_some(), chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(1 + chunk.len() * (set.len() + 2));
        values.extend(now.map(Value::from));
        values.extend(chunk.into_iter().flatten());
        changed += db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?.rows_affected();
    }
    Ok(changed)
}

/// The SQL of [`update_from_rows`] for `rows` rows: parameter 1 is `updated_at` (if `stamp`),
/// then the rows'.
fn update_from_rows_sql(
    backend: DbBackend,
    table: &str,
    key: &str,
    guard: bool,
    set: &[(&str, Assign)],
    stamp: bool,
    rows: usize,
) -> String {
    // SQLite gets anonymous `?` (numbered in order of appearance), which bind without the
    // linear name lookup numbered ones cost.
    let mut n = 0;
    let mut param = || {
        n += 1;
        match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    };
    let first = usize::from(guard) + 2;
    let mut assignments: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (name, assign))| {
            let v = format!("v.column{}", first + i);
            match (assign, backend) {
                (Assign::Json, DbBackend::Postgres) => format!("{name} = CAST({v} AS jsonb)"),
                (Assign::Add, _) => format!("{name} = {name} + {v}"),
                _ => format!("{name} = {v}"),
            }
        })
        .collect();
    if stamp {
        assignments.push(format!("updated_at = {}", param()));
    }
    let mut sql = format!("UPDATE {table} SET {} FROM (VALUES ", assignments.join(", "));
    let per_row = set.len() + first - 1;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for k in 0..per_row {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&param());
        }
        sql.push(')');
    }
    let _ = write!(sql, ") AS v WHERE {table}.{key} = v.column1");
    if guard {
        let _ = write!(sql, " AND {table}.state = v.column2");
    }
    sql
}

/// Gives every duplicate of `primaries` its primary's state and result, in one read and one
/// update (credits stay on the primary, the only one sent; duplicates are never in a batch).
async fn copy_to_duplicates<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    primaries: &[&person::Model],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut dups: Vec<(Uuid, Uuid, PersonState, Option<Uuid>)> = Vec::new();
    for chunk in primaries.chunks(ROWS_PER_UPDATE) {
        dups.extend(
            person::Entity::find()
                .select_only()
                .columns([person::Column::Id, person::Column::JobId, person::Column::State, person::Column::DupOf])
                .filter(person::Column::DupOf.is_in(chunk.iter().map(|p| p.id)))
                .order_by_asc(person::Column::Id)
                .lock(LockType::Update)
                .into_tuple::<(Uuid, Uuid, PersonState, Option<Uuid>)>()
                .all(db)
                .await?,
        );
    }
    if dups.is_empty() {
        return Ok(());
    }
    for (id, job_id, state, dup_of) in &dups {
        let to = primaries.iter().find(|p| Some(p.id) == *dup_of).map_or(*state, |p| p.state);
        tally.moved_person(*job_id, *id, *state, to);
    }
    let rows: Vec<Vec<Value>> = primaries
        .iter()
        .map(|p| {
            let mut row = vec![p.id.into()];
            row.extend(MIRRORED.iter().map(|c| column_value(p, *c)));
            row
        })
        .collect();
    let set: Vec<(person::Column, Assign)> = MIRRORED.iter().map(|c| (*c, Assign::of(*c))).collect();
    update_from_rows::<person::Entity, _>(db, person::Column::DupOf, false, &set, rows, Some(now)).await?;
    Ok(())
}

/// Moves primaries (read in this transaction, locked on PostgreSQL) to the state `event` leads
/// them to (claim, failure, cancel: events that change the state alone) in one statement,
/// with their duplicates; sets `batch_id` and `last_error` when given (claims, failures).
///
/// Rows are picked by primary key only: a `state = …` filter here tempts SQLite's planner
/// (which has no statistics) into scanning a state index instead.
pub(crate) async fn move_primaries<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    people: &[&person::Model],
    event: Event,
    batch_id: Option<Uuid>,
    last_error: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // The lifecycle decides; people the event does not apply to stay as they are.
    let mut moving: Vec<&person::Model> = Vec::with_capacity(people.len());
    let mut target = None;
    for p in people {
        let to = lifecycle::step(life_of(p), event).state;
        if to == p.state {
            continue;
        }
        if target.replace(to).is_some_and(|t| t != to) {
            return Err(StoreError::Invalid(format!("{event:?} leads people of one move to different states")));
        }
        moving.push(p);
    }
    let (Some(to), false) = (target, moving.is_empty()) else { return Ok(()) };
    let people = &moving[..];
    let mut q = person::Entity::update_many()
        .filter(person::Column::Id.is_in(people.iter().map(|p| p.id)))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::UpdatedAt, Expr::value(now));
    if let Some(b) = batch_id {
        q = q.col_expr(person::Column::BatchId, Expr::value(b));
    }
    if let Some(e) = last_error {
        q = q.col_expr(person::Column::LastError, Expr::value(e));
    }
    let moved = q.exec(db).await?.rows_affected;
    if moved != people.len() as u64 {
        return Err(StoreError::Invalid(format!("{} of {} people moved to {to}", moved, people.len())));
    }
    for p in people {
        tally.moved_person(p.job_id, p.id, p.state, to);
    }
    let with_dups: Vec<Uuid> = people.iter().filter(|p| p.has_dups).map(|p| p.id).collect();
    if with_dups.is_empty() {
        return Ok(());
    }
    let dups = person::Entity::find()
        .filter(person::Column::DupOf.is_in(with_dups))
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?;
    for d in &dups {
        tally.moved_person(d.job_id, d.id, d.state, to);
    }
    let mut q = person::Entity::update_many()
        .filter(person::Column::Id.is_in(dups.iter().map(|d| d.id)))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::UpdatedAt, Expr::value(now));
    if let Some(e) = last_error {
        q = q.col_expr(person::Column::LastError, Expr::value(e));
    }
    q.exec(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_from_rows_binds_each_row_once_and_updated_at_first() {
        let set = [("state", Assign::Value), ("record", Assign::Json)];
        assert_eq!(
            update_from_rows_sql(DbBackend::Postgres, "people", "id", true, &set, true, 2),
            "UPDATE people SET state = v.column3, record = CAST(v.column4 AS jsonb), updated_at = $1 \
             FROM (VALUES ($2,$3,$4,$5), ($6,$7,$8,$9)) AS v WHERE people.id = v.column1 AND people.state = v.column2"
        );
        let add = [("credits_micros", Assign::Add)];
        assert_eq!(
            update_from_rows_sql(DbBackend::Sqlite, "batches", "id", false, &add, false, 2),
            "UPDATE batches SET credits_micros = credits_micros + v.column2 FROM (VALUES (?,?), (?,?)) AS v \
             WHERE batches.id = v.column1"
        );
        assert_eq!(
            update_from_rows_sql(DbBackend::Sqlite, "people", "dup_of", false, &set, true, 1),
            "UPDATE people SET state = v.column2, record = v.column3, updated_at = ? FROM (VALUES (?,?,?)) AS v \
             WHERE people.dup_of = v.column1"
        );
    }
}
