//! Apollo calls per minute (`call_minutes`), for the usage page's chart: counted in the
//! transaction that records a call's outcome (an answer, or a failure with its kind), kept two days.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Statement};

use crate::Store;
use crate::entities::call_minute;
use crate::error::StoreResult;
use crate::sql;

/// How long minutes are kept.
pub const CALL_MINUTES_KEPT: TimeDelta = TimeDelta::days(2);

/// The minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Adds `calls` calls, `rate_limited` of them 429s, to the minute of `at`, in the caller's
/// transaction; the first count of a minute forgets the minutes older than [`CALL_MINUTES_KEPT`].
pub(crate) async fn count_calls<C: ConnectionTrait>(
    db: &C,
    at: DateTime<Utc>,
    calls: i64,
    rate_limited: i64,
) -> StoreResult<()> {
    if calls == 0 {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let minute = minute_of(at);
    let text = format!(
        "INSERT INTO call_minutes (minute, calls, rate_limited) VALUES ({}, {}, {}) \
         ON CONFLICT (minute) DO UPDATE SET calls = call_minutes.calls + excluded.calls, \
         rate_limited = call_minutes.rate_limited + excluded.rate_limited RETURNING calls",
        sql::param(backend, 1),
        sql::param(backend, 2),
        sql::param(backend, 3),
    );
    let stmt = Statement::from_sql_and_values(backend, text, [minute.into(), calls.into(), rate_limited.into()]);
    let total: Option<i64> = match db.query_one_raw(stmt).await? {
        Some(row) => Some(row.try_get_by_index(0)?),
        None => None,
    };
    if total == Some(calls) {
        call_minute::Entity::delete_many()
            .filter(call_minute::Column::Minute.lt(minute - CALL_MINUTES_KEPT))
            .exec(db)
            .await?;
    }
    Ok(())
}

impl Store {
    /// The minutes since `since` that had calls, oldest first: (minute, calls, 429s).
    pub async fn call_minutes(&self, since: DateTime<Utc>) -> StoreResult<Vec<(DateTime<Utc>, i64, i64)>> {
        let rows = call_minute::Entity::find()
            .filter(call_minute::Column::Minute.gte(minute_of(since)))
            .order_by_asc(call_minute::Column::Minute)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|m| (m.minute, m.calls, m.rate_limited)).collect())
    }
}
