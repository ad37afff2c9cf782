//! JSON string *content* (the bytes between the quotes), kept escaped.
//!
//! Docker's `log` value is already a valid JSON string (Go's encoder escapes it), so the
//! hot path copies those bytes straight into the outgoing document instead of unescaping
//! and re-escaping. That is only safe if the bytes really are valid JSON string content,
//! so [`scan`] checks exactly that while it looks for the closing quote: every escape is
//! one JSON allows, there is no raw control character, and the bytes are UTF-8.
//! Anything else falls back to a real JSON parser.

use memchr::memchr2;

/// Finds the closing quote of a JSON string whose content starts at `s[0]`.
///
/// Returns the content length (the index of the closing quote) when the content is valid
/// JSON string text, `None` otherwise (unterminated, bad escape, control byte, bad UTF-8).
pub fn scan(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let at = i + memchr2(b'"', b'\\', &s[i..])?;
        if s[at] == b'"' {
            return is_clean(&s[..at]).then_some(at);
        }
        i = at + escape_len(&s[at..])?;
    }
}

/// Length of the escape sequence at the start of `s` (which starts with `\`). A UTF-16
/// surrogate must come as a high-low pair (12 bytes); a lone one is not valid text, and
/// Elasticsearch rejects it.
fn escape_len(s: &[u8]) -> Option<usize> {
    match s.get(1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex4(s.get(2..6)?)? {
            0xD800..=0xDBFF => {
                let low = s.get(6..12)?;
                (low.starts_with(b"\\u") && (0xDC00..=0xDFFF).contains(&hex4(&low[2..])?))
                    .then_some(12)
            }
            0xDC00..=0xDFFF => None,
            _ => Some(6),
        },
        _ => None,
    }
}

fn hex4(h: &[u8]) -> Option<u16> {
    if h.len() != 4 || !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

/// No raw control characters and valid UTF-8 (escapes are checked by the caller).
fn is_clean(s: &[u8]) -> bool {
    // Written as a plain fold so the compiler vectorises it.
    let controls = s.iter().fold(false, |acc, &b| acc | (b < 0x20));
    !controls && std::str::from_utf8(s).is_ok()
}

/// If valid escaped content ends with an escaped newline (`\n`, or `\u000a` from other
/// JSON writers), the length of that escape: how Docker marks the end of a record.
pub fn newline_suffix(s: &[u8]) -> Option<usize> {
    let len = if s.ends_with(br"\n") {
        2
    } else if s.len() >= 6 && s[s.len() - 6..].eq_ignore_ascii_case(br"\u000a") {
        6
    } else {
        return None;
    };
    // The escape's backslash must not itself be escaped.
    let backslashes = s[..s.len() - len + 1]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    (backslashes % 2 == 1).then_some(len)
}

/// The longest prefix of valid escaped content no longer than `max` bytes that ends on a
/// boundary: not inside an escape sequence or a UTF-8 character, and not after a lone
/// high surrogate escape (which Elasticsearch would reject without its pair).
pub fn safe_prefix(s: &[u8], max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = 0;
    let mut last_high_surrogate_at = None;
    while i < max {
        let len = if s[i] == b'\\' {
            escape_len(&s[i..]).unwrap_or(1)
        } else {
            utf8_len(s[i])
        };
        if i + len > max {
            break;
        }
        last_high_surrogate_at = if len == 6 && is_high_surrogate(&s[i + 2..i + 6]) {
            Some(i)
        } else {
            None
        };
        i += len;
    }
    last_high_surrogate_at.unwrap_or(i)
}

fn is_high_surrogate(hex: &[u8]) -> bool {
    matches!(
        hex,
        [b'd' | b'D', b'8' | b'9' | b'a' | b'b' | b'A' | b'B', _, _]
    )
}

/// Length of the UTF-8 sequence that starts with `b` (1 for stray continuation bytes).
pub fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Unescapes JSON string content `s` into `out` (cleared first), up to about `limit`
/// bytes of output. Invalid escapes are copied as they are and lone surrogates become
/// U+FFFD: the result is for looking at a line, not for storing it. Returns whether all
/// of `s` was unescaped.
pub fn unescape_prefix(s: &[u8], limit: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        if out.len() >= limit {
            return false;
        }
        let Some(rel) = memchr::memchr(b'\\', &s[i..]) else {
            let take = (s.len() - i).min(limit - out.len());
            out.extend_from_slice(&s[i..i + take]);
            i += take;
            continue;
        };
        let take = rel.min(limit - out.len());
        out.extend_from_slice(&s[i..i + take]);
        i += take;
        if take < rel {
            continue;
        }
        let b = s.get(i + 1).copied();
        let simple = match b {
            Some(b'n') => Some(b'\n'),
            Some(b't') => Some(b'\t'),
            Some(b'r') => Some(b'\r'),
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let hex_at = |at: usize| s.get(at..at + 4).and_then(hex4).map(u32::from);
        match (b, hex_at(i + 2)) {
            (Some(b'u'), Some(cp)) => {
                // A surrogate pair is one character.
                let low = (0xD800..0xDC00)
                    .contains(&cp)
                    .then(|| s.get(i + 6..i + 8).filter(|p| *p == br"\u"))
                    .flatten()
                    .and_then(|_| hex_at(i + 8))
                    .filter(|lo| (0xDC00..0xE000).contains(lo));
                let (c, len) = match low {
                    Some(lo) => (0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), 12),
                    None => (cp, 6),
                };
                let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += len;
            }
            _ => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    true
}

/// Appends `s` to `out` as JSON string content (no quotes), replacing invalid UTF-8
/// with U+FFFD.
pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    // Most text (keys, plain ASCII messages) needs no escaping at all.
    if s.iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(s);
        return;
    }
    let text = String::from_utf8_lossy(s);
    let start = out.len();
    let mut ser = serde_json::Serializer::new(&mut *out);
    // Serialising a str into a Vec cannot fail.
    let _ = serde::Serializer::serialize_str(&mut ser, &text);
    // serde_json wrote `"content"`: shift the content over the opening quote and drop
    // the closing one, so callers get bare content.
    let end = out.len();
    out.copy_within(start + 1..end - 1, start);
    out.truncate(end - 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_prefix_reads_a_line_start() {
        let mut out = Vec::new();
        assert!(unescape_prefix(
            br#"\tat x.y(Z.java:1) \"q\" \u003cb\u003e \u00e9"#,
            100,
            &mut out
        ));
        assert_eq!(out, "\tat x.y(Z.java:1) \"q\" <b> é".as_bytes());
        assert!(!unescape_prefix(br"abcdef", 3, &mut out));
        assert_eq!(out, b"abc");
        assert!(unescape_prefix(br"bad \q and \ud800", 100, &mut out));
        assert_eq!(out, "bad \\q and \u{fffd}".as_bytes());
        assert!(unescape_prefix(br"ends in \", 100, &mut out));
        assert!(unescape_prefix(
            br"\ud83d\ude00 \ud83d\u0041",
            100,
            &mut out
        ));
        assert_eq!(out, "\u{1f600} \u{fffd}A".as_bytes());
    }

    #[test]
    fn scan_finds_the_closing_quote() {
        assert_eq!(scan(br#"abc","x""#), Some(3));
        assert_eq!(scan(br#"a\"b\\","#), Some(6));
        assert_eq!(scan(br#"\u003chtml\u003e""#), Some(16));
        assert_eq!(scan("Zoë ✓\"".as_bytes()), Some(8));
        assert_eq!(scan(br#""#), None);
        assert_eq!(scan(br#"no end"#), None);
        assert_eq!(scan(br#"bad \q escape""#), None);
        assert_eq!(scan(br#"bad \u12 escape""#), None);
        assert_eq!(scan(b"raw \x01 control\""), None);
        assert_eq!(scan(b"bad \xff utf8\""), None);
        assert_eq!(scan(br#"trailing \"#), None);
    }

    #[test]
    fn newline_detection_counts_backslashes() {
        assert!(newline_suffix(br"abc\n").is_some());
        assert!(newline_suffix(br"abc\\n").is_none());
        assert!(newline_suffix(br"abc\\\n").is_some());
        assert!(newline_suffix(br"abc").is_none());
        assert!(newline_suffix(br"\n").is_some());
        assert_eq!(newline_suffix(br"abc\u000a"), Some(6));
        assert_eq!(newline_suffix(br"abc\u000A"), Some(6));
        assert_eq!(newline_suffix(br"abc\\u000a"), None);
    }

    #[test]
    fn surrogates_must_pair() {
        assert_eq!(scan(br#"\ud83d\ude00""#), Some(12));
        for lone in [
            &br#"\ud800""#[..],
            br#"\ude00""#,
            br#"\ude00\ud83d""#,
            br#"\ud800\u0041""#,
            br#"\ud800x""#,
        ] {
            assert_eq!(scan(lone), None, "{:?}", String::from_utf8_lossy(lone));
        }
    }

    #[test]
    fn safe_prefix_never_splits() {
        assert_eq!(safe_prefix(br"abcdef", 3), 3);
        assert_eq!(safe_prefix(br"ab\ncd", 3), 2);
        assert_eq!(safe_prefix(br"ab\u0041cd", 5), 2);
        assert_eq!(safe_prefix(br"ab\u0041cd", 8), 8);
        assert_eq!(safe_prefix("aé".as_bytes(), 2), 1);
        assert_eq!(safe_prefix(br"a\ud83d\ude00b", 12), 1);
        assert_eq!(safe_prefix(br"a\ud83d\ude00b", 13), 13);
        assert_eq!(safe_prefix(br"abc", 10), 3);
    }

    #[test]
    fn escape_round_trips() {
        for s in [
            "plain",
            "quote \" back \\ tab \t nl \n",
            "\u{1}\u{1f}",
            "Zoë ✓ 😀",
            "",
        ] {
            let mut out = b"prefix:".to_vec();
            escape_into(&mut out, s.as_bytes());
            let content = &out[7..];
            let quoted = [b"\"", content, b"\""].concat();
            assert_eq!(serde_json::from_slice::<String>(&quoted).unwrap(), s);
            assert_eq!(scan(&[content, b"\""].concat()), Some(content.len()));
        }
        let mut out = Vec::new();
        escape_into(&mut out, b"bad \xff byte");
        assert_eq!(out, "bad \u{fffd} byte".as_bytes());
    }
}
