//! Time formatting shared by the CLI and panels, and the one reading of the system
//! clock ([`unix_ms_now`]). Core logic never reads it; callers pass times in (Unix
//! milliseconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds (the edge of the system; the core takes time as input).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Civil date and time of day of a Unix time in seconds.
fn civil(unix_secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    (year, month, day, s / 3600, s % 3600 / 60, s % 60)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds (proleptic Gregorian).
pub fn rfc3339_from_unix_ms(unix_ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ms.div_euclid(1000));
    let millis = unix_ms.rem_euclid(1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in seconds: the wall clock.
pub fn utc_clock_text(unix_secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc_clock_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_clock_text(1_795_915_845), "2026-11-29 01:30:45 UTC");
        assert_eq!(utc_clock_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            rfc3339_from_unix_ms(1_714_557_600_123),
            "2024-05-01T10:00:00.123Z"
        );
        assert_eq!(rfc3339_from_unix_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
