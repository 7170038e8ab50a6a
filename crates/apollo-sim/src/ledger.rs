//! The credits ledger: every charge the simulator made, so tests can hold a service's accounting
//! against it.

use std::time::SystemTime;

use apollo_client::{Credits, RequestId};

/// What a charge paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargeKind {
    /// The synchronous answer: 1 credit per matched person (not charged on waterfall requests,
    /// whose synchronous answer reports no credits).
    Sync,
    /// The phone-reveal payload: 8 credits per mobile delivered.
    Phone,
    /// The waterfall payload: 1–4 per email and 8–25 per phone found.
    Waterfall,
}

/// One charge.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// The `bulk_match` request it belongs to.
    pub request_id: RequestId,
    /// What it paid for.
    pub kind: ChargeKind,
    /// The amount, equal to the `credits_consumed` the simulator reported for it.
    pub credits: Credits,
    /// Apollo ids of the people charged.
    pub people: Vec<String>,
    /// When it was charged.
    pub at: SystemTime,
}

/// Every charge so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// The sum of all entries.
    pub total: Credits,
    /// The charges, in order.
    pub entries: Vec<LedgerEntry>,
}

impl Ledger {
    /// Records a charge.
    pub fn charge(&mut self, entry: LedgerEntry) {
        self.total += entry.credits;
        self.entries.push(entry);
    }

    /// The credits charged for one request (all kinds).
    pub fn total_for(&self, request_id: RequestId) -> Credits {
        self.entries.iter().filter(|e| e.request_id == request_id).map(|e| e.credits).sum()
    }

    /// The credits charged for one kind of work.
    pub fn total_of(&self, kind: ChargeKind) -> Credits {
        self.entries.iter().filter(|e| e.kind == kind).map(|e| e.credits).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up() {
        let mut l = Ledger::default();
        let entry = |id, kind, n| LedgerEntry {
            request_id: RequestId(id),
            kind,
            credits: Credits::whole(n),
            people: vec![],
            at: SystemTime::now(),
        };
        l.charge(entry(1, ChargeKind::Sync, 2));
        l.charge(entry(1, ChargeKind::Phone, 16));
        l.charge(entry(-7, ChargeKind::Waterfall, 12));
        assert_eq!(l.total, Credits::whole(30));
        assert_eq!(l.total_for(RequestId(1)), Credits::whole(18));
        assert_eq!(l.total_of(ChargeKind::Waterfall), Credits::whole(12));
    }
}
