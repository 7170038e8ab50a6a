//! The reuse window: a person looked up recently is answered from the stored record instead of a
//! new Apollo call, and one whose lookup is in flight waits for it. The rules are plain functions
//! ([`answers`], [`will_answer`]); claims ask them about the earlier people with the same person key.
//!
//! Reused: `complete` people, and `partial` ones when the parts they lack are not asked for
//! (`not_found` people are not: a later lookup may find them, and they cost nothing).

use apollo_client::{EnrichFlags, Flag};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::PersonState;
use crate::lifecycle::Part;

/// A job's reuse setting (`reuse_within`, and the server's `REUSE_SCOPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReusePolicy {
    /// How old an earlier lookup may be, in seconds.
    pub within_secs: i64,
    /// Earlier lookups of every client count, not only the job's own client's.
    pub shared: bool,
}

/// An earlier person with the same person key, as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earlier {
    /// Its job's client.
    pub client: String,
    /// Its job's flags.
    pub flags: EnrichFlags,
    /// Its state.
    pub state: PersonState,
    /// The parts that never came (for `partial`).
    pub missing: Vec<Part>,
    /// When its record last changed.
    pub enriched_at: DateTime<Utc>,
    /// When its job finished.
    pub job_completed_at: Option<DateTime<Utc>>,
    /// Its job was erased.
    pub job_erased: bool,
    /// It has a merged record.
    pub has_record: bool,
}

/// The asynchronous part that brings a flag's answer (`None`: the synchronous answer does).
pub fn part_of(flag: Flag) -> Option<Part> {
    match flag {
        Flag::RevealPersonalEmails => None,
        Flag::RevealPhoneNumber => Some(Part::Phone),
        Flag::RunWaterfallEmail | Flag::RunWaterfallPhone => Some(Part::Waterfall),
    }
}

/// The flags whose answers an earlier lookup holds: its job's, less the parts that never came.
pub fn held_flags(flags: EnrichFlags, missing: &[Part]) -> EnrichFlags {
    EnrichFlags::of(flags.on().filter(|f| part_of(*f).is_none_or(|p| !missing.contains(&p))))
}

/// Whether `have` asks Apollo for everything `want` asks for (the same flags or a superset).
pub fn covers(have: EnrichFlags, want: EnrichFlags) -> bool {
    want.bits() & !have.bits() == 0
}

/// Whether the earlier lookup is in `client`'s scope.
fn in_scope(policy: &ReusePolicy, client: &str, e: &Earlier) -> bool {
    policy.shared || e.client == client
}

/// Whether `e` answers a person of `client`'s job asking for `want` now: a matched record
/// (`complete`, or `partial` when the parts it lacks are not asked for), in scope, not erased,
/// enriched within the window, from a job that did not finish before the window (so never one
/// past retention: the window is at most the retention period).
pub fn answers(policy: &ReusePolicy, client: &str, want: EnrichFlags, now: DateTime<Utc>, e: &Earlier) -> bool {
    let since = now - TimeDelta::seconds(policy.within_secs);
    matches!(e.state, PersonState::Complete | PersonState::Partial)
        && e.has_record
        && !e.job_erased
        && in_scope(policy, client, e)
        && e.enriched_at >= since
        && e.job_completed_at.is_none_or(|c| c >= since)
        && covers(held_flags(e.flags, &e.missing), want)
}

/// Whether `e` is a lookup in flight (sent, answer or parts pending) that will answer such a
/// person: the later person waits for it instead of calling.
pub fn will_answer(policy: &ReusePolicy, client: &str, want: EnrichFlags, e: &Earlier) -> bool {
    matches!(e.state, PersonState::Submitted | PersonState::AwaitingAsync)
        && !e.job_erased
        && in_scope(policy, client, e)
        && covers(e.flags, want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: EnrichFlags = EnrichFlags { reveal_phone_number: true, ..EnrichFlags::NONE };

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::hours(h)
    }

    fn policy(hours: i64, shared: bool) -> ReusePolicy {
        ReusePolicy { within_secs: hours * 3600, shared }
    }

    fn earlier() -> Earlier {
        Earlier {
            client: "crm".into(),
            flags: PHONE,
            state: PersonState::Complete,
            missing: vec![],
            enriched_at: at(100),
            job_completed_at: Some(at(100)),
            job_erased: false,
            has_record: true,
        }
    }

    #[test]
    fn flags_must_be_the_same_or_more() {
        let p = policy(24, false);
        assert!(answers(&p, "crm", PHONE, at(101), &earlier()));
        assert!(answers(&p, "crm", EnrichFlags::default(), at(101), &earlier()), "a subset");
        let more = EnrichFlags { run_waterfall_email: true, ..PHONE };
        assert!(!answers(&p, "crm", more, at(101), &earlier()), "waterfall was never asked");
        let partial = Earlier { state: PersonState::Partial, missing: vec![Part::Phone], ..earlier() };
        assert!(!answers(&p, "crm", PHONE, at(101), &partial), "the phone never came");
        assert!(answers(&p, "crm", EnrichFlags::default(), at(101), &partial), "the match did");
    }

    #[test]
    fn window_scope_and_erasure() {
        let e = earlier();
        assert!(answers(&policy(24, false), "crm", PHONE, at(124), &e), "the window's edge is in");
        assert!(!answers(&policy(24, false), "crm", PHONE, at(125), &e), "past the window");
        let late_part = Earlier { enriched_at: at(110), ..e.clone() };
        assert!(!answers(&policy(24, false), "crm", PHONE, at(125), &late_part), "its job finished before the window");
        assert!(!answers(&policy(24, false), "sheets", PHONE, at(101), &e), "another client");
        assert!(answers(&policy(24, true), "sheets", PHONE, at(101), &e), "shared scope");
        assert!(!answers(&policy(24, true), "crm", PHONE, at(101), &Earlier { job_erased: true, ..e.clone() }));
        assert!(!answers(&policy(24, true), "crm", PHONE, at(101), &Earlier { has_record: false, ..e.clone() }));
        for state in [PersonState::NotFound, PersonState::Failed, PersonState::AwaitingAsync, PersonState::Queued] {
            assert!(!answers(&policy(24, true), "crm", PHONE, at(101), &Earlier { state, ..e.clone() }), "{state}");
        }
    }

    #[test]
    fn a_lookup_in_flight_is_waited_for() {
        let p = policy(24, false);
        let flying = Earlier { state: PersonState::AwaitingAsync, job_completed_at: None, ..earlier() };
        assert!(will_answer(&p, "crm", PHONE, &flying));
        assert!(will_answer(&p, "crm", PHONE, &Earlier { state: PersonState::Submitted, ..flying.clone() }));
        assert!(!will_answer(&p, "crm", PHONE, &Earlier { state: PersonState::Queued, ..flying.clone() }));
        assert!(!will_answer(&p, "sheets", PHONE, &flying), "another client's");
        let more = EnrichFlags { run_waterfall_phone: true, ..PHONE };
        assert!(!will_answer(&p, "crm", more, &flying), "it does not ask for the waterfall");
        assert!(!will_answer(&p, "crm", PHONE, &Earlier { job_erased: true, ..flying }));
    }
}
