//! The usage page: a client's spending in pictures — credits per day by kind (the last 30 days),
//! Apollo calls and 429s per minute (the last hours), what reuse saved, and the waterfall vendors.
//! A client sees its own; an admin everyone's, or one client's with `?client=`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use apollo_client::Credits;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use job_store::usage::DayCredits;
use maud::{Markup, html};
use serde::Deserialize;

use crate::models::UsageVendor;
use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::charts::{Series, StackedBars};
use crate::ui::layout::{self, Nav, when};
use crate::ui::session::Viewer;

/// Days of the credits chart, today included.
pub const DAYS_SHOWN: i64 = 30;
/// Hours of the calls chart.
pub const HOURS_SHOWN: i64 = 3;

/// Colours of the series (the legend names them).
const SYNC: &str = "#4c78a8";
const PHONE: &str = "#f58518";
const WATERFALL: &str = "#54a24b";
const ANSWERED: &str = "#4c78a8";
const LIMITED: &str = "#e45756";

/// An admin's choice of client.
#[derive(Deserialize)]
pub struct UsagePageQuery {
    #[serde(default)]
    client: Option<String>,
}

/// The `DAYS_SHOWN` days ending `today`, with each day's credits (zero without jobs).
pub fn credit_days(today: NaiveDate, days: &[DayCredits]) -> StackedBars<'static> {
    let dates: Vec<NaiveDate> = (0..DAYS_SHOWN).rev().map(|back| today - TimeDelta::days(back)).collect();
    let of = |d: &NaiveDate, pick: fn(&DayCredits) -> Credits| {
        days.iter().find(|x| x.day == *d).map_or(0.0, |x| pick(x).as_f64())
    };
    let series = |name: &str, colour, pick: fn(&DayCredits) -> Credits| Series {
        name: name.into(),
        colour,
        values: dates.iter().map(|d| of(d, pick)).collect(),
    };
    StackedBars {
        id: "credits-chart",
        title: "Credits per day by kind",
        unit: "credits",
        categories: dates.iter().map(|d| d.format("%m-%d").to_string()).collect(),
        label_every: 5,
        series: vec![
            series("sync", SYNC, |x| x.credits.sync),
            series("phone", PHONE, |x| x.credits.phone),
            series("waterfall", WATERFALL, |x| x.credits.waterfall),
        ],
    }
}

/// The minutes from `since` to `now` (each minute's start), with each one's calls and 429s.
pub fn call_minutes(
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    minutes: &[(DateTime<Utc>, i64, i64)],
) -> StackedBars<'static> {
    let first = job_store::calls::minute_of(since);
    let n = ((now - first).num_minutes() + 1).max(1);
    let starts: Vec<DateTime<Utc>> = (0..n).map(|i| first + TimeDelta::minutes(i)).collect();
    let at = |m: &DateTime<Utc>| minutes.iter().find(|x| x.0 == *m).map_or((0, 0), |x| (x.1, x.2));
    StackedBars {
        id: "calls-chart",
        title: "Apollo calls per minute (all clients)",
        unit: "calls",
        categories: starts.iter().map(|m| m.format("%H:%M").to_string()).collect(),
        label_every: 30,
        series: vec![
            Series {
                name: "answered".into(),
                colour: ANSWERED,
                values: starts.iter().map(&at).map(|(c, l)| (c - l).max(0) as f64).collect(),
            },
            Series { name: "429".into(), colour: LIMITED, values: starts.iter().map(|m| at(m).1 as f64).collect() },
        ],
    }
}

/// The vendor table.
pub fn vendor_table(vendors: &[UsageVendor]) -> Markup {
    html! {
        table #vendors {
            thead { tr {
                th { "Vendor" } th { "Kind" } th.num { "Attempts" } th.num { "Results" } th.num { "Verified" }
                th.num { "Credits attributed" } th.num { "Per verified result" }
            } }
            tbody {
                @if vendors.is_empty() {
                    tr { td colspan="7" .muted { "No waterfall deliveries in this period." } }
                }
                @for v in vendors {
                    tr {
                        td.vendor { (v.vendor) } td { (v.kind.as_str()) } td.num { (v.attempts) } td.num { (v.results) }
                        td.num { (v.verified) } td.num { (v.credits) }
                        td.num { @match v.cost_per_verified { Some(c) => (c), None => "—" } }
                    }
                }
            }
        }
    }
}

/// The usage page.
#[get("/usage")]
pub async fn show(
    viewer: Viewer,
    query: web::Query<UsagePageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let client =
        if viewer.admin { query.into_inner().client.filter(|c| !c.is_empty()) } else { Some(viewer.name.clone()) };
    let now = Utc::now();
    let today = now.date_naive();
    let first_day = today - TimeDelta::days(DAYS_SHOWN - 1);
    let from = first_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let days = state.store.credits_by_day(client.as_deref(), from, now + TimeDelta::seconds(1)).await?;
    let usage = state.store.usage_of(client.as_deref(), from, now + TimeDelta::seconds(1)).await?;
    let vendors: Vec<UsageVendor> = state
        .store
        .vendor_usage(client.as_deref(), Some(first_day), Some(today))
        .await?
        .iter()
        .map(UsageVendor::new)
        .collect();
    let since = now - TimeDelta::hours(HOURS_SHOWN);
    let minutes = state.store.call_minutes(since).await?;
    let whose = client.clone().unwrap_or_else(|| "every client".to_owned());
    let body = html! {
        h1 { "Usage" }
        p.muted { "Of " strong #usage-client { (whose) } ", over the jobs created since " (first_day) " (UTC), as of " (when(now)) "." }
        @if viewer.admin {
            form.inline method="get" action="/ui/usage" {
                label { "Client " input type="text" name="client" value=[client.as_deref()] placeholder="every client"; }
                " " button.secondary type="submit" { "Show" }
            }
        }
        section.cards #usage-summary {
            @for (label, id, value) in [
                ("Credits", "credits-total", usage.credits.to_string()),
                ("Sync", "credits-sync", usage.credits_by_kind.sync.to_string()),
                ("Phone", "credits-phone", usage.credits_by_kind.phone.to_string()),
                ("Waterfall", "credits-waterfall", usage.credits_by_kind.waterfall.to_string()),
                ("Jobs", "jobs", usage.jobs.to_string()),
                ("People", "people", usage.people.to_string()),
                ("Calls", "calls", usage.calls.to_string()),
                ("Saved by reuse", "saved", usage.credits_saved.to_string()),
            ] {
                div.card { div.label { (label) } div.value id=(id) { (value) } }
            }
        }
        h2 { "Credits per day" }
        (credit_days(today, &days).render())
        h2 { "Calls and 429s per minute, last " (HOURS_SHOWN) " hours" }
        p.muted { "Apollo calls are shared by every client's jobs, so this chart is the whole service's." }
        (call_minutes(since, now, &minutes).render())
        h2 { "Reuse savings" }
        p #reuse {
            @if usage.reuse_hits == 0 {
                "No person was answered from an earlier lookup in this period."
            } @else {
                strong { (usage.reuse_hits) } " people answered from an earlier lookup, saving "
                strong { (usage.credits_saved) } " credits"
                @if usage.credits.micros() + usage.credits_saved.micros() > 0 {
                    " (" (usage.credits_saved.micros() * 100 / (usage.credits.micros() + usage.credits_saved.micros()))
                    " % of what they would have cost together)"
                }
                "."
            }
        }
        h2 { "Waterfall vendors" }
        p.muted { "Credits are attributed by splitting each waterfall delivery's credits evenly over the vendors that returned a value." }
        (vendor_table(&vendors))
    };
    Ok(layout::html(StatusCode::OK, layout::page("Usage", Some(&viewer), Nav::Usage, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use job_store::CreditsByKind;

    #[test]
    fn thirty_days_end_today_and_empty_days_are_zero() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let day = DayCredits {
            day: today - TimeDelta::days(2),
            credits: CreditsByKind { sync: Credits::whole(3), phone: Credits::ZERO, waterfall: Credits(1_500_000) },
        };
        let c = credit_days(today, &[day]);
        assert_eq!(c.categories.len(), 30);
        assert_eq!((c.categories[0].as_str(), c.categories[29].as_str()), ("11-07", "12-06"));
        assert_eq!(c.series[0].values[27], 3.0);
        assert_eq!(c.series[2].values[27], 1.5);
        assert_eq!(c.peak(), 4.5);
        let svg = c.render().into_string();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
    }

    #[test]
    fn minutes_without_calls_are_zero_and_429s_stack_on_answers() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:30Z").unwrap().to_utc();
        let since = now - TimeDelta::hours(3);
        let m = job_store::calls::minute_of(now - TimeDelta::minutes(1));
        let c = call_minutes(since, now, &[(m, 10, 3)]);
        assert_eq!(c.categories.len(), 181);
        assert_eq!(c.series[0].values[179], 7.0);
        assert_eq!(c.series[1].values[179], 3.0);
        assert_eq!(c.peak(), 10.0);
    }

    #[test]
    fn vendor_rows_show_a_dash_without_a_verified_result() {
        let v = UsageVendor {
            vendor: "<V>".into(),
            kind: rules::VendorKind::Phone,
            attempts: 2,
            results: 1,
            verified: 0,
            credits: Credits::whole(8),
            cost_per_verified: None,
        };
        let html = vendor_table(&[v]).into_string();
        assert!(html.contains("&lt;V&gt;") && html.contains("<td class=\"num\">—</td>") && html.contains(">phone<"));
        assert!(vendor_table(&[]).into_string().contains("No waterfall deliveries"));
    }
}
