//! Docker json-file lines: `{"log":"msg\n","stream":"stdout","time":"2024-...Z"}`.
//!
//! dockerd always writes the keys in this order (with an optional `attrs` object from
//! `--log-opt labels/env` before `time`), so the fast path matches that layout byte by
//! byte and returns the `log` value still escaped, for a zero-copy encode. Anything off
//! the fast path (other key order, extra keys, whitespace) goes through serde_json, so
//! correctness never depends on the fast path.
//!
//! A `log` value without a trailing `\n` is a partial: dockerd splits messages at 16 KiB.

use super::{Line, ParseError, Stream, Text, Timestamp};
use crate::encode::escaped;
use serde::Deserialize;
use std::borrow::Cow;

const PREFIX: &[u8] = br#"{"log":""#;

/// Parses one json-file line (without the line's own `\n`).
pub fn parse(line: &[u8]) -> Result<Line<'_>, ParseError> {
    match fast(line) {
        Some(parsed) => Ok(parsed),
        None => slow(line),
    }
}

fn fast(line: &[u8]) -> Option<Line<'_>> {
    let rest = line.strip_prefix(PREFIX)?;
    let len = escaped::scan(rest)?;
    let log = &rest[..len];
    let rest = rest[len + 1..].strip_prefix(br#","stream":""#)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout\"") {
        (Stream::Stdout, r)
    } else {
        (Stream::Stderr, rest.strip_prefix(b"stderr\"")?)
    };
    let rest = rest.strip_prefix(br#","time":""#)?;
    let end = memchr::memchr(b'"', rest)?;
    if &rest[end..] != b"\"}" {
        return None;
    }
    let time = Timestamp::parse(&rest[..end]).ok()?;
    let newline = escaped::newline_suffix(log);
    let partial = newline.is_none();
    let text = &log[..log.len() - newline.unwrap_or(0)];
    Some(Line {
        time,
        stream,
        partial,
        text: Text::Escaped(text),
    })
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
}

fn slow(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let raw: Raw<'_> = serde_json::from_slice(line).map_err(|_| ParseError::DockerJson)?;
    let log = raw.log.ok_or(ParseError::DockerNoLog)?;
    let stream = raw
        .stream
        .as_deref()
        .and_then(|s| Stream::parse(s.as_bytes()))
        .ok_or(ParseError::Stream)?;
    let time = raw
        .time
        .as_deref()
        .ok_or(ParseError::Timestamp)
        .and_then(|t| Timestamp::parse(t.as_bytes()).map_err(|_| ParseError::Timestamp))?;
    let mut log = log.into_owned();
    let partial = !log.ends_with('\n');
    if !partial {
        log.pop();
    }
    Ok(Line {
        time,
        stream,
        partial,
        text: Text::Owned(log),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line<'_>) -> String {
        match &line.text {
            Text::Escaped(e) => serde_json::from_slice(&[b"\"", *e, b"\""].concat()).unwrap(),
            Text::Owned(s) => s.clone(),
            Text::Raw(r) => String::from_utf8_lossy(r).into_owned(),
        }
    }

    /// (line, message, stream, partial, utc time)
    const VALID: &[(&str, &str, Stream, bool, &str)] = &[
        (
            r#"{"log":"hello\n","stream":"stdout","time":"2024-07-08T03:42:57.123456789Z"}"#,
            "hello",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            r#"{"log":"\n","stream":"stderr","time":"2024-07-08T03:42:57Z"}"#,
            "",
            Stream::Stderr,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            r#"{"log":"\u003cb\u003e \"q\" \\ \t\n","stream":"stdout","time":"2024-07-08T03:42:57.1Z"}"#,
            "<b> \"q\" \\ \t",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.1Z",
        ),
        (
            r#"{"log":"partial chunk","stream":"stdout","time":"2024-07-08T03:42:57.5Z"}"#,
            "partial chunk",
            Stream::Stdout,
            true,
            "2024-07-08T03:42:57.5Z",
        ),
        (
            r#"{"log":"ends in backslash-n \\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
            "ends in backslash-n \\n",
            Stream::Stdout,
            true,
            "2024-07-08T03:42:57Z",
        ),
        (
            r#"{"log":"with attrs\n","stream":"stdout","attrs":{"tag":"x"},"time":"2024-07-08T03:42:57Z"}"#,
            "with attrs",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            r#"{"stream":"stderr","time":"2024-07-08T11:42:57+08:00","log":"reordered\n"}"#,
            "reordered",
            Stream::Stderr,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            r#"{ "log" : "spaces\n" , "stream" : "stdout" , "time" : "2024-07-08T03:42:57Z" }"#,
            "spaces",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            "{\"log\":\"Zoë ✓ 😀\\n\",\"stream\":\"stdout\",\"time\":\"2024-07-08T03:42:57Z\"}",
            "Zoë ✓ 😀",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            r#"{"log":"\ud83d\ude00\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
            "😀",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
    ];

    #[test]
    fn valid_lines() {
        for (line, msg, stream, partial, time) in VALID {
            let parsed = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(text(&parsed), *msg, "{line}");
            assert_eq!(parsed.stream, *stream, "{line}");
            assert_eq!(parsed.partial, *partial, "{line}");
            assert_eq!(parsed.time.as_str(), *time, "{line}");
        }
    }

    #[test]
    fn dockerd_layout_takes_the_zero_copy_path() {
        let line = br#"{"log":"a \"b\"\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#;
        assert_eq!(parse(line).unwrap().text, Text::Escaped(br#"a \"b\""#));
    }

    #[test]
    fn fast_and_slow_paths_agree_on_a_u000a_newline() {
        let fast = parse(br#"{"log":"abc\u000a","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#)
            .unwrap();
        assert_eq!(
            (fast.partial, fast.text),
            (false, Text::Escaped(&b"abc"[..]))
        );
        let slow = parse(br#"{"stream":"stdout","log":"abc\u000a","time":"2024-07-08T03:42:57Z"}"#)
            .unwrap();
        assert_eq!(
            (slow.partial, slow.text),
            (false, Text::Owned("abc".into()))
        );
    }

    #[test]
    fn lone_surrogates_are_not_copied() {
        assert!(
            parse(br#"{"log":"\ud800\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#)
                .is_err()
        );
    }

    #[test]
    fn invalid_lines() {
        for line in [
            r#"{"log":"x\n","stream":"stdin","time":"2024-07-08T03:42:57Z"}"#,
            r#"{"log":"x\n","stream":"stdout"}"#,
            r#"{"stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
            r#"{"log":"x\n","stream":"stdout","time":"2024-07-08T03:42:57Z"} trailing"#,
            r#"{"log":"half a line wri{"log":"next\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
            r#"{"log":"bad \q\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
            r#"{"log":12,"stream":"stdout","time":"2024-07-08T03:42:57Z"}"#,
        ] {
            assert!(parse(line.as_bytes()).is_err(), "accepted {line}");
        }
    }

    #[test]
    fn raw_control_bytes_fall_back_and_are_rejected() {
        let line =
            b"{\"log\":\"tab\tinside\\n\",\"stream\":\"stdout\",\"time\":\"2024-07-08T03:42:57Z\"}";
        assert_eq!(parse(line), Err(ParseError::DockerJson));
    }
}
