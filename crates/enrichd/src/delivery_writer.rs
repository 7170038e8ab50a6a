//! Group commit for the webhook route: concurrent deliveries are written together, so
//! durability costs one commit per group instead of one per delivery.

use actix_web::web::Bytes;
use job_store::{InboundDelivery, Store, StoreError, StoredDelivery};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most deliveries written in one transaction.
const GROUP_MAX: usize = 256;

/// Why a delivery could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store refused this delivery (unknown batch, database error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction of its group failed, or the writer is gone: retry later.
    #[error("storing the delivery failed: {0}")]
    Failed(String),
}

struct Pending {
    batch_id: Uuid,
    claim: Option<i32>,
    body: Bytes,
    reply: oneshot::Sender<Result<StoredDelivery, WriteError>>,
}

/// The webhook route's writer: one transaction for all deliveries that arrived while the
/// previous group was being written.
#[derive(Clone, Debug)]
pub struct DeliveryWriter {
    tx: mpsc::Sender<Pending>,
}

impl DeliveryWriter {
    /// Starts the writer task on the current runtime; it ends when every handle is dropped.
    pub fn start(store: Store) -> DeliveryWriter {
        let (tx, rx) = mpsc::channel(4 * GROUP_MAX);
        tokio::spawn(write_groups(store, rx));
        DeliveryWriter { tx }
    }

    /// Stores one delivery durably; returns once its group is committed.
    pub async fn store(&self, batch_id: Uuid, claim: Option<i32>, body: Bytes) -> Result<StoredDelivery, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { batch_id, claim, body, reply })
            .await
            .map_err(|_| WriteError::Failed("the delivery writer stopped".into()))?;
        answer.await.map_err(|_| WriteError::Failed("the delivery writer stopped".into()))?
    }
}

async fn write_groups(store: Store, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let items: Vec<InboundDelivery<'_>> = group
            .iter()
            .map(|p| InboundDelivery { batch_id: p.batch_id, claim: p.claim, body: p.body.as_ref() })
            .collect();
        match store.store_deliveries(&items, chrono::Utc::now()).await {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r.map_err(WriteError::from));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, deliveries = group.len(), "could not store a group of deliveries");
                for p in group {
                    let _ = p.reply.send(Err(WriteError::Failed(e.to_string())));
                }
            }
        }
    }
}
