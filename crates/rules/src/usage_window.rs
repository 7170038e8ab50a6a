//! The usage window (`GET /v1/usage?from=&to=`): RFC 3339 instants or dates (UTC), by default the
//! current UTC month. The OpenAPI document declares each end as `date` or `date-time` (or empty),
//! so what is read here is exactly RFC 3339's `full-date` and `date-time`, nothing more lenient.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use crate::problem::FieldProblem;

/// `[from, to)`: jobs created at or after `from` and before `to`. A date as `from` starts at its
/// midnight (UTC); a date as `to` includes that whole day. Missing ends default to the current
/// UTC month's.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Vec<FieldProblem>> {
    let month_start = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let next_month = month_start.checked_add_months(chrono::Months::new(1)).unwrap_or(month_start);
    let mut problems = Vec::new();
    let mut end = |name: &str, raw: Option<&str>, day_end: bool, default: NaiveDate| match raw {
        None | Some("") => Some(midnight(default)),
        Some(s) => match parse(s, day_end) {
            Some(t) => Some(t),
            None => {
                problems.push(FieldProblem::new(
                    name,
                    None,
                    format!("{s:?} is not an RFC 3339 instant (2026-11-30T12:00:00Z) or a date (2026-11-30)"),
                ));
                None
            }
        },
    };
    let from = end("from", from, false, month_start);
    let to = end("to", to, true, next_month);
    match (from, to) {
        (Some(f), Some(t)) if f <= t => Ok((f, t)),
        (Some(_), Some(_)) => Err(vec![FieldProblem::new("to", None, "must not be before from")]),
        _ => Err(problems),
    }
}

/// The days (UTC, first and last, inclusive) that `[from, to)` touches, for figures kept per day;
/// an empty window gives a last day before the first.
pub fn vendor_days(from: DateTime<Utc>, to: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let last = to.checked_sub_signed(TimeDelta::nanoseconds(1)).unwrap_or(to).date_naive();
    (from.date_naive(), last)
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// An instant, or a date: its start, or (`day_end`) the start of the next day.
fn parse(s: &str, day_end: bool) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    // chrono alone would take more than RFC 3339 says (a space for `T`, one-digit months).
    if !(b.len() >= 10 && digits(&b[..4]) && b[4] == b'-' && digits(&b[5..7]) && b[7] == b'-' && digits(&b[8..10])) {
        return None;
    }
    if b.len() == 10 {
        let start = midnight(NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?);
        return if day_end { start.checked_add_signed(TimeDelta::days(1)) } else { Some(start) };
    }
    if !is_full_time(&b[10..]) {
        return None;
    }
    // The shape is right; chrono checks the ranges (month, day of the month, hour, offset).
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// `T hh:mm:ss[.fraction](Z | ±hh:mm)`, `T` and `Z` in either case (RFC 3339, section 5.6).
fn is_full_time(b: &[u8]) -> bool {
    let two = |at: usize| b.get(at..at + 2).is_some_and(digits);
    if !(b.len() >= 10 && matches!(b[0], b'T' | b't') && two(1) && b[3] == b':' && two(4) && b[6] == b':' && two(7)) {
        return false;
    }
    let mut rest = &b[9..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
    }
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
    fn exactly_rfc_3339_dates_and_instants() {
        let now = at("2026-11-30T12:00:00Z");
        for good in [
            "2026-11-02",
            "2024-02-29",
            "0001-01-01",
            "2026-11-02T10:00:00Z",
            "2026-11-02t10:00:00z",
            "2026-11-02T10:00:00.123456789+05:30",
            "2026-11-02T23:59:59-23:59",
        ] {
            assert!(window(Some(good), None, now).is_ok(), "{good:?} refused");
        }
        for bad in [
            " 2026-11-02",
            "2026-11-02 ",
            "2026-1-02",
            "20261102",
            "+2026-11-02",
            "+2026-11-2",
            "-2026-11-2",
            "2026-11-2 ",
            " 026-11-02",
            "2026- 1-02",
            "2026-11- 2",
            "2026-02-29",
            "2026-11-31",
            "2026-13-01",
            "2026-11-02T10:00:00",
            "2026-11-02 10:00:00Z",
            "2026-11-02T10:00Z",
            "2026-11-02T10:00:00.Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T10:60:00Z",
            "2026-11-02T10:00:00+0530",
            "2026-11-02T10:00:00+24:00",
            "2026-11-02T10:00:00+05:60",
            "2026-11-02T10:00:00+05:30:15",
            "2026-11-02T10:00:00Z ",
            "２０２６-11-02",
        ] {
            assert!(window(Some(bad), None, now).is_err(), "{bad:?} accepted");
            assert!(window(None, Some(bad), now).is_err(), "{bad:?} accepted as `to`");
        }
        // Empty is absent, as an unset parameter.
        assert_eq!(window(Some(""), Some(""), now), window(None, None, now));
    }

    #[test]
    fn vendor_days_are_the_days_touched() {
        let (f, t) = vendor_days(at("2026-11-02T00:00:00Z"), at("2026-11-04T00:00:00Z"));
        assert_eq!((f.to_string(), t.to_string()), ("2026-11-02".into(), "2026-11-03".into()));
        let (f, t) = vendor_days(at("2026-11-02T10:00:00Z"), at("2026-11-02T10:00:01Z"));
        assert_eq!((f.to_string(), t.to_string()), ("2026-11-02".into(), "2026-11-02".into()));
        let (f, t) = vendor_days(at("2026-11-02T00:00:00Z"), at("2026-11-02T00:00:00Z"));
        assert!(t < f);
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
