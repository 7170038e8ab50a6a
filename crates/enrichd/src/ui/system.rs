//! The operator's page: whether dispatch is paused (and a button to resume), Apollo's allowance
//! per window, queue depths, the recent failed Apollo calls, and the replicas seen.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use job_store::system::is_live;
use maud::html;

use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::layout::{self, Nav, badge, when};
use crate::ui::session::Viewer;
use crate::ui::sign_in::CsrfForm;
use crate::worker::dispatch::Dispatcher;

/// Failed Apollo calls listed.
pub const ERRORS_SHOWN: u64 = 20;

fn admin(viewer: &Viewer) -> Result<(), UiError> {
    if viewer.admin { Ok(()) } else { Err(UiError::Forbidden) }
}

/// A window's length for people: `60.6 s`, `60 min`, `24 h`.
fn length(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.0} h", s / 3600.0)
    }
}

fn count(n: Option<impl std::fmt::Display>) -> String {
    n.map_or_else(|| "—".to_string(), |n| n.to_string())
}

/// Dispatch state, Apollo's allowance, queue depths, recent Apollo errors and replicas.
#[get("/system")]
pub async fn show(
    viewer: Viewer,
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, UiError> {
    admin(&viewer)?;
    let pause = state.store.pause_reason().await?;
    let allowance = dispatcher.allowance(&state).await?;
    let counts = state.store.state_counts().await?;
    let errors = state.store.recent_apollo_errors(ERRORS_SHOWN).await?;
    let (now, replicas) = state.store.replicas().await?;
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
        h2 { "Apollo allowance" }
        @if let Some(at) = allowance.blocked_until {
            p.notice #blocked-until { "No call before " (when(at)) " (a 429's retry-after, or a window Apollo says is used up)." }
        }
        table #allowance {
            thead { tr {
                th { "Window" } th.num { "Length" } th.num { "Configured" } th.num { "Learned" }
                th.num { "Limit in force" } th.num { "Used" } th.num { "Left" }
            } }
            tbody {
                @for (name, w) in ["minute", "hour", "day"].into_iter().zip(allowance.windows) {
                    tr {
                        td { (name) }
                        td.num { (length(w.len)) }
                        td.num { (count(w.configured)) }
                        td.num { (count(w.learned)) }
                        td class="num" id={ "limit-" (name) } { (w.limit.map_or_else(|| "no limit".to_string(), |l| l.to_string())) }
                        td class="num" id={ "used-" (name) } { (w.used) }
                        td class="num" id={ "left-" (name) } { (count(w.left)) }
                    }
                }
            }
        }
        p.muted {
            "Used: calls admitted in the last window length plus a margin of "
            span #margin { (allowance.margin.as_millis()) " ms" }
            " (measured from Apollo's answer times), sliding; that log alone decides when a call goes. 429s drawn: "
            span #rate-limited { (allowance.rate_limited) } "."
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
        h2 { "Recent Apollo errors" }
        table #apollo-errors {
            thead { tr { th { "At" } th { "Kind" } th.num { "Status" } th { "Batch" } th { "Message" } } }
            tbody {
                @if errors.is_empty() { tr { td colspan="5" .muted { "None recorded." } } }
                @for e in &errors {
                    tr {
                        td { (when(e.at)) }
                        td.kind { (e.kind) }
                        td.num { (count(e.status)) }
                        td.mono { (count(e.batch_id)) }
                        td.mono { (e.message) }
                    }
                }
            }
        }
        h2 { "Replicas" }
        table #replicas {
            thead { tr { th { "Replica" } th { "Host" } th { "Started" } th { "Last seen" } th { "State" } } }
            tbody {
                @for r in &replicas {
                    @let live = is_live(r.last_seen_at, now, state.config.reconcile_every);
                    tr {
                        td.mono { (r.owner) @if r.owner == state.owner { " (this one)" } }
                        td { (r.label) }
                        td { (when(r.started_at)) }
                        td { (when(r.last_seen_at)) }
                        td { (badge(if live { "live" } else { "stale" })) }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_lengths_read_naturally() {
        assert_eq!(length(Duration::from_millis(60_600)), "60.6 s");
        assert_eq!(length(Duration::from_secs(3600)), "60 min");
        assert_eq!(length(Duration::from_secs(86_400)), "24 h");
    }
}
