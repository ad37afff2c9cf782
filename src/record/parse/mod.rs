//! Parsers for the two container log formats, and for plain-text host files.
//!
//! Parsers are pure: they take one physical line (without its `\n`) as `&[u8]` and return
//! a view borrowing from it. The read loop owns the buffers. A line that does not parse is
//! an `Err` carrying a short reason; the record stream keeps the raw line as a document.

pub mod cri;
pub mod docker;
pub mod plain;

pub use crate::encode::{Stream, Text};
pub use crate::timestamp::Timestamp;

/// A log file's format, detected from its content (never from its path: on Docker nodes
/// the `/var/log/pods` files are symlinks to Docker's json-file logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Cri,
    /// A host file (never detected: chosen by where the file was found).
    Plain,
}

impl Format {
    /// Detects the format from a file's first line: Docker's is a JSON object, CRI's
    /// starts with a timestamp.
    pub fn detect(first_line: &[u8]) -> Option<Format> {
        match first_line.iter().find(|b| !b.is_ascii_whitespace())? {
            b'{' => Some(Format::Docker),
            b'0'..=b'9' => Some(Format::Cri),
            _ => None,
        }
    }
}

/// One parsed physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: Timestamp,
    pub stream: Stream,
    /// The record continues on a later line (Docker: no trailing `\n`; CRI: tag `P`).
    pub partial: bool,
    /// The message, without the record's terminating newline.
    pub text: Text<'a>,
}

/// Why a line was kept as raw text. The message is the document's `shipper.parse_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    DockerJson,
    DockerNoLog,
    Stream,
    Cri,
    CriTag,
    Timestamp,
    UnknownFormat,
    /// A plain-text line without a timestamp prefix (not counted as an error).
    NoTimestamp,
}

impl ParseError {
    /// The reason, as written into `shipper.parse_error`.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::DockerJson => "invalid docker json-file line",
            ParseError::DockerNoLog => "docker line has no log field",
            ParseError::Stream => "invalid stream name",
            ParseError::Cri => "invalid CRI line",
            ParseError::CriTag => "invalid CRI tag",
            ParseError::Timestamp => "invalid timestamp",
            ParseError::UnknownFormat => "unknown log format",
            ParseError::NoTimestamp => "no timestamp",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

/// Parses a physical line of the given format. `reference` (nanoseconds since the
/// epoch) picks the year of a plain line's stamp when it has none (see [`plain`]).
pub fn parse_line(format: Format, line: &[u8], reference: i64) -> Result<Line<'_>, ParseError> {
    match format {
        Format::Docker => docker::parse(line),
        Format::Cri => cri::parse(line),
        Format::Plain => match plain::timestamp(line, reference) {
            Some(time) => Ok(Line {
                time,
                stream: Stream::Stdout,
                partial: false,
                text: Text::Raw(line),
            }),
            None => Err(ParseError::NoTimestamp),
        },
    }
}

#[cfg(test)]
pub(crate) mod cases {
    //! Shared tables of lines, used by both parsers' tests and by the fuzz targets'
    //! seed corpora.

    /// Lines every parser must reject (as a parse error, never a panic).
    pub const GARBAGE: &[&[u8]] = &[
        b"",
        b" ",
        b"garbage line without timestamp",
        b"{",
        b"{\"log\":\"half a line wri",
        b"\xff\xfe\x00",
        b"2024-07-08T03:42:57Z",
        b"2024-07-08T03:42:57Z stdout",
        b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"yesterday\"}",
        b"\"just a string\"",
        b"[1,2,3]",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_format_from_content() {
        assert_eq!(Format::detect(b"{\"log\":\"x\"}"), Some(Format::Docker));
        assert_eq!(
            Format::detect(b"2024-07-08T03:42:57Z stdout F x"),
            Some(Format::Cri)
        );
        assert_eq!(Format::detect(b"  {"), Some(Format::Docker));
        assert_eq!(Format::detect(b"hello"), None);
        assert_eq!(Format::detect(b""), None);
    }

    #[test]
    fn garbage_is_an_error_for_both_parsers() {
        for line in cases::GARBAGE {
            assert!(
                docker::parse(line).is_err(),
                "docker accepted {:?}",
                String::from_utf8_lossy(line)
            );
            assert!(
                cri::parse(line).is_err(),
                "cri accepted {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
