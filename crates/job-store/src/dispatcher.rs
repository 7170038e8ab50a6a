//! Dispatcher state shared by replicas: the pause switch (shown on every active job) and
//! free-form values such as rate-limit windows.

use rules::JobState;
use sea_orm::sea_query::{Expr, LockType, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

use crate::Store;
use crate::clock::now;
use crate::entities::{dispatcher_state, job};
use crate::error::StoreResult;

/// The dispatcher-state key of the pause switch.
pub const PAUSE_KEY: &str = "pause";

/// The current pause reason, read inside a transaction.
pub(crate) async fn pause_reason<C: ConnectionTrait>(db: &C) -> StoreResult<Option<String>> {
    let row = crate::sql::by_key(db, dispatcher_state::Entity::find_by_id(PAUSE_KEY.to_owned())).await?;
    Ok(row.and_then(|r| r.value.get("reason").and_then(Value::as_str).map(str::to_owned)))
}

async fn put<C: ConnectionTrait>(db: &C, key: &str, value: Value) -> StoreResult<()> {
    let row = dispatcher_state::ActiveModel { key: Set(key.to_owned()), value: Set(value), updated_at: Set(now()) };
    dispatcher_state::Entity::insert(row)
        .on_conflict(
            OnConflict::column(dispatcher_state::Column::Key)
                .update_columns([dispatcher_state::Column::Value, dispatcher_state::Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

impl Store {
    /// Pauses dispatch with a reason (`Some`) or resumes it (`None`).
    ///
    /// While paused, [`Store::claim_batch`] claims nothing, and every queued or running job (and
    /// every job created meanwhile) shows `paused` with the reason. On resume, jobs go back to
    /// `running`, or `queued` if nothing of them was ever claimed.
    pub async fn set_pause(&self, reason: Option<String>) -> StoreResult<()> {
        self.change_pause(reason, None).await.map(|_| ())
    }

    /// Resumes dispatch if it is still paused for `reason` (a probe found Apollo accepting calls
    /// again); a pause recorded since, for another reason, stays. Returns whether it resumed.
    pub async fn lift_pause(&self, reason: &str) -> StoreResult<bool> {
        self.change_pause(None, Some(reason)).await
    }

    async fn change_pause(&self, reason: Option<String>, only_if: Option<&str>) -> StoreResult<bool> {
        let now = now();
        let (txn, _gate) = self.write_txn().await?;
        // Lock the affected jobs in id order, the order every other writer uses for job rows.
        let active: &[&str] = match reason {
            Some(_) => &[JobState::Queued.as_str(), JobState::Running.as_str(), JobState::Paused.as_str()],
            None => &[JobState::Paused.as_str()],
        };
        let ids: Vec<uuid::Uuid> = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(job::Column::State.is_in(active.iter().copied()))
            .order_by_asc(job::Column::Id)
            .lock(LockType::Update)
            .into_tuple()
            .all(&txn)
            .await?;
        if let Some(expected) = only_if {
            // After the job rows: the lock order of every pause change.
            let row =
                dispatcher_state::Entity::find_by_id(PAUSE_KEY.to_owned()).lock(LockType::Update).one(&txn).await?;
            let current = row.and_then(|r| r.value.get("reason").and_then(Value::as_str).map(str::to_owned));
            if current.as_deref() != Some(expected) {
                return Ok(false);
            }
        }
        match &reason {
            Some(r) => {
                put(&txn, PAUSE_KEY, json!({ "reason": r, "since": now })).await?;
                for chunk in ids.chunks(1000) {
                    job::Entity::update_many()
                        .filter(job::Column::Id.is_in(chunk.iter().copied()))
                        .filter(job::Column::State.is_in(active.iter().copied()))
                        .col_expr(job::Column::State, Expr::value(JobState::Paused))
                        .col_expr(job::Column::PauseReason, Expr::value(r.clone()))
                        .col_expr(job::Column::UpdatedAt, Expr::value(now))
                        .exec(&txn)
                        .await?;
                }
            }
            None => {
                dispatcher_state::Entity::delete_by_id(PAUSE_KEY.to_owned()).exec(&txn).await?;
                for chunk in ids.chunks(1000) {
                    for (never_claimed, state) in [(true, JobState::Queued), (false, JobState::Running)] {
                        let cond = if never_claimed {
                            job::Column::LastClaimedAt.is_null()
                        } else {
                            job::Column::LastClaimedAt.is_not_null()
                        };
                        job::Entity::update_many()
                            .filter(job::Column::Id.is_in(chunk.iter().copied()))
                            .filter(job::Column::State.eq(JobState::Paused))
                            .filter(cond)
                            .col_expr(job::Column::State, Expr::value(state))
                            .col_expr(job::Column::PauseReason, Expr::value(Option::<String>::None))
                            .col_expr(job::Column::UpdatedAt, Expr::value(now))
                            .exec(&txn)
                            .await?;
                    }
                }
            }
        }
        txn.commit().await?;
        Ok(true)
    }

    /// The pause reason, while dispatch is paused.
    pub async fn pause_reason(&self) -> StoreResult<Option<String>> {
        pause_reason(&self.db).await
    }
}
