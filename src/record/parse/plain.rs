//! Plain-text host log lines (`/var/log/kubelet.log`, syslog): each line is a record, and
//! its timestamp is read from the common prefixes when one is there.
//!
//! - RFC 3339 at the start of the line (`2024-07-08T03:42:57.123456Z ...`, rsyslog's
//!   high-precision format), or as logrus writes it (`time="2024-07-08T03:42:57Z" ...`,
//!   containerd and dockerd);
//! - klog (`I0708 03:42:57.123456   1234 file.go:12] ...`: kubelet, kube-proxy), and the
//!   header of klog's files (`Log file created at: 2024/07/08 03:42:57`);
//! - RFC 3164 syslog (`Jul  8 03:42:57 host prog[1]: ...`).
//!
//! klog and syslog stamps carry no year and no zone: they are read as UTC (what nodes
//! run), in the year that puts them nearest to a reference time, the previous good
//! line's (else the file's first-seen time), so a file spanning New Year stays in order
//! and a replay picks the same year. A line with no stamp is not an error: the record
//! stream gives it the time of the nearest good line before it (DESIGN's rule).

use super::Timestamp;
use chrono::{Datelike, NaiveDate, NaiveDateTime};

/// The line's own timestamp, if it starts with one of the known prefixes; `reference`
/// (nanoseconds since the epoch) picks the year of stamps that have none.
pub fn timestamp(line: &[u8], reference: i64) -> Option<Timestamp> {
    let first = *line.first()?;
    if first.is_ascii_digit() {
        let end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        return Timestamp::parse(&line[..end]).ok();
    }
    if let Some(rest) = line.strip_prefix(b"time=\"") {
        let end = memchr::memchr(b'"', rest)?;
        return Timestamp::parse(&rest[..end]).ok();
    }
    if let Some(rest) = line.strip_prefix(b"Log file created at: ") {
        return klog_header(rest);
    }
    if matches!(first, b'I' | b'W' | b'E' | b'F') {
        if let Some(t) = klog(line, reference) {
            return Some(t);
        }
    }
    syslog(line, reference)
}

/// klog's file header, `Log file created at: 2024/07/08 03:42:57`: the one stamp with a
/// year in a klog file, which the lines after it take theirs from.
fn klog_header(s: &[u8]) -> Option<Timestamp> {
    let s = s.get(..19)?;
    if s[4] != b'/' || s[7] != b'/' || s[10] != b' ' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let year = i32::try_from(num(&s[0..4])?).ok()?;
    let t = NaiveDate::from_ymd_opt(year, num(&s[5..7])?, num(&s[8..10])?)?.and_hms_opt(
        num(&s[11..13])?,
        num(&s[14..16])?,
        num(&s[17..19])?,
    )?;
    Some(Timestamp::from_unix_nanos(
        t.and_utc().timestamp_nanos_opt()?,
    ))
}

/// `Lmmdd hh:mm:ss.uuuuuu`.
fn klog(line: &[u8], reference: i64) -> Option<Timestamp> {
    let s = line.get(1..21)?;
    if s[4] != b' ' || s[7] != b':' || s[10] != b':' || s[13] != b'.' {
        return None;
    }
    let month = num(&s[0..2])?;
    let day = num(&s[2..4])?;
    let (h, m, sec) = (num(&s[5..7])?, num(&s[8..10])?, num(&s[11..13])?);
    let micros = num(&s[14..20])?;
    nearest(reference, month, day, (h, m, sec), micros * 1000)
}

/// `Mmm dd hh:mm:ss` (the day padded with a space or a zero).
fn syslog(line: &[u8], reference: i64) -> Option<Timestamp> {
    let s = line.get(..15)?;
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| &s[..3] == *m)? as u32 + 1;
    if s[3] != b' ' || s[6] != b' ' || s[9] != b':' || s[12] != b':' {
        return None;
    }
    let day = match s[4] {
        b' ' => num(&s[5..6])?,
        _ => num(&s[4..6])?,
    };
    let (h, m, sec) = (num(&s[7..9])?, num(&s[10..12])?, num(&s[13..15])?);
    nearest(reference, month, day, (h, m, sec), 0)
}

/// The time with the given month, day and clock, in the year (the reference's, the one
/// before or the one after) nearest to `reference`.
fn nearest(
    reference: i64,
    month: u32,
    day: u32,
    (h, m, s): (u32, u32, u32),
    nanos: u32,
) -> Option<Timestamp> {
    let year = chrono::DateTime::from_timestamp_nanos(reference).year();
    let at = |y: i32| -> Option<i64> {
        let t: NaiveDateTime =
            NaiveDate::from_ymd_opt(y, month, day)?.and_hms_nano_opt(h, m, s, nanos)?;
        t.and_utc().timestamp_nanos_opt()
    };
    let best = [year - 1, year, year + 1]
        .into_iter()
        .filter_map(at)
        .min_by_key(|t| t.abs_diff(reference))?;
    Some(Timestamp::from_unix_nanos(best))
}

fn num(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        Timestamp::parse(s.as_bytes()).unwrap().unix_nanos()
    }

    fn ts(line: &str, reference: &str) -> Option<String> {
        timestamp(line.as_bytes(), at(reference)).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn known_prefixes() {
        let r = "2024-07-10T00:00:00Z";
        assert_eq!(
            ts("I0708 03:42:57.123456   1234 kubelet.go:12] Starting", r).as_deref(),
            Some("2024-07-08T03:42:57.123456000Z")
        );
        assert_eq!(
            ts(
                "E1231 23:59:59.000001 1 x.go:1] boom",
                "2025-01-01T00:10:00Z"
            )
            .as_deref(),
            Some("2024-12-31T23:59:59.000001000Z"),
            "the year nearest the reference: New Year's Eve read in January"
        );
        assert_eq!(
            ts("Jul  8 03:42:57 node kubelet[12]: hi", r).as_deref(),
            Some("2024-07-08T03:42:57.000000000Z")
        );
        assert_eq!(
            ts("Jan 01 00:00:01 node x: y", "2024-12-31T23:00:00Z").as_deref(),
            Some("2025-01-01T00:00:01.000000000Z")
        );
        assert_eq!(
            ts("2024-07-08T03:42:57.5+02:00 node x: y", r).as_deref(),
            Some("2024-07-08T01:42:57.5Z")
        );
        assert_eq!(
            ts("Log file created at: 2023/12/31 23:59:58", r).as_deref(),
            Some("2023-12-31T23:59:58.000000000Z")
        );
        assert_eq!(
            ts("time=\"2024-07-08T03:42:57.123Z\" level=info msg=x", r).as_deref(),
            Some("2024-07-08T03:42:57.123Z")
        );
    }

    #[test]
    fn no_stamp_is_none_never_a_panic() {
        let r = at("2024-07-10T00:00:00Z");
        for line in [
            "",
            "# header",
            "Information about the node",
            "I0708",
            "I0708 03:42",
            "I1340 03:42:57.123456 1 x] month 13",
            "Feb 30 03:42:57 node x: no such day",
            "Jul  8 25:42:57 node x: hour 25",
            "Jul  8 03:42:5",
            "2024-07-08",
            "time=\"never",
            "Wé",
            "Log file created at: 2024/13/08 03:42:57",
            "Log file created at: yesterday",
        ] {
            assert_eq!(timestamp(line.as_bytes(), r), None, "{line:?}");
        }
        assert_eq!(timestamp(b"\xff\xfe", r), None);
        // Leap day: only in a leap year near the reference.
        assert!(timestamp(b"Feb 29 00:00:00 h x: y", at("2024-03-01T00:00:00Z")).is_some());
    }
}
