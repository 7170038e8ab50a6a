//! The operator's page: whether dispatch is paused (and a button to resume), and queue depths.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use maud::html;

use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav, badge};
use crate::ui::session::Viewer;
use crate::ui::sign_in::CsrfForm;

fn admin(viewer: &Viewer) -> Result<(), UiError> {
    if viewer.admin { Ok(()) } else { Err(UiError::Forbidden) }
}

/// Dispatch state and queue depths.
#[get("/system")]
pub async fn show(viewer: Viewer, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    admin(&viewer)?;
    let pause = state.store.pause_reason().await?;
    let counts = state.store.state_counts().await?;
    let tables = [
        ("Jobs", &counts.jobs),
        ("People", &counts.people),
        ("Batches", &counts.batches),
        ("Apollo deliveries", &counts.deliveries),
        ("Callbacks", &counts.callbacks),
    ];
    let body = html! {
        h1 { "System" }
        h2 { "Dispatch" }
        @match &pause {
            Some(reason) => {
                p.notice #pause { "Paused: " (reason) }
                form method="post" action="/ui/system/resume" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" #resume { "Resume dispatch" }
                }
            }
            None => p #pause { (badge("running")) " Dispatch is running." },
        }
        h2 { "Queue depths" }
        div.cards {
            @for (title, rows) in tables {
                div.card {
                    div.label { (title) }
                    table { tbody { @for (s, n) in rows.iter() { tr { td { (badge(s)) } td.num { (n) } } } } }
                }
            }
        }
    };
    Ok(layout::html(StatusCode::OK, layout::page("System", Some(&viewer), Nav::System, body)))
}

/// Resumes dispatch after a pause.
#[post("/system/resume")]
pub async fn resume(
    viewer: Viewer,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    admin(&viewer)?;
    viewer.check_csrf(&form.csrf)?;
    let before = state.store.pause_reason().await?;
    state.store.set_pause(None).await?;
    tracing::info!(by = %viewer.name, ?before, "dispatch resumed from the dashboard");
    state.wake.dispatch.notify_one();
    Ok(HttpResponse::SeeOther().insert_header(("location", "/ui/system")).finish())
}
