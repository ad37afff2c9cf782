//! Line filters: whether a record (a line, or a whole multiline group) is shipped, by a
//! rule's `drop` or `keep` regular expression over its text.
//!
//! A dropped record is decided, not lost: it makes no document, is counted by the name
//! of the rule that dropped it, and the checkpoint moves past it like any other.

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
}

impl Filter {
    /// A filter that drops (or, with `keep`, keeps only) records matching `pattern`.
    pub fn new(rule: &str, keep: bool, pattern: &str) -> Result<Filter, regex::Error> {
        Ok(Filter {
            rule: rule.into(),
            keep,
            re: regex::bytes::Regex::new(pattern)?,
        })
    }

    /// `drop /re/` or `keep /re/`.
    pub fn describe(&self) -> String {
        let verb = if self.keep { "keep" } else { "drop" };
        format!("{verb} /{}/", self.re.as_str())
    }

    /// Whether the record with `text` is shipped. The expression sees the text as the
    /// application wrote it (unescaped).
    pub fn keeps(&self, text: &Text<'_>, scratch: &mut Vec<u8>) -> bool {
        self.keeps_plain(text.unescaped(usize::MAX, scratch))
    }

    /// [`Filter::keeps`] for a text already unescaped.
    pub fn keeps_plain(&self, plain: &[u8]) -> bool {
        self.re.is_match(plain) == self.keep
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.rule == other.rule && self.keep == other.keep && self.re.as_str() == other.re.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_and_keep() {
        let mut s = Vec::new();
        let drop = Filter::new("probes", false, "kube-probe/").unwrap();
        assert!(!drop.keeps(&Text::Raw(b"GET /healthz kube-probe/1.29"), &mut s));
        assert!(drop.keeps(&Text::Raw(b"GET /orders"), &mut s));
        let keep = Filter::new("errors", true, "(?i)error").unwrap();
        assert!(keep.keeps(&Text::Raw(b"ERROR boom"), &mut s));
        assert!(!keep.keeps(&Text::Raw(b"INFO fine"), &mut s));
    }

    #[test]
    fn the_expression_sees_the_text_unescaped() {
        let mut s = Vec::new();
        // Docker stores `<html> "x"` as `\u003chtml\u003e \"x\"`.
        let f = Filter::new("html", false, r#"<html> "x""#).unwrap();
        assert!(!f.keeps(&Text::Escaped(br#"\u003chtml\u003e \"x\""#), &mut s));
        assert!(!f.keeps(&Text::Owned(r#"<html> "x""#.into()), &mut s));
        assert!(f.keeps(&Text::Escaped(br"\u003cbody\u003e"), &mut s));
    }
}
