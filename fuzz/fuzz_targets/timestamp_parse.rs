//! `shipper::parse::Timestamp::parse` on arbitrary bytes.
//!
//! On `Ok`: the text is `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, keeps the input's fractional
//! digits exactly, re-parses to itself, its index date is its date, and it is the same
//! instant as chrono's reading of the input (when chrono accepts the input).
//! On `Err`: chrono does not accept the input either, when the input is in the grammar
//! the parser documents (`T`, at most nine fractional digits, `Z` or `±HH:MM`, no leap
//! second) and its UTC year is within 0..=9999.

#![no_main]

use chrono::{DateTime, Datelike};
use libfuzzer_sys::fuzz_target;
use shipper::parse::Timestamp;

/// The fractional digits after the seconds (`s[19] == '.'`).
fn fraction(s: &[u8]) -> &[u8] {
    match s.get(19) {
        Some(b'.') => {
            let n = s[20..].iter().take_while(|b| b.is_ascii_digit()).count();
            &s[20..20 + n]
        }
        _ => &[],
    }
}

/// `(seconds, nanoseconds)` since the epoch.
fn instant<Tz: chrono::TimeZone>(t: &DateTime<Tz>) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn in_documented_grammar(s: &[u8]) -> bool {
    if s.len() < 20 || !matches!(s[10], b'T' | b't') || &s[17..19] == b"60" {
        return false;
    }
    let frac = fraction(s);
    if frac.len() > 9 {
        return false;
    }
    let rest = if frac.is_empty() {
        &s[19..]
    } else {
        &s[20 + frac.len()..]
    };
    matches!(rest, [b'Z' | b'z'] | [b'+' | b'-', _, _, b':', _, _])
}

fuzz_target!(|data: &[u8]| {
    let chrono = std::str::from_utf8(data)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let ts = match Timestamp::parse(data) {
        Ok(ts) => ts,
        Err(e) => {
            if let Some(c) = chrono {
                let year = c.naive_utc().year();
                assert!(
                    !in_documented_grammar(data) || !(0..=9999).contains(&year),
                    "rejected {:?} ({e}), which chrono reads as {c}",
                    String::from_utf8_lossy(data)
                );
            }
            return;
        }
    };
    let out = ts.as_bytes();
    assert!(out.ends_with(b"Z"), "{ts:?}");
    assert_eq!(ts.as_str().as_bytes(), out, "not ASCII: {out:?}");
    let frac = fraction(data);
    assert_eq!(fraction(out), frac, "fraction of {ts:?}");
    let shape_len = if frac.is_empty() { 20 } else { 21 + frac.len() };
    assert_eq!(out.len(), shape_len, "{ts:?}");
    for (i, &b) in out[..19].iter().enumerate() {
        let ok = match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        };
        assert!(ok, "byte {i} of {ts:?}");
    }
    assert_eq!(Timestamp::parse(out), Ok(ts), "re-parse of {ts:?}");
    let date = ts.index_date();
    assert_eq!(&date[..4], &out[..4]);
    assert_eq!(&date[5..7], &out[5..7]);
    assert_eq!(&date[8..10], &out[8..10]);

    let ours = DateTime::parse_from_rfc3339(ts.as_str())
        .unwrap_or_else(|e| panic!("chrono rejects our output {ts:?}: {e}"));
    assert_eq!(ours.offset().local_minus_utc(), 0);
    if let Some(c) = chrono {
        assert_eq!(
            instant(&c),
            instant(&ours),
            "{:?} became {ts:?}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(c.timestamp_nanos_opt(), ours.timestamp_nanos_opt());
        if let Some(n) = ours.timestamp_nanos_opt() {
            assert_eq!(ts.unix_nanos(), n, "unix_nanos of {ts:?}");
        }
        assert_eq!(ts.unix_millis(), ours.timestamp_millis(), "unix_millis of {ts:?}");
    }
});
