//! The document: one bulk `create` action line and one document line per record (NDJSON).
//!
//! The document follows the schema fluentd-kubernetes-daemonset users already have in
//! Kibana: `@timestamp, log, stream, docker.container_id, kubernetes.*`, plus the agent's
//! own flags under `shipper`. This module is the one place that renders it: a file's
//! metadata ([`meta`]) once per file, copied into each document; Docker's `log` value
//! copied still escaped ([`escaped`]). So the hot path is a handful of
//! `extend_from_slice` calls per record.

pub mod escaped;
pub mod meta;

pub use meta::{Level, Metadata, Owner};

use crate::ids::FileId;
use crate::index;
use crate::index::route::Routes;
use crate::timestamp::Timestamp;

/// The stream a line was written to (the document's `stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A message body as it will be written into the document's `log` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text<'a> {
    /// Already valid JSON string content (Docker's escaped `log` value).
    Escaped(&'a [u8]),
    /// Raw bytes that still need JSON escaping (CRI messages, raw lines); invalid UTF-8
    /// is replaced when escaped.
    Raw(&'a [u8]),
    /// Unescaped text produced by a real JSON parser (Docker lines off the fast path).
    Owned(String),
}

impl Text<'_> {
    /// The text's bytes as stored (escaped for [`Text::Escaped`]).
    pub fn stored(&self) -> &[u8] {
        match self {
            Text::Escaped(b) | Text::Raw(b) => b,
            Text::Owned(s) => s.as_bytes(),
        }
    }

    /// The first `limit` bytes of the text as a reader sees it (unescaped, in `scratch`
    /// when something in them is escaped). Raw text may hold invalid UTF-8.
    pub fn unescaped<'s>(&'s self, limit: usize, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        match self {
            Text::Raw(r) => &r[..r.len().min(limit)],
            Text::Owned(s) => &s.as_bytes()[..s.len().min(limit)],
            Text::Escaped(e) => {
                let end = e.len().min(limit);
                if memchr::memchr(b'\\', &e[..end]).is_none() {
                    // Nothing escaped: it reads as it is stored.
                    return &e[..end];
                }
                escaped::unescape_prefix(e, limit, scratch);
                scratch
            }
        }
    }
}

/// The document's keys the agent writes at its root: parsed fields never replace them.
pub const RESERVED_KEYS: &[&str] = &[
    "@timestamp",
    "log",
    "stream",
    "docker",
    "kubernetes",
    "shipper",
    // The node's own logs' (a host file's path, a journal entry's fields).
    "path",
    "systemd",
    "syslog",
    "priority",
];

/// Structured fields parsed from a record's text (see [`crate::record::fields`]),
/// ready to be copied into its document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    /// `"key":value` members, comma-separated, as JSON.
    pub members: Vec<u8>,
    /// The top-level keys, in order, as the content of a JSON array (`"a","b"`): the
    /// document lists the keys it added under `shipper.fields`, so a document
    /// Elasticsearch refuses for a mapping reason can be sent again without them.
    pub keys: Vec<u8>,
    /// `@timestamp` from a field (the index date stays the runtime timestamp's).
    pub time: Option<Timestamp>,
    /// The text that replaces `log`, as JSON string content.
    pub message: Option<Vec<u8>>,
    /// A normalised level, written as `level`.
    pub level: Option<&'static str>,
}

impl Fields {
    pub fn clear(&mut self) {
        self.members.clear();
        self.keys.clear();
        self.time = None;
        self.message = None;
        self.level = None;
    }
}

/// What every record of one file shares.
#[derive(Debug, Clone)]
pub struct FileContext {
    pub id: FileId,
    /// `,"docker":{...},"kubernetes":{...}` (or empty), rendered once.
    pub meta: Vec<u8>,
    pub level: Level,
    /// The action heads of the file's routes, each with the offset it applies from
    /// ([`Encoder::heads`]); empty: the encoder's own target.
    pub heads: Vec<(u64, Vec<u8>)>,
}

/// One record to encode.
#[derive(Debug)]
pub struct Doc<'a> {
    pub offset: u64,
    pub time: Timestamp,
    pub stream: Option<Stream>,
    pub text: &'a Text<'a>,
    pub truncated: bool,
    pub parse_error: Option<&'static str>,
    /// Fields parsed from the text.
    pub fields: Option<&'a Fields>,
}

/// Encodes documents for one index target.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// `{"create":{"_index":"<prefix>-` (dated) or `{"create":{"_index":"<name>`.
    action_head: Vec<u8>,
    /// The target's prefix or name.
    name: String,
    /// The date suffix, for dated indices.
    date: Option<index::DateFormat>,
    /// De-dot label keys (see [`Metadata::render`]).
    dedot: bool,
    /// Render pod annotations.
    annotations: bool,
    /// Parsed fields go under this key (`None`: at the root).
    fields_key: Option<Vec<u8>>,
}

impl Encoder {
    /// Daily indices `<index_prefix>-YYYY.MM.DD`.
    pub fn new(index_prefix: &str) -> Encoder {
        Encoder::for_target(&index::Target::daily(index_prefix))
    }

    /// Documents for `target`, with de-dotted label keys and no annotations.
    pub fn for_target(target: &index::Target) -> Encoder {
        let (name, date) = match target {
            index::Target::Dated { prefix, format } => (prefix, Some(format.clone())),
            index::Target::Fixed(name) => (name, None),
        };
        Encoder {
            action_head: action_head(name, date.is_some()),
            name: name.clone(),
            date,
            dedot: true,
            annotations: false,
            fields_key: Some(b"fields".to_vec()),
        }
    }

    /// Where parsed fields go: under `key`, or at the document's root when it is empty.
    pub fn with_fields_key(mut self, key: &str) -> Encoder {
        self.fields_key = (!key.is_empty()).then(|| {
            let mut k = Vec::new();
            escaped::escape_into(&mut k, key.as_bytes());
            k
        });
        self
    }

    /// How labels and annotations are rendered (see [`Metadata::render`]).
    pub fn with_labels(mut self, dedot: bool, annotations: bool) -> Encoder {
        self.dedot = dedot;
        self.annotations = annotations;
        self
    }

    /// The target's prefix (or data stream name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What every record of file `id` with metadata `meta` shares, rendered once.
    pub fn file_context(&self, id: FileId, meta: &Metadata) -> FileContext {
        FileContext {
            id,
            meta: meta.render(self.dedot, self.annotations),
            level: meta.level(),
            heads: Vec::new(),
        }
    }

    /// The action heads of a file's routes (prefixes, or data streams, as the target
    /// is), for [`FileContext::heads`]. A history that only names the target's own
    /// prefix needs none.
    pub fn heads(&self, routes: &Routes) -> Vec<(u64, Vec<u8>)> {
        match routes.as_slice() {
            [only] if *only.name == self.name => Vec::new(),
            all => all
                .iter()
                .map(|r| (r.from, action_head(&r.name, self.date.is_some())))
                .collect(),
        }
    }

    /// Appends the action and document lines of `doc` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, file: &FileContext, doc: &Doc<'_>) {
        let head = match &file.heads[..] {
            [] => &self.action_head,
            [(_, only)] => only,
            heads => {
                &heads[heads
                    .partition_point(|(from, _)| *from <= doc.offset)
                    .saturating_sub(1)]
                .1
            }
        };
        out.extend_from_slice(head);
        if let Some(format) = &self.date {
            format.render(&doc.time, out);
        }
        out.extend_from_slice(br#"","_id":""#);
        out.extend_from_slice(&file.id.record_id(doc.offset));
        out.extend_from_slice(b"\"}}\n{\"@timestamp\":\"");
        let fields = doc.fields.filter(|f| !f.keys.is_empty());
        let time = fields.and_then(|f| f.time).unwrap_or(doc.time);
        out.extend_from_slice(time.as_bytes());
        out.extend_from_slice(br#"","log":""#);
        match (fields.and_then(|f| f.message.as_deref()), doc.text) {
            (Some(m), _) => out.extend_from_slice(m),
            (None, Text::Escaped(e)) => out.extend_from_slice(e),
            (None, Text::Raw(r)) => escaped::escape_into(out, r),
            (None, Text::Owned(s)) => escaped::escape_into(out, s.as_bytes()),
        }
        out.push(b'"');
        if let Some(stream) = doc.stream {
            out.extend_from_slice(br#","stream":""#);
            out.extend_from_slice(stream.as_str().as_bytes());
            out.push(b'"');
        }
        if let Some(f) = fields {
            if let Some(level) = f.level {
                out.extend_from_slice(br#","level":""#);
                out.extend_from_slice(level.as_bytes());
                out.push(b'"');
            }
            match &self.fields_key {
                Some(key) => {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(key);
                    out.extend_from_slice(b"\":{");
                    out.extend_from_slice(&f.members);
                    out.push(b'}');
                }
                None => {
                    out.push(b',');
                    out.extend_from_slice(&f.members);
                }
            }
        }
        out.extend_from_slice(&file.meta);
        out.extend_from_slice(br#","shipper":{"metadata":""#);
        out.extend_from_slice(file.level.as_str().as_bytes());
        out.push(b'"');
        if doc.truncated {
            out.extend_from_slice(br#","truncated":true"#);
        }
        if let Some(reason) = doc.parse_error {
            out.extend_from_slice(br#","parse_error":""#);
            escaped::escape_into(out, reason.as_bytes());
            out.push(b'"');
        }
        if let Some(f) = fields {
            out.extend_from_slice(br#","fields":["#);
            match &self.fields_key {
                Some(key) => {
                    out.push(b'"');
                    out.extend_from_slice(key);
                    out.push(b'"');
                }
                None => out.extend_from_slice(&f.keys),
            }
            if f.level.is_some() {
                out.extend_from_slice(br#","level""#);
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// `{"create":{"_index":"<name>-` for dated indices, `{"create":{"_index":"<name>`
/// for one name.
fn action_head(name: &str, dated: bool) -> Vec<u8> {
    let mut head = br#"{"create":{"_index":""#.to_vec();
    escaped::escape_into(&mut head, name.as_bytes());
    if dated {
        head.push(b'-');
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ctx() -> FileContext {
        FileContext {
            id: FileId::compute("docker:abc", b"first"),
            meta: br#","docker":{"container_id":"abc"}"#.to_vec(),
            level: Level::Partial,
            heads: Vec::new(),
        }
    }

    fn encode_one(
        text: Text<'_>,
        truncated: bool,
        parse_error: Option<&'static str>,
    ) -> (Value, Value) {
        let time = Timestamp::parse(b"2024-07-09T00:00:01.000000500Z").unwrap();
        let doc = Doc {
            offset: 99,
            time,
            stream: Some(Stream::Stderr),
            text: &text,
            truncated,
            parse_error,
            fields: None,
        };
        let mut out = Vec::new();
        Encoder::new("logstash").encode(&mut out, &ctx(), &doc);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.ends_with('\n'));
        let mut lines = s.lines();
        let action: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let body: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(lines.next().is_none());
        (action, body)
    }

    #[test]
    fn action_and_document() {
        let (action, body) =
            encode_one(Text::Escaped(br#"a \"quoted\" \u003cb\u003e"#), false, None);
        let id = std::str::from_utf8(&ctx().id.record_id(99))
            .unwrap()
            .to_owned();
        assert_eq!(
            action,
            json!({"create": {"_index": "logstash-2024.07.09", "_id": id}})
        );
        assert_eq!(
            body,
            json!({
                "@timestamp": "2024-07-09T00:00:01.000000500Z",
                "log": "a \"quoted\" <b>",
                "stream": "stderr",
                "docker": {"container_id": "abc"},
                "shipper": {"metadata": "partial"}
            })
        );
    }

    #[test]
    fn raw_text_is_escaped_and_flags_are_set() {
        let (_, body) = encode_one(
            Text::Raw(b"tab\there \xff \"q\""),
            true,
            Some("invalid CRI line"),
        );
        assert_eq!(body["log"], "tab\there \u{fffd} \"q\"");
        assert_eq!(
            body["shipper"],
            json!({"metadata": "partial", "truncated": true, "parse_error": "invalid CRI line"})
        );
    }
}
