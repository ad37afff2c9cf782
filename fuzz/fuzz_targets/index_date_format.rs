//! `shipper::encode::index::DateFormat`: parsing a configured format, rendering dates
//! with it, and reading index names back (retention), on arbitrary bytes.
//!
//! Input: `format \0 name`. Never a panic. When the format parses: every rendering is
//! a valid index name piece of the documented fixed width, and for formats that name a
//! day with a four-digit year, reading a rendering back gives the timestamp's date.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::encode::index::DateFormat;
use shipper::parse::Timestamp;

const TIMES: [&str; 5] = [
    "2024-07-08T03:42:58.332568869Z",
    "2021-01-03T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:00:00Z",
    "2020-12-31T12:00:00+14:00",
];

fuzz_target!(|data: &[u8]| {
    let (fmt, name) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(fmt) = std::str::from_utf8(fmt) else {
        return;
    };
    let Ok(format) = DateFormat::parse(fmt) else {
        return;
    };
    if let Ok(name) = std::str::from_utf8(name) {
        let _ = format.parse_date(name);
    }
    let round_trips = format.has_day() && !fmt.contains("%y");
    for t in TIMES {
        let ts = Timestamp::parse(t.as_bytes()).unwrap();
        let mut out = Vec::new();
        format.render(&ts, &mut out);
        let s = std::str::from_utf8(&out).expect("rendered dates are ASCII");
        assert!(
            s.bytes()
                .all(|b| !b.is_ascii_uppercase() && !b" \\/*?\"<>|,#:".contains(&b)),
            "{fmt:?} rendered {s:?}"
        );
        // Before 0000-01-03 the ISO year would be -1; it is rendered as 0000.
        if round_trips && !(fmt.contains("%G") && t.starts_with("0000")) {
            let day = chrono::NaiveDate::parse_from_str(&ts.as_str()[..10], "%Y-%m-%d").unwrap();
            assert_eq!(format.parse_date(s), Some(day), "{fmt:?}: {s:?} from {t}");
        }
    }
});
