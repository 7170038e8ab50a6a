//! People of a job per state: the counters a job row keeps.

use serde::{Deserialize, Serialize};

use crate::PersonState;

/// People of a job per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Queued.
    pub queued: i64,
    /// Submitted.
    pub submitted: i64,
    /// Awaiting asynchronous parts.
    pub awaiting_async: i64,
    /// Complete.
    pub complete: i64,
    /// Partial.
    pub partial: i64,
    /// Not found.
    pub not_found: i64,
    /// Invalid.
    pub invalid: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Left unsent: the job's credit budget ran out.
    #[serde(default)]
    pub skipped_budget: i64,
    /// Never sent: on the do-not-enrich list.
    #[serde(default)]
    pub suppressed: i64,
}

impl Counts {
    /// The count of one state.
    pub fn get(&self, state: PersonState) -> i64 {
        *self.slot(state)
    }

    /// Adds `n` to one state.
    pub fn add(&mut self, state: PersonState, n: i64) {
        *self.slot_mut(state) += n;
    }

    /// People still queued or in flight.
    pub fn open(&self) -> i64 {
        self.queued + self.submitted + self.awaiting_async
    }

    /// People in flight (sent, answer or parts pending).
    pub fn in_flight(&self) -> i64 {
        self.submitted + self.awaiting_async
    }

    /// Sum over every state.
    pub fn sum(&self) -> i64 {
        PersonState::ALL.iter().map(|s| self.get(*s)).sum()
    }

    fn slot(&self, state: PersonState) -> &i64 {
        match state {
            PersonState::Queued => &self.queued,
            PersonState::Submitted => &self.submitted,
            PersonState::AwaitingAsync => &self.awaiting_async,
            PersonState::Complete => &self.complete,
            PersonState::Partial => &self.partial,
            PersonState::NotFound => &self.not_found,
            PersonState::Invalid => &self.invalid,
            PersonState::Failed => &self.failed,
            PersonState::Cancelled => &self.cancelled,
            PersonState::SkippedBudget => &self.skipped_budget,
            PersonState::Suppressed => &self.suppressed,
        }
    }

    fn slot_mut(&mut self, state: PersonState) -> &mut i64 {
        match state {
            PersonState::Queued => &mut self.queued,
            PersonState::Submitted => &mut self.submitted,
            PersonState::AwaitingAsync => &mut self.awaiting_async,
            PersonState::Complete => &mut self.complete,
            PersonState::Partial => &mut self.partial,
            PersonState::NotFound => &mut self.not_found,
            PersonState::Invalid => &mut self.invalid,
            PersonState::Failed => &mut self.failed,
            PersonState::Cancelled => &mut self.cancelled,
            PersonState::SkippedBudget => &mut self.skipped_budget,
            PersonState::Suppressed => &mut self.suppressed,
        }
    }
}
