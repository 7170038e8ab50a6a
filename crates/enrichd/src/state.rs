//! What handlers and workers share: the store, the Apollo client, the keys, and wake-up signals.

use std::sync::Arc;

use apollo_client::ApolloClient;
use job_store::Store;
use tokio::sync::Notify;

use crate::config::Config;
use crate::core::keys::KeySet;
use crate::core::signing::SigningSecret;

/// Signals that wake a worker at once instead of at its next tick.
#[derive(Debug, Default)]
pub struct Wakers {
    /// New work to dispatch (a job was created, dispatch resumed).
    pub dispatch: Notify,
    /// A delivery was stored or a sync result recorded.
    pub ingest: Notify,
    /// A job completed or a redelivery was asked for.
    pub callbacks: Notify,
    /// People may have finished (a sync answer or a delivery was recorded, a job completed).
    pub person_events: Notify,
}

/// Shared by every handler and worker of one process.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The configuration.
    pub config: Arc<Config>,
    /// The Apollo client.
    pub apollo: ApolloClient,
    /// Client API keys.
    pub keys: Arc<KeySet>,
    /// Operator keys (`/v1/admin/*`).
    pub admin_keys: Arc<KeySet>,
    /// Signs every callback.
    pub signer: SigningSecret,
    /// Wake-up signals.
    pub wake: Arc<Wakers>,
    /// This process's name in leases.
    pub owner: String,
    /// Group-commit writer of webhook deliveries.
    pub deliveries: job_store::writer::group_commit::DeliveryWriter,
    /// Group-commit writer of the calls' synchronous answers.
    pub answers: job_store::writer::group_commit::AnswerWriter,
    /// Where the tasks that hold SQLite's writer run.
    pub writer: Arc<job_store::writer::thread::WriterThread>,
    /// Batches' webhook secrets already read (a webhook burst reads each a few times).
    pub webhook_secrets: Arc<SecretCache>,
    /// The drain switch (SIGTERM) and the work shutdown waits for.
    pub drain: crate::shutdown::Drain,
    /// Work whose leases the heartbeat renews.
    pub held: Arc<crate::core::leases::Held>,
}

/// Batch id → webhook secret, as read from the store. A batch's secret never changes, so a hit is
/// as good as a read; a batch deleted since is still refused when its delivery is stored.
#[derive(Default)]
pub struct SecretCache(std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<str>>>);

/// Most secrets kept; past that the cache starts over (a burst is about recent batches).
const SECRETS_KEPT: usize = 10_000;

impl SecretCache {
    /// The secret of `batch_id`: cached, or read from the store (`None`: no such batch).
    pub async fn get(&self, store: &Store, batch_id: uuid::Uuid) -> job_store::StoreResult<Option<Arc<str>>> {
        if let Some(s) = self.0.lock().expect("secret cache").get(&batch_id) {
            return Ok(Some(s.clone()));
        }
        let Some(secret) = store.batch_webhook_secret(batch_id).await? else { return Ok(None) };
        let secret: Arc<str> = secret.into();
        let mut cache = self.0.lock().expect("secret cache");
        if cache.len() >= SECRETS_KEPT {
            cache.clear();
        }
        cache.insert(batch_id, secret.clone());
        Ok(Some(secret))
    }
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        let n = self.0.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("SecretCache").field("batches", &n).finish()
    }
}
