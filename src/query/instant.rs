//! Instants as the window queries take and give them: milliseconds since the Unix epoch, or
//! ISO-8601 / RFC 3339 in UTC or with an offset (`2026-12-01T20:15:00Z`,
//! `2026-12-01T21:15:00.250+01:00`, `2026-12-01`). Kept here rather than pulling in a date
//! library for two functions.

const MS_PER_DAY: i64 = 86_400_000;

/// Parses `text` as epoch milliseconds or an ISO-8601 date-time.
pub fn parse(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    parse_iso(text).ok_or_else(|| {
        format!("`{text}` is neither milliseconds since the epoch nor an ISO-8601 time such as 2026-12-01T20:15:00Z")
    })
}

fn digits(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = text.get(range)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn parse_iso(text: &str) -> Option<i64> {
    let year = digits(text, 0..4)?;
    let (month, day) = (digits(text, 5..7)?, digits(text, 8..10)?);
    if text.get(4..5)? != "-" || text.get(7..8)? != "-" || !(1..=12).contains(&month) {
        return None;
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let date = days_from_civil(year, month, day) * MS_PER_DAY;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some(date);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (hour, minute) = (digits(rest, 0..2)?, digits(rest, 3..5)?);
    if rest.get(2..3)? != ":" || hour > 23 || minute > 59 {
        return None;
    }
    let mut at = 5;
    let mut second = 0;
    let mut millis = 0;
    if rest.get(5..6) == Some(":") {
        second = digits(rest, 6..8)?;
        if second > 60 {
            return None;
        }
        at = 8;
        if rest.get(8..9) == Some(".") {
            let fraction: String = rest[9..].chars().take_while(char::is_ascii_digit).collect();
            if fraction.is_empty() {
                return None;
            }
            let padded = format!("{fraction:0<3}");
            millis = padded[..3].parse::<i64>().ok()?;
            at = 9 + fraction.len();
        }
    }
    let offset_ms = match &rest[at..] {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (digits(zone, 1..3)?, digits(zone, 4..6)?);
            if zone.len() != 6 || zone.get(3..4)? != ":" || h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3_600_000 + m * 60_000)
        }
    };
    Some(date + hour * 3_600_000 + minute * 60_000 + second * 1_000 + millis - offset_ms)
}

/// Formats epoch milliseconds as RFC 3339 in UTC, with milliseconds only when there are any.
pub fn format(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let of_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (of_day / 3_600_000, of_day / 60_000 % 60);
    let (second, millis) = (of_day / 1_000 % 60, of_day % 1_000);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if millis != 0 {
        out.push_str(&format!(".{millis:03}"));
    }
    out.push('Z');
    out
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iso_and_epoch_forms() {
        assert_eq!(parse("1764620100000"), Ok(1_764_620_100_000));
        assert_eq!(parse("2025-12-01T20:15:00Z"), Ok(1_764_620_100_000));
        assert_eq!(parse("2025-12-01T21:15:00+01:00"), Ok(1_764_620_100_000));
        assert_eq!(parse("2025-12-01T20:15:00.25Z"), Ok(1_764_620_100_250));
        assert_eq!(parse("2025-12-01T20:15Z"), Ok(1_764_620_100_000));
        assert_eq!(parse("1970-01-01"), Ok(0));
        assert_eq!(parse("1969-12-31T23:59:59.999Z"), Ok(-1));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "2025-12-01T25:00Z",
            "2025-12-01T20:15:00+0100",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format(1_764_620_100_000), "2025-12-01T20:15:00Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse(&format(ms)), Ok(ms));
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }
    }
}
