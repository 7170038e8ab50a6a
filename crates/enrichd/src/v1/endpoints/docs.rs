//! The OpenAPI document (generated from the handlers) and the docs page.

use utoipa::OpenApi;
use utoipa::ToSchema;

/// One person to enrich; needs an email, hashed_email, linkedin_url, id, or a name with domain or
/// organization_name.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct PersonInput {
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    email: Option<String>,
    /// MD5 or SHA-256 hex of the email.
    hashed_email: Option<String>,
    organization_name: Option<String>,
    domain: Option<String>,
    /// Apollo person id.
    id: Option<String>,
    linkedin_url: Option<String>,
    /// Your own id, returned as given.
    external_id: Option<String>,
}

/// The body of `POST /v1/jobs`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct JobRequest {
    people: Vec<PersonInput>,
    reveal_personal_emails: Option<bool>,
    reveal_phone_number: Option<bool>,
    run_waterfall_email: Option<bool>,
    run_waterfall_phone: Option<bool>,
    /// Where the signed `job.completed` callback goes (https).
    callback_url: Option<String>,
    /// Any JSON object, returned as given.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "enrichd", description = "Enrichment orchestrator in front of Apollo's Bulk People Enrichment"),
    paths(
        super::jobs::create,
        super::jobs::get,
        super::jobs::people,
        super::jobs::list,
        super::jobs::cancel,
        super::jobs::erase,
        super::jobs::redeliver,
        super::webhooks::apollo,
        super::health::healthz,
        super::health::readyz,
        super::admin::resume,
    ),
    components(schemas(JobRequest, PersonInput))
)]
pub struct ApiDoc;
