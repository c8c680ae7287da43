//! Dates as qmail writes them: `26 Sep 1995 04:46:53 -0000` (qmail's `date822fmt.c`), always in
//! UTC, plus the `YYYYMMDDHHMMSS` stamp of qmail's Message-IDs (`newfield.c`).
//!
//! This module owns turning a [`SystemTime`] into those strings, with no time-zone database and
//! no dependency: the civil date comes from the day count (H. Hinnant's `civil_from_days`).

use std::time::{SystemTime, UNIX_EPOCH};

/// English month abbreviations, as qmail prints them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59 (no leap seconds, as qmail on a POSIX clock).
    pub second: u32,
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
}

impl Civil {
    /// The UTC calendar time `secs` seconds after 1970-01-01 00:00:00 UTC.
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // civil_from_days: eras of 400 years starting on 0000-03-01.
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
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// Seconds since the epoch of this calendar time read as UTC (days_from_civil): the inverse
    /// of [`Civil::from_unix`], also used to find a local zone's offset.
    pub fn to_unix(&self) -> i64 {
        let (year, month) = (self.year, i64::from(self.month));
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5
            + i64::from(self.day)
            - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// The UTC calendar time of `t` (times before the epoch count backwards).
    pub fn from_system(t: SystemTime) -> Civil {
        // Clamped so that the day arithmetic of `from_unix` cannot overflow.
        const LIMIT: i64 = 1 << 50;
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(LIMIT).min(LIMIT),
            Err(e) => -i64::try_from(e.duration().as_secs())
                .unwrap_or(LIMIT)
                .min(LIMIT),
        };
        Civil::from_unix(secs)
    }

    /// The month's English abbreviation.
    pub fn month_name(&self) -> &'static str {
        MONTHS[(self.month.clamp(1, 12) - 1) as usize]
    }

    /// qmail's `date822fmt` without its newline: `26 Sep 1995 04:46:53 -0000`.
    pub fn rfc822(&self) -> String {
        format!(
            "{} {} {} {:02}:{:02}:{:02} -0000",
            self.day,
            self.month_name(),
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// The stamp that opens qmail's Message-IDs: `19950926044653`.
    pub fn stamp(&self) -> String {
        format!(
            "{}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// `t` as qmail writes dates: `26 Sep 1995 04:46:53 -0000`.
pub fn date822(t: SystemTime) -> String {
    Civil::from_system(t).rfc822()
}

/// qmail-inject's Date field: `Date: 26 Sep 1995 04:46:53 -0000\n`.
pub fn date_field(t: SystemTime) -> String {
    format!("Date: {}\n", date822(t))
}

/// qmail-inject's Message-ID field (`newfield.c`):
/// `Message-ID: <19950926044653.12345.qmail@silverton.berkeley.edu>\n`.
pub fn message_id_field(t: SystemTime, pid: u32, idhost: &[u8]) -> Vec<u8> {
    let mut s = format!(
        "Message-ID: <{}.{}.qmail@",
        Civil::from_system(t).stamp(),
        pid
    )
    .into_bytes();
    s.extend_from_slice(idhost);
    s.extend_from_slice(b">\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(Civil::from_unix(0).rfc822(), "1 Jan 1970 00:00:00 -0000");
        // The seed's example header: 22 May 2003 01:41:42 -0000.
        let t = UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        assert_eq!(date822(t), "22 May 2003 01:41:42 -0000");
        assert_eq!(Civil::from_system(t).stamp(), "20030522014142");
        assert_eq!(
            Civil::from_unix(951_782_400).rfc822(),
            "29 Feb 2000 00:00:00 -0000"
        );
        assert_eq!(
            Civil::from_unix(4_102_444_799).rfc822(),
            "31 Dec 2099 23:59:59 -0000"
        );
        assert_eq!(
            message_id_field(t, 281_988, b"lou.example.net"),
            b"Message-ID: <20030522014142.281988.qmail@lou.example.net>\n"
        );
    }
}
