//! Date parsing for `is_date_before` / `is_date_after`: relative flag values (`-7d`, `1h`, `2w`,
//! `1m`, `1y`) against an injected "now", and ISO-8601 values as posthog-python's `parse_datetime`.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// A flag-side date, precompiled; relative ones are resolved against `now` per evaluation.
#[derive(Debug, Clone)]
pub enum FlagDate {
    /// `now` minus `n` units (`h`, `d`, `w`, `m`, `y`).
    Relative(u32, u8),
    /// An absolute value; kept as text because a bare year depends on `now`.
    Absolute(String),
}

impl FlagDate {
    /// Classifies `str(value)` of the flag: `^-?<n><unit>$` with n < 10000 is relative.
    pub fn compile(text: &str) -> Self {
        relative(text).map_or_else(|| FlagDate::Absolute(text.to_owned()), |(n, u)| FlagDate::Relative(n, u))
    }

    /// The instant to compare with, or `None` when the flag's date is invalid (inconclusive).
    pub fn resolve(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            FlagDate::Relative(n, unit) => {
                let n = *n;
                match unit {
                    b'h' => now.checked_sub_signed(Duration::hours(i64::from(n))),
                    b'd' => now.checked_sub_signed(Duration::days(i64::from(n))),
                    b'w' => now.checked_sub_signed(Duration::weeks(i64::from(n))),
                    b'm' => now.checked_sub_months(Months::new(n)),
                    _ => now.checked_sub_months(Months::new(n.checked_mul(12)?)),
                }
            }
            FlagDate::Absolute(s) => parse_datetime(s, now),
        }
    }
}

fn relative(text: &str) -> Option<(u32, u8)> {
    let t = text.strip_prefix('-').unwrap_or(text);
    let (num, unit) = t.split_at(t.len().checked_sub(1)?);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unit = *unit.as_bytes().first()?;
    if !matches!(unit, b'h' | b'd' | b'w' | b'm' | b'y') {
        return None;
    }
    let n: u32 = num.parse().ok()?;
    (n < 10_000).then_some((n, unit))
}

/// ISO-8601 as `datetime.fromisoformat` after posthog-python's adjustments (`Z`/` UTC` suffix,
/// a space before the offset, a bare 4-digit year meaning that year on today's date). Naive is UTC.
pub fn parse_datetime(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        let year: i32 = s.parse().ok()?;
        let date = NaiveDate::from_ymd_opt(year, now.month(), now.day())?;
        return Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)));
    }
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix('Z'))
        .or_else(|| s.strip_suffix('z'))
        .map_or((s, false), |rest| (rest, true));
    let (body, utc_suffix) = s;
    let (date_part, rest) = split_date(body)?;
    let date = parse_date(date_part)?;
    if rest.is_empty() {
        return Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)));
    }
    let mut chars = rest.chars();
    let sep = chars.next()?;
    if !matches!(sep, 'T' | 't' | ' ') {
        return None;
    }
    let rest = chars.as_str();
    let (time_part, offset) = split_offset(rest)?;
    if utc_suffix && offset.is_some() {
        return None;
    }
    let time = parse_time(time_part.trim_end_matches(' '))?;
    if time_part.ends_with(' ') && offset.is_none() {
        return None;
    }
    let naive = NaiveDateTime::new(date, time);
    let secs = offset.unwrap_or(0);
    naive.checked_sub_signed(Duration::seconds(i64::from(secs))).map(|n| Utc.from_utc_datetime(&n))
}

fn split_date(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        return Some((s.get(..10)?, s.get(10..)?));
    }
    if b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit) {
        return Some((s.get(..8)?, s.get(8..)?));
    }
    None
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    let (y, m, d) = if s.len() == 10 {
        (s.get(0..4)?, s.get(5..7)?, s.get(8..10)?)
    } else {
        (s.get(0..4)?, s.get(4..6)?, s.get(6..8)?)
    };
    NaiveDate::from_ymd_opt(i32::try_from(digits(y)?).ok()?, digits(m)?, digits(d)?)
}

/// Splits `HH:MM:SS+01:00` into the time and the offset in seconds east of UTC.
fn split_offset(s: &str) -> Option<(&str, Option<i32>)> {
    let Some(pos) = s.find(['+', '-']) else {
        return Some((s, None));
    };
    let (time, off) = s.split_at(pos);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let off = &off[1..];
    let (h, m, sec) = match off.len() {
        2 => (digits(off)?, 0, 0),
        4 => (digits(off.get(..2)?)?, digits(off.get(2..)?)?, 0),
        5 if off.as_bytes()[2] == b':' => (digits(off.get(..2)?)?, digits(off.get(3..)?)?, 0),
        8 if off.as_bytes()[2] == b':' && off.as_bytes()[5] == b':' => {
            (digits(off.get(..2)?)?, digits(off.get(3..5)?)?, digits(off.get(6..)?)?)
        }
        _ => return None,
    };
    if h >= 24 || m >= 60 || sec >= 60 {
        return None;
    }
    let total = i32::try_from(h * 3600 + m * 60 + sec).ok()?;
    Some((time, Some(sign * total)))
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let (main, frac) = s.split_once(['.', ',']).map_or((s, None), |(a, b)| (a, Some(b)));
    let parts: Vec<&str> = if main.contains(':') {
        main.split(':').collect()
    } else {
        main.as_bytes().chunks(2).filter_map(|c| std::str::from_utf8(c).ok()).collect()
    };
    if parts.iter().any(|p| p.len() != 2) || parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let h = digits(parts[0])?;
    let m = parts.get(1).map_or(Some(0), |p| digits(p))?;
    let sec = parts.get(2).map_or(Some(0), |p| digits(p))?;
    let micro = match frac {
        None => 0,
        Some(f) if parts.len() == 3 && !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let f6: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            digits(&f6)?
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_micro_opt(h, m, sec, micro)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn relative_values_follow_posthog_python() {
        let now = at("2020-01-01T12:01:20.134Z");
        let r = |s: &str| FlagDate::compile(s).resolve(now);
        assert_eq!(r("1h"), Some(at("2020-01-01T11:01:20.134Z")));
        assert_eq!(r("30h"), Some(at("2019-12-31T06:01:20.134Z")));
        assert_eq!(r("7d"), r("1w"));
        assert_eq!(r("8w"), Some(at("2019-11-06T12:01:20.134Z")));
        assert_eq!(r("1m"), Some(at("2019-12-01T12:01:20.134Z")));
        assert_eq!(r("12m"), r("1y"));
        assert_eq!(r("8y"), Some(at("2012-01-01T12:01:20.134Z")));
        assert_eq!(r("-02w"), r("2w"));
        assert!(r("000h").is_some());
        for bad in ["1", "1x", "1.2y", "1z", "1s", "bazinga", "000hello", "1000000h", "10000d"] {
            assert_eq!(r(bad), None, "{bad}");
        }
    }

    #[test]
    fn absolute_values_follow_fromisoformat() {
        let now = at("2022-05-01T00:00:00Z");
        assert_eq!(parse_datetime("2022-05-01", now), Some(at("2022-05-01T00:00:00Z")));
        assert_eq!(parse_datetime("2022-04-05 12:34:12 +01:00", now), Some(at("2022-04-05T11:34:12Z")));
        assert_eq!(parse_datetime("2022-04-05T12:34:12.5Z", now), Some(at("2022-04-05T12:34:12.5Z")));
        assert_eq!(parse_datetime("2022-04-05 12:34:12 UTC", now), Some(at("2022-04-05T12:34:12Z")));
        assert_eq!(parse_datetime("1234", now), Some(at("1234-05-01T00:00:00Z")));
        assert_eq!(parse_datetime("abcdef", now), None);
        assert_eq!(parse_datetime("2022-13-01", now), None);
    }
}
