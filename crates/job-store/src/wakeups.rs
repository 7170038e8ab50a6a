//! Wake-ups across replicas (PostgreSQL): a job created on one replica, or a pause lifted, wakes
//! every replica's dispatcher at once instead of at its next poll. The database sends the
//! notification itself, at commit (triggers on `jobs` and `dispatcher_state`, see the migration
//! `m20261130_000005_replicas`). Notifications sent while the listener reconnects are lost, so the
//! caller is woken once after every (re)connect, and keeps polling as the fallback.

use std::time::Duration;

use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::PgListener;

use crate::Store;

/// The channel the triggers notify.
pub const CHANNEL: &str = "enrichd_dispatch";

impl Store {
    /// Calls `wake` for every notification that work arrived, and once after each (re)connect;
    /// runs until the task is dropped. Returns at once on SQLite (one process, woken in-process).
    pub async fn listen_for_work(&self, wake: impl Fn()) {
        if self.backend() != DbBackend::Postgres {
            return;
        }
        let pool = self.db.get_postgres_connection_pool().clone();
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for wake-ups; polling meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            wake();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => wake(),
                    // The connection was lost: the next `try_recv` reconnects and listens again,
                    // and what was sent meanwhile is lost, so look for work once.
                    Ok(None) => wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up listener failed; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }
}
