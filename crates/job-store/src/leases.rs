//! The leases of a live process: renewed by its heartbeat while the work they cover runs, handed
//! back at once when it stops, so that another replica takes the work in seconds instead of
//! waiting a lease out.

use chrono::{DateTime, Utc};
use rules::{BatchState, CallbackState};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::Store;
use crate::clock::ts;
use crate::entities::{batch, callback_delivery, task_lease};
use crate::error::StoreResult;

/// What one renewal extended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    /// Batches in their call.
    pub batches: u64,
    /// Callbacks being sent.
    pub callbacks: u64,
    /// One-replica tasks.
    pub tasks: u64,
}

impl Store {
    /// Extends to `until` the leases `owner` still holds on `batches` (in their call), on
    /// `callbacks` (being sent) and on every task lease it holds; one transaction. A lease that
    /// already ran out and was taken over stays with its new holder.
    pub async fn renew_leases(
        &self,
        owner: &str,
        batches: &[Uuid],
        callbacks: &[Uuid],
        until: DateTime<Utc>,
    ) -> StoreResult<Renewed> {
        let until = ts(until);
        let (txn, _gate) = self.write_txn().await?;
        let mut renewed = Renewed::default();
        if !batches.is_empty() {
            renewed.batches = batch::Entity::update_many()
                .filter(batch::Column::Id.is_in(batches.iter().copied()))
                .filter(batch::Column::State.eq(BatchState::Submitting))
                .filter(batch::Column::LeaseOwner.eq(owner))
                .col_expr(batch::Column::LeaseExpiresAt, Expr::value(until))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        if !callbacks.is_empty() {
            renewed.callbacks = callback_delivery::Entity::update_many()
                .filter(callback_delivery::Column::Id.is_in(callbacks.iter().copied()))
                .filter(callback_delivery::Column::State.eq(CallbackState::Pending))
                .filter(callback_delivery::Column::LeaseOwner.eq(owner))
                .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(until))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        renewed.tasks = task_lease::Entity::update_many()
            .filter(task_lease::Column::Owner.eq(owner))
            .filter(task_lease::Column::ExpiresAt.lt(until))
            .col_expr(task_lease::Column::ExpiresAt, Expr::value(until))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(renewed)
    }

    /// Gives back a batch claimed but not sent (the process is stopping): due again now, no
    /// attempt counted, no possible double charge. Returns `false` if it was not `submitting`.
    pub async fn hand_back_batch(&self, batch_id: Uuid) -> StoreResult<bool> {
        let (txn, _gate) = self.write_txn().await?;
        let back = crate::claims::retry_in(
            &txn,
            batch_id,
            crate::clock::now(),
            false,
            "handed back unsent: the service stopped",
        )
        .await?;
        txn.commit().await?;
        Ok(back)
    }

    /// Ends every task lease `owner` holds, so another replica takes the tasks at its next pass.
    pub async fn release_tasks(&self, owner: &str) -> StoreResult<u64> {
        let (txn, _gate) = self.write_txn().await?;
        let gone = task_lease::Entity::delete_many()
            .filter(task_lease::Column::Owner.eq(owner))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(gone)
    }

    /// Ends every lease a process that is gone left behind, on a store only this process can open
    /// ([`Store::holds_process_lock`]): its batches in a call become unknown outcomes due now
    /// ([`Store::release_orphaned_leases`]), its callbacks and tasks are free at once. Returns the
    /// batches released.
    pub async fn release_orphans(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let batches = self.release_orphaned_leases(now).await?;
        let (txn, _gate) = self.write_txn().await?;
        callback_delivery::Entity::update_many()
            .filter(callback_delivery::Column::State.eq(CallbackState::Pending))
            .filter(callback_delivery::Column::LeaseOwner.is_not_null())
            .col_expr(callback_delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(callback_delivery::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .exec(&txn)
            .await?;
        task_lease::Entity::delete_many().exec(&txn).await?;
        txn.commit().await?;
        Ok(batches)
    }
}
