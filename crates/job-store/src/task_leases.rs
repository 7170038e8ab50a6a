//! Tasks that should run on one replica at a time (the reconciler's polling and deadline sweep,
//! the retention purge): each holds a lease row, taken and renewed on the database's clock. The
//! holder renews it every pass; when it dies, another replica takes over once the lease runs out.

use std::time::Duration;

use chrono::TimeDelta;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::Store;
use crate::clock::db_clock;
use crate::error::{StoreError, StoreResult};

impl Store {
    /// Takes or renews the lease on `task` for `owner` until `ttl` from now (database clock).
    /// Returns `false` while another owner holds a lease that has not run out.
    pub async fn hold_task(&self, task: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let (txn, _gate) = self.write_txn().await?;
        let now = db_clock(&txn).await?;
        let ttl = TimeDelta::from_std(ttl).map_err(|e| StoreError::Invalid(format!("lease {ttl:?}: {e}")))?;
        let backend = txn.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => {
                "INSERT INTO task_leases (task, owner, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (task) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE task_leases.owner = excluded.owner OR task_leases.expires_at < $4"
            }
            _ => {
                "INSERT INTO task_leases (task, owner, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (task) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE task_leases.owner = excluded.owner OR task_leases.expires_at < ?"
            }
        };
        let values = [task.into(), owner.into(), (now + ttl).into(), now.into()];
        let res = txn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        txn.commit().await?;
        Ok(res.rows_affected() == 1)
    }
}
