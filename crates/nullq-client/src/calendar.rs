//! Calendar arithmetic for the client's few dates: mbox `From_` lines and `mailq` listings (UTC),
//! and predate's `Date:` field (local time with a numeric zone).
//!
//! The client formats these itself rather than pull in a date crate: it must start in about a
//! millisecond, and qmail's formats are fixed and small.

use std::time::{SystemTime, UNIX_EPOCH};

pub use nullq_mail::date::{Civil, MONTHS};

/// English day abbreviations from Sunday, as ctime(3) prints them.
pub const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Seconds since the epoch now (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// UTC broken-down time of `secs` since the epoch.
pub fn utc(secs: i64) -> Civil {
    Civil::from_unix(secs)
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
    (civil, civil.to_unix() - secs)
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
            assert_eq!(utc(secs).to_unix(), secs);
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
