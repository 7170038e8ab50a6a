//! Graceful shutdown. A deploy sends SIGTERM and waits before SIGKILL; in that time the process
//! stops taking new work, lets the Apollo calls it already sent be answered and recorded (an
//! abandoned call is paid again by its retry), hands everything else back at once, and keeps
//! serving webhooks and reads until it exits.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The process's drain switch and the work that must finish before it exits.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    switch: CancellationToken,
    /// Apollo calls sent (with the recording of their answers) and callbacks being sent.
    in_flight: TaskTracker,
}

impl Drain {
    /// Starts draining: `/readyz` answers 503 and workers start no new work.
    pub fn begin(&self) {
        self.switch.cancel();
        self.in_flight.close();
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.switch.is_cancelled()
    }

    /// Resolves once draining has begun.
    pub async fn begun(&self) {
        self.switch.cancelled().await
    }

    /// Runs `work` as work that shutdown waits for.
    pub fn track<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.in_flight.spawn(work)
    }

    /// Tracked work still running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits until every tracked task has ended (after [`Drain::begin`]), or `limit` passes;
    /// returns whether they all ended.
    pub async fn settled(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.in_flight.wait()).await.is_ok()
    }
}

/// Resolves at the first SIGTERM or SIGINT (a container's PID 1 gets SIGTERM, a terminal Ctrl-C).
pub async fn signalled() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_only_when_tracked_work_ends() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        drain.track(async move {
            let _ = rx.await;
        });
        drain.begin();
        assert!(drain.is_draining());
        assert_eq!(drain.in_flight(), 1);
        assert!(!drain.settled(Duration::from_millis(50)).await, "a call still running holds the drain");
        tx.send(()).unwrap();
        assert!(drain.settled(Duration::from_secs(5)).await);
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn begun_wakes_waiters() {
        let drain = Drain::default();
        let waiter = tokio::spawn({
            let d = drain.clone();
            async move { d.begun().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.begin();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
