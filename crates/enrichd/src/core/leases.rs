//! Work this process holds under a lease, for the heartbeat to renew: a batch in its call, a
//! callback being sent. Each entry is dropped with the work, and expires on its own after a limit,
//! so a call that hangs past its timeout does not hold its work forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Work this process holds under a lease, with the instant after which its lease is no longer
/// renewed (a call or a send that hangs past its timeout must not hold its work forever).
#[derive(Debug, Default)]
pub struct Held {
    batches: Mutex<HashMap<Uuid, Instant>>,
    callbacks: Mutex<HashMap<Uuid, Instant>>,
}

/// Which kind of work a [`Holding`] covers.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Batch,
    Callback,
}

/// One piece of held work; its lease is renewed until this is dropped (or its limit passes).
#[derive(Debug)]
pub struct Holding {
    held: Arc<Held>,
    kind: Kind,
    id: Uuid,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.held.map(self.kind).lock().expect("held work").remove(&self.id);
    }
}

impl Held {
    fn map(&self, kind: Kind) -> &Mutex<HashMap<Uuid, Instant>> {
        match kind {
            Kind::Batch => &self.batches,
            Kind::Callback => &self.callbacks,
        }
    }

    fn hold(self: &Arc<Self>, kind: Kind, id: Uuid, renew_for: Duration) -> Holding {
        self.map(kind).lock().expect("held work").insert(id, Instant::now() + renew_for);
        Holding { held: self.clone(), kind, id }
    }

    /// Holds a claimed batch's lease for at most `renew_for` from now.
    pub fn batch(self: &Arc<Self>, id: Uuid, renew_for: Duration) -> Holding {
        self.hold(Kind::Batch, id, renew_for)
    }

    /// Holds a leased callback's lease for at most `renew_for` from now.
    pub fn callback(self: &Arc<Self>, id: Uuid, renew_for: Duration) -> Holding {
        self.hold(Kind::Callback, id, renew_for)
    }

    /// The ids whose leases are still to be renewed at `now`.
    pub fn renewable(&self, now: Instant) -> (Vec<Uuid>, Vec<Uuid>) {
        let live = |kind| -> Vec<Uuid> {
            let mut ids: Vec<Uuid> = self
                .map(kind)
                .lock()
                .expect("held work")
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(id, _)| *id)
                .collect();
            // Rows are locked in id order, as every other writer of them does.
            ids.sort_unstable();
            ids
        };
        (live(Kind::Batch), live(Kind::Callback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_work_is_renewed_until_dropped_or_past_its_limit() {
        let held = Arc::new(Held::default());
        let (a, b, c) = (Uuid::from_u128(2), Uuid::from_u128(1), Uuid::from_u128(3));
        let ha = held.batch(a, Duration::from_secs(30));
        let _hb = held.batch(b, Duration::from_secs(30));
        let _hc = held.callback(c, Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(held.renewable(now), (vec![b, a], vec![c]), "in id order");
        drop(ha);
        assert_eq!(held.renewable(now).0, vec![b]);
        let later = now + Duration::from_secs(31);
        assert_eq!(held.renewable(later), (vec![], vec![]), "a hung call is not held forever");
    }
}
