//! Line filters: whether a record (a line, or a whole multiline group) is shipped, by a
//! rule's `drop` or `keep` regular expression over its text, or over one of its parsed
//! fields (a record whose field cannot be read is shipped: a filter never drops what it
//! cannot judge).
//!
//! A dropped record is decided, not lost: it makes no document, is counted by the name
//! of the rule that dropped it, and the checkpoint moves past it like any other.

use super::fields::{self, Parser};
use crate::encode::Text;
use std::sync::Arc;

/// One rule's filter.
#[derive(Debug)]
pub struct Filter {
    /// The rule's name (for the count and the dry-run's explanation).
    pub rule: Arc<str>,
    /// `true`: only matching records are kept; `false`: matching records are dropped.
    keep: bool,
    re: regex::bytes::Regex,
    /// Match this top-level parsed field instead of the text.
    field: Option<String>,
}

impl Filter {
    /// A filter that drops (or, with `keep`, keeps only) records matching `pattern`.
    pub fn new(rule: &str, keep: bool, pattern: &str) -> Result<Filter, regex::Error> {
        Ok(Filter {
            rule: rule.into(),
            keep,
            re: regex::bytes::Regex::new(pattern)?,
            field: None,
        })
    }

    /// The same filter over the parsed field `field` instead of the text.
    pub fn on_field(self, field: Option<String>) -> Filter {
        Filter { field, ..self }
    }

    /// `drop /re/` or `keep /re/`.
    pub fn describe(&self) -> String {
        let verb = if self.keep { "keep" } else { "drop" };
        match &self.field {
            Some(f) => format!("{verb} {f} =~ /{}/", self.re.as_str()),
            None => format!("{verb} /{}/", self.re.as_str()),
        }
    }

    /// Whether the record with `text` is shipped. The expression sees the text as the
    /// application wrote it (unescaped).
    pub fn keeps(&self, text: &Text<'_>, parser: Option<&Parser>, scratch: &mut Vec<u8>) -> bool {
        self.keeps_plain(text.unescaped(usize::MAX, scratch), parser)
    }

    /// [`Filter::keeps`] for a text already unescaped, parsed (for a field filter) with
    /// `parser`.
    pub fn keeps_plain(&self, plain: &[u8], parser: Option<&Parser>) -> bool {
        let Some(field) = &self.field else {
            return self.re.is_match(plain) == self.keep;
        };
        match parser.and_then(|p| fields::value_of(p, plain, field)) {
            Some(v) => self.re.is_match(v.as_bytes()) == self.keep,
            None => true,
        }
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.rule == other.rule
            && self.keep == other.keep
            && self.re.as_str() == other.re.as_str()
            && self.field == other.field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_and_keep() {
        let mut s = Vec::new();
        let drop = Filter::new("probes", false, "kube-probe/").unwrap();
        assert!(!drop.keeps(&Text::Raw(b"GET /healthz kube-probe/1.29"), None, &mut s));
        assert!(drop.keeps(&Text::Raw(b"GET /orders"), None, &mut s));
        let keep = Filter::new("errors", true, "(?i)error").unwrap();
        assert!(keep.keeps(&Text::Raw(b"ERROR boom"), None, &mut s));
        assert!(!keep.keeps(&Text::Raw(b"INFO fine"), None, &mut s));
    }

    #[test]
    fn a_field_filter_reads_the_parsed_field_and_ships_what_it_cannot_read() {
        let mut s = Vec::new();
        let f = Filter::new("no-debug", false, "^(debug|trace)$")
            .unwrap()
            .on_field(Some("level".into()));
        let json = Some(&Parser::Json);
        assert!(!f.keeps(&Text::Raw(br#"{"level":"debug","msg":"x"}"#), json, &mut s));
        assert!(f.keeps(
            &Text::Raw(br#"{"level":"info","msg":"debug"}"#),
            json,
            &mut s
        ));
        assert!(!f.keeps(
            &Text::Raw(b"level=trace msg=\"a b\""),
            Some(&Parser::Logfmt),
            &mut s
        ));
        // No such field, no parser, or not parseable: shipped.
        assert!(f.keeps(&Text::Raw(br#"{"msg":"debug"}"#), json, &mut s));
        assert!(f.keeps(&Text::Raw(br#"{"level":"debug"}"#), None, &mut s));
        assert!(f.keeps(&Text::Raw(b"debug: not json"), json, &mut s));
        let n = Filter::new("5xx", true, "^5")
            .unwrap()
            .on_field(Some("status".into()));
        assert!(n.keeps(&Text::Raw(br#"{"status":503}"#), json, &mut s));
        assert!(!n.keeps(&Text::Raw(br#"{"status":200}"#), json, &mut s));
    }

    #[test]
    fn the_expression_sees_the_text_unescaped() {
        let mut s = Vec::new();
        // Docker stores `<html> "x"` as `\u003chtml\u003e \"x\"`.
        let f = Filter::new("html", false, r#"<html> "x""#).unwrap();
        assert!(!f.keeps(&Text::Escaped(br#"\u003chtml\u003e \"x\""#), None, &mut s));
        assert!(!f.keeps(&Text::Owned(r#"<html> "x""#.into()), None, &mut s));
        assert!(f.keeps(&Text::Escaped(br"\u003cbody\u003e"), None, &mut s));
    }
}
