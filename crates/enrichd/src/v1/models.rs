//! The public JSON shapes of jobs and people (also the body of the final callback).

use job_store::{JobView, PersonView};
use serde_json::{Value, json};

/// A job as `GET /v1/jobs/{id}` shows it.
pub fn job_json(j: &JobView) -> Value {
    let callback = j.callback.as_ref().map(|c| {
        json!({
            "webhook_id": c.webhook_id,
            "state": c.state.as_str(),
            "attempts": c.attempts,
            "next_attempt_at": c.next_attempt_at,
            "last_status": c.last_status,
            "last_error": c.last_error,
            "delivered_at": c.delivered_at,
            "attempt_log": c.attempt_log.iter().map(|a| json!({
                "attempt": a.attempt_no,
                "trigger": a.trigger,
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
                "at": a.at,
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "id": j.id,
        "status": j.state.as_str(),
        "pause_reason": j.pause_reason,
        "cancel_requested_at": j.cancel_requested_at,
        "options": {
            "reveal_personal_emails": j.options.reveal_personal_emails,
            "reveal_phone_number": j.options.reveal_phone_number,
            "run_waterfall_email": j.options.run_waterfall_email,
            "run_waterfall_phone": j.options.run_waterfall_phone,
        },
        "total": j.total,
        "counts": j.counts,
        "credits_consumed": j.credits,
        "apollo_calls": j.calls,
        "possible_double_charges": j.possible_double_charges,
        "failed_deliveries": j.failed_deliveries.iter().map(|d| json!({
            "id": d.id,
            "batch_id": d.batch_id,
            "error": d.error,
            "received_at": d.received_at,
        })).collect::<Vec<_>>(),
        "callback_url": j.callback_url,
        "callback": callback,
        "metadata": j.metadata,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "completed_at": j.completed_at,
        "erased_at": j.erased_at,
    })
}

/// A person as `GET /v1/jobs/{id}/people` shows it: the input, the state and the merged record.
pub fn person_json(p: &PersonView) -> Value {
    json!({
        "index": p.ordinal,
        "id": p.id,
        "external_id": p.input.get("external_id"),
        "status": p.state.as_str(),
        "input": p.input,
        "apollo_id": p.apollo_id,
        "duplicate_of": p.dup_of,
        "record": p.record,
        "missing_parts": p.missing_parts,
        "credits_consumed": p.credits,
        "error": p.last_error,
        "updated_at": p.updated_at,
    })
}
