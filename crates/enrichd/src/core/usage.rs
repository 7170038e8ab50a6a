//! The window of `GET /v1/usage?from=&to=`: RFC 3339 instants or dates (UTC), by default the
//! current UTC month.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use crate::models::Problem;

/// `[from, to)`: jobs created at or after `from` and before `to`. A date as `from` starts at its
/// midnight (UTC); a date as `to` includes that whole day. Missing ends default to the current
/// UTC month's.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Vec<Problem>> {
    let month_start = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let next_month = month_start.checked_add_months(chrono::Months::new(1)).unwrap_or(month_start);
    let mut problems = Vec::new();
    let mut end = |name: &str, raw: Option<&str>, day_end: bool, default: NaiveDate| match raw.map(str::trim) {
        None | Some("") => Some(midnight(default)),
        Some(s) => match parse(s, day_end) {
            Some(t) => Some(t),
            None => {
                problems.push(Problem {
                    field: name.into(),
                    index: None,
                    message: format!("{s:?} is not an RFC 3339 instant (2026-11-30T12:00:00Z) or a date (2026-11-30)"),
                });
                None
            }
        },
    };
    let from = end("from", from, false, month_start);
    let to = end("to", to, true, next_month);
    match (from, to) {
        (Some(f), Some(t)) if f <= t => Ok((f, t)),
        (Some(_), Some(_)) => {
            Err(vec![Problem { field: "to".into(), index: None, message: "must not be before from".into() }])
        }
        _ => Err(problems),
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// An instant, or a date: its start, or (`day_end`) the start of the next day.
fn parse(s: &str, day_end: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let start = midnight(d);
    if day_end { start.checked_add_signed(TimeDelta::days(1)) } else { Some(start) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn defaults_to_the_current_month() {
        let (f, t) = window(None, None, at("2026-12-31T23:59:00Z")).unwrap();
        assert_eq!((f, t), (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn dates_cover_whole_days_and_instants_are_exact() {
        let now = at("2026-11-30T12:00:00Z");
        let (f, t) = window(Some("2026-11-02"), Some("2026-11-03"), now).unwrap();
        assert_eq!((f, t), (at("2026-11-02T00:00:00Z"), at("2026-11-04T00:00:00Z")));
        let (f, t) = window(Some("2026-11-02T10:00:00+02:00"), Some("2026-11-02T09:00:00Z"), now).unwrap();
        assert_eq!((f, t), (at("2026-11-02T08:00:00Z"), at("2026-11-02T09:00:00Z")));
    }

    #[test]
    fn bad_ends_are_named() {
        let now = at("2026-11-30T12:00:00Z");
        let e = window(Some("yesterday"), Some("2026-13-01"), now).unwrap_err();
        assert_eq!(e.iter().map(|p| p.field.as_str()).collect::<Vec<_>>(), ["from", "to"]);
        let e = window(Some("2026-11-05"), Some("2026-11-01"), now).unwrap_err();
        assert_eq!(e[0].field, "to");
    }
}
