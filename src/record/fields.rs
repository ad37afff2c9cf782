//! Structured fields from a record's text: a JSON object (what logrus, zap, slog, bunyan,
//! pino, log4j2's JSON layout and the ECS loggers write), logfmt pairs, or the named
//! captures of a user pattern.
//!
//! The fields go under one key of the document (`fields` by default) or at its root,
//! where the agent's own keys always win. Guards against field explosion: a record with
//! more keys than `max_keys` (nested keys counted), deeper than `max_depth` or with a key
//! longer than `max_key_bytes` keeps its text only, and is counted. A line the parser
//! does not apply to (not a JSON object for `json`) is left as it is, not counted.
//!
//! JSON values are copied into the document as they were written (validated by
//! serde_json, never re-encoded), so numbers keep their exact text.

use crate::encode::{escaped, Fields, Text, RESERVED_KEYS};
use crate::timestamp::Timestamp;
use memchr::memmem::Finder;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

/// A user pattern: a regular expression whose named captures become fields.
#[derive(Debug)]
pub struct Pattern {
    pub name: String,
    pub regex: regex::Regex,
}

/// How a stream's records are parsed into fields.
#[derive(Debug, Clone)]
pub enum Parser {
    None,
    Json,
    Logfmt,
    Pattern(Arc<Pattern>),
}

impl PartialEq for Parser {
    fn eq(&self, other: &Parser) -> bool {
        match (self, other) {
            (Parser::None, Parser::None)
            | (Parser::Json, Parser::Json)
            | (Parser::Logfmt, Parser::Logfmt) => true,
            (Parser::Pattern(a), Parser::Pattern(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The value of the top-level field `key` in `text` as `parser` reads it: a string
/// as its text, any other JSON value as written (`None`: not parsed, or no such key).
pub fn value_of(parser: &Parser, text: &[u8], key: &str) -> Option<String> {
    match parser {
        Parser::None => None,
        Parser::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(trim(text)).ok()?;
            match map.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            }
        }
        Parser::Logfmt => {
            let s = std::str::from_utf8(text).ok()?;
            let pairs = logfmt_pairs(s)?;
            pairs
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.into_owned())
        }
        Parser::Pattern(p) => {
            let s = std::str::from_utf8(text).ok()?;
            let caps = p.regex.captures(s)?;
            caps.name(key).map(|m| m.as_str().to_owned())
        }
    }
}

/// The parsers the configuration names: built-ins and user patterns, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    patterns: std::collections::BTreeMap<String, Arc<Pattern>>,
}

impl Catalog {
    /// Compiles the configured patterns (the config was validated: they compile).
    pub fn from_config(cfg: &crate::config::FieldsConfig) -> Catalog {
        let patterns = cfg
            .patterns
            .iter()
            .filter_map(|(name, p)| {
                let regex = regex::Regex::new(&p.regex).ok()?;
                Some((
                    name.clone(),
                    Arc::new(Pattern {
                        name: name.clone(),
                        regex,
                    }),
                ))
            })
            .collect();
        Catalog { patterns }
    }

    /// The parser a name stands for.
    pub fn parser(&self, name: &str) -> Option<Parser> {
        match name {
            "none" | "off" => Some(Parser::None),
            "json" => Some(Parser::Json),
            "logfmt" => Some(Parser::Logfmt),
            _ => self.patterns.get(name).map(|p| Parser::Pattern(p.clone())),
        }
    }
}

impl Options {
    /// The `[fields]` settings; the target may not be one of the agent's own keys.
    pub fn from_config(
        cfg: &crate::config::FieldsConfig,
    ) -> Result<Options, crate::config::ConfigError> {
        if RESERVED_KEYS.contains(&cfg.target.as_str()) {
            crate::config::invalid(
                "fields.target",
                format!(
                    "`{}` is one of the agent's own keys ({})",
                    cfg.target,
                    RESERVED_KEYS.join(", ")
                ),
            )?;
        }
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(Options {
            root: cfg.target.is_empty(),
            keep_log: cfg.keep_log,
            message_keys: cfg.message_keys.clone(),
            time_key: Some(cfg.time_key.clone()).filter(|k| !k.is_empty()),
            level_keys: cfg.level_keys.clone(),
            max_keys: n(cfg.max_keys),
            max_depth: n(cfg.max_depth),
            max_key_bytes: n(cfg.max_key_bytes),
        })
    }
}

/// What every parser shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Fields go at the document's root (else under the encoder's key).
    pub root: bool,
    /// Keep the original text in `log`; `false`: `log` becomes the first of
    /// `message_keys` that holds a string (the text stays when none does).
    pub keep_log: bool,
    pub message_keys: Vec<String>,
    /// A field holding an RFC 3339 time becomes `@timestamp` (the index still comes from
    /// the runtime's timestamp, so a replay never lands in another index).
    pub time_key: Option<String>,
    /// Add `level` (trace, debug, info, warn, error, fatal) from the first of these keys.
    pub level_keys: Vec<String>,
    pub max_keys: usize,
    pub max_depth: usize,
    pub max_key_bytes: usize,
}

/// Why a record kept its text only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It looked like the format but did not parse.
    Invalid,
    /// Past `max_keys`, `max_depth` or `max_key_bytes`.
    Caps,
}

/// Parses `text` with `parser` into `out` (cleared first). `Ok(true)`: fields were
/// found; `Ok(false)`: the parser does not apply to this text.
pub fn parse(
    parser: &Parser,
    opts: &Options,
    text: &Text<'_>,
    scratch: &mut Vec<u8>,
    out: &mut Fields,
) -> Result<bool, Skip> {
    out.clear();
    let raw: &[u8] = match text {
        Text::Raw(r) => r,
        Text::Owned(s) => s.as_bytes(),
        Text::Escaped(e) => {
            if matches!(parser, Parser::None) {
                return Ok(false);
            }
            // Most lines are not JSON: their start says so without unescaping them all.
            if matches!(parser, Parser::Json) {
                let starts = match e.first() {
                    Some(b'{') => true,
                    // Whitespace, maybe escaped, before the brace.
                    Some(b' ' | b'\\') => {
                        escaped::unescape_prefix(e, 64, scratch);
                        trim(scratch).first().is_none_or(|&b| b == b'{')
                    }
                    _ => false,
                };
                if !starts {
                    return Ok(false);
                }
            }
            // Docker's escaped text was validated as JSON string content: exact.
            escaped::unescape_prefix(e, usize::MAX, scratch);
            scratch
        }
    };
    let found = match parser {
        Parser::None => return Ok(false),
        Parser::Json => json(raw, opts, out)?,
        Parser::Logfmt => logfmt(raw, opts, out)?,
        Parser::Pattern(p) => pattern(&p.regex, raw, opts, out)?,
    };
    // An empty object, or one whose every key the agent owns, adds nothing.
    let found = found && !out.keys.is_empty();
    if !found {
        out.clear();
    }
    Ok(found)
}

/// Adds one member, unless the agent owns that key at the root (`level` too when the
/// agent writes a normalised one).
fn member(out: &mut Fields, opts: &Options, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    if opts.root
        && (RESERVED_KEYS.contains(&key) || (key == "level" && !opts.level_keys.is_empty()))
    {
        return;
    }
    if !out.members.is_empty() {
        out.members.push(b',');
    }
    let start = out.members.len();
    out.members.push(b'"');
    escaped::escape_into(&mut out.members, key.as_bytes());
    out.members.push(b'"');
    if !out.keys.is_empty() {
        out.keys.push(b',');
    }
    out.keys.extend_from_slice(&out.members[start..]);
    out.members.push(b':');
    value(&mut out.members);
}

static UNICODE_ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br"\u"));

/// A JSON object key, borrowed from the text unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top level of a JSON object, read in one pass: each member is checked and written
/// to `out` as it is read; the members that set the time, message and level are noted.
struct Members<'o, 'de> {
    opts: &'o Options,
    out: &'o mut Fields,
    /// Keys so far, nested ones included.
    keys: usize,
    /// Past a cap (the rest is still read: invalid JSON is told apart).
    over: bool,
    time: Option<&'de RawValue>,
    /// The message: the index in `message_keys` of the key it came from.
    message: Option<(usize, &'de RawValue)>,
    level: Option<(usize, &'static str)>,
    /// The `level_keys` seen (only a key's first member is read for the level).
    levels_seen: u64,
}

impl<'de> Visitor<'de> for &mut Members<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let opts = self.opts;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let v: &'de RawValue = map.next_value()?;
            self.keys += 1;
            if k.len() > opts.max_key_bytes || self.keys > opts.max_keys {
                self.over = true;
            }
            let raw = v.get();
            let first = raw.as_bytes()[0];
            if first == b'"' {
                // A value is copied as written: decode strings with `\u` escapes once, so
                // a lone surrogate (which strict parsers refuse) never reaches a document.
                if UNICODE_ESCAPE.find(raw.as_bytes()).is_some() {
                    serde_json::from_str::<Cow<'_, str>>(raw).map_err(A::Error::custom)?;
                }
            } else if first == b'-' || first.is_ascii_digit() {
                // A number no double holds (`1e400`) is refused by Elasticsearch and by
                // strict parsers: not a field.
                if !raw.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(A::Error::custom("number out of range"));
                }
            } else if first == b'{' || first == b'[' {
                let mut de = serde_json::Deserializer::from_str(raw);
                let counter = Counter {
                    depth: 1,
                    keys: &mut self.keys,
                    limits: (opts.max_keys, opts.max_depth, opts.max_key_bytes),
                    over: &mut self.over,
                };
                // This counts, and decodes nested strings (lone surrogates are refused).
                counter.deserialize(&mut de).map_err(A::Error::custom)?;
            }
            if self.over {
                continue;
            }
            if first == b'"' {
                if self.time.is_none() && opts.time_key.as_deref() == Some(&*k) {
                    self.time = Some(v);
                }
                if let Some(i) = opts.message_keys.iter().position(|m| *m == *k) {
                    if self.message.is_none_or(|(j, _)| i < j) {
                        self.message = Some((i, v));
                    }
                }
            }
            if let Some(i) = opts.level_keys.iter().position(|l| *l == *k) {
                let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
                if self.levels_seen & bit == 0 {
                    self.levels_seen |= bit;
                    if let Some(l) = level(raw) {
                        if self.level.is_none_or(|(j, _)| i < j) {
                            self.level = Some((i, l));
                        }
                    }
                }
            }
            member(self.out, opts, &k, |m| compact_into(m, raw.as_bytes()));
        }
        Ok(())
    }
}

/// Counts keys below a value and checks depth and key length.
struct Counter<'c> {
    depth: usize,
    keys: &'c mut usize,
    limits: (usize, usize, usize),
    over: &'c mut bool,
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (max_keys, max_depth, max_key) = self.limits;
        if self.depth >= max_depth {
            *self.over = true;
        }
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            *self.keys += 1;
            if k.len() > max_key || *self.keys > max_keys {
                *self.over = true;
            }
            map.next_value_seed(Counter {
                depth: self.depth + 1,
                keys: self.keys,
                limits: self.limits,
                over: self.over,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.limits.1 {
            *self.over = true;
        }
        while seq
            .next_element_seed(Counter {
                depth: self.depth + 1,
                keys: self.keys,
                limits: self.limits,
                over: self.over,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Appends valid JSON `raw` to `out` without the whitespace between its tokens (a value
/// written across lines must not break the one-line document).
fn compact_into(out: &mut Vec<u8>, raw: &[u8]) {
    if memchr::memchr3(b'\n', b'\r', b'\t', raw).is_none() {
        out.extend_from_slice(raw);
        return;
    }
    let (mut in_string, mut escaped) = (false, false);
    for &b in raw {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// Without JSON's whitespace (space, tab, CR, LF) at either end.
fn trim(s: &[u8]) -> &[u8] {
    let ws = |b: &&u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().take_while(ws).count();
    let end = s.len() - s[start..].iter().rev().take_while(ws).count();
    &s[start..end]
}

fn json(raw: &[u8], opts: &Options, out: &mut Fields) -> Result<bool, Skip> {
    let t = trim(raw);
    if t.first() != Some(&b'{') || t.last() != Some(&b'}') {
        return Ok(false);
    }
    let mut m = Members {
        opts,
        out,
        keys: 0,
        over: false,
        time: None,
        message: None,
        level: None,
        levels_seen: 0,
    };
    // Validated once here, so the parser reads strings without checking them again.
    let t = std::str::from_utf8(t).map_err(|_| Skip::Invalid)?;
    let mut de = serde_json::Deserializer::from_str(t);
    de.deserialize_map(&mut m)
        .and_then(|()| de.end())
        .map_err(|_| Skip::Invalid)?;
    if m.over {
        return Err(Skip::Caps);
    }
    let Members {
        time,
        message,
        level,
        ..
    } = m;
    if opts.time_key.is_some() {
        out.time = time
            .and_then(|v| serde_json::from_str::<Cow<'_, str>>(v.get()).ok())
            .and_then(|s| Timestamp::parse(s.as_bytes()).ok());
    }
    if !opts.keep_log {
        if let Some((_, v)) = message {
            let quoted = v.get().as_bytes();
            out.message = Some(quoted[1..quoted.len() - 1].to_vec());
        }
    }
    out.level = level.map(|(_, l)| l);
    Ok(true)
}

/// A normalised level from a JSON value: a name in any case (`WARNING`, `err`, `Info`)
/// or bunyan/pino's numbers (10 trace ... 60 fatal).
pub fn level(raw: &str) -> Option<&'static str> {
    if let Ok(n) = raw.parse::<u32>() {
        return Some(match n {
            0..=14 => "trace",
            15..=24 => "debug",
            25..=34 => "info",
            35..=44 => "warn",
            45..=54 => "error",
            _ => "fatal",
        });
    }
    let s: Cow<'_, str> = serde_json::from_str(raw).ok()?;
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" | "finest" | "finer" => "trace",
        "debug" | "fine" | "dbug" => "debug",
        "info" | "information" | "notice" | "informational" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "severe" | "fail" => "error",
        "fatal" | "critical" | "crit" | "panic" | "alert" | "emerg" | "emergency" => "fatal",
        _ => return None,
    })
}

/// logfmt: `key=value key2="quoted \"value\"" flag`; every value a string (a bare key
/// is `"true"`), so one app's `status=ok` and another's `status=200` never conflict.
/// The `key=value` pairs of a logfmt line (`None`: not logfmt).
fn logfmt_pairs(s: &str) -> Option<Vec<(&str, Cow<'_, str>)>> {
    let mut pairs: Vec<(&str, Cow<'_, str>)> = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' && b[i] != b'"' {
            i += 1;
        }
        let key = &s[start..i];
        if key.is_empty() {
            // Not logfmt (a quote or `=` where a key should be).
            return None;
        }
        if i >= b.len() || b[i] == b' ' {
            pairs.push((key, Cow::Borrowed("true")));
            continue;
        }
        if b[i] == b'"' {
            return None;
        }
        i += 1; // '='
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vstart = i;
            let mut owned: Option<String> = None;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    let o = owned.get_or_insert_with(|| s[vstart..i].to_owned());
                    // The escaped character may be any character (a backslash is ASCII,
                    // so the next one starts right after it).
                    let ch = s[i + 1..].chars().next().unwrap_or('\\');
                    o.push(ch);
                    i += 1 + ch.len_utf8();
                    continue;
                }
                if let Some(o) = &mut owned {
                    let ch = s[i..].chars().next().unwrap_or(' ');
                    o.push(ch);
                    i += ch.len_utf8();
                } else {
                    i += 1;
                }
            }
            if i >= b.len() {
                return None; // unterminated quote
            }
            let v = owned.map_or(Cow::Borrowed(&s[vstart..i]), Cow::Owned);
            i += 1;
            pairs.push((key, v));
        } else {
            let vstart = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            pairs.push((key, Cow::Borrowed(&s[vstart..i])));
        }
    }
    // Text with a pair or two is not logfmt: a sentence with an `=` in it.
    let with_values = pairs.iter().filter(|(_, v)| v.as_ref() != "true").count();
    if with_values < 2 || with_values * 2 < pairs.len() {
        return None;
    }
    Some(pairs)
}

fn logfmt(raw: &[u8], opts: &Options, out: &mut Fields) -> Result<bool, Skip> {
    let Some(pairs) = std::str::from_utf8(raw).ok().and_then(logfmt_pairs) else {
        return Ok(false);
    };
    if pairs.len() > opts.max_keys || pairs.iter().any(|(k, _)| k.len() > opts.max_key_bytes) {
        return Err(Skip::Caps);
    }
    for (k, v) in &pairs {
        member(out, opts, k, |m| {
            m.push(b'"');
            escaped::escape_into(m, v.as_bytes());
            m.push(b'"');
        });
    }
    finish_strings(&pairs, opts, out);
    Ok(true)
}

/// Message, time and level from string fields (logfmt and patterns).
fn finish_strings(pairs: &[(&str, Cow<'_, str>)], opts: &Options, out: &mut Fields) {
    let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
    if let Some(tk) = &opts.time_key {
        out.time = get(tk).and_then(|v| Timestamp::parse(v.as_bytes()).ok());
    }
    if !opts.keep_log {
        if let Some(v) = opts.message_keys.iter().find_map(|k| get(k)) {
            let mut m = Vec::new();
            escaped::escape_into(&mut m, v.as_bytes());
            out.message = Some(m);
        }
    }
    out.level = opts
        .level_keys
        .iter()
        .find_map(|k| get(k))
        .and_then(|v| level(&serde_json::to_string(v.as_ref()).ok()?));
}

fn pattern(re: &regex::Regex, raw: &[u8], opts: &Options, out: &mut Fields) -> Result<bool, Skip> {
    let Ok(s) = std::str::from_utf8(raw) else {
        return Ok(false);
    };
    let Some(caps) = re.captures(s) else {
        return Ok(false);
    };
    let pairs: Vec<(&str, Cow<'_, str>)> = re
        .capture_names()
        .flatten()
        .filter_map(|name| Some((name, Cow::Borrowed(caps.name(name)?.as_str()))))
        .collect();
    if pairs.len() > opts.max_keys {
        return Err(Skip::Caps);
    }
    for (k, v) in &pairs {
        member(out, opts, k, |m| {
            m.push(b'"');
            escaped::escape_into(m, v.as_bytes());
            m.push(b'"');
        });
    }
    finish_strings(&pairs, opts, out);
    Ok(!pairs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            root: false,
            keep_log: true,
            message_keys: vec!["msg".into(), "message".into()],
            time_key: None,
            level_keys: Vec::new(),
            max_keys: 10,
            max_depth: 3,
            max_key_bytes: 16,
        }
    }

    fn parsed(parser: &Parser, o: &Options, text: Text<'_>) -> Result<Option<String>, Skip> {
        let mut f = Fields::default();
        let found = parse(parser, o, &text, &mut Vec::new(), &mut f)?;
        Ok(found.then(|| String::from_utf8(f.members.clone()).unwrap()))
    }

    #[test]
    fn json_members_are_copied_as_written() {
        let line = r#" {"level":"error","msg":"boom \"x\"","user_id":42,"ratio":1.50,"http":{"status":500,"path":"/a"},"tags":["a",1]} "#;
        let got = parsed(&Parser::Json, &opts(), Text::Raw(line.as_bytes())).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(
                r#""level":"error","msg":"boom \"x\"","user_id":42,"ratio":1.50,"http":{"status":500,"path":"/a"},"tags":["a",1]"#
            )
        );
        // Docker's escaped form reads the same.
        let escaped = serde_json::to_string(line.trim()).unwrap();
        let inner = &escaped.as_bytes()[1..escaped.len() - 1];
        assert_eq!(
            parsed(&Parser::Json, &opts(), Text::Escaped(inner)).unwrap(),
            got
        );
    }

    #[test]
    fn values_written_across_lines_are_compacted() {
        let line = "{\"a\":[1,\n 2],\"b\":\"x\\\" \\n y\",\"c\":{\r\n\"d\":\t1}}";
        let got = parsed(&Parser::Json, &opts(), Text::Raw(line.as_bytes())).unwrap();
        assert_eq!(
            got.as_deref(),
            Some("\"a\":[1,2],\"b\":\"x\\\" \\n y\",\"c\":{\"d\":1}")
        );
    }

    #[test]
    fn json_that_is_not_an_object_or_not_valid() {
        for text in ["plain text", "[1,2]", "\"s\"", "{not closed", "42"] {
            assert_eq!(
                parsed(&Parser::Json, &opts(), Text::Raw(text.as_bytes())),
                Ok(None),
                "{text}"
            );
        }
        for text in [
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert_eq!(
                parsed(&Parser::Json, &opts(), Text::Raw(text.as_bytes())),
                Err(Skip::Invalid),
                "{text}"
            );
        }
    }

    #[test]
    fn caps_on_keys_depth_and_key_length() {
        let o = opts();
        let many: String = format!(
            "{{{}}}",
            (0..11)
                .map(|i| format!("\"k{i}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            parsed(&Parser::Json, &o, Text::Raw(many.as_bytes())),
            Err(Skip::Caps)
        );
        let nested = r#"{"a":{"b":{"c":{"d":1}}}}"#;
        assert_eq!(
            parsed(&Parser::Json, &o, Text::Raw(nested.as_bytes())),
            Err(Skip::Caps)
        );
        let ok = r#"{"a":{"b":{"c":1}}}"#;
        assert!(parsed(&Parser::Json, &o, Text::Raw(ok.as_bytes()))
            .unwrap()
            .is_some());
        let nested_keys =
            r#"{"a":{"b1":1,"b2":2,"b3":3,"b4":4,"b5":5,"b6":6,"b7":7,"b8":8,"b9":9,"b10":10}}"#;
        assert_eq!(
            parsed(&Parser::Json, &o, Text::Raw(nested_keys.as_bytes())),
            Err(Skip::Caps),
            "nested keys count"
        );
        let long_key = r#"{"a_very_long_key_name_x":1}"#;
        assert_eq!(
            parsed(&Parser::Json, &o, Text::Raw(long_key.as_bytes())),
            Err(Skip::Caps)
        );
    }

    #[test]
    fn at_the_root_the_agents_keys_win() {
        let mut o = opts();
        o.root = true;
        let mut f = Fields::default();
        let line =
            r#"{"log":"x","@timestamp":"y","stream":1,"kubernetes":{},"level":"info","a":1}"#;
        assert_eq!(
            parse(
                &Parser::Json,
                &o,
                &Text::Raw(line.as_bytes()),
                &mut Vec::new(),
                &mut f
            ),
            Ok(true)
        );
        assert_eq!(f.members, br#""level":"info","a":1"#);
        assert_eq!(f.keys, br#""level","a""#);
    }

    #[test]
    fn message_time_and_level() {
        let mut o = opts();
        o.keep_log = false;
        o.time_key = Some("ts".into());
        o.level_keys = vec!["severity".into(), "level".into()];
        let mut f = Fields::default();
        let line =
            r#"{"ts":"2024-07-08T11:42:57.5+08:00","level":"WARNING","msg":"disk \"full\""}"#;
        assert_eq!(
            parse(
                &Parser::Json,
                &o,
                &Text::Raw(line.as_bytes()),
                &mut Vec::new(),
                &mut f
            ),
            Ok(true)
        );
        assert_eq!(f.message.as_deref(), Some(&br#"disk \"full\""#[..]));
        assert_eq!(
            f.time.map(|t| t.to_string()),
            Some("2024-07-08T03:42:57.5Z".into())
        );
        assert_eq!(f.level, Some("warn"));
        assert_eq!(level("50"), Some("error"));
        assert_eq!(level("\"Crit\""), Some("fatal"));
        assert_eq!(level("\"whatever\""), None);
    }

    #[test]
    fn logfmt_pairs_are_strings() {
        let got = parsed(
            &Parser::Logfmt,
            &opts(),
            Text::Raw(br#"time=2024-07-08T03:42:57Z level=info msg="user logged in \"ok\"" user_id=42 cached"#),
        )
        .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(
                r#""time":"2024-07-08T03:42:57Z","level":"info","msg":"user logged in \"ok\"","user_id":"42","cached":"true""#
            )
        );
        for not in [
            "just a sentence",
            "a=b",
            "x = y",
            r#"k="unterminated"#,
            "the answer is a=1 b=2 c d e f",
        ] {
            assert_eq!(
                parsed(&Parser::Logfmt, &opts(), Text::Raw(not.as_bytes())),
                Ok(None),
                "{not}"
            );
        }
    }

    #[test]
    fn patterns_name_their_captures() {
        let p = Parser::Pattern(Arc::new(Pattern {
            name: "access".into(),
            regex: regex::Regex::new(r#"^(?P<client>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3})"#).unwrap(),
        }));
        let got = parsed(
            &p,
            &opts(),
            Text::Raw(br#"10.0.0.1 - - [08/Jul/2024:03:42:57 +0000] "GET /a?q=1 HTTP/1.1" 404 12"#),
        )
        .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(r#""client":"10.0.0.1","method":"GET","path":"/a?q=1","status":"404""#)
        );
        assert_eq!(parsed(&p, &opts(), Text::Raw(b"no match")), Ok(None));
    }
}
