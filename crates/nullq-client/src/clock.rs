//! Calendar arithmetic for the client's few dates: mbox `From_` lines and `mailq` listings (UTC),
//! and predate's `Date:` field (local time with a numeric zone).
//!
//! The client formats these itself rather than pull in a date crate: it must start in about a
//! millisecond, and qmail's formats are fixed and small.

use std::time::{SystemTime, UNIX_EPOCH};

/// English month abbreviations, as qmail prints them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// English day abbreviations from Sunday, as ctime(3) prints them.
pub const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// A broken-down time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=60.
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

/// Seconds since the epoch now (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// UTC broken-down time of `secs` since the epoch (Howard Hinnant's civil_from_days).
pub fn utc(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Days since the epoch of a civil date (days_from_civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Local broken-down time of `secs` and the zone's offset east of UTC in seconds.
///
/// The offset is computed as qmail's predate does it, by reading the local fields as if they
/// were UTC and subtracting, so it needs nothing beyond localtime_r(3).
pub fn local(secs: i64) -> (Civil, i64) {
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain old data that localtime_r fully initialises on success; we read it
    // only when the call returned non-null. `t` and `tm` outlive the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return (utc(secs), 0);
        }
        tm
    };
    let civil = Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        weekday: tm.tm_wday as u32,
    };
    let as_utc = days_from_civil(civil.year, civil.month, civil.day) * 86_400
        + i64::from(civil.hour) * 3600
        + i64::from(civil.minute) * 60
        + i64::from(civil.second);
    (civil, as_utc - secs)
}

/// predate's `Date:` value: `26 Nov 2026 11:46:00 +0100` (no weekday, day not padded).
pub fn rfc822_local(secs: i64) -> String {
    let (c, offset) = local(secs);
    let minutes = (offset.abs() + 30) / 60;
    format!(
        "{} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        c.day,
        MONTHS[(c.month - 1) as usize % 12],
        c.year,
        c.hour,
        c.minute,
        c.second,
        if offset < 0 { '-' } else { '+' },
        minutes / 60,
        minutes % 60
    )
}

/// qmail's myctime: `Thu Nov 26 11:46:00 2026` in UTC (the `From_` line of an mbox).
pub fn ctime_utc(secs: i64) -> String {
    let c = utc(secs);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} {}",
        DAYS[c.weekday as usize % 7],
        MONTHS[(c.month - 1) as usize % 12],
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}

/// qmail-qread's date: `26 Nov 2026 11:46:00 GMT`.
pub fn qread_date(secs: i64) -> String {
    let c = utc(secs);
    format!(
        "{} {} {} {:02}:{:02}:{:02} GMT",
        c.day,
        MONTHS[(c.month - 1) as usize % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(ctime_utc(0), "Thu Jan 01 00:00:00 1970");
        // 2003-05-22 01:41:42 UTC, the seed's example header.
        assert_eq!(ctime_utc(1_053_567_702), "Thu May 22 01:41:42 2003");
        assert_eq!(qread_date(1_053_567_702), "22 May 2003 01:41:42 GMT");
        // A leap day.
        assert_eq!(ctime_utc(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn civil_round_trip() {
        for secs in [
            0i64,
            86_399,
            951_782_400,
            1_053_567_702,
            1_795_000_000,
            4_102_444_800,
        ] {
            let c = utc(secs);
            let back = days_from_civil(c.year, c.month, c.day) * 86_400
                + i64::from(c.hour * 3600 + c.minute * 60 + c.second);
            assert_eq!(back, secs);
        }
    }

    #[test]
    fn local_date_has_numeric_zone() {
        let d = rfc822_local(1_053_567_702);
        let zone = d.rsplit(' ').next().unwrap_or("");
        assert_eq!(zone.len(), 5, "{d}");
        assert!(zone.starts_with('+') || zone.starts_with('-'), "{d}");
    }
}
