//! CRI log lines (containerd, CRI-O): `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <msg>`.
//!
//! `P` marks a partial chunk (the runtime split a long line, 16 KiB by default), `F` the
//! final one. The message is raw bytes up to the end of the line; it may be empty.

use super::{Line, ParseError, Stream, Text, Timestamp};
use memchr::memchr;

/// Parses one CRI line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let sp = memchr(b' ', line).ok_or(ParseError::Cri)?;
    let time = Timestamp::parse(&line[..sp]).map_err(|_| ParseError::Timestamp)?;
    let rest = &line[sp + 1..];
    let sp = memchr(b' ', rest).ok_or(ParseError::Cri)?;
    let stream = Stream::parse(&rest[..sp]).ok_or(ParseError::Stream)?;
    let rest = &rest[sp + 1..];
    let (tags, msg) = match memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        // `... stdout F` with nothing after the tag: an empty message.
        None => (rest, &rest[rest.len()..]),
    };
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::CriTag),
    };
    Ok(Line {
        time,
        stream,
        partial,
        text: Text::Raw(msg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, message, stream, partial, utc time)
    /// (line, message, stream, partial, utc time)
    type Case = (&'static [u8], &'static [u8], Stream, bool, &'static str);

    const VALID: &[Case] = &[
        (
            b"2024-07-08T03:42:57.123456789Z stdout F hello world",
            b"hello world",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T03:42:57.123456789Z stderr P chunk",
            b"chunk",
            Stream::Stderr,
            true,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T03:42:57.123456789Z stdout F ",
            b"",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T03:42:57.123456789Z stdout F",
            b"",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T03:42:57.123456789Z stdout F  two  spaces ",
            b" two  spaces ",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T11:42:57.123456789+08:00 stdout F cri-o",
            b"cri-o",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57.123456789Z",
        ),
        (
            b"2024-07-08T03:42:57.1-05:00 stdout F west",
            b"west",
            Stream::Stdout,
            false,
            "2024-07-08T08:42:57.1Z",
        ),
        (
            b"2024-07-08T03:42:57Z stdout F:x tagged",
            b"tagged",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            b"2024-07-08T03:42:57Z stdout F bad \xff utf8",
            b"bad \xff utf8",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
        (
            b"2024-07-08T03:42:57Z stdout F {\"json\":true}",
            b"{\"json\":true}",
            Stream::Stdout,
            false,
            "2024-07-08T03:42:57Z",
        ),
    ];

    #[test]
    fn valid_lines() {
        for (line, msg, stream, partial, time) in VALID {
            let parsed =
                parse(line).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(line)));
            assert_eq!(parsed.text, Text::Raw(msg));
            assert_eq!(parsed.stream, *stream);
            assert_eq!(parsed.partial, *partial);
            assert_eq!(parsed.time.as_str(), *time);
        }
    }

    #[test]
    fn invalid_lines() {
        for line in [
            &b"2024-07-08T03:42:57Z stdin F x"[..],
            b"2024-07-08T03:42:57Z stdout X x",
            b"2024-07-08T03:42:57Z stdout",
            b"2024-07-08 03:42:57Z stdout F x",
            b"not-a-time stdout F x",
            b"2024-07-08T03:42:57Z  stdout F x",
        ] {
            assert!(
                parse(line).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
