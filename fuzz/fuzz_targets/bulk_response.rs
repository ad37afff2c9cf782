//! `_bulk` response parsing: never a panic; an accepted response accounts for every
//! document sent exactly once, and the positions it names are in range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::ship::bulk;

fuzz_target!(|input: (u8, &[u8])| {
    let (sent, body) = input;
    let sent = usize::from(sent % 64);
    if let Ok(r) = bulk::parse(body, sent) {
        assert_eq!(
            r.indexed + r.duplicate + r.retry.len() + r.reject.len(),
            sent,
            "every document accounted for"
        );
        assert!(r.throttled <= r.retry.len());
        let mut seen = vec![false; sent];
        for &i in r.retry.iter().chain(r.reject.iter().map(|(i, _, _)| i)) {
            assert!(i < sent && !seen[i], "position {i} out of range or twice");
            seen[i] = true;
        }
        for (_, status, err) in &r.reject {
            assert_eq!(bulk::classify(*status), bulk::Outcome::Reject);
            // Valid JSON grammar (a number may be beyond what `Value` can hold).
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(err).is_ok(),
                "error kept as JSON"
            );
        }
    }
});
