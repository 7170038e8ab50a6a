//! The do-not-enrich list (`/ui/suppressions`): the entries (kind, hash prefix, scope, when; there
//! is no plaintext to show), a form to add one identifier, an import (CSV or JSON, typed or as a
//! file) and a remove button per entry. A client manages its own list, an admin the global one.
//! Parsing and hashing are the API's own ([`crate::v1::endpoints::suppressions`]).

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use futures_util::StreamExt;
use job_store::{Scope, SuppressionId};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::{Problem, Suppression, SuppressionIdentifier, SuppressionImport, SuppressionScope};
use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav};
use crate::ui::session::Viewer;
use crate::v1::endpoints::suppressions::{hashed, import_rows};

/// Entries per page.
const PAGE: u64 = 100;

/// The kinds the add form offers: (wire name, label).
const KINDS: [(&str, &str); 4] =
    [("email", "Email"), ("linkedin_url", "LinkedIn URL"), ("apollo_id", "Apollo id"), ("domain", "Domain")];

fn scope_of(viewer: &Viewer) -> Scope {
    if viewer.admin { Scope::Global } else { Scope::Client(viewer.name.clone()) }
}

/// What the page says after an action.
enum Notice {
    None,
    /// A fixed message (from a redirect's `?done=`).
    Done(&'static str),
    /// Refused input.
    Error(String),
    /// An import's outcome.
    Imported(SuppressionImport),
}

/// `?after=` (paging) and `?done=` (what the last action did).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    done: Option<String>,
}

async fn render(
    viewer: &Viewer,
    state: &AppState,
    after: Option<&str>,
    notice: Notice,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let scope = scope_of(viewer);
    let after = match after.filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(SuppressionId(Uuid::parse_str(a).map_err(|_| UiError::BadRequest("bad `after`".into()))?)),
    };
    let entries: Vec<Suppression> =
        state.store.list_suppressions(&scope, after, PAGE).await?.iter().map(Suppression::from).collect();
    let next = (entries.len() as u64 == PAGE).then(|| entries.last().map(|e| e.id)).flatten();
    let on = state.store.suppression_key().is_some();
    let body = html! {
        h1 { "Do-not-enrich list" }
        p {
            @if viewer.admin { "The global list: it applies to every client's jobs." }
            @else { "Your list: people matching an entry are never sent to Apollo; they end suppressed, at no cost." }
            " Only keyed hashes are stored, so entries show their kind and the start of their hash."
        }
        @if !on { p.error #list-off { "The list is off: the service has no SUPPRESSION_KEY." } }
        (notice_markup(&notice))
        @if on {
            h2 { "Add one" }
            form.stack #add-form method="post" action="/ui/suppressions/add" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="kind" { "Kind" }
                select #kind name="kind" { @for (k, label) in KINDS { option value=(k) { (label) } } }
                label for="value" { "Value" }
                input #value type="text" name="value" required maxlength="1024";
                p { button type="submit" #add { "Add" } }
            }
            h2 { "Import" }
            form.stack #import-form method="post" action="/ui/suppressions/import" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="file" { "A .csv file (header naming email, linkedin_url, apollo_id and/or domain) or a .json array" }
                input #file type="file" name="file" accept=".csv,.json,text/csv,application/json";
                label for="text" { "…or paste it here" }
                textarea #text name="text" rows="5" placeholder="email\nsomeone@example.com" {}
                p { button type="submit" #import { "Import" } }
            }
        }
        h2 { "Entries" }
        @if entries.is_empty() { p.muted #no-entries { "No entries." } }
        @else {
            table #entries {
                thead { tr { th { "Kind" } th { "Hash prefix" } th { "Scope" } th { "Created" } th { } } }
                tbody { @for e in &entries { tr data-id=(e.id) {
                    td.kind { (e.kind) }
                    td.mono.hash { (e.hash_prefix) }
                    td { (match e.scope { SuppressionScope::Client => "client", SuppressionScope::Global => "global" }) }
                    td { (layout::when(e.created_at)) }
                    td {
                        form method="post" action={ "/ui/suppressions/" (e.id) "/remove" } {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button.secondary type="submit" { "Remove" }
                        }
                    }
                } } }
            }
        }
        @if let Some(n) = next { p { a #next-page href={ "/ui/suppressions?after=" (n) } { "Next page" } } }
    };
    Ok(layout::html(status, layout::page("Do-not-enrich list", Some(viewer), Nav::Suppressions, body)))
}

fn notice_markup(notice: &Notice) -> Markup {
    html! {
        @match notice {
            Notice::None => {},
            Notice::Done(m) => p.notice #notice { (m) },
            Notice::Error(m) => p.error #notice { (m) },
            Notice::Imported(r) => div #notice {
                p.notice { "Added " (r.added) ", already present " (r.already_present) ", invalid " (r.invalid) "." }
                @if !r.errors.is_empty() {
                    ul.error { @for p in &r.errors { li { (row_problem(p)) } } }
                }
            },
        }
    }
}

/// A row's problem: the row (1-based, header not counted), the field, the message.
fn row_problem(p: &Problem) -> String {
    let field = if p.field.is_empty() { String::new() } else { format!("{} ", p.field) };
    match p.index {
        Some(i) => format!("row {}: {field}{}", i + 1, p.message),
        None => format!("{field}{}", p.message),
    }
}

/// An API error as one line for the page.
fn message(e: ApiError) -> String {
    match e {
        ApiError::Unprocessable { details, .. } if !details.is_empty() => {
            details.iter().map(row_problem).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}

fn back(done: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("location", format!("/ui/suppressions?done={done}"))).finish()
}

/// The list and its forms.
#[get("/suppressions")]
pub async fn show(
    viewer: Viewer,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let notice = match query.done.as_deref() {
        Some("added") => Notice::Done("Added."),
        Some("present") => Notice::Done("It was on the list already."),
        Some("removed") => Notice::Done("Removed."),
        _ => Notice::None,
    };
    render(&viewer, &state, query.after.as_deref(), notice, StatusCode::OK).await
}

/// The add form.
#[derive(Debug, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    value: String,
}

fn off(state: &AppState) -> Result<&rules::suppression::SuppressionKey, UiError> {
    state
        .store
        .suppression_key()
        .ok_or_else(|| UiError::BadRequest("the list is off: SUPPRESSION_KEY is not set".into()))
}

/// Adds one identifier.
#[post("/suppressions/add")]
pub async fn add(
    viewer: Viewer,
    form: web::Form<AddForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let key = off(&state)?;
    let value = Some(form.value.clone());
    let id = match form.kind.as_str() {
        "email" => SuppressionIdentifier { email: value, ..Default::default() },
        "linkedin_url" => SuppressionIdentifier { linkedin_url: value, ..Default::default() },
        "apollo_id" => SuppressionIdentifier { apollo_id: value, ..Default::default() },
        "domain" => SuppressionIdentifier { domain: value, ..Default::default() },
        _ => return Err(UiError::BadRequest("unknown kind".into())),
    };
    let entry = match hashed(key, &id) {
        Ok(e) => e,
        Err(p) => {
            let notice = Notice::Error(format!("Not added: {}", row_problem(&p)));
            return render(&viewer, &state, None, notice, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let done = state.store.add_suppressions(&scope_of(&viewer), &[entry]).await?;
    tracing::info!(by = %viewer.name, kind = %form.kind, added = done.added, "suppression added from the dashboard");
    Ok(back(if done.added == 1 { "added" } else { "present" }))
}

/// Imports a CSV or JSON file, or pasted text.
#[post("/suppressions/import")]
pub async fn import(viewer: Viewer, mut form: Multipart, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let limit = state.config.max_body_bytes;
    let (mut csrf, mut file, mut text) = (String::new(), Vec::new(), Vec::new());
    while let Some(field) = form.next().await {
        let (name, bytes) = crate::ui::form_field(field, limit).await?;
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "file" => file = bytes.to_vec(),
            "text" => text = bytes.to_vec(),
            _ => {}
        }
    }
    viewer.check_csrf(&csrf)?;
    let key = off(&state)?;
    let body = if file.iter().any(|b| !b.is_ascii_whitespace()) { file } else { text };
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace() && !matches!(b, 0xEF | 0xBB | 0xBF));
    let notice = match first {
        None => Notice::Error("Nothing to import: choose a file or paste the list.".into()),
        Some(first) => match import_rows(key, &body, first != b'[') {
            Err(e) => Notice::Error(format!("Nothing imported: {}", message(e))),
            Ok((entries, errors)) => {
                let done = state.store.add_suppressions(&scope_of(&viewer), &entries).await?;
                tracing::info!(by = %viewer.name, added = done.added, invalid = errors.len(), "suppressions imported from the dashboard");
                Notice::Imported(SuppressionImport {
                    added: done.added,
                    already_present: done.already_present,
                    invalid: errors.len() as u64,
                    errors,
                })
            }
        },
    };
    let status = if matches!(notice, Notice::Error(_)) { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    render(&viewer, &state, None, notice, status).await
}

/// The remove button's form.
#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
}

/// Removes one entry.
#[post("/suppressions/{id}/remove")]
pub async fn remove(
    viewer: Viewer,
    path: web::Path<String>,
    form: web::Form<RemoveForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let id = Uuid::parse_str(&path).map_err(|_| UiError::NotFound("entry"))?;
    if !state.store.remove_suppression(&scope_of(&viewer), SuppressionId(id)).await? {
        return Err(UiError::NotFound("entry"));
    }
    tracing::info!(by = %viewer.name, entry = %id, "suppression removed from the dashboard");
    Ok(back("removed"))
}
