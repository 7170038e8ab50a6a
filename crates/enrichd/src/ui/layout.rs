//! The page frame and the small pieces every page shows the same way (states, ages, numbers).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::ui::session::Viewer;

/// Which top-level page is open, to mark it in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Not a top-level page.
    None,
    /// The jobs list.
    Jobs,
    /// The new-job form.
    NewJob,
    /// The usage page.
    Usage,
    /// The do-not-enrich list.
    Suppressions,
    /// The system page.
    System,
}

/// A whole page.
pub fn page(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would otherwise add an inline <style>, which the CSP refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · enrichd" }
                link rel="stylesheet" href="/ui/assets/app.css";
                link rel="icon" href="/ui/assets/icon.svg" type="image/svg+xml";
                script src="/ui/assets/htmx.min.js" defer {}
                // Does nothing on a page without a streamed summary; deferred, it runs after htmx.
                script src="/ui/assets/job-events.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/jobs" { "enrichd" }
                    @if let Some(v) = viewer {
                        a href="/ui/jobs" aria-current=[(nav == Nav::Jobs).then_some("page")] { "Jobs" }
                        a href="/ui/new" aria-current=[(nav == Nav::NewJob).then_some("page")] { "New job" }
                        a href="/ui/usage" aria-current=[(nav == Nav::Usage).then_some("page")] { "Usage" }
                        a href="/ui/suppressions" aria-current=[(nav == Nav::Suppressions).then_some("page")] { "Do not enrich" }
                        @if v.admin {
                            a href="/ui/system" aria-current=[(nav == Nav::System).then_some("page")] { "System" }
                        }
                        span.who {
                            span { "Signed in as " strong { (v.name) } @if v.admin { " (admin)" } }
                            form method="post" action="/ui/sign-out" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.secondary type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A rendered page as a response.
pub fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(markup.into_string())
}

/// A state in colour, with its name as text (colour is never the only signal).
pub fn badge(name: &str) -> Markup {
    html! { span class={ "state state-" (name) } { (name.replace('_', " ")) } }
}

/// A state enum's wire name (`awaiting_async`).
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// How long ago, coarsely: `42 s`, `5 min`, `3 h`, `2 d`.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// A timestamp as UTC text, to the second.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The whole percentage of `done` in `total` (100 for an empty job).
pub fn percent(done: i64, total: i64) -> i64 {
    if total <= 0 { 100 } else { (done * 100 / total).clamp(0, 100) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_percentages() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5 s");
        assert_eq!(age(now - chrono::Duration::seconds(600), now), "10 min");
        assert_eq!(age(now - chrono::Duration::hours(30), now), "1 d");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(badge("<b>").into_string(), r#"<span class="state state-&lt;b&gt;">&lt;b&gt;</span>"#);
    }
}
