//! What operators see of the service as a whole: the Apollo calls that ended in an error (recorded
//! in the transaction that records the batch's outcome, kept short), and the replicas seen (a
//! heartbeat row per process).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::Store;
use crate::clock::db_clock;
use crate::entities::{apollo_error, replica};
use crate::error::StoreResult;

/// Why an Apollo call failed, as the batch's outcome records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallError<'a> {
    /// The kind of failure (`rate_limited`, `transient`, `invalid_request`, …).
    pub kind: &'a str,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// What happened (also the batch's `last_error`).
    pub message: &'a str,
}

/// A bare reason: a failure of no known kind.
impl<'a> From<&'a str> for CallError<'a> {
    fn from(message: &'a str) -> CallError<'a> {
        CallError { kind: "error", status: None, message }
    }
}

/// Failed calls kept at most, whatever the retention: the page shows the newest few.
pub const APOLLO_ERRORS_KEPT: u64 = 1000;

/// Characters of a message kept in `apollo_errors` (the batch keeps the whole message).
const MESSAGE_EXCERPT: usize = 500;

/// Replica rows unseen for this long are forgotten.
const REPLICA_FORGOTTEN_AFTER: TimeDelta = TimeDelta::days(1);

/// The first `max` characters of `s`, with an ellipsis when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// Whether a replica last seen at `last_seen` is alive at `now`: it beats every `every`, so two
/// missed beats (or five seconds, for very short periods) are tolerated, as task leases are.
pub fn is_live(last_seen: DateTime<Utc>, now: DateTime<Utc>, every: Duration) -> bool {
    let grace = TimeDelta::from_std((every * 3).max(Duration::from_secs(5))).unwrap_or(TimeDelta::MAX);
    now - last_seen <= grace
}

/// Records a failed call in the caller's transaction (its last write: the row lock order ends
/// here), counts it in its minute ([`crate::calls`]), and forgets the oldest beyond
/// [`APOLLO_ERRORS_KEPT`].
pub(crate) async fn record_call_error<C: ConnectionTrait>(
    db: &C,
    batch_id: Uuid,
    error: &CallError<'_>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let message = crate::columns::storable_text(Some(excerpt(error.message, MESSAGE_EXCERPT))).unwrap_or_default();
    let row = apollo_error::ActiveModel {
        at: Set(at),
        batch_id: Set(Some(batch_id)),
        kind: Set(error.kind.to_owned()),
        status: Set(error.status.map(i32::from)),
        message: Set(message),
        ..Default::default()
    };
    apollo_error::Entity::insert(row).exec_without_returning(db).await?;
    crate::calls::count_calls(db, at, 1, i64::from(error.kind == "rate_limited")).await?;
    let cutoff: Option<i64> = apollo_error::Entity::find()
        .select_only()
        .column(apollo_error::Column::Id)
        .order_by_desc(apollo_error::Column::Id)
        .offset(APOLLO_ERRORS_KEPT)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    if let Some(cutoff) = cutoff {
        apollo_error::Entity::delete_many().filter(apollo_error::Column::Id.lte(cutoff)).exec(db).await?;
    }
    Ok(())
}

impl Store {
    /// The newest failed Apollo calls, newest first.
    pub async fn recent_apollo_errors(&self, limit: u64) -> StoreResult<Vec<apollo_error::Model>> {
        Ok(apollo_error::Entity::find().order_by_desc(apollo_error::Column::Id).limit(limit).all(&self.db).await?)
    }

    /// Forgets failed calls recorded before `older_than` (retention); returns how many.
    pub async fn purge_apollo_errors(&self, older_than: DateTime<Utc>) -> StoreResult<u64> {
        let _gate = self.write_gate().await;
        let res =
            apollo_error::Entity::delete_many().filter(apollo_error::Column::At.lt(older_than)).exec(&self.db).await?;
        Ok(res.rows_affected)
    }

    /// This process is alive: its row gets `last_seen_at` = now (database clock), created with
    /// `started_at` at the first beat; rows of replicas unseen for a day are forgotten.
    pub async fn heartbeat(&self, owner: &str, label: &str) -> StoreResult<()> {
        let (txn, _gate) = self.write_txn().await?;
        let now = db_clock(&txn).await?;
        let row = replica::ActiveModel {
            owner: Set(owner.to_owned()),
            label: Set(label.to_owned()),
            started_at: Set(now),
            last_seen_at: Set(now),
        };
        replica::Entity::insert(row)
            .on_conflict(
                OnConflict::column(replica::Column::Owner)
                    .update_columns([replica::Column::Label, replica::Column::LastSeenAt])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        replica::Entity::delete_many()
            .filter(replica::Column::LastSeenAt.lt(now - REPLICA_FORGOTTEN_AFTER))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The replicas seen in the last day, most recently started first, and the database's clock
    /// to judge them by.
    pub async fn replicas(&self) -> StoreResult<(DateTime<Utc>, Vec<replica::Model>)> {
        let now = db_clock(&self.db).await?;
        let rows = replica::Entity::find().order_by_desc(replica::Column::StartedAt).all(&self.db).await?;
        Ok((now, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("Ångström", 3), "Ång…");
        assert_eq!(excerpt("abc", 3), "abc");
    }

    #[test]
    fn a_replica_is_live_until_it_misses_two_beats() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let every = Duration::from_secs(30);
        assert!(is_live(now, now, every));
        assert!(is_live(now - TimeDelta::seconds(90), now, every));
        assert!(!is_live(now - TimeDelta::seconds(91), now, every));
        // A very short period still allows for a slow pass.
        assert!(is_live(now - TimeDelta::seconds(5), now, Duration::from_millis(100)));
        assert!(!is_live(now - TimeDelta::seconds(6), now, Duration::from_millis(100)));
    }
}
