//! Per-person events: which ones a job asked for, and when a job's pending people are sealed into
//! events of at most `max_people` each.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CallbackEvent;

/// The person events a job asked for (its `events`; both opt-in, `job.completed` always comes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PersonEvents {
    /// `person.completed`: each person once, when it reaches a final state.
    pub completed: bool,
    /// `person.updated`: a person already final changed (a late part).
    pub updated: bool,
}

/// The names a job's `events` may hold.
pub const EVENT_NAMES: [&str; 2] = ["person.completed", "person.updated"];

impl PersonEvents {
    /// Whether any person event is asked for.
    pub fn any(self) -> bool {
        self.completed || self.updated
    }

    /// Whether `event` is one the job asked for.
    pub fn wants(self, event: CallbackEvent) -> bool {
        match event {
            CallbackEvent::PersonCompleted => self.completed,
            CallbackEvent::PersonUpdated => self.updated,
            CallbackEvent::JobCompleted | CallbackEvent::JobUpdated => false,
        }
    }

    /// The names asked for, in [`EVENT_NAMES`] order.
    pub fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.completed {
            out.push(EVENT_NAMES[0]);
        }
        if self.updated {
            out.push(EVENT_NAMES[1]);
        }
        out
    }

    /// Adds one requested name; an unknown one is refused with a message naming it.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        match name {
            "person.completed" => self.completed = true,
            "person.updated" => self.updated = true,
            "job.completed" | "job.updated" => {
                return Err(format!("{name:?} is always sent; events takes {}", EVENT_NAMES.join(", ")));
            }
            other => return Err(format!("unknown event {other:?}; known: {}", EVENT_NAMES.join(", "))),
        }
        Ok(())
    }
}

/// How a job's pending people are batched into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Most people in one event.
    pub max_people: u64,
    /// Longest a pending person waits before its event is sealed, full or not.
    pub max_wait: Duration,
}

/// How many of a job's `pending` people of one kind to seal now, the oldest having waited
/// `oldest_waited`: whole events of `max_people` while the oldest is younger than `max_wait`,
/// everyone once it is not, or when the job's completion waits for them (`flush`).
pub fn to_seal(pending: u64, oldest_waited: Duration, batching: Batching, flush: bool) -> u64 {
    let max = batching.max_people.max(1);
    if pending == 0 {
        0
    } else if flush || oldest_waited >= batching.max_wait {
        pending
    } else {
        pending / max * max
    }
}

/// The sizes of the events `n` sealed people make, in order: full events of `max_people`, the
/// rest last.
pub fn event_sizes(n: u64, max_people: u64) -> Vec<u64> {
    let max = max_people.max(1);
    let mut out = vec![max; usize::try_from(n / max).unwrap_or(usize::MAX)];
    if !n.is_multiple_of(max) {
        out.push(n % max);
    }
    out
}

/// Most `person.completed` events a job of `final_people` people makes when no pending person
/// waits out `max_wait` (each seal then takes whole events, and the completion flushes the rest).
pub fn completed_events_bound(final_people: u64, max_people: u64) -> u64 {
    final_people.div_ceil(max_people.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Batching = Batching { max_people: 100, max_wait: Duration::from_secs(5) };

    #[test]
    fn whole_events_until_the_wait_or_a_flush() {
        assert_eq!(to_seal(0, Duration::from_secs(60), B, true), 0);
        assert_eq!(to_seal(99, Duration::from_secs(1), B, false), 0);
        assert_eq!(to_seal(100, Duration::ZERO, B, false), 100);
        assert_eq!(to_seal(250, Duration::from_secs(4), B, false), 200);
        assert_eq!(to_seal(250, Duration::from_secs(5), B, false), 250);
        assert_eq!(to_seal(7, Duration::ZERO, B, true), 7);
        let one = Batching { max_people: 0, max_wait: Duration::from_secs(5) };
        assert_eq!(to_seal(3, Duration::ZERO, one, false), 3, "zero is read as one");
    }

    #[test]
    fn sizes_are_full_events_then_the_rest() {
        assert_eq!(event_sizes(0, 100), Vec::<u64>::new());
        assert_eq!(event_sizes(250, 100), vec![100, 100, 50]);
        assert_eq!(event_sizes(200, 100), vec![100, 100]);
        assert_eq!(completed_events_bound(2_000, 100), 20);
        assert_eq!(completed_events_bound(2_001, 100), 21);
        assert_eq!(completed_events_bound(0, 100), 0);
    }

    #[test]
    fn names_parse_and_unknown_ones_are_named() {
        let mut e = PersonEvents::default();
        e.add("person.updated").unwrap();
        assert_eq!((e.completed, e.updated, e.names()), (false, true, vec!["person.updated"]));
        assert!(e.wants(CallbackEvent::PersonUpdated) && !e.wants(CallbackEvent::PersonCompleted));
        assert!(e.add("person.deleted").unwrap_err().contains("\"person.deleted\""));
        assert!(e.add("job.completed").unwrap_err().contains("always sent"));
    }
}
