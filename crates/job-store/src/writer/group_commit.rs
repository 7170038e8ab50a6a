//! Group commit: writes that arrive together go to the database together, one transaction per
//! group, so durability costs one commit per group instead of one per write. Two writers use it:
//! Apollo's webhook deliveries (stored before the 200) and, on SQLite, the calls' synchronous
//! answers.

use std::future::Future;

use bytes::Bytes;

use crate::{InboundDelivery, Store, StoreError, StoredDelivery, SyncOutcome, SyncRecorded};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::thread::WriterThread;

/// Why a write could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store refused this write (unknown batch, database error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction of its group failed, or the writer is gone: retry later.
    #[error("storing failed: {0}")]
    Failed(String),
}

/// A write waiting for its group, and where its result goes.
type Pending<T, R> = (T, oneshot::Sender<Result<R, WriteError>>);

/// A queue whose task writes everything queued while the previous group was being written.
#[derive(Debug)]
struct GroupCommit<T, R> {
    tx: mpsc::Sender<Pending<T, R>>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        GroupCommit { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the task on the writer thread; `write` gets each group (at most `max` items) and
    /// returns one result per item, in order. The task ends when every handle is dropped.
    fn start<W, F>(writer: &WriterThread, max: usize, mut write: W) -> Self
    where
        W: FnMut(Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<Result<R, WriteError>>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Pending<T, R>>(4 * max);
        writer.spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < max {
                    match rx.try_recv() {
                        Ok(p) => group.push(p),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<T>, Vec<_>) = group.into_iter().unzip();
                let results = write(items).await;
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        GroupCommit { tx }
    }

    /// Queues `item`; returns once its group is committed.
    async fn write(&self, item: T) -> Result<R, WriteError> {
        let stopped = || WriteError::Failed("the writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Most deliveries written in one transaction.
const DELIVERY_GROUP: usize = 256;

/// A webhook delivery to store: its batch, the call (claim) its URL named, its body, its
/// deduplication key.
type Delivery = (Uuid, Option<i32>, Bytes, String);

/// The webhook route's writer.
#[derive(Clone, Debug)]
pub struct DeliveryWriter(GroupCommit<Delivery, StoredDelivery>);

impl DeliveryWriter {
    /// Starts the writer task on the writer thread.
    pub fn start(store: Store, writer: &WriterThread) -> DeliveryWriter {
        DeliveryWriter(GroupCommit::start(writer, DELIVERY_GROUP, move |group: Vec<Delivery>| {
            let store = store.clone();
            async move {
                let items: Vec<(InboundDelivery<'_>, &str)> = group
                    .iter()
                    .map(|(batch_id, claim, body, key)| {
                        (InboundDelivery { batch_id: *batch_id, claim: *claim, body }, key.as_str())
                    })
                    .collect();
                match store.store_keyed_deliveries(&items, chrono::Utc::now()).await {
                    Ok(results) => results.into_iter().map(|r| r.map_err(WriteError::from)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, deliveries = group.len(), "could not store a group of deliveries");
                        group.iter().map(|_| Err(WriteError::Failed(e.to_string()))).collect()
                    }
                }
            }
        }))
    }

    /// Stores one delivery durably; returns once its group is committed. Its key is computed
    /// here, on the caller's thread, so the writer's task only writes.
    pub async fn store(&self, batch_id: Uuid, claim: Option<i32>, body: Bytes) -> Result<StoredDelivery, WriteError> {
        let key = InboundDelivery { batch_id, claim, body: &body }.dedup_key();
        self.0.write((batch_id, claim, body, key)).await
    }
}

/// Most answers recorded in one transaction (more calls than this are seldom in flight).
const ANSWER_GROUP: usize = 32;

/// The dispatcher's writer of synchronous answers: grouped on SQLite, whose one writer records
/// them one after another anyway; on PostgreSQL each is recorded at once, in parallel with the
/// others (a queue there would only leave answers unrecorded longer, and a replica killed
/// meanwhile loses them).
#[derive(Clone, Debug)]
pub struct AnswerWriter {
    store: Store,
    group: Option<GroupCommit<SyncOutcome, SyncRecorded>>,
}

impl AnswerWriter {
    /// Starts the writer task on the writer thread (SQLite).
    pub fn start(store: Store, writer: &WriterThread) -> AnswerWriter {
        let group = (!store.is_shared()).then(|| {
            let store = store.clone();
            GroupCommit::start(writer, ANSWER_GROUP, move |group: Vec<SyncOutcome>| {
                let store = store.clone();
                async move {
                    match store.record_syncs(&group).await {
                        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                        // One answer the store refuses must not cost the others theirs: one by one.
                        Err(_) if group.len() > 1 => {
                            let mut out = Vec::with_capacity(group.len());
                            for outcome in group {
                                out.push(store.record_sync(outcome).await.map_err(WriteError::from));
                            }
                            out
                        }
                        Err(e) => vec![Err(WriteError::from(e))],
                    }
                }
            })
        });
        AnswerWriter { store, group }
    }

    /// Records one answer; returns once it (and its group) is committed.
    pub async fn record(&self, outcome: SyncOutcome) -> Result<SyncRecorded, WriteError> {
        match &self.group {
            Some(group) => group.write(outcome).await,
            None => Ok(self.store.record_sync(outcome).await?),
        }
    }
}
