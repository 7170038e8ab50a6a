//! Statement helpers for the hot paths: lookups whose statements SQLite can prepare once.
//!
//! sea-orm binds every `LIMIT` and `OFFSET` (`.one()` adds `LIMIT ?`), and SQLite treats a bound
//! limit as an input of the query plan: binding the parameter again expires the prepared
//! statement, so each execution is parsed and planned anew (about 1.5 re-preparations per person
//! end to end, measured with a uprobe on `sqlite3Reprepare`). Key lookups therefore run without
//! a limit (they find one row at most), and other limits are written into the SQL as literals.

use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QueryTrait, Select, Statement, TryGetableMany, Value, Values};

use crate::error::StoreResult;

/// The row `select` finds by its primary key, if any: `.one()` without the bound `LIMIT 1`.
pub(crate) async fn by_key<E: EntityTrait, C: ConnectionTrait>(
    db: &C,
    select: Select<E>,
) -> StoreResult<Option<E::Model>> {
    Ok(select.all(db).await?.into_iter().next())
}

/// The rows of `select`, its `LIMIT`/`OFFSET` written as literals.
pub(crate) async fn rows<E: EntityTrait, C: ConnectionTrait>(db: &C, select: Select<E>) -> StoreResult<Vec<E::Model>> {
    let stmt = literal_limits(select.build(db.get_database_backend()));
    Ok(E::find().from_raw_sql(stmt).all(db).await?)
}

/// The rows of `select` (narrowed with `select_only` and its columns) as tuples, its
/// `LIMIT`/`OFFSET` written as literals.
pub(crate) async fn tuples<T: TryGetableMany, E: EntityTrait, C: ConnectionTrait>(
    db: &C,
    select: Select<E>,
) -> StoreResult<Vec<T>> {
    let stmt = literal_limits(select.build(db.get_database_backend()));
    let found = db.query_all_raw(stmt).await?;
    Ok(found.iter().map(T::try_get_many_by_index).collect::<Result<Vec<T>, _>>().map_err(sea_orm::DbErr::from)?)
}

/// `stmt` with its trailing bound `OFFSET` and `LIMIT` (the last parameters, as sea-query writes
/// them) replaced by literals. Anything else is left as it is: still correct, only re-prepared.
pub(crate) fn literal_limits(mut stmt: Statement) -> Statement {
    let backend = stmt.db_backend;
    for keyword in ["OFFSET", "LIMIT"] {
        let Some(Values(values)) = stmt.values.as_mut() else { break };
        let Some(Value::BigUnsigned(Some(n))) = values.last() else { continue };
        let placeholder = match backend {
            DbBackend::Postgres => format!(" {keyword} ${}", values.len()),
            _ => format!(" {keyword} ?"),
        };
        let Some(at) = stmt.sql.rfind(&placeholder) else { continue };
        // The last parameter must be this one (SQLite's are anonymous: none may follow).
        if backend != DbBackend::Postgres && stmt.sql[at + placeholder.len()..].contains('?') {
            continue;
        }
        let literal = format!(" {keyword} {n}");
        stmt.sql.replace_range(at..at + placeholder.len(), &literal);
        values.pop();
    }
    stmt
}

/// The `n`th (1-based) bind parameter: `$n` on PostgreSQL, an anonymous `?` on SQLite (numbered
/// in order of appearance: with numbered `?NNN` ones, every bind looks its parameter's name up in
/// a linear list, quadratic in a long VALUES list).
pub(crate) fn param(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// Appends the rows of a `VALUES` list: `rows` parenthesized rows of `per_row` parameters each,
/// numbered from `first`.
pub(crate) fn push_values(sql: &mut String, backend: DbBackend, first: usize, rows: usize, per_row: usize) {
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for k in 0..per_row {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&param(backend, first + r * per_row + k));
        }
        sql.push(')');
    }
}

/// Advisory-lock class of Apollo people ("enr" in ASCII), apart from the migration lock.
const APOLLO_PERSON_LOCK: i32 = 0x0065_6e72;

/// On PostgreSQL, takes this transaction's advisory locks on the Apollo people named, in one
/// order for every caller (so two takers never deadlock). Recording an answer whose phone Apollo
/// skipped looks for that phone among merged deliveries, and merging a phone delivery looks for
/// people waiting for it: under READ COMMITTED the two, run at once, each miss the other's
/// uncommitted work and the person waits for a phone that came. Taken first in both, the lock
/// orders them. SQLite has one writer: nothing to do.
pub(crate) async fn lock_apollo_people<C: ConnectionTrait>(db: &C, apollo_ids: &[&str]) -> StoreResult<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let mut keys: Vec<i32> = apollo_ids
        .iter()
        .map(|id| {
            // The first 32 bits of the id's SHA-256: an int4 key (a shared key only waits more).
            let digest = crate::sha256_hex(&[id.as_bytes()]);
            u32::from_str_radix(&digest[..8], 16).map_or(0, |v| v as i32)
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    let values: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
    // Volatile functions in the select list are evaluated after the sort: in key order.
    let sql = format!(
        "SELECT pg_advisory_xact_lock({APOLLO_PERSON_LOCK}, k) FROM (VALUES {}) AS t(k) ORDER BY k",
        values.join(", ")
    );
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{LockBehavior, LockType};
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};

    use super::*;
    use crate::entities::{batch, person};

    #[test]
    fn limits_and_offsets_become_literals_and_other_values_stay_bound() {
        let q = || {
            person::Entity::find()
                .filter(person::Column::Ordinal.gt(3i64))
                .order_by_asc(person::Column::Ordinal)
                .offset(2)
                .limit(10)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        };
        let pg = literal_limits(q().build(DbBackend::Postgres));
        assert!(
            pg.sql.ends_with(r#"ORDER BY "people"."ordinal" ASC LIMIT 10 OFFSET 2 FOR UPDATE SKIP LOCKED"#),
            "{}",
            pg.sql
        );
        assert_eq!(pg.values.unwrap().0, vec![Value::BigInt(Some(3))]);
        let lite = literal_limits(q().build(DbBackend::Sqlite));
        assert!(lite.sql.trim_end().ends_with("LIMIT 10 OFFSET 2"), "{}", lite.sql);
        assert_eq!(lite.values.unwrap().0, vec![Value::BigInt(Some(3))]);
        // A key lookup as `.one()` would write it.
        let one =
            literal_limits(batch::Entity::find().filter(batch::Column::Size.eq(7)).limit(1).build(DbBackend::Sqlite));
        assert!(one.sql.ends_with(r#"WHERE "batches"."size" = ? LIMIT 1"#), "{}", one.sql);
        assert_eq!(one.values.unwrap().0, vec![Value::Int(Some(7))]);
        // Nothing to replace: unchanged.
        let plain = batch::Entity::find().filter(batch::Column::Size.eq(7)).build(DbBackend::Postgres);
        assert_eq!(literal_limits(plain.clone()), plain);
    }
}
