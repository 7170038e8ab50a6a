//! `/v1/suppressions`: the do-not-enrich list. A client key manages its client's list, an admin
//! key the global one. Identifiers are hashed with `SUPPRESSION_KEY` on arrival; nothing of them
//! is stored or logged in plaintext.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use job_store::{Scope, SuppressionId};
use rules::SuppressionKind;
use rules::suppression::SuppressionKey;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::{
    DEFAULT_PAGE, ErrorBody, MAX_PAGE, Problem, ScopeQuery, Suppression, SuppressionAdded, SuppressionIdentifier,
    SuppressionImport, SuppressionPage, SuppressionPageQuery, SuppressionRemoved, SuppressionScope,
};
use crate::state::AppState;
use crate::v1::endpoints::body::{decode_json, read_limited, require_json};

/// Largest body of one identifier.
const MAX_ONE_BODY: usize = 16 * 1024;

/// Most rows of one import.
pub const MAX_IMPORT_ROWS: usize = 100_000;

/// The scope a request manages: a client key its own list, an admin key the global one; asking
/// for the other is refused.
fn scope_of(req: &HttpRequest, state: &AppState, asked: Option<SuppressionScope>) -> Result<Scope, ApiError> {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("missing `Authorization: Bearer <api key>`"))?;
    if let Some(client) = state.keys.client_for(key) {
        return match asked {
            None | Some(SuppressionScope::Client) => Ok(Scope::Client(client.to_string())),
            Some(SuppressionScope::Global) => Err(ApiError::Forbidden("the global list needs an admin key")),
        };
    }
    if state.admin_keys.client_for(key).is_some() {
        return match asked {
            None | Some(SuppressionScope::Global) => Ok(Scope::Global),
            Some(SuppressionScope::Client) => {
                Err(ApiError::Forbidden("an admin key manages the global list (`scope=global`)"))
            }
        };
    }
    Err(ApiError::Unauthorized("unknown API key"))
}

fn key(state: &AppState) -> Result<&SuppressionKey, ApiError> {
    state
        .store
        .suppression_key()
        .ok_or_else(|| ApiError::Conflict("the do-not-enrich list is off: SUPPRESSION_KEY is not set".into()))
}

/// The one identifier of `id` as (kind, hash), or what is wrong with it (shared with the dashboard).
pub(crate) fn hashed(key: &SuppressionKey, id: &SuppressionIdentifier) -> Result<(SuppressionKind, String), Problem> {
    let given: Vec<(SuppressionKind, &str, &str)> = [
        (SuppressionKind::Email, "email", &id.email),
        (SuppressionKind::LinkedinUrl, "linkedin_url", &id.linkedin_url),
        (SuppressionKind::ApolloId, "apollo_id", &id.apollo_id),
        (SuppressionKind::Domain, "domain", &id.domain),
    ]
    .into_iter()
    .filter_map(|(k, f, v)| v.as_deref().filter(|v| !v.trim().is_empty()).map(|v| (k, f, v)))
    .collect();
    let problem = |field: &str, message: &str| Problem { field: field.into(), index: None, message: message.into() };
    match given.as_slice() {
        [(kind, field, value)] => key.hash_raw(*kind, value).map(|h| (*kind, h)).ok_or_else(|| {
            problem(
                field,
                match kind {
                    SuppressionKind::Email => "is not an email address",
                    SuppressionKind::LinkedinUrl => "is not a LinkedIn profile URL",
                    SuppressionKind::ApolloId => "must be an Apollo person id: 24 hexadecimal characters",
                    SuppressionKind::Domain => "is not a domain",
                },
            )
        }),
        [] => Err(problem("", "needs one of email, linkedin_url, apollo_id, domain")),
        _ => Err(problem("", "give exactly one of email, linkedin_url, apollo_id, domain")),
    }
}

/// The list a one-identifier request names and the hash of the identifier in its body: what add
/// and remove both start from.
async fn scoped_hash(
    req: &HttpRequest,
    state: &AppState,
    asked: Option<SuppressionScope>,
    payload: web::Payload,
) -> Result<(Scope, SuppressionKind, String), ApiError> {
    let scope = scope_of(req, state, asked)?;
    let key = key(state)?;
    let id = one_identifier(req, payload).await?;
    let (kind, hash) = hashed(key, &id).map_err(|p| ApiError::invalid(vec![p]))?;
    Ok((scope, kind, hash))
}

async fn one_identifier(req: &HttpRequest, payload: web::Payload) -> Result<SuppressionIdentifier, ApiError> {
    require_json(req)?;
    let body = read_limited(payload, MAX_ONE_BODY).await?;
    let value = decode_json(&body)?;
    // Exactly one field, as the schema says (`{"email": …, "domain": ""}` is two).
    if value.as_object().is_some_and(|o| o.len() != 1) {
        return Err(ApiError::invalid_field("", "give exactly one of email, linkedin_url, apollo_id, domain"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid_field("", e.to_string()))
}

/// Add one identifier to the list.
#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", security(("bearer" = [])),
    params(ScopeQuery),
    request_body(content = SuppressionIdentifier, content_type = "application/json"),
    responses(
        (status = 200, description = "already on the list", body = SuppressionAdded),
        (status = 201, description = "added", body = SuppressionAdded),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "a client key asking for the global list, or an admin key for a client's", body = ErrorBody),
        (status = 409, description = "the list is off (`SUPPRESSION_KEY` unset)", body = ErrorBody),
        (status = 413, description = "body over 16 KiB", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "not exactly one valid identifier; `details` says why", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/suppressions")]
pub async fn add(
    req: HttpRequest,
    query: web::Query<ScopeQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (scope, kind, hash) = scoped_hash(&req, &state, query.scope, payload).await?;
    let done = state.store.add_suppressions(&scope, &[(kind, hash.clone())]).await?;
    let entry = find(&state, &scope, &hash).await?;
    let body = SuppressionAdded { added: done.added == 1, entry: Suppression::from(&entry) };
    Ok(if body.added { HttpResponse::Created().json(body) } else { HttpResponse::Ok().json(body) })
}

/// The entry of `scope` with `hash` (just added or present).
async fn find(state: &AppState, scope: &Scope, hash: &str) -> Result<job_store::SuppressionEntry, ApiError> {
    state.store.find_suppression(scope, hash).await?.ok_or(ApiError::NotFound("suppression"))
}

/// Add many identifiers: a JSON array of identifier objects, or CSV with a header naming any of
/// `email`, `linkedin_url`, `apollo_id`, `domain` (one identifier per row).
#[utoipa::path(post, path = "/v1/suppressions/import", tag = "suppressions", security(("bearer" = [])),
    params(ScopeQuery),
    request_body(content = Vec<SuppressionIdentifier>, description = "JSON array, or `text/csv` with a header row",
        content_type = "application/json"),
    responses(
        (status = 200, description = "valid rows added; invalid ones counted and listed", body = SuppressionImport),
        (status = 400, description = "the body is not JSON or CSV", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "a client key asking for the global list, or an admin key for a client's", body = ErrorBody),
        (status = 409, description = "the list is off (`SUPPRESSION_KEY` unset)", body = ErrorBody),
        (status = 413, description = "body over the size limit (`MAX_BODY_BYTES`)", body = ErrorBody),
        (status = 415, description = "neither application/json nor text/csv", body = ErrorBody),
        (status = 422, description = "more than 100,000 rows, or CSV without a known column", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/suppressions/import")]
pub async fn import(
    req: HttpRequest,
    query: web::Query<ScopeQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let scope = scope_of(&req, &state, query.scope)?;
    let key = key(&state)?;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let csv = ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("text/csv");
    if !csv {
        require_json(&req)?;
    }
    let body = read_limited(payload, state.config.max_body_bytes).await?;
    let (entries, errors) = import_rows(key, &body, csv)?;
    let done = state.store.add_suppressions(&scope, &entries).await?;
    tracing::info!(added = done.added, invalid = errors.len(), "suppressions imported");
    Ok(HttpResponse::Ok().json(SuppressionImport {
        added: done.added,
        already_present: done.already_present,
        invalid: errors.len() as u64,
        errors,
    }))
}

type Row = Result<SuppressionIdentifier, Problem>;

/// What an import adds (kind, keyed hash), and the problems of the rows it refuses.
pub(crate) type ImportRows = (Vec<(SuppressionKind, String)>, Vec<Problem>);

/// An import's body (CSV with a header row, or a JSON array) as the entries to add and the
/// problems of the rows that are not one valid identifier (shared with the dashboard).
pub(crate) fn import_rows(key: &SuppressionKey, body: &[u8], csv: bool) -> Result<ImportRows, ApiError> {
    let rows = if csv { csv_rows(body)? } else { json_rows(body)? };
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(ApiError::invalid_field("", format!("more than {MAX_IMPORT_ROWS} rows")));
    }
    let mut entries = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match row.as_ref().map_err(Clone::clone).and_then(|id| hashed(key, id)) {
            Ok(e) => entries.push(e),
            Err(mut p) => {
                p.index = Some(i);
                errors.push(p);
            }
        }
    }
    Ok((entries, errors))
}

fn json_rows(body: &[u8]) -> Result<Vec<Row>, ApiError> {
    let value = decode_json(body)?;
    let serde_json::Value::Array(items) = value else {
        return Err(ApiError::invalid_field("", "must be a JSON array of identifier objects"));
    };
    Ok(items
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| Problem { field: String::new(), index: None, message: e.to_string() })
        })
        .collect())
}

fn csv_rows(body: &[u8]) -> Result<Vec<Row>, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(body);
    let headers = reader.headers().map_err(|e| ApiError::BadRequest(format!("unreadable CSV header: {e}")))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let cols = [col("email"), col("linkedin_url"), col("apollo_id"), col("domain")];
    if cols.iter().all(Option::is_none) {
        return Err(ApiError::invalid_field("header", "names none of email, linkedin_url, apollo_id, domain"));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| ApiError::BadRequest(format!("unreadable CSV: {e}")))?;
        let cell = |c: Option<usize>| c.and_then(|i| record.get(i)).filter(|s| !s.is_empty()).map(str::to_owned);
        rows.push(Ok(SuppressionIdentifier {
            email: cell(cols[0]),
            linkedin_url: cell(cols[1]),
            apollo_id: cell(cols[2]),
            domain: cell(cols[3]),
        }));
    }
    Ok(rows)
}

/// List the entries (kind, hash prefix, when; there is no plaintext to show).
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", security(("bearer" = [])),
    params(SuppressionPageQuery),
    responses(
        (status = 200, description = "a page of entries, oldest first", body = SuppressionPage),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "a client key asking for the global list, or an admin key for a client's", body = ErrorBody),
        (status = 422, description = "a bad `after`, `limit` or `scope`", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[get("/v1/suppressions")]
pub async fn list(
    req: HttpRequest,
    query: web::Query<SuppressionPageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let scope = scope_of(&req, &state, query.scope)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(SuppressionId(
            Uuid::parse_str(a).map_err(|_| ApiError::invalid_field("after", "must be an entry id"))?,
        )),
    };
    let entries = state.store.list_suppressions(&scope, after, limit).await?;
    let next_after = (entries.len() as u64 == limit).then(|| entries.last().map(|e| e.id.0)).flatten();
    Ok(HttpResponse::Ok()
        .json(SuppressionPage { entries: entries.iter().map(Suppression::from).collect(), next_after }))
}

/// Remove one entry by id.
#[utoipa::path(delete, path = "/v1/suppressions/{id}", tag = "suppressions", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "entry id"), ScopeQuery),
    responses(
        (status = 200, description = "removed", body = SuppressionRemoved),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "a client key asking for the global list, or an admin key for a client's", body = ErrorBody),
        (status = 404, description = "no such entry on this list", body = ErrorBody),
        (status = 405, description = "`import` or `remove` as the id: those paths take POST", body = ErrorBody),
        (status = 422, description = "a bad `scope`", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[delete("/v1/suppressions/{id}")]
pub async fn remove_by_id(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ScopeQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // `DELETE /v1/suppressions/import` (or `/remove`) names a POST-only path, not an entry.
    if matches!(path.as_str(), "import" | "remove") {
        return Err(ApiError::MethodNotAllowed(vec!["POST".into()]));
    }
    let scope = scope_of(&req, &state, query.scope)?;
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound("suppression"))?;
    if !state.store.remove_suppression(&scope, SuppressionId(id)).await? {
        return Err(ApiError::NotFound("suppression"));
    }
    Ok(HttpResponse::Ok().json(SuppressionRemoved { removed: true }))
}

/// Remove the entry of an identifier, given again (it is hashed to find the entry).
#[utoipa::path(post, path = "/v1/suppressions/remove", tag = "suppressions", security(("bearer" = [])),
    params(ScopeQuery),
    request_body(content = SuppressionIdentifier, content_type = "application/json"),
    responses(
        (status = 200, description = "removed", body = SuppressionRemoved),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "missing or unknown API key", body = ErrorBody),
        (status = 403, description = "a client key asking for the global list, or an admin key for a client's", body = ErrorBody),
        (status = 404, description = "not on this list", body = ErrorBody),
        (status = 409, description = "the list is off (`SUPPRESSION_KEY` unset)", body = ErrorBody),
        (status = 413, description = "body over 16 KiB", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "not exactly one valid identifier", body = ErrorBody),
        (status = 500, description = "a bug of ours", body = ErrorBody),
        (status = 503, description = "the database is unreachable; retry", body = ErrorBody),
    ))]
#[post("/v1/suppressions/remove")]
pub async fn remove(
    req: HttpRequest,
    query: web::Query<ScopeQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (scope, _, hash) = scoped_hash(&req, &state, query.scope, payload).await?;
    if !state.store.remove_suppression_hash(&scope, &hash).await? {
        return Err(ApiError::NotFound("suppression"));
    }
    Ok(HttpResponse::Ok().json(SuppressionRemoved { removed: true }))
}
