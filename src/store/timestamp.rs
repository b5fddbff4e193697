//! Wall-clock instants as the store keeps them: Unix milliseconds (UTC). Conversion from
//! `SystemTime`, RFC 3339 formatting for the API, and parsing of the instants the API accepts
//! (`2024-05-01`, `2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`, or Unix seconds).
//!
//! Calendar arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic
//! Gregorian), so no date crate is needed.

use std::time::{Duration, SystemTime};

pub const SECOND_MS: u64 = 1000;
pub const HOUR_MS: u64 = 3600 * SECOND_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
pub const WEEK_MS: u64 = 7 * DAY_MS;

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `SystemTime` of Unix milliseconds `ms`.
pub fn system_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// `ms` as RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.000Z`.
pub fn format_rfc3339(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let in_day = ms % DAY_MS;
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        in_day / HOUR_MS,
        (in_day / 60_000) % 60,
        (in_day / 1000) % 60,
        in_day % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses an instant given to the API: RFC 3339 (with `Z` or an offset, optional fraction), a
/// bare date (midnight UTC), or integer Unix seconds. `None` for anything else or before 1970.
pub fn parse_instant(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok()?.checked_mul(SECOND_MS);
    }
    let date = s.get(..10)?;
    let (y, m, d) = (
        num(date.get(0..4)?)?,
        num(date.get(5..7)?)?,
        num(date.get(8..10)?)?,
    );
    if date.get(4..5)? != "-"
        || date.get(7..8)? != "-"
        || !(1..=12).contains(&m)
        || d == 0
        || d > days_in_month(y, m)
    {
        return None;
    }
    let days = days_from_civil(y as i64, m, d);
    let rest = s.get(10..)?;
    let mut ms: i64 = days * DAY_MS as i64;
    if !rest.is_empty() {
        let rest = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix('t'))
            .or_else(|| rest.strip_prefix(' '))?;
        let (h, min, sec) = (
            num(rest.get(0..2)?)?,
            num(rest.get(3..5)?)?,
            num(rest.get(6..8)?)?,
        );
        if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || h > 23 || min > 59 || sec > 60 {
            return None;
        }
        ms += i64::from(h * 3600 + min * 60 + sec.min(59)) * SECOND_MS as i64;
        let mut zone = rest.get(8..)?;
        if let Some(fraction) = zone.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let frac = fraction.get(..digits)?;
            let milli = format!("{:0<3}", frac.get(..digits.min(3))?);
            ms += i64::from(num(&milli)?);
            zone = fraction.get(digits..)?;
        }
        ms -= match zone {
            "Z" | "z" => 0,
            _ => {
                let sign = match zone.get(0..1)? {
                    "+" => 1,
                    "-" => -1,
                    _ => return None,
                };
                let (oh, om) = (num(zone.get(1..3)?)?, num(zone.get(4..6)?)?);
                if zone.len() != 6 || zone.get(3..4)? != ":" || oh > 23 || om > 59 {
                    return None;
                }
                sign * i64::from(oh * 60 + om) * 60_000
            }
        };
    }
    u64::try_from(ms).ok()
}

/// The start of the interval bucket holding `ms`: hours and days on UTC boundaries, weeks
/// starting Monday 00:00 UTC.
pub fn bucket_start(ms: u64, interval_ms: u64) -> u64 {
    if interval_ms == WEEK_MS {
        // 1970-01-01 was a Thursday; Mondays are 4 days later modulo 7.
        let shifted = ms + 3 * DAY_MS;
        (shifted - shifted % WEEK_MS).saturating_sub(3 * DAY_MS)
    } else {
        ms - ms % interval_ms.max(1)
    }
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            format_rfc3339(1_714_564_800_000),
            "2024-05-01T12:00:00.000Z"
        );
    }

    #[test]
    fn parses_rfc3339_dates_offsets_and_unix_seconds() {
        assert_eq!(
            parse_instant("2024-05-01T12:00:00Z"),
            Some(1_714_564_800_000)
        );
        assert_eq!(
            parse_instant("2024-05-01T14:00:00.5+02:00"),
            Some(1_714_564_800_500)
        );
        assert_eq!(parse_instant("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(parse_instant("1714564800"), Some(1_714_564_800_000));
        for round in [0, 951_782_400_123, 1_714_564_800_999] {
            assert_eq!(parse_instant(&format_rfc3339(round)), Some(round));
        }
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00",
            "-5",
            "2024-05-01T12:00:00+2",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn weeks_start_on_monday_and_days_at_midnight_utc() {
        // 2024-05-01 was a Wednesday; its week started Monday 2024-04-29.
        let wed = parse_instant("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(
            bucket_start(wed, WEEK_MS),
            parse_instant("2024-04-29").unwrap()
        );
        assert_eq!(
            bucket_start(wed, DAY_MS),
            parse_instant("2024-05-01").unwrap()
        );
        assert_eq!(bucket_start(wed + 59 * 60_000, HOUR_MS), wed);
    }
}
