//! The jobs list, one job (counters, callback, people), one person, and the job's actions.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use apollo_client::Flag;
use chrono::Utc;
use job_store::{JobFilter, JobView};
use maud::{Markup, html};
use rules::{JobState, PersonState};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::core::csv_map::{ENRICHED_COLUMNS, SOURCE_COLUMNS_KEY, enriched_cells, input_cells, input_columns};
use crate::models::{Job, Person, PersonCounts};
use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav, age, badge, percent, when, wire_name};
use crate::ui::session::Viewer;
use crate::ui::sign_in::CsrfForm;
use crate::v1::endpoints::events::{last_event_id, stream_response};

/// Jobs per page of the list.
pub const JOBS_SHOWN: u64 = 50;
/// People per page of the job page.
pub const PEOPLE_SHOWN: u64 = 50;
/// People read per store call for the CSV download.
const EXPORT_PAGE: u64 = 500;

/// The jobs list's filter and cursor (the last job id of the previous page).
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

/// The job page's people filter and cursor.
#[derive(Deserialize)]
pub struct PeopleQuery {
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    after: Option<i64>,
}

fn counts_of(c: &PersonCounts) -> [(&'static str, i64); 11] {
    [
        ("queued", c.queued),
        ("submitted", c.submitted),
        ("awaiting_async", c.awaiting_async),
        ("complete", c.complete),
        ("partial", c.partial),
        ("not_found", c.not_found),
        ("invalid", c.invalid),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
        ("skipped_budget", c.skipped_budget),
        ("suppressed", c.suppressed),
    ]
}

/// People in a final state.
fn finished(c: &PersonCounts) -> i64 {
    c.complete + c.partial + c.not_found + c.invalid + c.failed + c.cancelled + c.skipped_budget + c.suppressed
}

/// A filter value only if it names a known state (anything else shows everything).
fn known<T: std::str::FromStr>(value: Option<&str>) -> Option<T> {
    value.and_then(|v| v.parse().ok())
}

/// One page of the jobs the viewer may see (an admin: every client's), newest first, of one
/// state if asked — filtered and paged by the database — and the cursor to the next page.
async fn load_jobs(
    state: &AppState,
    viewer: &Viewer,
    filter: Option<JobState>,
    after: Option<&str>,
) -> Result<(Vec<JobView>, Option<Uuid>), UiError> {
    let after = after.and_then(|a| Uuid::parse_str(a).ok());
    let scope = JobFilter { client: (!viewer.admin).then_some(viewer.name.as_str()), state: filter };
    // One more than a page says whether there is a next one.
    let mut jobs = state.store.list_jobs(scope, after, JOBS_SHOWN + 1).await?;
    let next = (jobs.len() as u64 > JOBS_SHOWN).then(|| {
        jobs.truncate(JOBS_SHOWN as usize);
        jobs.last().map(|j| j.id)
    });
    Ok((jobs, next.flatten()))
}

fn rows_markup(views: &[JobView], filter: Option<JobState>, after: Option<&str>, with_client: bool) -> Markup {
    let now = Utc::now();
    let jobs: Vec<Job> = views.iter().map(Job::from).collect();
    let live = jobs.iter().any(|j| !j.status.is_final());
    let url = format!("/ui/jobs/rows?state={}&after={}", filter.map_or("", JobState::as_str), after.unwrap_or(""));
    html! {
        tbody #job-rows hx-get=[live.then_some(&url)] hx-trigger=[live.then_some("every 2s")] hx-swap=[live.then_some("outerHTML")] {
            @if jobs.is_empty() {
                tr { td colspan="8" .muted { "No jobs yet." } }
            }
            @for (j, view) in jobs.iter().zip(views) {
                @let done = finished(&j.counts);
                tr {
                    td { a.mono href={ "/ui/jobs/" (j.id) } { (j.id) } }
                    @if with_client { td.client { (view.client) } }
                    td { (badge(&wire_name(&j.status))) }
                    td {
                        progress max="100" value=(percent(done, j.total)) { (percent(done, j.total)) "%" }
                        " " span.num { (percent(done, j.total)) " %" }
                    }
                    td.num { (done) " / " (j.total) }
                    td {
                        @for (name, n) in counts_of(&j.counts) {
                            @if n > 0 && !matches!(name, "queued" | "submitted" | "awaiting_async") {
                                span title=(name) { (badge(name)) " " (n) " " }
                            }
                        }
                    }
                    td.num { (j.credits_consumed) }
                    td.num title=(when(j.created_at)) { (age(j.created_at, now)) }
                }
            }
        }
    }
}

/// The jobs list, newest first (an admin sees every client's, with a client column).
#[get("/jobs")]
pub async fn list(
    viewer: Viewer,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let filter = known::<JobState>(q.state.as_deref());
    let (jobs, next) = load_jobs(&state, &viewer, filter, q.after.as_deref()).await?;
    let keep = filter.map(|s| format!("state={s}&")).unwrap_or_default();
    let body = html! {
        h1 { "Jobs" }
        nav.filters aria-label="Filter by state" {
            a href="/ui/jobs" class=[filter.is_none().then_some("on")] { "all" }
            @for s in JobState::ALL {
                a href={ "/ui/jobs?state=" (s) } class=[(filter == Some(*s)).then_some("on")] { (s) }
            }
        }
        table #jobs {
            thead { tr {
                th { "Job" } @if viewer.admin { th { "Client" } } th { "State" } th { "Progress" } th.num { "People done" }
                th { "Outcomes" } th.num { "Credits" } th.num { "Age" }
            } }
            (rows_markup(&jobs, filter, q.after.as_deref(), viewer.admin))
        }
        @if let Some(n) = next {
            p { a.button.secondary rel="next" href={ "/ui/jobs?" (keep) "after=" (n) } { "Next page" } }
        }
    };
    Ok(layout::html(StatusCode::OK, layout::page("Jobs", Some(&viewer), Nav::Jobs, body)))
}

/// The jobs list's rows alone, for htmx to swap in while jobs run.
#[get("/jobs/rows")]
pub async fn rows(
    viewer: Viewer,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let filter = known::<JobState>(q.state.as_deref());
    let (jobs, _) = load_jobs(&state, &viewer, filter, q.after.as_deref()).await?;
    Ok(layout::html(StatusCode::OK, rows_markup(&jobs, filter, q.after.as_deref(), viewer.admin)))
}

/// The job if it exists and the viewer may see it (another client's job is not found).
async fn visible_job(state: &AppState, viewer: &Viewer, id: &str) -> Result<job_store::JobView, UiError> {
    let id = Uuid::parse_str(id).map_err(|_| UiError::NotFound("job"))?;
    let job = state.store.get_job(id).await?.ok_or(UiError::NotFound("job"))?;
    if !viewer.may_see(&job.client) {
        return Err(UiError::NotFound("job"));
    }
    Ok(job)
}

/// The job if the viewer may read its people: an erased job's are gone (410, as in the API).
async fn readable_job(state: &AppState, viewer: &Viewer, id: &str) -> Result<job_store::JobView, UiError> {
    let job = visible_job(state, viewer, id).await?;
    match job.erased_at {
        Some(at) => Err(UiError::Gone(format!(
            "job {} was erased on {}: its people, their records and its CSV are gone",
            job.id,
            when(at)
        ))),
        None => Ok(job),
    }
}

fn summary_markup(job: &Job) -> Markup {
    let done = finished(&job.counts);
    let live = !job.status.is_final();
    let url = format!("/ui/jobs/{}/summary", job.id);
    // With `person.completed`, people finishing make events: the page's script (job-events.js)
    // follows the stream and refreshes on each, polling only as a slow fallback. Without, the
    // stream would carry nothing until the end, so the summary polls as before.
    let streamed = live && job.events.iter().any(|e| e == "person.completed");
    let stream_url = format!("/ui/jobs/{}/events", job.id);
    let trigger = if streamed { "job-event, every 30s" } else { "every 2s" };
    html! {
        section #summary hx-get=[live.then_some(&url)] hx-trigger=[live.then_some(trigger)] hx-swap=[live.then_some("outerHTML")]
            data-events=[streamed.then_some(&stream_url)] {
            p {
                (badge(&wire_name(&job.status))) " "
                progress max="100" value=(percent(done, job.total)) { (percent(done, job.total)) "%" }
                " " strong #percent { (percent(done, job.total)) " %" } " — " (done) " of " (job.total) " people done"
            }
            @if let Some(reason) = &job.pause_reason { p.notice { "Paused: " (reason) } }
            div.cards {
                @for (name, n) in counts_of(&job.counts) {
                    div.card { div.label { (badge(name)) } div.value { (n) } }
                }
                div.card { div.label { "Credits" } div.value #credits { (job.credits_consumed) } }
                div.card { div.label { "Apollo calls" } div.value { (job.apollo_calls) } }
                div.card {
                    div.label { "Possible double charges" }
                    div.value #double-charges {
                        (job.possible_double_charges)
                        @if job.possible_double_charges > 0 { " (≤ " (job.possible_double_charge_credits) " credits)" }
                    }
                }
            }
        }
    }
}

fn flag(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

fn callback_markup(job: &Job, viewer: &Viewer) -> Markup {
    html! {
        h2 { "Callback" }
        @match (&job.callback_url, &job.callback) {
            (None, _) => p.muted { "No callback URL." },
            (Some(url), None) => p { "To " code { (url) } " — sent when the job finishes." },
            (Some(url), Some(cb)) => {
                dl.kv {
                    dt { "URL" } dd { code { (url) } }
                    dt { "State" } dd #callback-state { (badge(&wire_name(&cb.state))) }
                    dt { "Webhook id" } dd.mono { (cb.webhook_id) }
                    dt { "Attempts" } dd { (cb.attempts) }
                    @if let Some(at) = cb.next_attempt_at { dt { "Next attempt" } dd { (when(at)) } }
                    @if let Some(at) = cb.delivered_at { dt { "Delivered" } dd { (when(at)) } }
                }
                table #callback-attempts {
                    thead { tr { th.num { "#" } th { "Trigger" } th { "At" } th.num { "Status" } th.num { "ms" } th { "Response / error" } } }
                    tbody {
                        @for a in &cb.attempt_log {
                            tr {
                                td.num { (a.attempt) } td { (a.trigger) } td { (when(a.at)) }
                                td.num { @if let Some(s) = a.status_code { (s) } @else { "—" } }
                                td.num { (a.duration_ms) }
                                td.mono { (a.error.as_deref().or(a.response_excerpt.as_deref()).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        div.actions {
            @if !job.status.is_final() {
                form method="post" action={ "/ui/jobs/" (job.id) "/cancel" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button.danger type="submit" { "Cancel job" }
                }
            }
            @if job.callback.is_some() && job.erased_at.is_none() {
                form method="post" action={ "/ui/jobs/" (job.id) "/redeliver" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button.secondary type="submit" #redeliver { "Redeliver callback" }
                }
            }
            @if job.erased_at.is_none() {
                a.button.secondary #download href={ "/ui/jobs/" (job.id) "/export.csv" } download { "Download CSV" }
            }
        }
    }
}

/// One page of people, of one outcome if asked (filtered and paged by the database): the page
/// and the cursor to the next one.
async fn people_page(
    state: &AppState,
    job: Uuid,
    outcome: Option<PersonState>,
    after: Option<i64>,
) -> Result<(Vec<Person>, Option<i64>), UiError> {
    // One more than a page says whether there is a next one.
    let mut page = state.store.list_people_in(job, outcome, after, PEOPLE_SHOWN + 1).await?;
    let next = (page.len() as u64 > PEOPLE_SHOWN).then(|| {
        page.truncate(PEOPLE_SHOWN as usize);
        page.last().map(|p| p.ordinal)
    });
    Ok((page.iter().map(Person::from).collect(), next.flatten()))
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// What the client sent for a person, in a few words.
fn input_summary(p: &Person) -> String {
    ["name", "first_name", "last_name", "email", "organization_name", "domain", "linkedin_url", "id"]
        .iter()
        .map(|k| text(p.input.get(*k)))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ")
}

fn people_markup(job: &Job, people: &[Person], outcome: Option<PersonState>, next: Option<i64>) -> Markup {
    let base = format!("/ui/jobs/{}", job.id);
    let keep = outcome.map(|o| format!("outcome={o}&")).unwrap_or_default();
    html! {
        h2 #people { "People" }
        nav.filters aria-label="Filter by outcome" {
            a href={ (base) "#people" } class=[outcome.is_none().then_some("on")] { "all" }
            @for s in PersonState::ALL {
                a href={ (base) "?outcome=" (s) "#people" } class=[(outcome == Some(*s)).then_some("on")] { (s.as_str().replace('_', " ")) }
            }
        }
        table #people-table {
            thead { tr {
                th.num { "#" } th { "State" } th { "Input" } th { "Name" } th { "Title" } th { "Company" }
                th { "Email" } th { "Mobile" } th.num { "Credits" }
            } }
            tbody {
                @if people.is_empty() { tr { td colspan="9" .muted { "Nobody here." } } }
                @for p in people {
                    @let cells = enriched_cells(p);
                    @let cell = |name: &str| ENRICHED_COLUMNS.iter().position(|c| *c == name).map(|i| cells[i].clone()).unwrap_or_default();
                    tr {
                        td.num { a href={ (base) "/people/" (p.id) } { (p.index) } }
                        td { (badge(&wire_name(&p.status))) }
                        td { (input_summary(p)) }
                        td { a href={ (base) "/people/" (p.id) } { (cell("full_name")) } }
                        td { (cell("title")) }
                        td { (cell("company")) }
                        td { (cell("email")) }
                        td.mono { (cell("mobile_phone")) }
                        td.num { (p.credits_consumed) }
                    }
                }
            }
        }
        @if let Some(n) = next {
            p { a.button.secondary rel="next" href={ (base) "?" (keep) "after=" (n) "#people" } { "Next page" } }
        }
    }
}

/// One job.
#[get("/jobs/{id}")]
pub async fn show(
    viewer: Viewer,
    path: web::Path<String>,
    q: web::Query<PeopleQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let view = visible_job(&state, &viewer, &path).await?;
    let job = Job::from(&view);
    let outcome = known::<PersonState>(q.outcome.as_deref());
    // An erased job keeps its counters and credits; its people are not read at all.
    let people = match job.erased_at {
        None => Some(people_page(&state, job.id, outcome, q.after).await?),
        Some(_) => None,
    };
    let body = html! {
        h1 { "Job " span.mono { (job.id) } }
        @if let Some(at) = job.erased_at {
            p.notice #erased {
                "This job was erased on " (when(at)) ": its people, their records, its metadata and its "
                "callback URL are gone. Its counters and credits stay (and count in the client's usage)."
            }
        }
        (summary_markup(&job))
        h2 { "Details" }
        dl.kv {
            dt { "Client" } dd { (view.client) }
            @for f in Flag::ALL { dt { (f.label()) } dd { (flag(job.options.get(f))) } }
            dt { "Submitted" } dd { (when(job.created_at)) }
            dt { "Last change" } dd { (when(job.updated_at)) }
            @if let Some(at) = job.cancel_requested_at { dt { "Cancel requested" } dd { (when(at)) } }
            @if let Some(at) = job.completed_at { dt { "Finished" } dd { (when(at)) } }
            @if let Some(at) = job.erased_at { dt { "Erased" } dd { (when(at)) } }
        }
        @if !job.failed_deliveries.is_empty() {
            h2 { "Apollo deliveries that could not be used" }
            table { thead { tr { th { "Received" } th { "Batch" } th { "Error" } } }
                tbody { @for d in &job.failed_deliveries { tr { td { (when(d.received_at)) } td.mono { (d.batch_id) } td { (d.error.as_deref().unwrap_or("")) } } } } }
        }
        (callback_markup(&job, &viewer))
        @if let Some((people, next)) = &people { (people_markup(&job, people, outcome, *next)) }
    };
    Ok(layout::html(StatusCode::OK, layout::page("Job", Some(&viewer), Nav::None, body)))
}

/// The job's live summary alone, for htmx.
#[get("/jobs/{id}/summary")]
pub async fn summary(
    viewer: Viewer,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let view = visible_job(&state, &viewer, &path).await?;
    Ok(layout::html(StatusCode::OK, summary_markup(&Job::from(&view))))
}

/// The job's events, live, for the job page's script: the stream of `GET /v1/jobs/{id}/events`
/// behind the session cookie (an `EventSource` cannot send a bearer key).
#[get("/jobs/{id}/events")]
pub async fn events(
    viewer: Viewer,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    // Readable, not only visible: the events carry the people's records, gone once erased.
    let job = readable_job(&state, &viewer, &path).await?;
    let after = last_event_id(&req).map_err(|rule| UiError::BadRequest(format!("Last-Event-ID {rule}")))?;
    Ok(stream_response(&state, &job, after))
}

/// One person's merged record and where each value came from.
#[get("/jobs/{id}/people/{person}")]
pub async fn person(
    viewer: Viewer,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let (job_id, person_id) = path.into_inner();
    let job = readable_job(&state, &viewer, &job_id).await?;
    let pid = Uuid::parse_str(&person_id).map_err(|_| UiError::NotFound("person"))?;
    let view = state.store.get_person(pid).await?.filter(|p| p.job_id == job.id).ok_or(UiError::NotFound("person"))?;
    let p = Person::from(&view);
    let record = p.typed_record().unwrap_or_default();
    let input = p.input.as_object().cloned().unwrap_or_default();
    let body = html! {
        p { a href={ "/ui/jobs/" (job.id) } { "← Job " (job.id) } }
        h1 { "Person " (p.index) " " (badge(&wire_name(&p.status))) }
        @if let Some(e) = &p.error { p.error { (e) } }
        @if !p.missing_parts.is_empty() { p.notice { "Never arrived: " (p.missing_parts.join(", ")) } }
        h2 { "Sent" }
        dl.kv {
            @for (k, v) in &input {
                @if k != "source_row" { dt { (k) } dd { (text(Some(v))) } }
            }
        }
        h2 { "Record" }
        dl.kv {
            dt { "Apollo id" } dd.mono { (p.apollo_id.clone().or(record.apollo_id.clone()).unwrap_or_default()) }
            @for (k, v) in &record.fields {
                @if k == "organization" {
                    @for (ok, ov) in v.as_object().cloned().unwrap_or_default() {
                        @if !ov.is_null() { dt { "organization." (ok) } dd { (text(Some(&ov))) } }
                    }
                } @else {
                    dt { (k) } dd { (text(Some(v))) }
                }
            }
            dt { "Credits" } dd { (p.credits_consumed) }
        }
        p.muted { "Fields come from Apollo's match answer (sync)." }
        h2 { "Emails" }
        table #emails {
            thead { tr { th { "Address" } th { "Status" } th { "Personal" } th { "From" } th { "Vendors" } } }
            tbody { @for e in &record.emails { tr {
                td { (e.address) } td { (e.status.as_deref().unwrap_or("")) } td { (flag(e.personal)) }
                td { (e.sources.join(", ")) } td { (e.vendors.join(", ")) }
            } } }
        }
        h2 { "Phones" }
        table #phones {
            thead { tr { th { "Number" } th { "As written" } th { "Kind" } th { "Status" } } }
            tbody { @for ph in &record.phones { tr {
                td.mono { (ph.e164) } td { (ph.raw.as_deref().unwrap_or("")) } td { (ph.kind.as_deref().unwrap_or("")) }
                td { (ph.status.as_deref().unwrap_or("")) }
            } } }
        }
        p.muted { "Phone numbers arrive by Apollo's phone webhook." }
    };
    Ok(layout::html(StatusCode::OK, layout::page("Person", Some(&viewer), Nav::None, body)))
}

fn back_to(job: Uuid) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("location", format!("/ui/jobs/{job}"))).finish()
}

/// Cancels a job.
#[post("/jobs/{id}/cancel")]
pub async fn cancel(
    viewer: Viewer,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let job = visible_job(&state, &viewer, &path).await?;
    state.store.cancel_job(job.id).await?;
    state.wake.callbacks.notify_one();
    state.wake.person_events.notify_one();
    tracing::info!(job_id = %job.id, by = %viewer.name, "job cancelled from the dashboard");
    Ok(back_to(job.id))
}

/// Sends the final callback again.
#[post("/jobs/{id}/redeliver")]
pub async fn redeliver(
    viewer: Viewer,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let job = visible_job(&state, &viewer, &path).await?;
    if job.erased_at.is_some() || job.callback.is_none() {
        return Err(UiError::BadRequest("this job has no callback to redeliver".into()));
    }
    state.store.redeliver_callback(job.id).await?;
    state.wake.callbacks.notify_one();
    state.wake.person_events.notify_one();
    Ok(back_to(job.id))
}

/// The job's people as CSV: the input columns, then the enriched ones — the same cells as
/// `enrichd export --with-input`.
#[get("/jobs/{id}/export.csv")]
pub async fn export_csv(
    viewer: Viewer,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let job = readable_job(&state, &viewer, &path).await?;
    let mut people = Vec::new();
    let mut after = None;
    loop {
        let page = state.store.list_people(job.id, after, EXPORT_PAGE).await?;
        after = page.last().map(|p| p.ordinal);
        let full = page.len() as u64 == EXPORT_PAGE;
        people.extend(page.iter().map(Person::from));
        if !full {
            break;
        }
    }
    let from_file = job.metadata.as_ref().and_then(|m| m.get(SOURCE_COLUMNS_KEY)).is_some();
    let columns = input_columns(job.metadata.as_ref(), &people);
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| UiError::Internal(e.to_string());
    w.write_record(columns.iter().map(String::as_str).chain(ENRICHED_COLUMNS)).map_err(csv_err)?;
    for p in &people {
        let mut row = input_cells(&columns, from_file, p);
        row.extend(enriched_cells(p));
        w.write_record(&row).map_err(csv_err)?;
    }
    let body = w.into_inner().map_err(|e| UiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/csv; charset=utf-8"))
        .insert_header(("content-disposition", format!("attachment; filename=\"job-{}.csv\"", job.id)))
        .body(body))
}
