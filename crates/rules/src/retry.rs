//! Retrying a finished job's people (`POST /v1/jobs/{id}/retry`): which states a retry may take
//! people from, and when a job can be retried.

use crate::problem::FieldProblem;
use crate::states::PersonState;

/// The states whose people a retry may take.
pub const RETRYABLE: [PersonState; 3] = [PersonState::Failed, PersonState::Partial, PersonState::NotFound];

/// The states taken when the request names none.
pub const DEFAULT_STATES: [PersonState; 2] = [PersonState::Failed, PersonState::Partial];

/// The states asked for (`None`: the default), or one problem per state that cannot be retried.
pub fn retry_states(asked: Option<&[String]>) -> Result<Vec<PersonState>, Vec<FieldProblem>> {
    let Some(asked) = asked else { return Ok(DEFAULT_STATES.to_vec()) };
    if asked.is_empty() {
        return Err(vec![FieldProblem::new("states", None, "must name at least one of failed, partial, not_found")]);
    }
    let mut states = Vec::with_capacity(asked.len());
    let mut problems = Vec::new();
    for (i, name) in asked.iter().enumerate() {
        match RETRYABLE.iter().find(|s| s.as_str() == name.trim()) {
            Some(s) if !states.contains(s) => states.push(*s),
            Some(_) => {}
            None => problems.push(FieldProblem::new(
                format!("states[{i}]"),
                Some(i),
                format!("{name:?} cannot be retried; use failed, partial or not_found"),
            )),
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

/// Whether a job can be retried now: not once `erased`, nor before it has `finished`.
pub fn can_retry(erased: bool, finished: bool) -> Result<(), RetryRefusal> {
    if erased {
        Err(RetryRefusal::Erased)
    } else if !finished {
        Err(RetryRefusal::Running)
    } else {
        Ok(())
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
    fn a_job_is_retried_once_finished_and_never_once_erased() {
        assert_eq!(can_retry(false, true), Ok(()));
        assert_eq!(can_retry(false, false), Err(RetryRefusal::Running));
        assert_eq!(can_retry(true, true), Err(RetryRefusal::Erased));
        assert_eq!(can_retry(true, false), Err(RetryRefusal::Erased));
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
