//! `dry_run`: what a job would take (nothing stored, no call): people after dedup, people an
//! earlier lookup would answer (counted by the store), calls and worst-case credits for the rest,
//! time at the configured limit.

use std::time::Duration;

use apollo_client::{Credits, Flag};
use rules::budget;

use crate::core::validate::ValidJob;
use crate::models::{Estimate, EstimateCredits};

/// The estimate of `job` of which `reusable` people an earlier lookup answers; `per_minute` is the
/// configured call limit (`None`: learned from Apollo's headers only, so no time is promised).
pub fn estimate(job: &ValidJob, reusable: usize, per_minute: Option<u32>, minute: Duration) -> Estimate {
    let unique = job.unique_keys().len() as i64;
    let reusable = (reusable as i64).min(unique);
    let sent = unique - reusable;
    let calls = (sent + job_store::claims::BATCH_SIZE as i64 - 1) / job_store::claims::BATCH_SIZE as i64;
    let times = |c: Credits| Credits(c.micros() * sent);
    let mut credits = EstimateCredits { sync_match: times(budget::SYNC_MATCH), ..EstimateCredits::default() };
    for f in job.flags.on() {
        *credits.of_flag(f) = times(budget::price(f));
    }
    let total = Flag::ALL.into_iter().fold(credits.sync_match, |sum, f| sum + *credits.of_flag(f));
    let seconds_at_limit = per_minute.filter(|m| *m > 0).map(|m| {
        let minutes = (calls as u64).div_ceil(u64::from(m)).saturating_sub(1);
        minutes as f64 * minute.as_secs_f64()
    });
    Estimate {
        people: job.people.len() as i64,
        unique,
        reusable,
        calls,
        worst_case_credits: EstimateCredits { total, ..credits },
        seconds_at_limit,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::callback_url::CallbackPolicy;
    use crate::core::validate::validate_job;

    #[test]
    fn dedup_calls_and_worst_case_per_flag() {
        let mut people: Vec<_> = (0..25).map(|i| json!({"email": format!("p{i}@x.com")})).collect();
        people.push(json!({"email": "P3@X.com"}));
        let body = json!({"people": people, "reveal_phone_number": true, "run_waterfall_email": true});
        let job = validate_job(&body, 100, &CallbackPolicy::default()).unwrap();
        let e = estimate(&job, 0, Some(2), Duration::from_secs(60));
        assert_eq!((e.people, e.unique, e.calls), (26, 25, 3));
        let c = e.worst_case_credits;
        assert_eq!(c.sync_match, Credits::whole(25));
        assert_eq!(c.phone_reveal, Credits::whole(200));
        assert_eq!(c.waterfall_email, Credits::whole(100));
        assert_eq!((c.personal_emails, c.waterfall_phone), (Credits::ZERO, Credits::ZERO));
        assert_eq!(c.total, Credits::whole(325));
        assert_eq!(e.seconds_at_limit, Some(60.0), "3 calls at 2 a minute: the third waits one minute");
        assert_eq!(estimate(&job, 0, None, Duration::from_secs(60)).seconds_at_limit, None);
        // Five answered by earlier lookups: 20 sent, in 2 calls, worst case for 20.
        let reused = estimate(&job, 5, Some(2), Duration::from_secs(60));
        assert_eq!((reused.unique, reused.reusable, reused.calls), (25, 5, 2));
        assert_eq!(reused.worst_case_credits.total, Credits::whole(260));
    }
}
