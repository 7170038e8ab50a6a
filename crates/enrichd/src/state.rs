//! What handlers and workers share: the store, the Apollo client, the keys, and wake-up signals.

use std::collections::HashMap;
use std::sync::Arc;

use apollo_client::ApolloClient;
use job_store::Store;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::Config;
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
}

/// Client API keys, held as SHA-256 digests mapped to the client's name.
#[derive(Clone, Default)]
pub struct ClientKeys(HashMap<[u8; 32], String>);

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKeys({} keys)", self.0.len())
    }
}

impl ClientKeys {
    /// Parses `ENRICHD_API_KEYS`: comma-separated `key` or `name=key` entries.
    pub fn parse(keys: Option<&SecretString>) -> ClientKeys {
        let mut map = HashMap::new();
        let Some(keys) = keys else { return ClientKeys(map) };
        for entry in keys.expose_secret().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, key) = match entry.split_once('=') {
                Some((name, key)) => (name.trim().to_string(), key.trim()),
                None => (format!("key-{}", &hex(&digest(entry))[..8]), entry),
            };
            map.insert(digest(key), name);
        }
        ClientKeys(map)
    }

    /// The client a key belongs to. Comparing digests in a map leaks nothing useful about the key.
    pub fn client_for(&self, key: &str) -> Option<&str> {
        self.0.get(&digest(key)).map(String::as_str)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    pub keys: Arc<ClientKeys>,
    /// Signs final callbacks; `None` sends them unsigned (refused by `serve` unless configured).
    pub signer: Option<SigningSecret>,
    /// Wake-up signals.
    pub wake: Arc<Wakers>,
    /// This process's name in leases.
    pub owner: String,
    /// Group-commit writer of webhook deliveries.
    pub deliveries: crate::delivery_writer::DeliveryWriter,
}
