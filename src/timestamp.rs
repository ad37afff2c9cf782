//! RFC 3339 timestamps as they appear in container logs, normalised to UTC text.
//!
//! Runtimes write `2024-07-08T03:42:57.123456789Z` (Docker trims trailing zeros of the
//! fraction, containerd always writes nine digits) and CRI-O writes local time with an
//! offset (`2024-07-08T11:42:57.123456789+08:00`). We keep the source's precision: the
//! fraction is copied as written, never rounded, so Kibana can order lines within a
//! millisecond when `@timestamp` is mapped as `date_nanos`.
//!
//! The common `Z` case is validated by hand and copied; only offsets go through chrono's
//! calendar arithmetic.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use std::fmt;

/// Longest text we produce: `YYYY-MM-DDTHH:MM:SS.fffffffffZ`.
const MAX_LEN: usize = 30;

/// A UTC timestamp stored inline as RFC 3339 text (`...Z`), with the source's precision,
/// and as the time since the Unix epoch (taken for every line: the multiline gap, the
/// lag metric).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    buf: [u8; MAX_LEN],
    len: u8,
    /// Nanoseconds since the Unix epoch (saturated outside 1677-2262).
    nanos: i64,
}

/// Why a timestamp was rejected; the text is used as `shipper.parse_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp is not RFC 3339")]
    Syntax,
    #[error("timestamp is out of range")]
    Range,
}

impl Timestamp {
    /// Parses RFC 3339 with a `Z` or `±HH:MM` offset and at most nine fractional digits.
    pub fn parse(s: &[u8]) -> Result<Timestamp, TimestampError> {
        if s.len() < 20 {
            return Err(TimestampError::Syntax);
        }
        let year = digits(&s[0..4])?;
        let month = digits(&s[5..7])?;
        let day = digits(&s[8..10])?;
        let hour = digits(&s[11..13])?;
        let minute = digits(&s[14..16])?;
        let second = digits(&s[17..19])?;
        if s[4] != b'-'
            || s[7] != b'-'
            || !matches!(s[10], b'T' | b't')
            || s[13] != b':'
            || s[16] != b':'
        {
            return Err(TimestampError::Syntax);
        }
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimestampError::Range);
        }
        let mut rest = &s[19..];
        let mut frac: &[u8] = &[];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return Err(TimestampError::Syntax);
            }
            frac = &rest[1..1 + n];
            rest = &rest[1 + n..];
        }
        let offset_minutes: i64 = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = digits(&[*h1, *h2])? as i64;
                let m = digits(&[*m1, *m2])? as i64;
                if h > 23 || m > 59 {
                    return Err(TimestampError::Range);
                }
                if *sign == b'+' {
                    h * 60 + m
                } else {
                    -(h * 60 + m)
                }
            }
            _ => return Err(TimestampError::Syntax),
        };
        let local_secs = days_from_civil(i64::from(year), i64::from(month), i64::from(day))
            * 86_400
            + i64::from(hour * 3600 + minute * 60 + second);
        let mut ts = Timestamp {
            buf: [0; MAX_LEN],
            len: 19,
            nanos: unix_nanos(local_secs - offset_minutes * 60, frac_nanos(frac)),
        };
        if offset_minutes == 0 {
            let head: &[u8; 19] = s[..19].try_into().map_err(|_| TimestampError::Syntax)?;
            ts.buf[..19].copy_from_slice(head);
            ts.buf[10] = b'T';
        } else {
            ts.len = 0;
            let local = NaiveDateTime::new(
                NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(TimestampError::Range)?,
                NaiveTime::from_hms_opt(hour, minute, second).ok_or(TimestampError::Range)?,
            );
            let utc = local
                .checked_sub_signed(Duration::minutes(offset_minutes))
                .ok_or(TimestampError::Range)?;
            if !(0..=9999).contains(&chrono::Datelike::year(&utc)) {
                return Err(TimestampError::Range);
            }
            let text = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
            ts.push(text.as_bytes());
        }
        if !frac.is_empty() {
            ts.push(b".");
            ts.push(frac);
        }
        ts.push(b"Z");
        Ok(ts)
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }

    /// The RFC 3339 text, always ending in `Z`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII digits and separators.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// `YYYY.MM.DD`, the daily index suffix.
    pub fn index_date(&self) -> [u8; 10] {
        let mut d = [0u8; 10];
        d.copy_from_slice(&self.buf[..10]);
        d[4] = b'.';
        d[7] = b'.';
        d
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        if self.nanos == i64::MAX || self.nanos == i64::MIN {
            // Past the years nanoseconds hold: from the (UTC) text.
            let b = &self.buf;
            let num = |r: std::ops::Range<usize>| {
                b[r].iter()
                    .fold(0, |n, d| n * 10 + i64::from(d.wrapping_sub(b'0')))
            };
            let days = days_from_civil(num(0..4), num(5..7), num(8..10));
            let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
            let len = self.len as usize;
            let frac = if b[19] == b'.' { &b[20..len - 1] } else { &[] };
            return secs * 1000 + frac_nanos(frac) / 1_000_000;
        }
        self.nanos.div_euclid(1_000_000)
    }

    /// Nanoseconds since the Unix epoch (saturating outside the years `i64` holds,
    /// 1677-2262).
    pub fn unix_nanos(&self) -> i64 {
        self.nanos
    }

    /// The time `nanos` after the Unix epoch.
    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        let text = chrono::DateTime::from_timestamp_nanos(nanos)
            .format("%Y-%m-%dT%H:%M:%S%.9fZ")
            .to_string();
        // chrono always prints a valid RFC 3339 UTC time here.
        Timestamp::parse(text.as_bytes()).unwrap_or(Timestamp::EPOCH)
    }

    /// The current time, for the rare record that has no timestamp of its own or of a
    /// neighbour (a file that holds nothing but garbage).
    pub fn now() -> Timestamp {
        Timestamp::from_unix_nanos(now_nanos())
    }

    pub const EPOCH: Timestamp = Timestamp {
        buf: *b"1970-01-01T00:00:00Z\0\0\0\0\0\0\0\0\0\0",
        len: 20,
        nanos: 0,
    };
}

/// The wall clock, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn digits(s: &[u8]) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(TimestampError::Syntax);
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Ok(v)
}

/// Nanoseconds since the Unix epoch, saturated to `i64::MIN` or `i64::MAX` outside the
/// years they hold.
fn unix_nanos(secs: i64, frac_ns: i64) -> i64 {
    match secs
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
    {
        Some(n) => n,
        None if secs < 0 => i64::MIN,
        None => i64::MAX,
    }
}

/// Nanoseconds of a fraction's digits (at most nine).
fn frac_nanos(frac: &[u8]) -> i64 {
    frac.iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0, |n, d| n * 10 + i64::from(d.wrapping_sub(b'0')))
}

/// Days from 1970-01-01 to a proleptic Gregorian date, by Howard Hinnant's
/// `days_from_civil`: no calendar library on the per-line path.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The older of two Unix millisecond timestamps, where 0 is none.
pub fn oldest_ms(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        Timestamp::parse(input.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn utc_is_copied_with_its_precision() {
        assert_eq!(
            ok("2024-07-08T03:42:57.123456789Z"),
            "2024-07-08T03:42:57.123456789Z"
        );
        assert_eq!(ok("2024-07-08T03:42:57.1Z"), "2024-07-08T03:42:57.1Z");
        assert_eq!(ok("2024-07-08T03:42:57Z"), "2024-07-08T03:42:57Z");
        assert_eq!(ok("2024-07-08t03:42:57.5z"), "2024-07-08T03:42:57.5Z");
    }

    #[test]
    fn offsets_become_utc() {
        assert_eq!(
            ok("2024-07-08T11:42:57.123456789+08:00"),
            "2024-07-08T03:42:57.123456789Z"
        );
        assert_eq!(ok("2024-07-08T01:00:00.5+08:00"), "2024-07-07T17:00:00.5Z");
        assert_eq!(ok("2024-12-31T22:30:00-05:00"), "2025-01-01T03:30:00Z");
        assert_eq!(
            ok("2024-07-08T03:42:57.000000001+00:00"),
            "2024-07-08T03:42:57.000000001Z"
        );
    }

    #[test]
    fn index_date() {
        let t = Timestamp::parse(b"2024-07-09T00:00:01Z").unwrap();
        assert_eq!(&t.index_date(), b"2024.07.09");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "2024-07-08",
            "2024-07-08T03:42:57",
            "2024-07-08T03:42:57.Z",
            "2024-07-08T03:42:57.1234567890Z",
            "2024-13-08T03:42:57Z",
            "2023-02-29T03:42:57Z",
            "2024-07-08T24:00:00Z",
            "2024-07-08T03:42:57+0800",
            "2024-07-08 03:42:57Z",
            "2024-07-08T03:42:57Zjunk",
            "２０２４-07-08T03:42:57Z",
        ] {
            assert!(
                Timestamp::parse(bad.as_bytes()).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(Timestamp::parse(b"2024-02-29T03:42:57Z").is_ok());
    }

    #[test]
    fn unix_nanos() {
        let t = Timestamp::parse(b"1970-01-01T00:00:01.5Z").unwrap();
        assert_eq!(t.unix_nanos(), 1_500_000_000);
    }

    #[test]
    fn unix_millis_agrees_with_chrono() {
        for text in [
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:01.5Z",
            "1969-12-31T23:59:59.5Z",
            "2000-02-29T12:34:56.789123456Z",
            "2024-07-08T03:42:58.332568869Z",
            "2024-12-31T23:59:59.999Z",
            "1600-03-01T00:00:00.01Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.9Z",
            "2021-01-03T01:00:00.123+02:00",
        ] {
            let t = Timestamp::parse(text.as_bytes()).unwrap();
            let want = chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_millis();
            assert_eq!(t.unix_millis(), want, "{text}");
        }
    }
}
