//! What a job would take (`dry_run`): calls and worst-case credits for the people that would be
//! sent, and the time those calls take at the configured limit.

use std::time::Duration;

use apollo_client::{Credits, EnrichFlags, Flag};

use crate::BATCH_SIZE;
use crate::budget;

/// The people of a job that will not be sent, as the store counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Excluded {
    /// Unique people (not on the do-not-enrich list) an earlier lookup answers.
    pub reusable: usize,
    /// People on the do-not-enrich list.
    pub suppressed: usize,
    /// Of the unique people, those on the list.
    pub suppressed_keys: usize,
}

/// The estimate of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// People in the request.
    pub people: i64,
    /// People left after dedup.
    pub unique: i64,
    /// People an earlier lookup answers (never more than `unique`).
    pub reusable: i64,
    /// People on the do-not-enrich list: never sent, no credit.
    pub suppressed: i64,
    /// Apollo calls for the rest.
    pub calls: i64,
    /// Worst-case credits of the synchronous match.
    pub sync_match: Credits,
    /// Worst-case credits of each flag asked for.
    pub flags: Vec<(Flag, Credits)>,
    /// The sum.
    pub total: Credits,
    /// Seconds the calls take at the per-minute limit; `None` without a configured limit.
    pub seconds_at_limit: Option<f64>,
}

/// The estimate of a job of `people` people (`unique` after dedup) less the people `excluded`
/// (answered by an earlier lookup, or on the do-not-enrich list: no call, no credit) under `flags`;
/// `per_minute` is the configured call limit (`None`: learned from Apollo's headers only, so no
/// time is promised) of windows of `minute`.
pub fn estimate(
    people: usize,
    unique: usize,
    excluded: Excluded,
    flags: EnrichFlags,
    per_minute: Option<u32>,
    minute: Duration,
) -> Estimate {
    let unique = unique as i64;
    let listed = (excluded.suppressed_keys as i64).min(unique);
    let reusable = (excluded.reusable as i64).min(unique - listed);
    let sent = unique - listed - reusable;
    let calls = (sent + BATCH_SIZE as i64 - 1) / BATCH_SIZE as i64;
    let times = |c: Credits| Credits(c.micros() * sent);
    let sync_match = times(budget::SYNC_MATCH);
    let flags: Vec<(Flag, Credits)> = flags.on().map(|f| (f, times(budget::price(f)))).collect();
    let total = flags.iter().fold(sync_match, |sum, (_, c)| sum + *c);
    let seconds_at_limit = per_minute.filter(|m| *m > 0).map(|m| {
        // The first minute's calls go at once; each further window waits one minute.
        let minutes = (calls as u64).div_ceil(u64::from(m)).saturating_sub(1);
        minutes as f64 * minute.as_secs_f64()
    });
    let suppressed = excluded.suppressed as i64;
    Estimate { people: people as i64, unique, reusable, suppressed, calls, sync_match, flags, total, seconds_at_limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_worst_case_per_flag() {
        let flags = EnrichFlags { reveal_phone_number: true, run_waterfall_email: true, ..EnrichFlags::NONE };
        let minute = Duration::from_secs(60);
        let none = Excluded::default();
        let e = estimate(26, 25, none, flags, Some(2), minute);
        assert_eq!((e.people, e.unique, e.calls), (26, 25, 3));
        assert_eq!(e.sync_match, Credits::whole(25));
        assert_eq!(
            e.flags,
            vec![(Flag::RevealPhoneNumber, Credits::whole(200)), (Flag::RunWaterfallEmail, Credits::whole(100))]
        );
        assert_eq!(e.total, Credits::whole(325));
        assert_eq!(e.seconds_at_limit, Some(60.0), "3 calls at 2 a minute: the third waits one minute");
        assert_eq!(estimate(26, 25, none, flags, None, minute).seconds_at_limit, None);
        assert_eq!(estimate(26, 25, none, flags, Some(0), minute).seconds_at_limit, None);
        // Five answered by earlier lookups: 20 sent, in 2 calls, worst case for 20.
        let reused = estimate(26, 25, Excluded { reusable: 5, ..none }, flags, Some(2), minute);
        assert_eq!((reused.unique, reused.reusable, reused.calls), (25, 5, 2));
        assert_eq!(reused.total, Credits::whole(260));
        assert_eq!(reused.seconds_at_limit, Some(0.0));
        // More reusable than unique cannot make a negative job.
        let all = estimate(3, 3, Excluded { reusable: 9, ..none }, EnrichFlags::NONE, Some(1), minute);
        assert_eq!((all.reusable, all.calls, all.total), (3, 0, Credits::ZERO));
        assert_eq!(estimate(11, 11, none, EnrichFlags::NONE, Some(1), minute).calls, 2);
        // Three on the do-not-enrich list (four people, with a duplicate) and five reused: 17 sent.
        let listed = Excluded { reusable: 5, suppressed: 4, suppressed_keys: 3 };
        let e = estimate(26, 25, listed, flags, Some(2), minute);
        assert_eq!((e.unique, e.reusable, e.suppressed, e.calls), (25, 5, 4, 2));
        assert_eq!(e.total, Credits::whole(13 * 17), "nothing for the listed people");
    }
}
