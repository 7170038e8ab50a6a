//! A new job from a CSV file: upload, see the column mapping and the first people as they will
//! be sent (the command-line client's mapping code), pick flags, submit.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use apollo_client::{EnrichFlags, Flag};
use futures_util::StreamExt;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use crate::core::csv_map::{Mapping, SOURCE_COLUMNS_KEY, map_headers};
use crate::core::validate::validate_job;
use crate::models::{JobRequest, PersonInput};
use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav};
use crate::ui::session::Viewer;

/// People shown in the preview.
const PREVIEW_ROWS: usize = 10;

/// What the form sent.
#[derive(Debug, Default)]
struct Upload {
    csrf: String,
    csv: String,
    flags: Vec<String>,
    callback_url: String,
    submit: bool,
}

/// The file read with the shared mapping code.
struct Parsed {
    mapping: Mapping,
    people: Vec<PersonInput>,
}

fn parse_csv(text: &str) -> Result<Parsed, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().map_err(|e| format!("reading the header row: {e}"))?.iter().map(str::to_string).collect();
    let mapping = map_headers(&headers, &[]).map_err(|e| e.to_string())?;
    if mapping.fields.iter().all(Option::is_none) {
        return Err("no column maps to a person field (name, email, company, domain, LinkedIn, …)".into());
    }
    let mut people = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("line {}: {e}", i + 2))?;
        let cells: Vec<&str> = record.iter().collect();
        people.push(mapping.person(&cells));
    }
    Ok(Parsed { mapping, people })
}

fn form_fields(viewer: &Viewer, upload: &Upload) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(viewer.csrf);
        fieldset {
            legend { "Flags" }
            @for f in Flag::ALL {
                label { input type="checkbox" name="flag" value=(f.name()) checked[upload.flags.iter().any(|n| n == f.name())]; " " (f.label()) }
                br;
            }
        }
        label for="callback_url" { "Callback URL (optional)" }
        input #callback_url type="url" name="callback_url" value=(upload.callback_url);
    }
}

fn upload_page(viewer: &Viewer, upload: &Upload, status: StatusCode, problem: Option<&str>) -> HttpResponse {
    let body = html! {
        h1 { "New job" }
        @if let Some(p) = problem { p.error { (p) } }
        form.stack method="post" action="/ui/new" enctype="multipart/form-data" {
            label for="file" { "CSV file (header row first)" }
            input #file type="file" name="file" accept=".csv,text/csv" required;
            (form_fields(viewer, upload))
            p { button type="submit" #preview { "Preview" } }
        }
    };
    layout::html(status, layout::page("New job", Some(viewer), Nav::NewJob, body))
}

fn preview_page(
    viewer: &Viewer,
    upload: &Upload,
    parsed: &Parsed,
    status: StatusCode,
    problems: &[String],
) -> HttpResponse {
    let body = html! {
        h1 { "New job: check and submit" }
        @if !problems.is_empty() {
            div.error { p { "Nothing was submitted:" } ul { @for p in problems { li { (p) } } } }
        }
        h2 { "Column mapping" }
        table #mapping {
            thead { tr { th { "Column" } th { "Sent as" } } }
            tbody { @for (h, f) in parsed.mapping.headers.iter().zip(&parsed.mapping.fields) { tr {
                td { (h) } td { @if let Some(f) = f { code { (f) } } @else { span.muted { "kept in the export, not sent" } } }
            } } }
        }
        h2 { "First people as they will be sent (" (parsed.people.len()) " in all)" }
        table #preview-rows {
            thead { tr { th.num { "#" } th { "Sent to Apollo" } } }
            tbody { @for (i, p) in parsed.people.iter().take(PREVIEW_ROWS).enumerate() { tr {
                td.num { (i) }
                td.mono { (serde_json::to_string(&PersonInput { source_row: None, ..p.clone() }).unwrap_or_default()) }
            } } }
        }
        form.stack method="post" action="/ui/new" enctype="multipart/form-data" {
            input type="hidden" name="csv" value=(upload.csv);
            input type="hidden" name="step" value="submit";
            (form_fields(viewer, upload))
            p.actions { button type="submit" #submit { "Submit " (parsed.people.len()) " people" } a.button.secondary href="/ui/new" { "Start over" } }
        }
    };
    layout::html(status, layout::page("New job", Some(viewer), Nav::NewJob, body))
}

async fn read_upload(mut form: Multipart, limit: usize) -> Result<Upload, UiError> {
    let mut upload = Upload::default();
    while let Some(field) = form.next().await {
        let (name, bytes) = crate::ui::form_field(field, limit).await?;
        let text =
            String::from_utf8(bytes.to_vec()).map_err(|_| UiError::BadRequest("the file is not UTF-8 text".into()))?;
        match name.as_str() {
            "csrf" => upload.csrf = text,
            "file" | "csv" if !text.is_empty() => upload.csv = text,
            "flag" => upload.flags.push(text),
            "callback_url" => upload.callback_url = text.trim().to_string(),
            "step" => upload.submit = text == "submit",
            _ => {}
        }
    }
    Ok(upload)
}

/// The upload form.
#[get("/new")]
pub async fn page(viewer: Viewer) -> HttpResponse {
    upload_page(&viewer, &Upload::default(), StatusCode::OK, None)
}

/// Previews an upload, or submits it as a job.
#[post("/new")]
pub async fn submit(viewer: Viewer, form: Multipart, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let upload = read_upload(form, state.config.max_body_bytes).await?;
    viewer.check_csrf(&upload.csrf)?;
    let parsed = match parse_csv(upload.csv.trim_start_matches('\u{feff}')) {
        Ok(p) => p,
        Err(problem) => return Ok(upload_page(&viewer, &upload, StatusCode::UNPROCESSABLE_ENTITY, Some(&problem))),
    };
    if !upload.submit {
        return Ok(preview_page(&viewer, &upload, &parsed, StatusCode::OK, &[]));
    }
    let mut metadata = Map::new();
    metadata.insert(SOURCE_COLUMNS_KEY.into(), json!(parsed.mapping.headers));
    let asked = EnrichFlags::of(upload.flags.iter().filter_map(|name| Flag::from_name(name)));
    let request = JobRequest {
        people: parsed.people.clone(),
        callback_url: (!upload.callback_url.is_empty()).then(|| upload.callback_url.clone()),
        metadata: Some(metadata),
        ..JobRequest::default()
    }
    .with_flags(asked);
    let value: Value = serde_json::to_value(&request).map_err(|e| UiError::Internal(e.to_string()))?;
    // The API's own validation: the dashboard cannot submit what the API would refuse.
    let job = match validate_job(&value, state.config.max_job_people, &state.config.callback_policy()) {
        Ok(job) => job,
        Err(problems) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| match p.index {
                    Some(i) => format!("line {}: {} {}", i + 2, p.field, p.message),
                    None => format!("{} {}", p.field, p.message),
                })
                .collect();
            return Ok(preview_page(&viewer, &upload, &parsed, StatusCode::UNPROCESSABLE_ENTITY, &lines));
        }
    };
    let reuse_within = job.reuse_within;
    let mut new = job.into_new_job(viewer.name.clone(), None);
    state.config.apply_credit_limits(&mut new);
    state.config.apply_reuse(&mut new, reuse_within);
    let created = state.store.create_job(new).await?;
    tracing::info!(job_id = %created.job.id, people = created.job.total, "job submitted from the dashboard");
    state.wake.dispatch.notify_one();
    Ok(HttpResponse::SeeOther().insert_header(("location", format!("/ui/jobs/{}", created.job.id))).finish())
}
