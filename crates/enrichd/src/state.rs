//! What handlers and workers share: the store, the Apollo client, the keys, and wake-up signals.

use std::sync::Arc;

use apollo_client::ApolloClient;
use job_store::Store;
use tokio::sync::Notify;

use crate::config::Config;
use crate::core::signing::SigningSecret;
use crate::v1::auth::KeySet;

/// Signals that wake a worker at once instead of at its next tick.
#[derive(Debug, Default)]
pub struct Wakers {
    /// New work to dispatch (a job was created, dispatch resumed).
    pub dispatch: Notify,
    /// A delivery was stored or a sync result recorded.
    pub ingest: Notify,
    /// A job completed or a redelivery was asked for.
    pub callbacks: Notify,
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
    pub deliveries: crate::delivery_writer::DeliveryWriter,
}
