//! Dates as qmail writes them (qmail's `date822fmt`): `22 May 2003 01:41:42 -0000`, always UTC,
//! with no weekday and `-0000` ("UTC, local zone unknown", RFC 2822 section 3.3).
//!
//! The calendar arithmetic is Howard Hinnant's `civil_from_days`, so no date crate is needed on
//! the client's start-up path.

use std::time::SystemTime;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
}

impl Civil {
    /// Break down seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // civil_from_days (http://howardhinnant.github.io/date_algorithms.html)
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
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// Break down a `SystemTime` (times before the epoch count backwards).
    pub fn from_system(when: SystemTime) -> Civil {
        let secs = match when.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Civil::from_unix(secs)
    }

    /// The month's English abbreviation.
    pub fn month_name(&self) -> &'static str {
        MONTHS[(self.month.clamp(1, 12) - 1) as usize]
    }
}

/// `when` as qmail's `date822fmt` writes it: `22 May 2003 01:41:42 -0000`.
pub fn rfc822_utc(when: SystemTime) -> String {
    let c = Civil::from_system(when);
    format!(
        "{} {} {} {:02}:{:02}:{:02} -0000",
        c.day,
        c.month_name(),
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_qmail() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        assert_eq!(rfc822_utc(t), "22 May 2003 01:41:42 -0000");
        assert_eq!(rfc822_utc(SystemTime::UNIX_EPOCH), "1 Jan 1970 00:00:00 -0000");
        // A leap day.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc822_utc(t), "29 Feb 2000 00:00:00 -0000");
    }
}
