//! Redaction: secrets in a record's text replaced before it is parsed into fields or
//! encoded, so neither the text nor a field carries them.
//!
//! Clean text costs one multi-pattern scan: an Aho-Corasick search for the built-ins'
//! keywords (`bearer`, `password`, `AKIA`, `PRIVATE KEY`…, each in lower case,
//! Capitalised or upper case: `PassWord` is not looked for) over the text as stored, and
//! for credit cards a word-at-a-time count of digits (a card needs 13 digits within 25
//! bytes). Only a record that passes that prefilter (or any record, when user patterns
//! exist) is unescaped and searched with the regular expressions. Replacements are a
//! fixed text or a keyed hash (HMAC-SHA256 under a key of the user's), so equal secrets
//! can still be correlated without being readable.

use crate::encode::Text;
use aho_corasick::{packed, AhoCorasick};
use ring::hmac;
use std::sync::Arc;

/// A secret's pattern.
#[derive(Debug)]
struct Pattern {
    name: Arc<str>,
    re: regex::bytes::Regex,
    /// Credit cards: the digits must pass the Luhn check.
    luhn: bool,
}

/// The keyword search: Teddy (SIMD, several GB/s on clean text) where the CPU has it,
/// else an Aho-Corasick automaton (several times slower).
#[derive(Debug)]
enum Keywords {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Keywords {
    fn new(words: &[String]) -> Keywords {
        match packed::Config::new().builder().extend(words).build() {
            Some(s) => Keywords::Packed(s),
            // The keywords are the built-ins' few short literals: an automaton of them
            // cannot exceed aho-corasick's limits.
            None => Keywords::Automaton(
                AhoCorasick::new(words).expect("the built-in keywords are valid"),
            ),
        }
    }

    fn is_match(&self, text: &[u8]) -> bool {
        match self {
            Keywords::Packed(s) => s.find(text).is_some(),
            Keywords::Automaton(a) => a.is_match(text),
        }
    }
}

/// What a record's prefilter found (see [`Redactor::prefilter`]).
#[derive(Debug, Clone, Copy)]
pub struct Candidates {
    keywords: bool,
    cards: bool,
}

/// What replaces a secret.
#[derive(Debug)]
pub enum Replacement {
    Text(String),
    /// `[REDACTED:<16 hex digits>]`: the first 8 bytes of an HMAC-SHA256.
    Hash(hmac::Key),
}

/// The redaction patterns in force (shared by every file they apply to).
#[derive(Debug)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    /// Keywords of the built-ins.
    keywords: Option<Keywords>,
    /// The user patterns (after the built-ins in `patterns`), as one set: a record is
    /// searched with them only when the set matches its text.
    user: Option<regex::bytes::RegexSet>,
    /// How many of `patterns` are built-ins.
    builtins: usize,
    /// The credit-card digit prefilter is on.
    cards: bool,
    replacement: Replacement,
}

/// A built-in: name, expression (the first group that took part is replaced, or the whole
/// match), keywords that any match contains (ASCII).
const BUILTINS: &[(&str, &str, &[&str])] = &[
    (
        "bearer",
        r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)",
        &["bearer"],
    ),
    (
        "password",
        r#"(?i)(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token)"?\s*[:=]\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\s"',;&{}\[\]()<>]+))"#,
        &[
            "password",
            "passwd",
            "pwd",
            "secret",
            "api_key",
            "apikey",
            "api-key",
            "access_token",
            "accesstoken",
            "accessToken",
            "access-token",
            "apiKey",
        ],
    ),
    (
        "aws_access_key",
        r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b",
        &["AKIA", "ASIA"],
    ),
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        &["PRIVATE KEY"],
    ),
    ("credit_card", r"\b[2-6](?:[ -]?[0-9]){12,18}\b", &[]),
];

/// What redaction did to one record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redacted {
    /// The new text (unescaped).
    pub text: String,
    /// Secrets replaced, by pattern name.
    pub hits: Vec<(Arc<str>, u64)>,
}

impl Redactor {
    /// The redactor for the given built-ins (by name) and user patterns `(name, regex)`.
    pub fn new(
        builtins: &[String],
        user: &[(String, String)],
        replacement: Replacement,
    ) -> Result<Redactor, regex::Error> {
        let mut patterns = Vec::new();
        let mut keywords = Vec::new();
        let mut cards = false;
        for (name, re, kw) in BUILTINS {
            if !builtins.iter().any(|b| b == name) {
                continue;
            }
            keywords.extend_from_slice(kw);
            cards |= *name == "credit_card";
            patterns.push(Pattern {
                name: (*name).into(),
                re: regex::bytes::Regex::new(re)?,
                luhn: *name == "credit_card",
            });
        }
        let n_builtins = patterns.len();
        for (name, re) in user {
            patterns.push(Pattern {
                name: name.as_str().into(),
                re: regex::bytes::Regex::new(re)?,
                luhn: false,
            });
        }
        // Each keyword as written in lower case, Capitalised, with each word capitalised,
        // and in upper case (a case-insensitive automaton is several times slower on
        // clean text).
        let variants: Vec<String> = keywords
            .iter()
            .flat_map(|k| {
                let mut cap = k.to_string();
                cap[..1].make_ascii_uppercase();
                // Each word capitalised, as in HTTP headers: `X-Api-Key`, `Access_Token`.
                let mut title = String::with_capacity(k.len());
                let mut up = true;
                for c in k.chars() {
                    title.push(if up { c.to_ascii_uppercase() } else { c });
                    up = c == '-' || c == '_' || c == ' ';
                }
                [k.to_string(), cap, title, k.to_ascii_uppercase()]
            })
            .collect();
        let keywords = (!variants.is_empty()).then(|| Keywords::new(&variants));
        Ok(Redactor {
            patterns,
            keywords,
            user: if user.is_empty() {
                None
            } else {
                Some(regex::bytes::RegexSet::new(user.iter().map(|(_, re)| re))?)
            },
            builtins: n_builtins,
            cards,
            replacement,
        })
    }

    /// Which patterns may match the record whose text is stored as `stored` (escaped
    /// or not); `None`: none can, the record is not searched. The built-ins with
    /// keywords when one is in it, the card pattern when digits are written like a card
    /// (each prefilter decides only for its own patterns, so the stored form never
    /// changes what is searched), the user patterns always (on the unescaped text).
    pub fn prefilter(&self, stored: &[u8]) -> Option<Candidates> {
        let keywords = self.keywords.as_ref().is_some_and(|k| k.is_match(stored));
        let cards = self.cards && dense_digits(stored) && card_run(stored);
        (keywords || cards || self.user.is_some()).then_some(Candidates { keywords, cards })
    }

    /// The text with every secret replaced, or `None` when it holds none.
    pub fn redact(&self, text: &Text<'_>, scratch: &mut Vec<u8>) -> Option<Redacted> {
        let found = self.prefilter(text.stored())?;
        self.redact_plain(found, text.unescaped(usize::MAX, scratch))
    }

    /// [`Redactor::redact`] for a record already unescaped (`plain`), with what its
    /// [`Redactor::prefilter`] found.
    pub fn redact_plain(&self, found: Candidates, plain: &[u8]) -> Option<Redacted> {
        let Candidates { keywords, cards } = found;
        let builtins = self.patterns[..self.builtins]
            .iter()
            .enumerate()
            .filter(|(_, p)| if p.luhn { cards } else { keywords })
            .map(|(i, _)| i);
        let users = match &self.user {
            Some(set) if set.is_match(plain) => Some(set.matches(plain)),
            _ => None,
        };
        if !keywords && !cards && users.is_none() {
            return None;
        }
        let searched = builtins.chain(
            users
                .iter()
                .flat_map(|m| m.iter())
                .map(|i| self.builtins + i),
        );
        // (start, end, pattern) of every secret, earliest first; overlaps go to the
        // earlier one.
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for i in searched {
            let p = &self.patterns[i];
            for caps in p.re.captures_iter(plain) {
                let Some(m) = caps.iter().skip(1).flatten().next().or_else(|| caps.get(0)) else {
                    continue;
                };
                if m.is_empty() {
                    continue;
                }
                let end = if p.luhn {
                    // The expression is greedy: a card followed by a short digit group
                    // (a CVV, an expiry) matches too long; try the shorter ends.
                    match card_end(m.as_bytes()) {
                        Some(len) => m.start() + len,
                        None => continue,
                    }
                } else {
                    m.end()
                };
                spans.push((m.start(), end, i));
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        // Overlapping secrets are replaced as one: their union (a password value that
        // holds an AWS key is replaced whole, not cut after the key).
        let mut merged: Vec<(usize, usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end, i) in spans {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end, i)),
            }
        }
        let mut out = Vec::with_capacity(plain.len());
        let mut hits: Vec<(Arc<str>, u64)> = Vec::new();
        let mut at = 0;
        for (start, end, i) in merged {
            out.extend_from_slice(&plain[at..start]);
            self.replace(&plain[start..end], &mut out);
            at = end;
            let name = &self.patterns[i].name;
            match hits.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => *c += 1,
                None => hits.push((name.clone(), 1)),
            }
        }
        out.extend_from_slice(&plain[at..]);
        let text = match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Some(Redacted { text, hits })
    }

    fn replace(&self, secret: &[u8], out: &mut Vec<u8>) {
        match &self.replacement {
            Replacement::Text(t) => out.extend_from_slice(t.as_bytes()),
            Replacement::Hash(key) => {
                let tag = hmac::sign(key, secret);
                out.extend_from_slice(b"[REDACTED:");
                for b in &tag.as_ref()[..8] {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.push(b']');
            }
        }
    }
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Redactor) -> bool {
        std::ptr::eq(self, other)
    }
}

/// A key for [`Replacement::Hash`].
pub fn hash_key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The length of the longest prefix of `s` that is a card number (see [`card`]): all of
/// it, or all but whole trailing digit groups (cut only at a space or dash, so a long
/// run of digits is never searched for a card inside it).
fn card_end(s: &[u8]) -> Option<usize> {
    (1..=s.len())
        .rev()
        .filter(|&n| n == s.len() || (s[n] == b' ' || s[n] == b'-'))
        .find(|&n| card(&s[..n]))
}

/// Whether the digits of `s` (spaces and dashes between them) are 13 to 19 that pass
/// the Luhn check.
fn card(s: &[u8]) -> bool {
    let digits: Vec<u8> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `s` has 13 digits or more in a row, a single space or dash allowed between
/// two of them (how card numbers are written; timestamps and versions break the run).
fn card_run(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = s[i..].iter().position(u8::is_ascii_digit) {
        i += p;
        let mut digits = 0;
        while let Some(&b) = s.get(i) {
            i += 1;
            if b.is_ascii_digit() {
                digits += 1;
                if digits >= 13 {
                    return true;
                }
            } else if !((b == b' ' || b == b'-') && s.get(i).is_some_and(u8::is_ascii_digit)) {
                break;
            }
        }
    }
    false
}

/// A byte per lane with its high bit set where `w`'s byte is an ASCII digit.
fn digit_lanes(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Digits become 0..=9; adding 0x76 to a lane's low 7 bits sets its high bit exactly
    // when they were 10 or more (no carry leaves a lane).
    let y = w ^ 0x3030_3030_3030_3030;
    let ge10 = (y & LOW7) + 0x7676_7676_7676_7676;
    !(ge10 | y) & HIGH
}

/// Whether some four consecutive 8-byte words of `s` hold 13 digits or more: every
/// card number (13 to 19 digits in at most 25 bytes with separators) passes.
fn dense_digits(s: &[u8]) -> bool {
    let mut window = [0u32; 4];
    let mut sum = 0u32;
    let mut words = s.chunks_exact(8);
    let mut i = 0;
    let mut step = |n: u32| {
        sum = sum - window[i % 4] + n;
        window[i % 4] = n;
        i += 1;
        sum >= 13
    };
    for w in &mut words {
        // `chunks_exact(8)` yields 8-byte slices only.
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        if step(digit_lanes(w).count_ones()) {
            return true;
        }
    }
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    step(digit_lanes(u64::from_le_bytes(last)).count_ones())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::REDACT_BUILTINS;

    #[test]
    fn the_configuration_names_every_built_in() {
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.0).collect();
        assert_eq!(names, REDACT_BUILTINS);
    }

    fn all() -> Redactor {
        let names: Vec<String> = REDACT_BUILTINS.iter().map(|s| (*s).to_owned()).collect();
        Redactor::new(&names, &[], Replacement::Text("[REDACTED]".into())).unwrap()
    }

    fn red(r: &Redactor, s: &str) -> String {
        r.redact(&Text::Raw(s.as_bytes()), &mut Vec::new())
            .map_or_else(|| s.to_owned(), |r| r.text)
    }

    #[test]
    fn built_ins() {
        let r = all();
        let cases = [
            ("login password=hunter2 ok", "login password=[REDACTED] ok"),
            (
                r#"{"user":"bob","password":"correct horse"}"#,
                r#"{"user":"bob","password":"[REDACTED]"}"#,
            ),
            ("DB_PASSWD: 's3cr3t'", "DB_PASSWD: '[REDACTED]'"),
            ("X-Api-Key: abcd1234", "X-Api-Key: [REDACTED]"),
            ("X-Access-Token: t0k3n", "X-Access-Token: [REDACTED]"),
            (
                r#"{"user":"bob","pwd":1234}"#,
                r#"{"user":"bob","pwd":[REDACTED]}"#,
            ),
            (
                r#"{"password":"p\"ss","n":1}"#,
                r#"{"password":"[REDACTED]","n":1}"#,
            ),
            (
                "secret=AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG rest",
                "secret=[REDACTED] rest",
            ),
            ("api_key=abc123&x=1", "api_key=[REDACTED]&x=1"),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
                "Authorization: Bearer [REDACTED]",
            ),
            ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"),
            (
                "card 4111 1111 1111 1111 charged",
                "card [REDACTED] charged",
            ),
            ("card 4111-1111-1111-1111.", "card [REDACTED]."),
            ("card=4111 1111 1111 1111 123 ok", "card=[REDACTED] 123 ok"),
            ("amex 378282246310005", "amex [REDACTED]"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- done",
                "[REDACTED] done",
            ),
            ("-----BEGIN PRIVATE KEY-----\nMIIEow (cut)", "[REDACTED]"),
        ];
        for (input, want) in cases {
            assert_eq!(red(&r, input), want, "{input}");
        }
    }

    #[test]
    fn look_alikes_stay() {
        let r = all();
        for s in [
            "order 4111111111111112 shipped",  // fails Luhn
            "id 12345678901234567890123 seen", // too long
            "id 4111111111111111123 seen",     // a card's digits inside a longer run
            "trace 1234-5678",
            "the password policy changed",
            "bearer of bad news",
            "ASIAN markets",
            "ts=1720410177123456789 n=42",
        ] {
            assert_eq!(red(&r, s), s);
        }
    }

    #[test]
    fn escaped_text_is_redacted_unescaped() {
        let r = all();
        let got = r
            .redact(
                &Text::Escaped(br#"{\"password\":\"x\\y\"} \u003cok\u003e"#),
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(got.text, r#"{"password":"[REDACTED]"} <ok>"#);
        assert_eq!(got.hits, vec![(Arc::from("password"), 1)]);
    }

    #[test]
    fn user_patterns_replace_their_group_and_count_by_name() {
        let r = Redactor::new(
            &[],
            &[("session".into(), "sid=([0-9a-f]{8})".into())],
            Replacement::Text("***".into()),
        )
        .unwrap();
        let got = r
            .redact(
                &Text::Raw(b"a sid=deadbeef b sid=cafebabe"),
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(got.text, "a sid=*** b sid=***");
        assert_eq!(got.hits, vec![(Arc::from("session"), 2)]);
    }

    #[test]
    fn a_keyed_hash_correlates_equal_secrets() {
        let names = vec!["password".to_owned()];
        let r = Redactor::new(&names, &[], Replacement::Hash(hash_key(b"k1"))).unwrap();
        let a = red(&r, "password=hunter2");
        let b = red(&r, "pwd: hunter2");
        let c = red(&r, "password=hunter3");
        assert!(
            a.starts_with("password=[REDACTED:") && a.len() == "password=[REDACTED:]".len() + 16
        );
        assert_eq!(a["password=".len()..], b["pwd: ".len()..]);
        assert_ne!(a, c);
        let other = Redactor::new(&names, &[], Replacement::Hash(hash_key(b"k2"))).unwrap();
        assert_ne!(red(&other, "password=hunter2"), a);
    }

    #[test]
    fn digit_prefilter_counts_exactly() {
        for b in 0..=255u8 {
            let lanes = digit_lanes(u64::from_le_bytes([b; 8]));
            assert_eq!(lanes.count_ones() == 8, b.is_ascii_digit(), "{b}");
        }
        assert!(dense_digits(b"xx 4111 1111 1111 1111"));
        assert!(dense_digits(b"1234567890123"));
        assert!(!dense_digits(b"GET /orders/42 200 in 3 ms"));
        // Dense, but not written like a card.
        assert!(dense_digits(b"2024-07-08T03:42:57.123Z id=42"));
        assert!(!card_run(b"2024-07-08T03:42:57.123Z id=42"));
        assert!(card_run(b"4111 1111-1111 1111") && card_run(b"x1234567890123"));
        assert!(!card_run(b"4111  1111 1111 1111"));
    }

    proptest::proptest! {
        /// Text that no pattern matches is never changed.
        #[test]
        fn clean_text_is_never_changed(s in "[a-zA-Z .,:=/-]{0,200}") {
            let r = all();
            let clean = !["bearer", "passw", "pwd", "secret", "api", "access", "akia", "asia", "private"]
                .iter()
                .any(|k| s.to_ascii_lowercase().contains(k));
            if clean {
                proptest::prop_assert!(r.redact(&Text::Raw(s.as_bytes()), &mut Vec::new()).is_none());
            }
        }

        /// Whatever the text, the result is valid text and the parts between secrets
        /// are the input's.
        #[test]
        fn any_text_redacts_without_panic(s in "\\PC{0,120}(password=|4111 1111 1111 1111|AKIAIOSFODNN7EXAMPLE)?\\PC{0,40}") {
            let r = all();
            if let Some(got) = r.redact(&Text::Raw(s.as_bytes()), &mut Vec::new()) {
                proptest::prop_assert!(got.text.contains("[REDACTED]"));
                proptest::prop_assert!(got.hits.iter().all(|(_, n)| *n > 0));
            }
        }
    }
}
