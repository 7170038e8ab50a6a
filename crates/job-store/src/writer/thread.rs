//! The thread SQLite's writes run on.
//!
//! SQLite has one writer, and every statement of a write transaction is a round trip to the
//! connection's own thread. On the shared runtime each answer waited in the run queue behind HTTP
//! work before the next statement could go, so the writer sat idle between statements: the
//! writers that hold it (group commits, merges, claims) run on a thread of their own instead
//! (BENCHMARKS.md, sections 3 and 4). On PostgreSQL, which has no single writer and whose
//! connections belong to the runtime that opened them, everything stays on the shared runtime.

use std::future::Future;

use crate::{Store, StoreError, StoreResult};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where write-heavy tasks run; the thread (SQLite only) ends when this is dropped.
#[derive(Debug)]
pub struct WriterThread {
    handle: Handle,
    _stop: Option<oneshot::Sender<()>>,
}

impl WriterThread {
    /// A thread with its own single-threaded runtime on SQLite; the current runtime on PostgreSQL.
    pub fn start(store: &Store) -> std::io::Result<WriterThread> {
        if store.is_shared() {
            return Ok(WriterThread { handle: Handle::current(), _stop: None });
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name("enrichd-writer".into()).spawn(move || {
            // Ends when the sender is dropped; the tasks still on it are dropped with the runtime.
            let _ = runtime.block_on(stopped);
        })?;
        Ok(WriterThread { handle, _stop: Some(stop) })
    }

    /// Runs `task` there; its handle aborts nothing when dropped (like `tokio::spawn`).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// Runs the store call `task` there and waits for its result (a panic there panics here).
    pub async fn write<T, F>(&self, task: F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self.handle.spawn(task).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Stopping),
        }
    }
}
