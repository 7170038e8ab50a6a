//! Ingest: the delivery writer that stores what the webhook route receives (group commit), and
//! the worker that parses stored deliveries and merges them into people.
//!
//! The webhook route only stores and answers; parsing and merging happen here, so Apollo never
//! waits on a merge, and a delivery that came before its batch's synchronous answer simply stays
//! pending until the answer is recorded.

use std::time::Duration;

use actix_web::web::Bytes;
use apollo_client::parse_delivery;
use job_store::{ApplyOutcome, Store, StoreError, StoredDelivery};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::state::AppState;
use crate::worker::nap;

/// Runs the ingest loop until the task is dropped.
pub async fn run(state: AppState) {
    loop {
        match drain(&state).await {
            Ok(0) => nap(&state.wake.ingest, Duration::from_millis(500)).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ingest paused; database unavailable?");
                nap(&state.wake.ingest, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Processes one page of pending deliveries; returns how many it handled.
pub async fn drain(state: &AppState) -> Result<usize, job_store::StoreError> {
    let pending = state.store.pending_deliveries(100).await?;
    let mut handled = 0;
    for d in pending {
        match parse_delivery(&d.body) {
            Ok(parsed) => match state.store.apply_delivery(d.id, &parsed).await? {
                ApplyOutcome::Applied { unmatched, completed_jobs, .. } => {
                    handled += 1;
                    if !unmatched.is_empty() {
                        // People of other batches are never touched; note it for the audit trail.
                        tracing::warn!(delivery = %d.id, batch = %d.batch_id, count = unmatched.len(), "delivery named people outside its batch");
                    }
                    if !completed_jobs.is_empty() {
                        state.wake.callbacks.notify_one();
                    }
                }
                ApplyOutcome::AlreadyProcessed => handled += 1,
                ApplyOutcome::NotReady => {}
            },
            Err(e) => {
                tracing::warn!(delivery = %d.id, batch = %d.batch_id, error = %e, "unusable delivery kept with its error");
                state.store.fail_delivery(d.id, &e.to_string()).await?;
                handled += 1;
            }
        }
    }
    Ok(handled)
}

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
    body: Bytes,
    reply: oneshot::Sender<Result<StoredDelivery, WriteError>>,
}

/// Group commit for the webhook route: concurrent deliveries are written together, one
/// transaction for all that arrived while the previous group was being written, so durability
/// costs one commit per group instead of one per delivery.
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
    pub async fn store(&self, batch_id: Uuid, body: Bytes) -> Result<StoredDelivery, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { batch_id, body, reply })
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
        let items: Vec<(Uuid, &[u8])> = group.iter().map(|p| (p.batch_id, p.body.as_ref())).collect();
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
