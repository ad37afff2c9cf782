//! Multiline grouping: the records of one stream that make up one event — a stack trace,
//! with the logger's own line that introduced it — become one document.
//!
//! **A group's boundaries depend only on the file's bytes** (its lines and their runtime
//! timestamps) and the rules in force, never on when or how fast they are read, so a
//! replay after a crash builds exactly the same groups, under the same `_id` (the first
//! line's). A group ends when
//! - the next line of its stream starts a new group (the detectors below say so),
//! - the next line is more than `gap` after the group's last one (runtime timestamps),
//! - it reached `max_lines` or `max_bytes` (the following lines start a new group),
//! - or, only at the end of the data read so far, the wall clock is `gap` past its last
//!   line (and at the file's close). A line written later carries a later timestamp, so
//!   it would have been split off by the gap rule on a replay too.
//!
//! Detectors look at the start of a line (unescaped) with plain byte tests, no regular
//! expressions: Java (`\tat` frames, `Caused by:`, `... N more`, `Suppressed:`), Python
//! (`Traceback (most recent call last):` to the exception line, chained tracebacks), Go
//! (`panic:` / `fatal error:` and goroutine dumps), Ruby (`from` lines), Node.js
//! (`    at` frames), .NET (`   at` frames, inner exceptions, the console logger's
//! indented lines), PHP (`Stack trace:`, `#N` frames, `thrown in`). An exception header
//! joins the line before it only when that line is a logger's line with a level word
//! (`ERROR`, `WARN`, ...): false joins are worse than no joins. A line holding a JSON
//! object is never continued (structured loggers put traces inside their fields).
//! User rules give a `start` and/or a `continue` pattern.

use crate::encode::{escaped, Text};
use crate::timestamp::Timestamp;
use memchr::memmem::Finder;
use std::cell::OnceCell;
use std::sync::{Arc, LazyLock};

/// How much of a line's start the detectors look at.
const HEAD: usize = 256;

/// The languages with a built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Java,
    Python,
    Go,
    Ruby,
    Node,
    Dotnet,
    Php,
}

impl Lang {
    pub const ALL: [Lang; 7] = [
        Lang::Java,
        Lang::Python,
        Lang::Go,
        Lang::Ruby,
        Lang::Node,
        Lang::Dotnet,
        Lang::Php,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lang::Java => "java",
            Lang::Python => "python",
            Lang::Go => "go",
            Lang::Ruby => "ruby",
            Lang::Node => "nodejs",
            Lang::Dotnet => "dotnet",
            Lang::Php => "php",
        }
    }

    pub fn from_name(s: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.name() == s).or(match s {
            "node" => Some(Lang::Node),
            "csharp" | ".net" => Some(Lang::Dotnet),
            _ => None,
        })
    }
}

/// A user rule: a line matching `start` starts a group; a line matching `continue`
/// joins the group before it. With only `start`, every other line joins; with only
/// `continue`, every other line starts a group.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub start: Option<regex::bytes::Regex>,
    pub continues: Option<regex::bytes::Regex>,
}

/// Which detector groups a stream's lines.
#[derive(Debug, Clone)]
pub enum Mode {
    Off,
    /// Every built-in detector.
    Auto,
    Lang(Lang),
    Rule(Arc<Rule>),
}

impl PartialEq for Mode {
    fn eq(&self, other: &Mode) -> bool {
        match (self, other) {
            (Mode::Off, Mode::Off) | (Mode::Auto, Mode::Auto) => true,
            (Mode::Lang(a), Mode::Lang(b)) => a == b,
            (Mode::Rule(a), Mode::Rule(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Grouping settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// Lines further apart than this (runtime timestamps, nanoseconds) never join.
    pub gap_ns: i64,
    /// A group closes at this many lines...
    pub max_lines: u32,
    /// ...or bytes of text.
    pub max_bytes: usize,
}

/// The modes the configuration names: built-ins and user patterns, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    patterns: std::collections::BTreeMap<String, Arc<Rule>>,
}

impl Catalog {
    /// Compiles the configured patterns (the config was validated: they compile).
    pub fn from_config(cfg: &crate::config::Multiline) -> Catalog {
        let compile =
            |re: &Option<String>| re.as_deref().and_then(|r| regex::bytes::Regex::new(r).ok());
        let patterns = cfg
            .patterns
            .iter()
            .map(|(name, p)| {
                let rule = Rule {
                    name: name.clone(),
                    start: compile(&p.start),
                    continues: compile(&p.continues),
                };
                (name.clone(), Arc::new(rule))
            })
            .collect();
        Catalog { patterns }
    }

    /// The mode a name stands for: `off`, `auto`, a language, or a user pattern.
    pub fn mode(&self, name: &str) -> Option<Mode> {
        match name {
            "off" | "none" => Some(Mode::Off),
            "auto" => Some(Mode::Auto),
            _ => Lang::from_name(name)
                .map(Mode::Lang)
                .or_else(|| self.patterns.get(name).map(|r| Mode::Rule(r.clone()))),
        }
    }
}

impl Settings {
    /// The `[multiline]` settings, with `mode` resolved in `catalog`.
    pub fn from_config(
        cfg: &crate::config::Multiline,
        catalog: &Catalog,
        max_record_bytes: usize,
    ) -> Settings {
        let max_bytes = match cfg.max_bytes {
            0 => max_record_bytes,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        Settings {
            mode: catalog.mode(&cfg.mode).unwrap_or(Mode::Off),
            gap_ns: i64::try_from(cfg.gap_ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000,
            max_lines: cfg.max_lines,
            max_bytes,
        }
    }
}

/// Where a group is in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ordinary lines so far.
    Plain,
    /// Inside a trace of this language, at this phase.
    Trace(Lang, Phase),
    /// Inside a group of a user rule.
    Rule,
}

/// Phases some languages need (Python's traceback, .NET's console logger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Frames,
    /// Python: after the exception line (a chained traceback may follow).
    AfterException,
    /// Python: the blank line before "During handling..." / "The above exception...".
    ChainGap,
    /// Python: the chain message.
    ChainMessage,
    /// Python: the blank line after the chain message.
    ChainGap2,
    /// .NET console logger: lines indented by six spaces.
    Console,
}

/// One line as the detectors see it: the start of its text, unescaped.
struct Line<'a> {
    head: &'a [u8],
    /// The end of the text as stored (escaped for Docker lines; identifiers and
    /// parentheses are the same either way).
    tail: &'a [u8],
    /// [`exception_header`] of the head, once several detectors asked.
    header: OnceCell<Option<bool>>,
}

impl<'a> Line<'a> {
    fn new(head: &'a [u8], tail: &'a [u8]) -> Line<'a> {
        Line {
            head,
            tail,
            header: OnceCell::new(),
        }
    }

    fn header(&self) -> Option<bool> {
        *self.header.get_or_init(|| exception_header(self.head))
    }
}

/// One open group.
#[derive(Debug)]
pub struct Group {
    pub offset: u64,
    pub time: Timestamp,
    /// The file's last good timestamp before the group's first line.
    pub time_before: Option<Timestamp>,
    last_ns: i64,
    /// The text so far, as JSON string content (lines joined by an escaped `\n`).
    pub text: Vec<u8>,
    pub lines: u32,
    pub truncated: bool,
    state: State,
    /// What its first line says about a trace that may follow.
    intro: Intro,
}

impl Group {
    /// A group of one record, its text in `buf` (a recycled buffer).
    fn new(rec: &Input<'_>, ns: i64, (state, intro): (State, Intro), mut buf: Vec<u8>) -> Group {
        buf.clear();
        append(&mut buf, rec.text, false);
        Group {
            offset: rec.offset,
            time: rec.time,
            time_before: rec.time_before,
            last_ns: ns,
            text: buf,
            lines: 1,
            truncated: rec.truncated,
            state,
            intro,
        }
    }
}

/// What a line says about a trace that may follow it. A line of ordinary text that says
/// none of this can never be continued: it is not held.
#[derive(Debug, Clone, Copy, Default)]
struct Intro {
    /// A logger's line with a level word.
    level: bool,
    /// It mentions a panic (Go's `http: panic serving ...`).
    panic: bool,
    /// It mentions an error or exception (frames may follow it).
    error: bool,
    /// It carries PHP Monolog's `[object] (` exception context.
    php_object: bool,
}

impl Intro {
    fn of(head: &[u8]) -> Intro {
        let has = |f: &LazyLock<Finder<'static>>| f.find(head).is_some();
        Intro {
            level: has_level_word(head),
            panic: has(&PANIC),
            error: ERROR_WORDS.iter().any(has),
            php_object: has(&PHP_OBJECT),
        }
    }

    fn any(self) -> bool {
        self.level || self.panic || self.error || self.php_object
    }
}

/// A record entering the grouper.
pub struct Input<'a> {
    pub offset: u64,
    pub time: Timestamp,
    pub time_before: Option<Timestamp>,
    pub text: &'a Text<'a>,
    pub truncated: bool,
}

/// What the grouper did with a record.
pub enum Step {
    /// The record went into a group; `closed` (if any) is a group it ended.
    Held { closed: Option<Group> },
    /// The record is not grouped (a JSON object line, or grouping is off): emit it as
    /// it is, after `closed` (a group it ended).
    Pass { closed: Option<Group> },
}

/// Groups the records of one stream.
#[derive(Debug, Default)]
pub struct Grouper {
    open: Option<Group>,
    /// Scratch for unescaping a line's head.
    head: Vec<u8>,
    /// The text buffer of a group already encoded, for the next group.
    spare: Vec<u8>,
}

/// Largest buffer kept for reuse once its group is encoded.
const SPARE_BYTES: usize = 16 * 1024;

impl Grouper {
    /// Feeds one record.
    pub fn push(&mut self, s: &Settings, rec: Input<'_>) -> Step {
        let Grouper { open, head, spare } = self;
        if s.mode == Mode::Off {
            return Step::Pass {
                closed: open.take(),
            };
        }
        // User patterns see the whole line; the built-in detectors its start.
        let limit = if matches!(s.mode, Mode::Rule(_)) {
            usize::MAX
        } else {
            HEAD
        };
        if stored_json_object(rec.text) {
            return Step::Pass {
                closed: open.take(),
            };
        }
        let line = view(rec.text, head, limit);
        if is_json_object(&line) {
            return Step::Pass {
                closed: open.take(),
            };
        }
        let ns = rec.time.unix_nanos();
        if let Some(g) = open.as_mut() {
            let near = (ns - g.last_ns).abs() <= s.gap_ns && g.lines < s.max_lines;
            if let Some(state) = near.then(|| joins(&s.mode, g, &line)).flatten() {
                if g.text.len() + 2 + text_len(rec.text) <= s.max_bytes {
                    g.state = state;
                    append(&mut g.text, rec.text, true);
                    g.lines += 1;
                    g.last_ns = ns;
                    g.truncated |= rec.truncated;
                    return Step::Held { closed: None };
                }
                // The byte cap: this line starts the next group, in the same trace.
                let g = Group::new(&rec, ns, (state, Intro::default()), std::mem::take(spare));
                return Step::Held {
                    closed: open.replace(g),
                };
            }
        }
        let closed = open.take();
        let state = start_state(&s.mode, &line);
        let intro = match (state, &s.mode) {
            (State::Plain, Mode::Lang(_) | Mode::Auto) => {
                let intro = Intro::of(line.head);
                if !intro.any() {
                    // Nothing can join it: out at once, not held.
                    return Step::Pass { closed };
                }
                intro
            }
            _ => Intro::default(),
        };
        *open = Some(Group::new(&rec, ns, (state, intro), std::mem::take(spare)));
        Step::Held { closed }
    }

    /// Takes back the text buffer of a closed group once it is encoded.
    pub fn recycle(&mut self, text: Vec<u8>) {
        if text.capacity() <= SPARE_BYTES && text.capacity() > self.spare.capacity() {
            self.spare = text;
        }
    }

    /// Closes the open group if the wall clock (`now_ns`) is `gap` past its last line.
    /// Only for a stream whose file is read to its end.
    pub fn expire(&mut self, s: &Settings, now_ns: i64) -> Option<Group> {
        match &self.open {
            Some(g) if now_ns - g.last_ns > s.gap_ns => self.open.take(),
            _ => None,
        }
    }

    /// When the open group expires at the latest (Unix nanoseconds).
    pub fn deadline(&self, s: &Settings) -> Option<i64> {
        self.open
            .as_ref()
            .map(|g| g.last_ns.saturating_add(s.gap_ns) + 1)
    }

    /// Closes the open group (the file is closing, or the read is over).
    pub fn flush(&mut self) -> Option<Group> {
        self.open.take()
    }

    /// Drops the open group (the file was truncated, or excluded).
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// The open group's first offset and the timestamp before it, for checkpoints.
    pub fn resume_point(&self) -> Option<(u64, Option<Timestamp>)> {
        self.open.as_ref().map(|g| (g.offset, g.time_before))
    }
}

fn text_len(t: &Text<'_>) -> usize {
    match t {
        Text::Escaped(e) => e.len(),
        Text::Raw(r) => r.len(),
        Text::Owned(s) => s.len(),
    }
}

/// Appends a line to a group's text as JSON string content, after an escaped newline
/// unless it is the group's first.
fn append(buf: &mut Vec<u8>, t: &Text<'_>, separate: bool) {
    if separate {
        buf.extend_from_slice(br"\n");
    }
    match t {
        Text::Escaped(e) => buf.extend_from_slice(e),
        Text::Raw(r) => escaped::escape_into(buf, r),
        Text::Owned(s) => escaped::escape_into(buf, s.as_bytes()),
    }
}

/// The detectors' view of a text: its first `limit` bytes, unescaped (in `scratch` when
/// they had to be).
fn view<'a>(t: &'a Text<'a>, scratch: &'a mut Vec<u8>, limit: usize) -> Line<'a> {
    let whole = match t {
        Text::Raw(r) | Text::Escaped(r) => r,
        Text::Owned(s) => s.as_bytes(),
    };
    Line::new(t.unescaped(limit, scratch), whole)
}

/// The common case of [`is_json_object`], told from the text as stored (braces are never
/// escaped), before any unescaping.
fn stored_json_object(t: &Text<'_>) -> bool {
    let (Text::Escaped(s) | Text::Raw(s)) = t else {
        return false;
    };
    s.first() == Some(&b'{') && s.last() == Some(&b'}')
}

/// A line holding one JSON object (`{...}`): never part of a multiline event.
fn is_json_object(l: &Line<'_>) -> bool {
    let head = trim_start(l.head);
    let tail = trim_end(l.tail);
    head.first() == Some(&b'{') && tail.last() == Some(&b'}')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - n]
}

/// Searchers for the needles tested on every line, built once.
static RB: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b".rb:"));
static IN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b":in "));
static PANIC: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"panic"));
static ERROR_WORDS: [LazyLock<Finder<'static>>; 4] = [
    LazyLock::new(|| Finder::new(b"Error")),
    LazyLock::new(|| Finder::new(b"error")),
    LazyLock::new(|| Finder::new(b"Exception")),
    LazyLock::new(|| Finder::new(b"exception")),
];
static PHP_OBJECT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"[object] ("));

/// Leading spaces and tabs.
fn indent(h: &[u8]) -> usize {
    h.iter().take_while(|&&b| b == b' ' || b == b'\t').count()
}

/// `<indent>at <something>`: a Java, Node.js or .NET frame.
fn is_frame_at(h: &[u8]) -> bool {
    let i = indent(h);
    i > 0 && h[i..].starts_with(b"at ") && h.len() > i + 3
}

/// `<indent>... 12 more` (Java) or `... 12 common frames omitted` (logback).
fn is_more(h: &[u8]) -> bool {
    let rest = &h[indent(h)..];
    let Some(rest) = rest.strip_prefix(b"... ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && (rest[digits..].starts_with(b" more")
            || rest[digits..].starts_with(b" common frames omitted"))
}

/// A Java/.NET/Node.js exception header: `pkg.Class[$Inner]Exception[: message]`, or a
/// bare `SomeError: message`; with `Exception in thread "x" ` or `Unhandled exception. `
/// in front. Returns whether the class name is qualified (has a dot).
fn exception_header(h: &[u8]) -> Option<bool> {
    let mut h = h;
    if let Some(rest) = h.strip_prefix(b"Exception in thread \"") {
        let end = memchr::memchr(b'"', rest)?;
        h = rest[end + 1..].strip_prefix(b" ")?;
    } else if let Some(rest) = h.strip_prefix(b"Unhandled exception. ") {
        h = rest;
    } else if let Some(rest) = h.strip_prefix(b"Uncaught ") {
        h = rest;
    }
    let name_len = h
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
        .count();
    if name_len == 0 || !h[0].is_ascii_alphabetic() {
        return None;
    }
    let name = &h[..name_len];
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
    let kind = last.ends_with(b"Exception")
        || last.ends_with(b"Error")
        || last.ends_with(b"Throwable")
        || last.ends_with(b"Exception]");
    if !kind || name.ends_with(b".") {
        return None;
    }
    let qualified = name.contains(&b'.');
    match &h[name_len..] {
        [] => qualified.then_some(true),
        [b':', b' ', ..] | [b':'] => Some(qualified),
        _ => None,
    }
}

/// A logger's line with a level word: it may introduce the trace that follows.
fn has_level_word(h: &[u8]) -> bool {
    // klog (`E0708 03:42:57...`) and Ruby's Logger (`E, [...`).
    if let [b'E' | b'W' | b'F', rest @ ..] = h {
        if rest.len() >= 5 && rest[..4].iter().all(u8::is_ascii_digit) && rest[4] == b' ' {
            return true;
        }
        if rest.starts_with(b", [") {
            return true;
        }
    }
    const WORDS: [&[u8]; 7] = [
        b"ERROR",
        b"WARN",
        b"FATAL",
        b"SEVERE",
        b"CRITICAL",
        b"CRIT",
        b"PANIC",
    ];
    let h = &h[..h.len().min(160)];
    let mut i = 0;
    while i < h.len() {
        if h[i].is_ascii_uppercase() && (i == 0 || !h[i - 1].is_ascii_alphabetic()) {
            let word = h[i..].iter().take_while(|b| b.is_ascii_uppercase()).count();
            let w = &h[i..i + word];
            if WORDS
                .iter()
                .any(|k| w == *k || (w.len() == 7 && w == b"WARNING"))
            {
                return true;
            }
            i += word.max(1);
        } else {
            i += 1;
        }
    }
    false
}

/// The state a group starting with this line is in.
fn start_state(mode: &Mode, l: &Line<'_>) -> State {
    match mode {
        Mode::Off => State::Plain,
        Mode::Rule(_) => State::Rule,
        Mode::Lang(lang) => lang_start(*lang, l).unwrap_or(State::Plain),
        Mode::Auto => Lang::ALL
            .into_iter()
            .find_map(|lang| lang_start(lang, l))
            .unwrap_or(State::Plain),
    }
}

/// The trace a line starts on its own, if any.
fn lang_start(lang: Lang, l: &Line<'_>) -> Option<State> {
    let h = l.head;
    let trace = |phase| Some(State::Trace(lang, phase));
    match lang {
        // A group may also begin inside a trace (after a gap or a cap): a frame line is
        // one whatever comes before it.
        Lang::Java => match l.header() {
            Some(true) => trace(Phase::Frames),
            _ if h.starts_with(b"Exception in thread ") => trace(Phase::Frames),
            _ if h.first() == Some(&b'\t') && is_frame_at(h) => trace(Phase::Frames),
            _ => None,
        },
        Lang::Python => h
            .starts_with(b"Traceback (most recent call last):")
            .then_some(State::Trace(lang, Phase::Frames)),
        Lang::Go => (h.starts_with(b"panic: ")
            || h.starts_with(b"fatal error: ")
            || h.starts_with(b"SIGQUIT: quit")
            || h.starts_with(b"SIGABRT: abort")
            || is_goroutine(h))
        .then_some(State::Trace(lang, Phase::Frames)),
        Lang::Ruby => is_ruby_header(l).then_some(State::Trace(lang, Phase::Frames)),
        Lang::Node => match l.header() {
            Some(false) => trace(Phase::Frames),
            _ if h.starts_with(b"    at ") && is_frame_at(h) => trace(Phase::Frames),
            _ => None,
        },
        Lang::Dotnet => {
            if is_dotnet_console(h) {
                trace(Phase::Console)
            } else if h.starts_with(b"Unhandled exception. ") && l.header().is_some() {
                trace(Phase::Frames)
            } else {
                None
            }
        }
        Lang::Php => (h.starts_with(b"PHP Fatal error: ")
            || h.starts_with(b"PHP Warning: ")
            || h.starts_with(b"PHP Notice: ")
            || h.starts_with(b"PHP Parse error: ")
            || h.starts_with(b"PHP Deprecated: ")
            || h.starts_with(b"Fatal error: Uncaught "))
        .then_some(State::Trace(lang, Phase::Frames)),
    }
}

/// Whether line `l` joins group `g`; the group's state after it.
fn joins(mode: &Mode, g: &Group, l: &Line<'_>) -> Option<State> {
    match (mode, g.state) {
        (Mode::Off, _) => None,
        (Mode::Rule(rule), _) => rule_joins(rule, l).then_some(State::Rule),
        (_, State::Trace(lang, phase)) => lang_continues(lang, phase, l),
        // Only a group's first line introduces a trace.
        (_, State::Plain) if g.lines > 1 => None,
        (Mode::Lang(lang), _) => plain_joins(*lang, l, g.intro),
        (Mode::Auto, _) => Lang::ALL
            .into_iter()
            .find_map(|lang| plain_joins(lang, l, g.intro)),
    }
}

fn rule_joins(rule: &Rule, l: &Line<'_>) -> bool {
    let text = l.head;
    match (&rule.start, &rule.continues) {
        (Some(start), None) => !start.is_match(text),
        (None, Some(cont)) => cont.is_match(text),
        (Some(start), Some(cont)) => !start.is_match(text) && cont.is_match(text),
        (None, None) => false,
    }
}

/// A line that turns a group of ordinary lines into a trace of `lang`: an exception
/// header or traceback after the logger's line that introduced it, or frames right
/// after a line that named the exception itself.
fn plain_joins(lang: Lang, l: &Line<'_>, intro: Intro) -> Option<State> {
    let h = l.head;
    let joined = match lang {
        Lang::Java => {
            (l.header().is_some() && intro.level)
                || (h.first() == Some(&b'\t') && is_frame_at(h) && intro.error)
        }
        Lang::Python => h.starts_with(b"Traceback (most recent call last):") && intro.level,
        Lang::Go => is_goroutine(h) && intro.panic,
        Lang::Ruby => (is_ruby_header(l) || is_ruby_path_frame(h)) && intro.level,
        Lang::Node => {
            (l.header() == Some(false) && intro.level)
                || (h.starts_with(b"    at ") && is_frame_at(h) && intro.error)
        }
        Lang::Dotnet => h.starts_with(b"   at ") && is_frame_at(h) && intro.error,
        Lang::Php => h == b"[stacktrace]" && intro.php_object,
    };
    joined.then_some(State::Trace(lang, Phase::Frames))
}

/// Whether a line continues a trace of `lang` at `phase`; the phase after it.
fn lang_continues(lang: Lang, phase: Phase, l: &Line<'_>) -> Option<State> {
    let h = l.head;
    let at = |p| Some(State::Trace(lang, p));
    let frames = at(Phase::Frames);
    match lang {
        // The JVM, the CLR and V8 print frames alike; a trace of one accepts the markers
        // of all three (an exception header alone does not say which runtime wrote it).
        Lang::Java | Lang::Node | Lang::Dotnet if phase == Phase::Frames => {
            let rest = &h[indent(h)..];
            (is_frame_at(h)
                || is_more(h)
                || rest.starts_with(b"Caused by: ")
                || rest.starts_with(b"Suppressed: ")
                || rest.starts_with(b"--- End of ")
                || rest.starts_with(b"---> "))
            .then_some(State::Trace(lang, Phase::Frames))
        }
        Lang::Python => match phase {
            Phase::Frames if indent(h) > 0 => frames,
            Phase::Frames if !h.is_empty() => at(Phase::AfterException),
            Phase::AfterException if h.is_empty() => at(Phase::ChainGap),
            Phase::ChainGap
                if h.starts_with(b"During handling of the above exception")
                    || h.starts_with(b"The above exception was the direct cause") =>
            {
                at(Phase::ChainMessage)
            }
            Phase::ChainMessage if h.is_empty() => at(Phase::ChainGap2),
            Phase::ChainGap2 if h.starts_with(b"Traceback (most recent call last):") => frames,
            _ => None,
        },
        Lang::Go => (h.is_empty()
            || is_goroutine(h)
            || h[0] == b'\t'
            || h.starts_with(b"created by ")
            || h.starts_with(b"[signal ")
            || h.starts_with(b"[recovered]")
            || h.starts_with(b"exit status ")
            || h.starts_with(b"PC=")
            || h.starts_with(b"...additional frames elided...")
            || is_go_register(h)
            || is_go_call(l))
        .then_some(State::Trace(lang, Phase::Frames)),
        Lang::Ruby => {
            let i = indent(h);
            ((i > 0 && h[i..].starts_with(b"from ")) || is_ruby_path_frame(&h[i..]))
                .then_some(State::Trace(lang, Phase::Frames))
        }
        Lang::Java | Lang::Node => None,
        Lang::Dotnet => h
            .starts_with(b"      ")
            .then_some(State::Trace(lang, Phase::Console)),
        Lang::Php => {
            let rest = &h[indent(h)..];
            (h == b"Stack trace:"
                || h == b"[stacktrace]"
                || is_php_frame(h)
                || rest.starts_with(b"thrown in ")
                || rest.starts_with(b"\"}"))
            .then_some(State::Trace(lang, Phase::Frames))
        }
    }
}

/// `goroutine 17 [running]:`
fn is_goroutine(h: &[u8]) -> bool {
    let Some(rest) = h.strip_prefix(b"goroutine ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest[digits..].starts_with(b" [")
}

/// A function line of a goroutine dump: `main.main()`, `net/http.(*conn).serve(0xc0)`,
/// `panic({0x4b2b20?, 0x52a4d0?})`.
fn is_go_call(l: &Line<'_>) -> bool {
    let h = l.head;
    let Some(open) = memchr::memchr(b'(', h) else {
        return false;
    };
    let name = &h[..open];
    !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'.' | b'/'
                        | b'_'
                        | b'*'
                        | b'('
                        | b')'
                        | b'['
                        | b']'
                        | b'-'
                        | b'{'
                        | b'}'
                        | b'$'
                        | b','
                )
        })
        && (name.contains(&b'.') || name == b"panic")
        && trim_end(l.tail).last() == Some(&b')')
}

/// A register line of a Go crash: `rax    0x0`.
fn is_go_register(h: &[u8]) -> bool {
    let name = h
        .iter()
        .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        .count();
    (1..=6).contains(&name) && {
        let rest = &h[name..];
        let sp = indent(rest);
        sp > 0 && rest[sp..].starts_with(b"0x")
    }
}

/// Ruby's header: `app.rb:3:in 'foo': message (RuntimeError)`.
fn is_ruby_header(l: &Line<'_>) -> bool {
    if !(RB.find(l.head).is_some() && IN.find(l.head).is_some()) {
        return false;
    }
    let t = trim_end(l.tail);
    let Some(body) = t.strip_suffix(b")") else {
        return false;
    };
    let Some(open) = body.iter().rposition(|&b| b == b'(') else {
        return false;
    };
    let class = &body[open + 1..];
    !class.is_empty()
        && class[0].is_ascii_uppercase()
        && class
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b':' || b == b'_')
}

/// `app/models/user.rb:12:in 'save'`: a backtrace line (Rails prints them unindented).
fn is_ruby_path_frame(h: &[u8]) -> bool {
    let Some(at) = RB.find(h) else {
        return false;
    };
    !h[..at].contains(&b' ') && {
        let rest = &h[at + 4..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && rest[digits..].starts_with(b":in ")
    }
}

/// The .NET console logger's first line: `fail: Category[0]`.
fn is_dotnet_console(h: &[u8]) -> bool {
    [b"fail: ", b"crit: ", b"warn: "]
        .iter()
        .any(|p| h.starts_with(*p))
        && h.ends_with(b"]")
}

/// A PHP frame: `#0 /app/src/x.php(12): foo()` or `#1 {main}`.
fn is_php_frame(h: &[u8]) -> bool {
    let Some(rest) = h.strip_prefix(b"#") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest[digits..].starts_with(b" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            gap_ns: 200 * MS,
            max_lines: 500,
            max_bytes: 1 << 20,
        }
    }

    fn time(ns: i64) -> Timestamp {
        Timestamp::from_unix_nanos(1_720_410_177_000_000_000 + ns)
    }

    /// Feeds `lines` (each `(ms after the first, text)`) through a grouper and returns
    /// the documents, in the order they are emitted, lines joined by `\n`.
    fn run_timed(s: &Settings, lines: &[(i64, &str)]) -> Vec<String> {
        let mut g = Grouper::default();
        let mut out = Vec::new();
        let text_of = |g: Group| {
            let mut buf = Vec::new();
            escaped::unescape_prefix(&g.text, usize::MAX, &mut buf);
            String::from_utf8(buf).unwrap()
        };
        for (i, (ms, line)) in lines.iter().enumerate() {
            let text = Text::Raw(line.as_bytes());
            let input = Input {
                offset: i as u64 * 1000,
                time: time(ms * MS),
                time_before: None,
                text: &text,
                truncated: false,
            };
            match g.push(s, input) {
                Step::Held { closed } => out.extend(closed.map(text_of)),
                Step::Pass { closed } => {
                    out.extend(closed.map(text_of));
                    out.push((*line).to_owned());
                }
            }
        }
        out.extend(g.flush().map(text_of));
        out
    }

    /// Lines 10 µs apart, as a runtime writes a trace.
    fn run(mode: Mode, lines: &[&str]) -> Vec<String> {
        let timed: Vec<(i64, &str)> = lines.iter().map(|l| (0, *l)).collect();
        run_timed(&settings(mode), &timed)
    }

    /// Each case: the lines, and the documents they must become (lines of one document
    /// joined by `\n`).
    fn check(mode: Mode, cases: &[(&str, &[&str], &[&str])]) {
        for (name, lines, want) in cases {
            let got = run(mode.clone(), lines);
            assert_eq!(got, *want, "{name} in mode {mode:?}");
            // `auto` groups every language's traces the same way.
            if mode != Mode::Auto {
                assert_eq!(run(Mode::Auto, lines), *want, "{name} in auto mode");
            }
        }
    }

    #[test]
    fn java() {
        let logback = [
            "2024-07-08 03:42:57.123 ERROR 1 --- [nio-8080-exec-3] c.a.o.OrderController : Request processing failed",
            "java.lang.IllegalStateException: Order 42 is not in state PENDING",
            "\tat com.acme.orders.OrderService.place(OrderService.java:88)",
            "\tat com.acme.orders.OrderController.create(OrderController.java:41)",
            "Caused by: java.sql.SQLException: constraint [uk_order_ref]",
            "\tat org.hibernate.engine.jdbc.spi.SqlExceptionHelper.convert(SqlExceptionHelper.java:112)",
            "\t... 48 more",
            "\tSuppressed: java.io.IOException: close failed",
            "\t\tat com.acme.io.Stream.close(Stream.java:9)",
            "\t\t... 3 common frames omitted",
        ];
        let mut with_next = logback.to_vec();
        with_next.push("2024-07-08 03:42:57.200  INFO 1 --- [main] c.a.App : next request");
        let joined = logback.join("\n");
        let print_stack_trace = [
            "Starting order sync",
            "java.lang.RuntimeException: boom",
            "\tat com.acme.Sync.run(Sync.java:3)",
            "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
        ];
        let in_thread = [
            "Exception in thread \"main\" java.lang.NullPointerException: Cannot invoke \"String.length()\"",
            "\tat Main.main(Main.java:5)",
        ];
        let log4j_message_with_exception = [
            "ERROR [worker-1] app.Jobs - job failed: java.net.SocketTimeoutException: Read timed out",
            "\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
        ];
        check(
            Mode::Lang(Lang::Java),
            &[
                ("logback trace", &logback, &[&joined]),
                (
                    "trace then the next line",
                    &with_next,
                    &[
                        &joined,
                        "2024-07-08 03:42:57.200  INFO 1 --- [main] c.a.App : next request",
                    ],
                ),
                (
                    "printStackTrace after an unrelated line",
                    &print_stack_trace,
                    &["Starting order sync", &print_stack_trace[1..].join("\n")],
                ),
                ("uncaught in a thread", &in_thread, &[&in_thread.join("\n")]),
                (
                    "exception in the logger's line",
                    &log4j_message_with_exception,
                    &[&log4j_message_with_exception.join("\n")],
                ),
            ],
        );
    }

    #[test]
    fn python() {
        let logged = [
            "ERROR:root:could not charge card",
            "Traceback (most recent call last):",
            "  File \"/app/pay.py\", line 12, in charge",
            "    resp = client.post(url, json=body)",
            "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^",
            "  File \"/usr/lib/python3.12/site-packages/httpx/_client.py\", line 1145, in post",
            "    return self.request(",
            "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pay', port=443)",
        ];
        let chained = [
            "Traceback (most recent call last):",
            "  File \"/app/a.py\", line 3, in <module>",
            "    int(\"x\")",
            "ValueError: invalid literal for int() with base 10: 'x'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            "  File \"/app/a.py\", line 5, in <module>",
            "    raise RuntimeError(\"bad input\")",
            "RuntimeError: bad input",
        ];
        let mut then_next = logged.to_vec();
        then_next.push("INFO:root:retrying");
        check(
            Mode::Lang(Lang::Python),
            &[
                ("logger.exception", &logged, &[&logged.join("\n")]),
                (
                    "the line after the exception",
                    &then_next,
                    &[&logged.join("\n"), "INFO:root:retrying"],
                ),
                ("chained", &chained, &[&chained.join("\n")]),
            ],
        );
    }

    #[test]
    fn go() {
        let panic = [
            "panic: runtime error: invalid memory address or nil pointer dereference",
            "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a2f1b]",
            "",
            "goroutine 1 [running]:",
            "main.(*Server).handle(0x0, {0x52c6c0, 0xc000010000})",
            "\t/app/server.go:42 +0x1b",
            "main.main()",
            "\t/app/main.go:12 +0x65",
            "",
            "goroutine 18 [chan receive]:",
            "net/http.(*conn).serve(0xc0000a6000, {0x6b5d48, 0xc000094000})",
            "\t/usr/local/go/src/net/http/server.go:2039 +0x4d2",
            "created by net/http.(*Server).Serve in goroutine 1",
            "\t/usr/local/go/src/net/http/server.go:3285 +0x4b4",
            "exit status 2",
        ];
        let served = [
            "2024/07/08 03:42:57 http: panic serving 10.0.0.7:41234: runtime error: index out of range [3] with length 3",
            "goroutine 33 [running]:",
            "net/http.(*conn).serve.func1()",
            "\t/usr/local/go/src/net/http/server.go:1898 +0xbe",
            "panic({0x6a1a40?, 0xc0000b4018?})",
            "\t/usr/local/go/src/runtime/panic.go:770 +0x132",
        ];
        let mut then_log = panic.to_vec();
        then_log.push("2024/07/08 03:42:58 restarting");
        check(
            Mode::Lang(Lang::Go),
            &[
                ("panic", &panic, &[&panic.join("\n")]),
                (
                    "then a log line",
                    &then_log,
                    &[&panic.join("\n"), "2024/07/08 03:42:58 restarting"],
                ),
                ("http: panic serving", &served, &[&served.join("\n")]),
            ],
        );
    }

    #[test]
    fn ruby_node_dotnet_php() {
        let ruby = [
            "app.rb:3:in 'Integer#/': divided by 0 (ZeroDivisionError)",
            "\tfrom app.rb:3:in 'Object#divide'",
            "\tfrom app.rb:7:in '<main>'",
        ];
        let rails = [
            "E, [2024-07-08T03:42:57.123456 #1] ERROR -- : undefined method `name' for nil (NoMethodError)",
            "app/models/user.rb:12:in `display_name'",
            "app/controllers/users_controller.rb:8:in `show'",
        ];
        let node = [
            "TypeError: Cannot read properties of undefined (reading 'id')",
            "    at getUser (/app/src/users.js:14:22)",
            "    at async Promise.all (index 0)",
            "    at async /app/src/server.js:40:5",
        ];
        let node_logged = [
            "request failed: Error: connect ECONNREFUSED 10.0.0.9:5432",
            "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)",
        ];
        let dotnet = [
            "Unhandled exception. System.InvalidOperationException: Sequence contains no elements",
            "   at System.Linq.ThrowHelper.ThrowNoElementsException()",
            "   at Program.<Main>$(String[] args) in /app/Program.cs:line 12",
            " ---> System.Exception: inner",
            "   --- End of inner exception stack trace ---",
        ];
        let aspnet = [
            "fail: Microsoft.AspNetCore.Server.Kestrel[13]",
            "      Connection id \"0HN5\", Request id \"0HN5:00000001\": An unhandled exception was thrown by the application.",
            "      System.NullReferenceException: Object reference not set to an instance of an object.",
            "         at Api.Controllers.OrdersController.Get(Int32 id) in /src/Controllers/OrdersController.cs:line 21",
        ];
        let php = [
            "PHP Fatal error:  Uncaught Exception: payment declined in /var/www/src/Pay.php:33",
            "Stack trace:",
            "#0 /var/www/src/Checkout.php(18): Pay->charge()",
            "#1 {main}",
            "  thrown in /var/www/src/Pay.php on line 33",
        ];
        let monolog = [
            "[2024-07-08 03:42:57] production.ERROR: payment declined {\"exception\":\"[object] (RuntimeException(code: 0): payment declined at /var/www/src/Pay.php:33)",
            "[stacktrace]",
            "#0 /var/www/src/Checkout.php(18): Pay->charge()",
            "#1 {main}",
            "\"} ",
        ];
        check(
            Mode::Lang(Lang::Ruby),
            &[
                ("ruby", &ruby, &[&ruby.join("\n")]),
                ("rails", &rails, &[&rails.join("\n")]),
            ],
        );
        check(
            Mode::Lang(Lang::Node),
            &[
                ("node", &node, &[&node.join("\n")]),
                ("logged", &node_logged, &[&node_logged.join("\n")]),
            ],
        );
        check(
            Mode::Lang(Lang::Dotnet),
            &[
                ("dotnet", &dotnet, &[&dotnet.join("\n")]),
                ("aspnet", &aspnet, &[&aspnet.join("\n")]),
            ],
        );
        check(
            Mode::Lang(Lang::Php),
            &[
                ("php", &php, &[&php.join("\n")]),
                ("monolog", &monolog, &[&monolog.join("\n")]),
            ],
        );
    }

    /// Things that look indented or structured but are not traces stay one document per
    /// line in `auto` mode: false joins are worse than no joins.
    #[test]
    fn no_false_joins() {
        let cases: &[&[&str]] = &[
            &[
                "Loaded configuration:",
                "  server:",
                "    port: 8080",
                "    host: 0.0.0.0",
                "  debug: false",
            ],
            &[
                "Executing query:",
                "  SELECT id, name",
                "    FROM users",
                "   WHERE id = 42",
                "  ORDER BY name",
            ],
            &[
                "INFO starting",
                "ERROR connection refused",
                "WARN retrying in 5s",
                "INFO connected",
            ],
            &[
                "{\"level\":\"error\",\"msg\":\"boom\"}",
                "\tat com.acme.X.y(X.java:1)",
            ],
            &[
                "10.0.0.1 - - [08/Jul/2024:03:42:57 +0000] \"GET / HTTP/1.1\" 500 12",
                "    at the door",
            ],
            &[
                "E0708 03:42:57.123456       1 controller.go:42] sync failed",
                "I0708 03:42:57.223456       1 controller.go:50] retrying",
            ],
            &["Error: something went wrong", "  hint: try again later"],
            &["panic attack on the dance floor", "goroutine is a word"],
            &["", "", "plain after blanks"],
            &[
                "Usage: tool [options]",
                "  -h, --help    show help",
                "  -v            verbose",
            ],
        ];
        for lines in cases {
            let got = run(Mode::Auto, lines);
            let want: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            // JSON passes through right away; the frame after it starts its own group.
            assert_eq!(got, want, "false join in {lines:?}");
        }
    }

    #[test]
    fn a_gap_in_time_ends_a_group() {
        let s = settings(Mode::Auto);
        let got = run_timed(
            &s,
            &[
                (0, "java.lang.IllegalStateException: x"),
                (1, "\tat a.B.c(B.java:1)"),
                (300, "\tat a.B.d(B.java:2)"),
                (301, "\tat a.B.e(B.java:3)"),
            ],
        );
        assert_eq!(
            got,
            [
                "java.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)",
                "\tat a.B.d(B.java:2)\n\tat a.B.e(B.java:3)"
            ]
        );
    }

    #[test]
    fn caps_close_a_group_and_the_rest_starts_the_next() {
        let mut s = settings(Mode::Lang(Lang::Java));
        s.max_lines = 3;
        let lines: Vec<(i64, &str)> = [
            "java.lang.Error: x",
            "\tat a.A.a(A.java:1)",
            "\tat a.A.b(A.java:2)",
            "\tat a.A.c(A.java:3)",
            "\tat a.A.d(A.java:4)",
        ]
        .iter()
        .map(|l| (0, *l))
        .collect();
        assert_eq!(
            run_timed(&s, &lines),
            [
                "java.lang.Error: x\n\tat a.A.a(A.java:1)\n\tat a.A.b(A.java:2)",
                "\tat a.A.c(A.java:3)\n\tat a.A.d(A.java:4)"
            ]
        );
        let mut s = settings(Mode::Lang(Lang::Java));
        // Bytes as stored: a tab is escaped to two.
        s.max_bytes = 42;
        assert_eq!(
            run_timed(&s, &lines),
            [
                "java.lang.Error: x\n\tat a.A.a(A.java:1)",
                "\tat a.A.b(A.java:2)\n\tat a.A.c(A.java:3)",
                "\tat a.A.d(A.java:4)"
            ]
        );
    }

    #[test]
    fn user_rules() {
        let rule = |start: Option<&str>, cont: Option<&str>| {
            Mode::Rule(Arc::new(Rule {
                name: "r".into(),
                start: start.map(|r| regex::bytes::Regex::new(r).unwrap()),
                continues: cont.map(|r| regex::bytes::Regex::new(r).unwrap()),
            }))
        };
        let lines = [
            "2024-07-08 first event",
            "  detail one",
            "detail two",
            "2024-07-08 second event",
        ];
        assert_eq!(
            run(rule(Some(r"^\d{4}-"), None), &lines),
            [
                "2024-07-08 first event\n  detail one\ndetail two",
                "2024-07-08 second event"
            ]
        );
        assert_eq!(
            run(rule(None, Some(r"^\s")), &lines),
            [
                "2024-07-08 first event\n  detail one",
                "detail two",
                "2024-07-08 second event"
            ]
        );
        assert_eq!(
            run(rule(Some(r"^\d{4}-"), Some(r"^\s")), &lines),
            [
                "2024-07-08 first event\n  detail one",
                "detail two",
                "2024-07-08 second event"
            ]
        );
    }

    #[test]
    fn escaped_docker_text_is_read_unescaped() {
        let s = settings(Mode::Auto);
        let mut g = Grouper::default();
        let lines: [&[u8]; 3] = [
            br#"ERROR [main] App - failed \u003cboom\u003e"#,
            br#"java.lang.IllegalStateException: bad \"state\""#,
            br"\tat a.B.c(B.java:1)",
        ];
        let mut closed = None;
        for (i, l) in lines.iter().enumerate() {
            let text = Text::Escaped(l);
            let input = Input {
                offset: i as u64,
                time: time(0),
                time_before: None,
                text: &text,
                truncated: false,
            };
            let (Step::Held { closed: c } | Step::Pass { closed: c }) = g.push(&s, input);
            closed = closed.or(c);
        }
        assert!(closed.is_none(), "one group");
        let grp = g.flush().unwrap();
        assert_eq!(grp.lines, 3);
        assert_eq!(
            grp.text,
            br#"ERROR [main] App - failed \u003cboom\u003e\njava.lang.IllegalStateException: bad \"state\"\n\tat a.B.c(B.java:1)"#
        );
        let mut json = b"\"".to_vec();
        json.extend_from_slice(&grp.text);
        json.push(b'"');
        let v: String = serde_json::from_slice(&json).unwrap();
        assert!(v.contains("\n\tat a.B.c"), "{v}");
    }

    #[test]
    fn the_clock_closes_only_a_group_whose_gap_passed() {
        let s = settings(Mode::Auto);
        let mut g = Grouper::default();
        let text = Text::Raw(b"java.lang.Error: x");
        let _ = g.push(
            &s,
            Input {
                offset: 0,
                time: time(0),
                time_before: None,
                text: &text,
                truncated: false,
            },
        );
        assert_eq!(g.deadline(&s), Some(time(0).unix_nanos() + 200 * MS + 1));
        assert!(g.expire(&s, time(200 * MS).unix_nanos()).is_none());
        assert!(g.expire(&s, time(201 * MS).unix_nanos()).is_some());
        assert!(g.resume_point().is_none());
    }
}
