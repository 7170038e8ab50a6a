//! `POST /v1/jobs/{id}/retry`: which states a retry may take people from, when a job can be
//! retried, and the new job (the original's flags and settings, only those people, linked).

use job_store::{JobView, NewJob};
use rules::PersonState;
use serde_json::Value;

use crate::models::Problem;

/// The states whose people a retry may take.
pub const RETRYABLE: [PersonState; 3] = [PersonState::Failed, PersonState::Partial, PersonState::NotFound];

/// The states taken when the request names none.
pub const DEFAULT_STATES: [PersonState; 2] = [PersonState::Failed, PersonState::Partial];

/// The states asked for (`None`: the default), or one problem per state that cannot be retried.
pub fn retry_states(asked: Option<&[String]>) -> Result<Vec<PersonState>, Vec<Problem>> {
    let Some(asked) = asked else { return Ok(DEFAULT_STATES.to_vec()) };
    if asked.is_empty() {
        return Err(vec![Problem {
            field: "states".into(),
            index: None,
            message: "must name at least one of failed, partial, not_found".into(),
        }]);
    }
    let mut states = Vec::with_capacity(asked.len());
    let mut problems = Vec::new();
    for (i, name) in asked.iter().enumerate() {
        match RETRYABLE.iter().find(|s| s.as_str() == name.trim()) {
            Some(s) if !states.contains(s) => states.push(*s),
            Some(_) => {}
            None => problems.push(Problem {
                field: format!("states[{i}]"),
                index: Some(i),
                message: format!("{name:?} cannot be retried; use failed, partial or not_found"),
            }),
        }
    }
    if problems.is_empty() { Ok(states) } else { Err(problems) }
}

/// Why a job cannot be retried (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefusal {
    /// People may still change: retry once it has finished.
    #[error("the job is still running; retry it once it has finished")]
    Running,
    /// Its inputs are gone.
    #[error("the job was erased: its people's inputs are gone")]
    Erased,
}

/// Whether `job` can be retried now.
pub fn can_retry(job: &JobView) -> Result<(), RetryRefusal> {
    if job.erased_at.is_some() {
        Err(RetryRefusal::Erased)
    } else if job.completed_at.is_none() {
        Err(RetryRefusal::Running)
    } else {
        Ok(())
    }
}

/// The new job: `people` (their original inputs) with the original's flags, callback URL,
/// metadata, budget and reuse setting, for the same client, linked by `retry_of`.
pub fn retry_job(original: &JobView, people: Vec<Value>, idempotency_key: Option<String>) -> NewJob {
    NewJob {
        client: original.client.clone(),
        idempotency_key,
        options: original.options,
        callback_url: original.callback_url.clone(),
        metadata: original.metadata.clone(),
        people: people.into_iter().map(Into::into).collect(),
        max_credits: original.max_credits,
        daily_cap: None,
        retry_of: Some(original.id),
        reuse: original.reuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_and_explicit_states() {
        assert_eq!(retry_states(None).unwrap(), vec![PersonState::Failed, PersonState::Partial]);
        let asked = names(&["not_found", "failed", "not_found"]);
        assert_eq!(retry_states(Some(&asked)).unwrap(), vec![PersonState::NotFound, PersonState::Failed]);
    }

    #[test]
    fn other_states_are_named() {
        let asked = names(&["failed", "complete", "queued"]);
        let problems = retry_states(Some(&asked)).unwrap_err();
        assert_eq!(problems.iter().map(|p| p.field.as_str()).collect::<Vec<_>>(), ["states[1]", "states[2]"]);
        assert!(problems[0].message.contains("\"complete\""), "{problems:?}");
        assert_eq!(retry_states(Some(&[])).unwrap_err()[0].field, "states");
    }
}
