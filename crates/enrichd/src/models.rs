//! The HTTP contract as types: every request and response body of the API. The handlers build
//! their answers from these, the OpenAPI document describes them, and the command-line client
//! reads and writes them.

use apollo_client::{EnrichFlags, Flag};
use chrono::{DateTime, Utc};
use job_store::{CallbackView, JobView, PersonView};
use rules::PersonField;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most people in one page.
pub const MAX_PAGE: u64 = 1000;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: u64 = 100;
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// One problem: where (`people[3].email`, `callback_url`) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// JSON path of the offending value.
    pub field: String,
    /// The person's index, for problems inside `people`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl From<rules::problem::FieldProblem> for Problem {
    fn from(p: rules::problem::FieldProblem) -> Problem {
        Problem { field: p.field, index: p.index, message: p.message }
    }
}

/// One person to enrich. Needs a usable identifier: `email`, `hashed_email`, `linkedin_url`, `id`,
/// or a name (`name`, or `first_name` and `last_name`) with `domain` or `organization_name`.
/// Strings are at most 512 bytes and may not contain U+0000 (no database column can hold it).
/// Blank strings and nulls count as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonInput {
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    pub last_name: Option<String>,
    /// Full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 512,
        pattern = "^(\\s*|\\s*[^@\\s]+@[^@\\s]*\\.[^@\\s]*\\s*)$",
        example = "dana@northwind-labs.com"
    )]
    pub email: Option<String>,
    /// MD5 (32) or SHA-256 (64) hex digest of the lower-cased email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^\\s*([0-9a-fA-F]{32}|[0-9a-fA-F]{64})?\\s*$")]
    pub hashed_email: Option<String>,
    /// Company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    pub organization_name: Option<String>,
    /// Company domain, without `www.` or `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    pub domain: Option<String>,
    /// Apollo person id: 24 hexadecimal characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^\\s*([0-9a-fA-F]{24})?\\s*$", example = "6501a9f2c4dfae0001a1b2c3")]
    pub id: Option<String>,
    /// LinkedIn profile URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512, pattern = "^\\s*$|[lL][iI][nN][kK][eE][dD][iI][nN]\\.[cC][oO][mM]/")]
    pub linkedin_url: Option<String>,
    /// Your own id (a string, or a number kept as its decimal text), returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<ExternalId>,
    /// The person's whole row when submitted from a spreadsheet (every column, in order; the
    /// header row goes in the job's `metadata.source_columns`), so an export can give it back.
    /// At most 200 cells of 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 200, value_type = Option<Vec<SourceCell>>)]
    pub source_row: Option<Vec<String>>,
}

/// One cell of a `source_row`: at most 512 bytes, no U+0000, as the other person fields (the
/// document's name for the `String`s of [`PersonInput::source_row`]).
#[derive(ToSchema)]
#[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
pub struct SourceCell(pub String);

/// A client's own id for a person: CRMs often use numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExternalId {
    /// Text, at most 512 bytes.
    #[schema(value_type = String)]
    Text(String),
    /// A number, stored as its decimal text.
    #[schema(value_type = f64)]
    Number(serde_json::Number),
}

impl ExternalId {
    /// The id as text.
    pub fn into_text(self) -> String {
        match self {
            ExternalId::Text(s) => s,
            ExternalId::Number(n) => n.to_string(),
        }
    }
}

impl PersonInput {
    /// Sets `field` to `value` (an `external_id` as text).
    pub fn set(&mut self, field: PersonField, value: String) {
        let v = Some(value);
        match field {
            PersonField::FirstName => self.first_name = v,
            PersonField::LastName => self.last_name = v,
            PersonField::Name => self.name = v,
            PersonField::Email => self.email = v,
            PersonField::HashedEmail => self.hashed_email = v,
            PersonField::OrganizationName => self.organization_name = v,
            PersonField::Domain => self.domain = v,
            PersonField::Id => self.id = v,
            PersonField::LinkedinUrl => self.linkedin_url = v,
            PersonField::ExternalId => self.external_id = v.map(ExternalId::Text),
        }
    }
}

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The people, 1 to `MAX_JOB_PEOPLE` (100,000 by default).
    #[schema(min_items = 1, max_items = 100_000)]
    pub people: Vec<PersonInput>,
    /// Ask Apollo for personal emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_personal_emails: Option<bool>,
    /// Ask Apollo for phone numbers (delivered later by webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_phone_number: Option<bool>,
    /// Run Apollo's email waterfall (delivered later by webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_waterfall_email: Option<bool>,
    /// Run Apollo's phone waterfall (delivered later by webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_waterfall_phone: Option<bool>,
    /// Where the signed `job.completed` callback goes: https, a public host (plain http and
    /// internal hosts only where the configuration allows them), at most 2048 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, pattern = "^\\s*https://\\S+\\s*$")]
    pub callback_url: Option<String>,
    /// Any JSON object up to 16 KiB serialised (no U+0000 in it), returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Credit budget (decimal credits, at least 0): no call is made whose worst-case cost could
    /// take the job's credits past it; people left end `skipped_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_credits: Option<f64>,
    /// Answer `200` with an [`Estimate`] instead of creating the job: nothing stored, no call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Answer people enriched this recently (`30d`, `12h`; `0s`: never) with the same or more
    /// flags from the stored record: no call, no credit (default: the server's `REUSE_WITHIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h|d)?\\s*$", example = "30d")]
    pub reuse_within: Option<String>,
    /// Per-person events to send as people finish (`person.completed`, `person.updated`;
    /// batched, to the `callback_url` and on `GET /v1/jobs/{id}/events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<EventName>>)]
    pub events: Option<Vec<String>>,
}

/// The query of `POST /v1/jobs/{id}/callback/redeliver`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RedeliverQuery {
    /// The `webhook-id` of the event to send again (a person event too); without it, the job's
    /// latest job event.
    #[param(max_length = 64)]
    pub webhook_id: Option<String>,
}

/// A per-person event a job may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventName {
    /// Each person once, when it reaches a final state.
    #[serde(rename = "person.completed")]
    PersonCompleted,
    /// A person already announced changed (a late part merged).
    #[serde(rename = "person.updated")]
    PersonUpdated,
}

impl JobRequest {
    /// Whether the request asks for `flag` (unset is no).
    pub fn flag(&self, flag: Flag) -> bool {
        let field = match flag {
            Flag::RevealPersonalEmails => self.reveal_personal_emails,
            Flag::RevealPhoneNumber => self.reveal_phone_number,
            Flag::RunWaterfallEmail => self.run_waterfall_email,
            Flag::RunWaterfallPhone => self.run_waterfall_phone,
        };
        field.unwrap_or(false)
    }

    /// The request asking for exactly `flags` (each sent as `true` or `false`).
    pub fn with_flags(mut self, flags: EnrichFlags) -> JobRequest {
        for f in Flag::ALL {
            let field = match f {
                Flag::RevealPersonalEmails => &mut self.reveal_personal_emails,
                Flag::RevealPhoneNumber => &mut self.reveal_phone_number,
                Flag::RunWaterfallEmail => &mut self.run_waterfall_email,
                Flag::RunWaterfallPhone => &mut self.run_waterfall_phone,
            };
            *field = Some(flags.get(f));
        }
        self
    }
}

/// A state whose people `POST /v1/jobs/{id}/retry` may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryState {
    /// Failed (Apollo refused them, or the retries ran out).
    Failed,
    /// Matched, but some asynchronous parts never came.
    Partial,
    /// Apollo found no match.
    NotFound,
}

/// The body of `POST /v1/jobs/{id}/retry` (may be empty: failed and partial people).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The states whose people to send again (default `["failed", "partial"]`); any other state
    /// is a 422 naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<RetryState>>, min_items = 1)]
    pub states: Option<Vec<String>>,
}

/// Worst-case credits of a job, per flag (per person: 1 match, 1 personal emails, 8 phone, 4
/// waterfall email, 25 waterfall phone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EstimateCredits {
    /// The synchronous match.
    #[schema(value_type = f64)]
    pub sync_match: apollo_client::Credits,
    /// `reveal_personal_emails`.
    #[schema(value_type = f64)]
    pub personal_emails: apollo_client::Credits,
    /// `reveal_phone_number`.
    #[schema(value_type = f64)]
    pub phone_reveal: apollo_client::Credits,
    /// `run_waterfall_email`.
    #[schema(value_type = f64)]
    pub waterfall_email: apollo_client::Credits,
    /// `run_waterfall_phone`.
    #[schema(value_type = f64)]
    pub waterfall_phone: apollo_client::Credits,
    /// The sum.
    #[schema(value_type = f64)]
    pub total: apollo_client::Credits,
}

impl EstimateCredits {
    /// The part of `flag`.
    pub fn of_flag(&mut self, flag: Flag) -> &mut apollo_client::Credits {
        match flag {
            Flag::RevealPersonalEmails => &mut self.personal_emails,
            Flag::RevealPhoneNumber => &mut self.phone_reveal,
            Flag::RunWaterfallEmail => &mut self.waterfall_email,
            Flag::RunWaterfallPhone => &mut self.waterfall_phone,
        }
    }
}

/// The answer to a `dry_run` submission: what the job would take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    /// People in the request.
    pub people: i64,
    /// People left after dedup: the ones that would be sent.
    pub unique: i64,
    /// People an earlier lookup would answer now (the job's reuse window; 0 without one).
    pub reusable: i64,
    /// People on the do-not-enrich list: never sent, no credit.
    pub suppressed: i64,
    /// Apollo calls (10 people each).
    pub calls: i64,
    /// Worst-case credits.
    pub worst_case_credits: EstimateCredits,
    /// Seconds the calls take at the configured per-minute limit (`APOLLO_RATE_PER_MINUTE`);
    /// `null` when the limit is only learned from Apollo's headers.
    pub seconds_at_limit: Option<f64>,
}

impl From<rules::estimate::Estimate> for Estimate {
    fn from(e: rules::estimate::Estimate) -> Estimate {
        let mut credits = EstimateCredits { sync_match: e.sync_match, total: e.total, ..EstimateCredits::default() };
        for (f, c) in e.flags {
            *credits.of_flag(f) = c;
        }
        Estimate {
            people: e.people,
            unique: e.unique,
            reusable: e.reusable,
            suppressed: e.suppressed,
            calls: e.calls,
            worst_case_credits: credits,
            seconds_at_limit: e.seconds_at_limit,
        }
    }
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, nothing dispatched yet.
    Queued,
    /// Being dispatched.
    Running,
    /// Dispatch is blocked; `pause_reason` says why.
    Paused,
    /// Every person reached a final state.
    Completed,
    /// Every person that could be sent failed.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

impl JobStatus {
    /// Whether the job will not change any more (apart from late parts).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl From<rules::JobState> for JobStatus {
    fn from(s: rules::JobState) -> Self {
        use rules::JobState as S;
        match s {
            S::Queued => JobStatus::Queued,
            S::Running => JobStatus::Running,
            S::Paused => JobStatus::Paused,
            S::Completed => JobStatus::Completed,
            S::Failed => JobStatus::Failed,
            S::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// The state of one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonStatus {
    /// Waiting for a batch.
    Queued,
    /// In a call to Apollo.
    Submitted,
    /// Matched; phone or waterfall results still to come.
    AwaitingAsync,
    /// Every requested part arrived.
    Complete,
    /// Some parts never arrived (`missing_parts`).
    Partial,
    /// Apollo found no match.
    NotFound,
    /// Apollo refused the person's details.
    Invalid,
    /// Could not be enriched (`error`).
    Failed,
    /// The job was cancelled before the person was sent.
    Cancelled,
    /// Never sent: the job's `max_credits` could not cover this person's worst-case cost.
    SkippedBudget,
    /// Never sent, no credits: an identifier of the person is on the do-not-enrich list.
    Suppressed,
}

impl From<rules::PersonState> for PersonStatus {
    fn from(s: rules::PersonState) -> Self {
        use rules::PersonState as S;
        match s {
            S::Queued => PersonStatus::Queued,
            S::Submitted => PersonStatus::Submitted,
            S::AwaitingAsync => PersonStatus::AwaitingAsync,
            S::Complete => PersonStatus::Complete,
            S::Partial => PersonStatus::Partial,
            S::NotFound => PersonStatus::NotFound,
            S::Invalid => PersonStatus::Invalid,
            S::Failed => PersonStatus::Failed,
            S::Cancelled => PersonStatus::Cancelled,
            S::SkippedBudget => PersonStatus::SkippedBudget,
            S::Suppressed => PersonStatus::Suppressed,
        }
    }
}

/// People of a job per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PersonCounts {
    /// Waiting for a batch.
    pub queued: i64,
    /// In a call.
    pub submitted: i64,
    /// Waiting for asynchronous parts.
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
    /// Never sent: on the do-not-enrich list (`/v1/suppressions`).
    #[serde(default)]
    pub suppressed: i64,
}

impl From<rules::Counts> for PersonCounts {
    fn from(c: rules::Counts) -> Self {
        PersonCounts {
            queued: c.queued,
            submitted: c.submitted,
            awaiting_async: c.awaiting_async,
            complete: c.complete,
            partial: c.partial,
            not_found: c.not_found,
            invalid: c.invalid,
            failed: c.failed,
            cancelled: c.cancelled,
            skipped_budget: c.skipped_budget,
            suppressed: c.suppressed,
        }
    }
}

/// The delivery state of the final callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    /// Waiting for its next try.
    Pending,
    /// Answered with a 2xx.
    Delivered,
    /// Every scheduled try failed (redeliver to try again).
    Exhausted,
    /// Stopped (the receiver answered 410, or the job was erased).
    Cancelled,
    /// Not sent: the job has no callback URL; kept for its event stream.
    Recorded,
}

impl From<rules::CallbackState> for CallbackStatus {
    fn from(s: rules::CallbackState) -> Self {
        use rules::CallbackState as S;
        match s {
            S::Pending => CallbackStatus::Pending,
            S::Delivered => CallbackStatus::Delivered,
            S::Exhausted => CallbackStatus::Exhausted,
            S::Cancelled => CallbackStatus::Cancelled,
            S::Recorded => CallbackStatus::Recorded,
        }
    }
}

/// One try of the final callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallbackAttempt {
    /// Try number, from 1.
    pub attempt: i32,
    /// `scheduled` or `manual`.
    pub trigger: String,
    /// The receiver's HTTP status.
    pub status_code: Option<i32>,
    /// How long the try took.
    pub duration_ms: i64,
    /// The transport error, when there was no answer.
    pub error: Option<String>,
    /// The start of the receiver's answer (at most 20 KB).
    pub response_excerpt: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One callback event of a job (`job.completed`, then a `job.updated` per later change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallbackDelivery {
    /// What it announces: `job.completed` or `job.updated`.
    pub event: String,
    /// When the event happened (the body's `timestamp`).
    pub created_at: DateTime<Utc>,
    /// The `webhook-id` header (the same on every try).
    pub webhook_id: String,
    /// Delivery state.
    pub state: CallbackStatus,
    /// Tries so far.
    pub attempts: i32,
    /// Next try, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last try.
    pub last_status: Option<i32>,
    /// Error of the last try.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every try, oldest first.
    pub attempt_log: Vec<CallbackAttempt>,
}

impl From<&CallbackView> for CallbackDelivery {
    fn from(c: &CallbackView) -> Self {
        CallbackDelivery {
            event: c.event.as_str().to_string(),
            created_at: c.created_at,
            webhook_id: c.webhook_id.clone(),
            state: c.state.into(),
            attempts: c.attempts,
            next_attempt_at: c.next_attempt_at,
            last_status: c.last_status,
            last_error: c.last_error.clone(),
            delivered_at: c.delivered_at,
            attempt_log: c
                .attempt_log
                .iter()
                .map(|a| CallbackAttempt {
                    attempt: a.attempt_no,
                    trigger: a.trigger.clone(),
                    status_code: a.status_code,
                    duration_ms: a.duration_ms,
                    error: a.error.clone(),
                    response_excerpt: a.response_excerpt.clone(),
                    at: a.at,
                })
                .collect(),
        }
    }
}

/// An Apollo delivery that could not be applied, kept with its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailedDelivery {
    /// Delivery id.
    pub id: Uuid,
    /// The batch (Apollo call) it belongs to.
    pub batch_id: Uuid,
    /// Why it could not be used.
    pub error: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// A job as `GET /v1/jobs/{id}` shows it (also the `data` of the final callback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Job id.
    pub id: Uuid,
    /// State.
    pub status: JobStatus,
    /// Why dispatch is paused.
    pub pause_reason: Option<String>,
    /// When the client asked to cancel.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The Apollo flags.
    pub options: EnrichFlags,
    /// Number of people.
    pub total: i64,
    /// People per state.
    pub counts: PersonCounts,
    /// Credits Apollo reported for this job's people.
    #[schema(value_type = f64)]
    pub credits_consumed: apollo_client::Credits,
    /// The same credits by kind (sync, phone, waterfall).
    pub credits_by_kind: UsageCredits,
    /// Apollo calls answered for this job.
    pub apollo_calls: i64,
    /// Calls whose outcome was unknown and that may have been charged twice.
    pub possible_double_charges: i64,
    /// What those calls may have cost a second time: each call's worst case under the job's
    /// flags until its retry is answered, then the credits the answered copy cost.
    #[serde(default)]
    #[schema(value_type = f64)]
    pub possible_double_charge_credits: apollo_client::Credits,
    /// The reuse window in seconds (`reuse_within`), when the job reuses earlier lookups.
    #[serde(default)]
    pub reuse_within_seconds: Option<i64>,
    /// Whose earlier lookups it reuses: `client` (its own client's) or `shared` (every client's).
    #[serde(default)]
    pub reuse_scope: Option<String>,
    /// People answered from an earlier lookup: no call, no credit.
    #[serde(default)]
    pub reuse_hits: i64,
    /// What those people cost when they were looked up.
    #[serde(default)]
    #[schema(value_type = f64)]
    pub credits_saved: apollo_client::Credits,
    /// The job's credit budget, if it has one.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub max_credits: Option<apollo_client::Credits>,
    /// Why the job ended before sending everyone (its budget ran out), if it did.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Apollo deliveries for this job that could not be applied (the most recent ones).
    pub failed_deliveries: Vec<FailedDelivery>,
    /// The job this one retries (`POST /v1/jobs/{id}/retry`).
    #[serde(default)]
    pub retry_of: Option<Uuid>,
    /// The jobs that retry this one, oldest first (shown by `GET /v1/jobs/{id}`).
    #[serde(default)]
    pub retries: Vec<Uuid>,
    /// Where the final callback goes.
    pub callback_url: Option<String>,
    /// The per-person events the job asked for.
    #[serde(default)]
    pub events: Vec<String>,
    /// The `job.completed` callback, once the job finished with a callback URL.
    pub callback: Option<CallbackDelivery>,
    /// Every callback event, oldest first (`job.completed`, then any `job.updated`).
    pub callback_events: Vec<CallbackDelivery>,
    /// The client's metadata, as given.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Reached a final state.
    pub completed_at: Option<DateTime<Utc>>,
    /// When its personal data was erased.
    pub erased_at: Option<DateTime<Utc>>,
}

impl From<&JobView> for Job {
    fn from(j: &JobView) -> Self {
        Job {
            id: j.id,
            status: j.state.into(),
            pause_reason: j.pause_reason.clone(),
            cancel_requested_at: j.cancel_requested_at,
            options: j.flags,
            total: j.total,
            counts: j.counts.into(),
            credits_consumed: j.credits,
            credits_by_kind: UsageCredits {
                total: j.credits,
                sync: j.credits_by_kind.sync,
                phone: j.credits_by_kind.phone,
                waterfall: j.credits_by_kind.waterfall,
            },
            apollo_calls: j.calls,
            possible_double_charges: j.possible_double_charges,
            possible_double_charge_credits: j.possible_double_charge_credits,
            reuse_within_seconds: j.reuse.map(|r| r.within_secs),
            reuse_scope: j.reuse.map(|r| if r.shared { "shared" } else { "client" }.to_string()),
            reuse_hits: j.reuse_hits,
            credits_saved: j.credits_saved,
            max_credits: j.max_credits,
            end_reason: j.end_reason.clone(),
            failed_deliveries: j
                .failed_deliveries
                .iter()
                .map(|d| FailedDelivery {
                    id: d.id,
                    batch_id: d.batch_id,
                    error: d.error.clone(),
                    received_at: d.received_at,
                })
                .collect(),
            retry_of: j.retry_of,
            retries: j.retries.clone(),
            callback_url: j.callback_url.clone(),
            events: j.events.names().into_iter().map(String::from).collect(),
            callback: j.callback.as_ref().map(CallbackDelivery::from),
            callback_events: j.callback_events.iter().map(CallbackDelivery::from).collect(),
            metadata: j.metadata.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            completed_at: j.completed_at,
            erased_at: j.erased_at,
        }
    }
}

/// One email address of a merged record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordEmail {
    /// Lower-cased address.
    pub address: String,
    /// Best status seen (`verified`, `likely to engage`, …).
    #[serde(default)]
    pub status: Option<String>,
    /// Whether any answer called it personal.
    #[serde(default)]
    pub personal: bool,
    /// Answers that carried it (`sync`, `phone_webhook`, `waterfall`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Waterfall vendors that found it.
    #[serde(default)]
    pub vendors: Vec<String>,
}

/// One phone number of a merged record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordPhone {
    /// E.164 number.
    pub e164: String,
    /// The number as Apollo wrote it.
    #[serde(default)]
    pub raw: Option<String>,
    /// `mobile`, `work_hq`, …
    #[serde(default)]
    pub kind: Option<String>,
    /// Best status seen.
    #[serde(default)]
    pub status: Option<String>,
}

/// The merged record of one person: everything every answer said, merged by fixed rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Record {
    /// Apollo's person id.
    #[serde(default)]
    pub apollo_id: Option<String>,
    /// Demographic fields (`name`, `title`, `organization`, `linkedin_url`, `city`, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Email addresses, sorted.
    #[serde(default)]
    pub emails: Vec<RecordEmail>,
    /// Phone numbers, sorted.
    #[serde(default)]
    pub phones: Vec<RecordPhone>,
}

/// A person as `GET /v1/jobs/{id}/people` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Person {
    /// Position in the submitted list, from 0.
    pub index: i64,
    /// The person's id in this service.
    pub id: Uuid,
    /// Your `external_id`, as given.
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Value>,
    /// State.
    pub status: PersonStatus,
    /// The input as stored (cleaned; empty once erased).
    #[schema(value_type = Object)]
    pub input: Value,
    /// Apollo's id of the matched person.
    pub apollo_id: Option<String>,
    /// The person of this job whose result this one shares (same identity).
    pub duplicate_of: Option<Uuid>,
    /// The merged record, once matched.
    #[schema(value_type = Option<Record>)]
    pub record: Option<Value>,
    /// Parts that never arrived (`phone`, `waterfall`).
    pub missing_parts: Vec<String>,
    /// Credits Apollo attributed to this person.
    #[schema(value_type = f64)]
    pub credits_consumed: apollo_client::Credits,
    /// Why the person failed.
    pub error: Option<String>,
    /// The job whose earlier lookup answered this person (reuse window; no call, no credit).
    #[serde(default)]
    pub reused_from: Option<Uuid>,
    /// When that lookup was made (its record's last change).
    #[serde(default)]
    pub reused_at: Option<DateTime<Utc>>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&PersonView> for Person {
    fn from(p: &PersonView) -> Self {
        Person {
            index: p.ordinal,
            id: p.id,
            external_id: p.input.get("external_id").cloned(),
            status: p.state.into(),
            input: p.input.clone(),
            apollo_id: p.apollo_id.clone(),
            duplicate_of: p.dup_of,
            record: p.record.clone(),
            missing_parts: p.missing_parts.clone(),
            credits_consumed: p.credits,
            error: p.last_error.clone(),
            reused_from: p.reused_from_job,
            reused_at: p.reused_at,
            updated_at: p.updated_at,
        }
    }
}

impl Person {
    /// The merged record, typed (`None` before a match, or if it cannot be read).
    pub fn typed_record(&self) -> Option<Record> {
        self.record.as_ref().and_then(|r| serde_json::from_value(r.clone()).ok())
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub data: Vec<Job>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// A page of a job's people, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PersonPage {
    /// The people.
    pub data: Vec<Person>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Paging of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct JobPageQuery {
    /// Return jobs after this one (`next_after` of the previous page, a job id); empty means the start.
    #[param(pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// Paging of `GET /v1/jobs/{id}/people`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PersonPageQuery {
    /// Return people after this index (`next_after` of the previous page); empty means the start.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// The window of `GET /v1/usage`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// Start (described in `usage_from`).
    #[param(schema_with = usage_from)]
    pub from: Option<String>,
    /// End, exclusive (described in `usage_to`).
    #[param(schema_with = usage_to)]
    pub to: Option<String>,
    /// Admin keys only: one client's usage (absent: every client's together). A client key that
    /// names a client gets 422: it sees its own usage only.
    #[param(pattern = "^[A-Za-z0-9._-]+$")]
    pub client: Option<String>,
}

fn usage_from() -> utoipa::openapi::schema::Schema {
    usage_bound(
        "Start: an RFC 3339 instant, or a date (its midnight, UTC); empty or absent: the current UTC month's start.",
    )
}

fn usage_to() -> utoipa::openapi::schema::Schema {
    usage_bound(
        "End (exclusive): an RFC 3339 instant, or a date (that whole day included); empty or absent: the start of next month.",
    )
}

/// An end of the usage window as `rules::usage_window` reads it: exactly an RFC 3339 `date` or
/// `date-time`, or empty (the default). A `schema_with` parameter drops its doc comment, so the
/// description goes on the schema.
fn usage_bound(description: &str) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let format = |f| string().format(Some(SchemaFormat::KnownFormat(f)));
    AnyOfBuilder::new()
        .item(format(KnownFormat::Date))
        .item(format(KnownFormat::DateTime))
        .item(string().max_length(Some(0)))
        .description(Some(description))
        .build()
        .into()
}

/// Credits by what Apollo charged them for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageCredits {
    /// Everything.
    #[schema(value_type = f64)]
    pub total: apollo_client::Credits,
    /// Synchronous answers (the match, personal emails).
    #[schema(value_type = f64)]
    pub sync: apollo_client::Credits,
    /// Phone-reveal deliveries.
    #[schema(value_type = f64)]
    pub phone: apollo_client::Credits,
    /// Waterfall deliveries (emails and phones).
    #[schema(value_type = f64)]
    pub waterfall: apollo_client::Credits,
}

/// One waterfall vendor's figures for one kind, from the vendor trails of the waterfall deliveries
/// applied in the window (`rules::vendors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageVendor {
    /// The vendor's display name, as Apollo's trail names it.
    pub vendor: String,
    /// What it was asked to find: `email` or `phone`.
    #[schema(value_type = String, pattern = "^(email|phone)$")]
    pub kind: rules::VendorKind,
    /// Times it was asked (one person, one kind).
    pub attempts: i64,
    /// Attempts that returned a value.
    pub results: i64,
    /// Results the vendor called verified.
    pub verified: i64,
    /// Credits attributed: each waterfall delivery's credits split evenly over the attempts that
    /// returned a value (over all its attempts when none did).
    #[schema(value_type = f64)]
    pub credits: apollo_client::Credits,
    /// `credits / verified`; null without a verified result.
    #[schema(value_type = Option<f64>)]
    pub cost_per_verified: Option<apollo_client::Credits>,
}

impl UsageVendor {
    /// The figures of one stored vendor and kind.
    pub fn new(v: &job_store::vendors::VendorUsage) -> UsageVendor {
        UsageVendor {
            vendor: v.vendor.clone(),
            kind: v.kind,
            attempts: v.totals.attempts,
            results: v.totals.results,
            verified: v.totals.verified,
            credits: v.totals.credits,
            cost_per_verified: v.totals.cost_per_verified(),
        }
    }
}

/// Usage over a window: sums over the jobs created in `[from, to)` of the calling client (or,
/// with an admin key, of `client` or of everyone), and the waterfall vendors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// Start of the window.
    pub from: DateTime<Utc>,
    /// End of the window (exclusive).
    pub to: DateTime<Utc>,
    /// Whose usage: the client's name; null for every client together (an admin key without `client`).
    #[serde(default)]
    pub client: Option<String>,
    /// Jobs created in the window.
    pub jobs: i64,
    /// Their people.
    pub people: i64,
    /// Apollo calls answered for them (a call shared by jobs counts once for each).
    pub calls: i64,
    /// Credits consumed, by kind.
    pub credits: UsageCredits,
    /// People answered from an earlier lookup (reuse window): no call, no credit.
    pub reuse_hits: i64,
    /// What those people cost when they were looked up.
    #[schema(value_type = f64)]
    pub credits_saved: apollo_client::Credits,
    /// Calls whose outcome was unknown and that may have been charged twice.
    pub possible_double_charges: i64,
    /// What those calls may have cost a second time.
    #[serde(default)]
    #[schema(value_type = f64)]
    pub possible_double_charge_credits: apollo_client::Credits,
    /// Waterfall vendors per kind, by vendor name, over the days (UTC) the window touches, counted
    /// on the day each delivery was applied. Kept when jobs are erased or purged.
    #[serde(default)]
    pub vendors: Vec<UsageVendor>,
}

impl UsageReport {
    /// The report of `u` and `vendors` over `[from, to)` for `client` (`None`: everyone).
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        client: Option<String>,
        u: &job_store::usage::Usage,
        vendors: &[job_store::vendors::VendorUsage],
    ) -> UsageReport {
        UsageReport {
            from,
            to,
            client,
            vendors: vendors.iter().map(UsageVendor::new).collect(),
            jobs: u.jobs,
            people: u.people,
            calls: u.calls,
            credits: UsageCredits {
                total: u.credits,
                sync: u.credits_by_kind.sync,
                phone: u.credits_by_kind.phone,
                waterfall: u.credits_by_kind.waterfall,
            },
            reuse_hits: u.reuse_hits,
            credits_saved: u.credits_saved,
            possible_double_charges: u.possible_double_charges,
            possible_double_charge_credits: u.possible_double_charge_credits,
        }
    }
}

/// The answer of `POST /v1/admin/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resumed {
    /// Always `resumed`.
    pub status: String,
    /// The pause reason that was cleared, if dispatch was paused.
    pub was_paused: Option<String>,
}

/// The answer of `POST /v1/jobs/{id}/callback/redeliver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// Always `queued`.
    pub status: String,
}

/// The answer to an Apollo delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryReceipt {
    /// Always `received`.
    pub status: String,
    /// Whether the same body was already stored.
    pub duplicate: bool,
}

/// Liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Readiness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `paused`, `unavailable`, or `draining` (shutting down).
    pub status: String,
    /// `ok` or `unreachable`.
    pub database: String,
    /// Why dispatch is paused.
    pub dispatch_paused: Option<String>,
}

/// The error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind (`validation_failed`, `not_found`, `unavailable`, …).
    pub code: String,
    /// Human-readable summary.
    pub message: String,
    /// For `validation_failed`: every problem found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<Problem>>,
}

/// Every error answer: `{"error": {code, message, details?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A job as JSON (the `data` of the final callback).
pub fn job_json(j: &JobView) -> Value {
    serde_json::to_value(Job::from(j)).unwrap_or(Value::Null)
}

/// A person as JSON (inline in the final callback).
pub fn person_json(p: &PersonView) -> Value {
    serde_json::to_value(Person::from(p)).unwrap_or(Value::Null)
}

/// One identifier for the do-not-enrich list: exactly one of the four fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1, example = json!({"email": "dana@northwind-labs.com"}))]
pub struct SuppressionIdentifier {
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024)]
    pub email: Option<String>,
    /// A LinkedIn profile URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024)]
    pub linkedin_url: Option<String>,
    /// An Apollo person id (24 hexadecimal characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024)]
    pub apollo_id: Option<String>,
    /// A whole domain: everyone whose `domain`, or whose email's domain, it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024)]
    pub domain: Option<String>,
}

/// Whose list a request manages (`?scope=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionScope {
    /// The calling client's own list (client keys).
    Client,
    /// The list that applies to every client (admin keys).
    Global,
}

/// `?scope=` of the suppression routes.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ScopeQuery {
    /// `client` (default for client keys) or `global` (default for, and only with, admin keys).
    pub scope: Option<SuppressionScope>,
}

/// Paging of `GET /v1/suppressions`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SuppressionPageQuery {
    /// `client` (default for client keys) or `global` (default for, and only with, admin keys).
    pub scope: Option<SuppressionScope>,
    /// Return entries after this one (`next_after` of the previous page, an entry id); empty means the start.
    #[param(pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// One entry of a do-not-enrich list. There is no plaintext to show: only what kind of
/// identifier it is and the start of its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Suppression {
    /// Entry id (remove it with `DELETE /v1/suppressions/{id}`).
    pub id: Uuid,
    /// `email`, `linkedin_url`, `apollo_id` or `domain`.
    pub kind: String,
    /// The first 12 hex digits of the entry's keyed hash.
    pub hash_prefix: String,
    /// Whose list.
    pub scope: SuppressionScope,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

impl From<&job_store::SuppressionEntry> for Suppression {
    fn from(e: &job_store::SuppressionEntry) -> Suppression {
        Suppression {
            id: e.id.0,
            kind: e.kind.as_str().to_owned(),
            hash_prefix: e.hash.chars().take(12).collect(),
            scope: match e.scope {
                job_store::Scope::Global => SuppressionScope::Global,
                job_store::Scope::Client(_) => SuppressionScope::Client,
            },
            created_at: e.created_at,
        }
    }
}

/// The answer to adding one identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppressionAdded {
    /// `false`: it was on the list already.
    pub added: bool,
    /// The entry.
    pub entry: Suppression,
}

/// A page of entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppressionPage {
    /// Entries, oldest first.
    pub entries: Vec<Suppression>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

/// What a bulk import did: valid rows are added, invalid ones counted and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppressionImport {
    /// New entries.
    pub added: u64,
    /// Identifiers already on the list (or repeated in the import).
    pub already_present: u64,
    /// Rows that were not one valid identifier.
    pub invalid: u64,
    /// Why each invalid row was refused (`index`: the row, 0-based; for CSV the header is not a row).
    pub errors: Vec<Problem>,
}

/// The answer to a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppressionRemoved {
    /// Always `true` (a missing entry answers 404).
    pub removed: bool,
}

/// `?suppress=` of `DELETE /v1/jobs/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EraseQuery {
    /// Also put every erased person's identifiers (email, LinkedIn URL, Apollo id) on the
    /// client's do-not-enrich list, in the same transaction.
    pub suppress: Option<bool>,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// The request model declares the person fields [`PersonField`] lists, and `source_row`.
    #[test]
    fn the_person_model_has_every_person_field() {
        let schema = serde_json::to_value(PersonInput::schema()).expect("a schema");
        let mut properties: Vec<&str> =
            schema["properties"].as_object().expect("properties").keys().map(String::as_str).collect();
        let mut fields: Vec<&str> = PersonField::names().chain([rules::person_fields::SOURCE_ROW]).collect();
        properties.sort_unstable();
        fields.sort_unstable();
        assert_eq!(properties, fields);
        let mut p = PersonInput::default();
        for f in PersonField::ALL {
            p.set(f, f.name().to_uppercase());
        }
        let written = serde_json::to_value(&p).expect("JSON");
        for f in PersonField::ALL {
            assert_eq!(written[f.name()], f.name().to_uppercase(), "{f}");
        }
    }
}
