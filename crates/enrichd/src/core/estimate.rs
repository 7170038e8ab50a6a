//! `dry_run`: what a job would take, computed from the validated request alone (nothing stored,
//! no call): people after dedup, calls, worst-case credits per flag, time at the configured limit.

use std::collections::HashSet;
use std::time::Duration;

use apollo_client::Credits;
use job_store::budget;

use crate::core::validate::ValidJob;
use crate::v1::models::{Estimate, EstimateCredits};

/// The estimate of `job`; `per_minute` is the configured call limit (`None`: learned from Apollo's
/// headers only, so no time is promised).
pub fn estimate(job: &ValidJob, per_minute: Option<u32>, minute: Duration) -> Estimate {
    let keys: Vec<Option<String>> = job.people.iter().map(job_store::person_key).collect();
    let unique = keys.iter().flatten().collect::<HashSet<_>>().len() as i64;
    let calls = (unique + job_store::claims::BATCH_SIZE as i64 - 1) / job_store::claims::BATCH_SIZE as i64;
    let each = |on: bool, c: Credits| if on { Credits(c.micros() * unique) } else { Credits::ZERO };
    let credits = EstimateCredits {
        sync_match: each(true, budget::SYNC_MATCH),
        personal_emails: each(job.reveal_personal_emails, budget::PERSONAL_EMAILS),
        phone_reveal: each(job.reveal_phone_number, budget::PHONE_REVEAL),
        waterfall_email: each(job.run_waterfall_email, budget::WATERFALL_EMAIL),
        waterfall_phone: each(job.run_waterfall_phone, budget::WATERFALL_PHONE),
        total: Credits::ZERO,
    };
    let total = credits.sync_match
        + credits.personal_emails
        + credits.phone_reveal
        + credits.waterfall_email
        + credits.waterfall_phone;
    let seconds_at_limit = per_minute.filter(|m| *m > 0).map(|m| {
        let minutes = (calls as u64).div_ceil(u64::from(m)).saturating_sub(1);
        minutes as f64 * minute.as_secs_f64()
    });
    Estimate {
        people: job.people.len() as i64,
        unique,
        reusable: 0,
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
        let e = estimate(&job, Some(2), Duration::from_secs(60));
        assert_eq!((e.people, e.unique, e.calls), (26, 25, 3));
        let c = e.worst_case_credits;
        assert_eq!(c.sync_match, Credits::whole(25));
        assert_eq!(c.phone_reveal, Credits::whole(200));
        assert_eq!(c.waterfall_email, Credits::whole(100));
        assert_eq!((c.personal_emails, c.waterfall_phone), (Credits::ZERO, Credits::ZERO));
        assert_eq!(c.total, Credits::whole(325));
        assert_eq!(e.seconds_at_limit, Some(60.0), "3 calls at 2 a minute: the third waits one minute");
        assert_eq!(estimate(&job, None, Duration::from_secs(60)).seconds_at_limit, None);
    }
}
