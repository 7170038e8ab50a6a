//! SQLite's one writer as this process shares it: the gate its writers queue at, the thread its
//! writes run on, and the group commits that batch what arrives together. On PostgreSQL the gate
//! is absent and everything runs on the shared runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub mod group_commit;
pub mod thread;

/// Held while a write runs (SQLite); nothing on PostgreSQL.
pub(crate) type WriteGate = Option<GateGuard>;

/// SQLite's one writer, as this process's writers share it: first come first served, except that
/// background writers (merging stored deliveries) stand aside while foreground writers (storing
/// what Apollo sends, recording paid answers, claiming) wait or have just written, for at most
/// [`BACKGROUND_YIELD`] per turn so merges still progress under a flood.
#[derive(Debug)]
pub(crate) struct Gate {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Foreground writers waiting for `lock`.
    foreground_waiting: AtomicUsize,
    /// When a foreground writer last let go, in µs since `origin`.
    foreground_done: AtomicU64,
    origin: tokio::time::Instant,
    /// Signalled when no foreground writer is left waiting.
    clear: tokio::sync::Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            lock: Arc::default(),
            foreground_waiting: AtomicUsize::new(0),
            foreground_done: AtomicU64::new(0),
            origin: tokio::time::Instant::now(),
            clear: tokio::sync::Notify::new(),
        }
    }
}

/// Longest a background writer stands aside for foreground writers before it queues with them.
const BACKGROUND_YIELD: Duration = Duration::from_millis(50);

/// How long the writer must have been free of foreground writes before a background writer
/// takes it: the next webhook group is usually on its way already. Under a flood of webhooks the
/// gaps between groups last a few milliseconds; a shorter quiet let merges slip into most of them
/// and hold the writer, so merges wait for the flood's end or their turn after [`BACKGROUND_YIELD`].
const FOREGROUND_QUIET: Duration = Duration::from_millis(8);

/// Counts a foreground writer as waiting until dropped (also when its future is cancelled).
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.foreground_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

/// Holds SQLite's writer for this process; a foreground holder notes when it lets go.
pub(crate) struct GateGuard {
    _lock: tokio::sync::OwnedMutexGuard<()>,
    foreground: Option<Arc<Gate>>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let Some(gate) = &self.foreground {
            gate.foreground_done.store(gate.micros(tokio::time::Instant::now()), Ordering::Release);
        }
    }
}

impl Gate {
    fn micros(&self, t: tokio::time::Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) async fn foreground(self: &Arc<Self>) -> GateGuard {
        self.foreground_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self);
        let lock = self.lock.clone().lock_owned().await;
        GateGuard { _lock: lock, foreground: Some(self.clone()) }
    }

    pub(crate) async fn background(&self) -> GateGuard {
        let until = tokio::time::Instant::now() + BACKGROUND_YIELD;
        loop {
            let clear = self.clear.notified();
            tokio::pin!(clear);
            clear.as_mut().enable();
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            if self.wanted() {
                if tokio::time::timeout_at(until, clear).await.is_err() {
                    break;
                }
                continue;
            }
            let quiet_from =
                self.origin + Duration::from_micros(self.foreground_done.load(Ordering::Acquire)) + FOREGROUND_QUIET;
            if quiet_from <= now {
                break;
            }
            tokio::time::sleep_until(quiet_from.min(until)).await;
        }
        GateGuard { _lock: self.lock.clone().lock_owned().await, foreground: None }
    }

    /// Whether a foreground writer is waiting.
    pub(crate) fn wanted(&self) -> bool {
        self.foreground_waiting.load(Ordering::Acquire) > 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{BACKGROUND_YIELD, Gate};

    /// Takes the gate as `who` (background or not), notes the order, holds it for `hold`.
    fn take(
        gate: &Arc<Gate>,
        order: &Arc<Mutex<Vec<&'static str>>>,
        who: &'static str,
        background: bool,
        hold: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (gate, order) = (gate.clone(), order.clone());
        tokio::spawn(async move {
            let _g = if background { gate.background().await } else { gate.foreground().await };
            order.lock().unwrap().push(who);
            tokio::time::sleep(hold).await;
        })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    #[tokio::test]
    async fn foreground_writers_go_before_a_waiting_background_writer() {
        let (gate, order) = (Arc::new(Gate::default()), Arc::new(Mutex::new(Vec::new())));
        let f1 = take(&gate, &order, "f1", false, Duration::from_millis(20));
        settle().await;
        let f2 = take(&gate, &order, "f2", false, Duration::from_millis(5));
        settle().await;
        assert!(gate.wanted());
        let b = take(&gate, &order, "b", true, Duration::ZERO);
        settle().await;
        // Queued after the background writer, still before it: it stands aside.
        let f3 = take(&gate, &order, "f3", false, Duration::ZERO);
        for t in [f1, f2, b, f3] {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["f1", "f2", "f3", "b"]);
        assert!(!gate.wanted());
    }

    #[tokio::test]
    async fn a_background_writer_stands_aside_for_a_bounded_time() {
        let (gate, order) = (Arc::new(Gate::default()), Arc::new(Mutex::new(Vec::new())));
        // Foreground writers waiting all along.
        let f1 = take(&gate, &order, "f1", false, BACKGROUND_YIELD * 4);
        settle().await;
        let f2 = take(&gate, &order, "f2", false, Duration::ZERO);
        settle().await;
        let b = take(&gate, &order, "b", true, Duration::ZERO);
        // Long after the background writer's turn came: it queued before this one.
        tokio::time::sleep(BACKGROUND_YIELD * 2).await;
        let f3 = take(&gate, &order, "f3", false, Duration::ZERO);
        for t in [f1, f2, b, f3] {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["f1", "f2", "b", "f3"]);
    }

    #[tokio::test]
    async fn a_foreground_writer_that_gives_up_stops_counting_as_waiting() {
        let (gate, order) = (Arc::new(Gate::default()), Arc::new(Mutex::new(Vec::new())));
        let f1 = take(&gate, &order, "f1", false, Duration::from_millis(50));
        settle().await;
        let f2 = take(&gate, &order, "f2", false, Duration::ZERO);
        settle().await;
        assert!(gate.wanted());
        f2.abort();
        settle().await;
        assert!(!gate.wanted());
        f1.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["f1"]);
    }
}
