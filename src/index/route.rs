//! Routes: the index prefix (or data stream) each file's documents go to, as names.
//!
//! A route template such as `logs-{namespace}` is rendered once per file over its
//! metadata; each value is sanitised to what Elasticsearch accepts in an index name
//! (lowercase, none of `\ / * ? " < > | , # :` or spaces, no leading `-` `_` `+` `.`, at
//! most [`MAX_PREFIX_BYTES`]). A template whose value is missing renders nothing, and the
//! caller falls back to the default prefix.
//!
//! Every name a route can produce is covered by a pattern ([`pattern`]): the index
//! template lists them all, and a name chosen by a pod (its annotation) is accepted only
//! if a pattern covers it, so no document lands in an index the template does not map.
//!
//! A file's route is kept as a history ([`Routes`]): the name that applies from each
//! offset on. A record goes where its offset says, so a replay after a restart goes
//! where the first read sent it (a document id is unique only within one index).

use std::sync::Arc;

/// Longest prefix or data stream name (Elasticsearch allows 255 bytes for the whole
/// index name; the rest is for the date).
pub const MAX_PREFIX_BYTES: usize = 200;

/// Longest text of a template before its first value: a rendered name, cut to
/// [`MAX_PREFIX_BYTES`], always keeps it and something after it, so the template's
/// pattern covers it.
pub const MAX_LITERAL_BYTES: usize = 100;

/// A value a template takes from a file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Namespace,
    Pod,
    Container,
    /// A pod label.
    Label(String),
    /// A label of the pod's namespace.
    NamespaceLabel(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value(Field),
}

/// A parsed route template: literal text and `{namespace}`, `{pod}`, `{container}`,
/// `{labels.KEY}`, `{namespace_labels.KEY}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    text: String,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find(['{', '}']) else {
                parts.push(Part::Literal(rest.to_owned()));
                break;
            };
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("{text:?}: '}}' without '{{'"));
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{text:?}: '{{' without '}}'"));
            };
            let name = &rest[open + 1..open + close];
            let field = match name {
                "namespace" => Field::Namespace,
                "pod" => Field::Pod,
                "container" => Field::Container,
                _ => match (
                    name.strip_prefix("labels."),
                    name.strip_prefix("namespace_labels."),
                ) {
                    (Some(k), _) if !k.is_empty() => Field::Label(k.to_owned()),
                    (_, Some(k)) if !k.is_empty() => Field::NamespaceLabel(k.to_owned()),
                    _ => {
                        return Err(format!(
                            "{text:?}: unknown value {{{name}}} (use {{namespace}}, {{pod}}, {{container}}, {{labels.KEY}} or {{namespace_labels.KEY}})"
                        ))
                    }
                },
            };
            parts.push(Part::Value(field));
            rest = &rest[open + close + 1..];
        }
        if text.contains('%') {
            return Err(format!(
                "{text:?}: the template names the prefix; the date comes from elasticsearch.index_date_format"
            ));
        }
        for part in &parts {
            if let Part::Literal(l) = part {
                if let Some(c) = l.chars().find(|&c| c != '-' && !allowed(c)) {
                    return Err(format!(
                        "{text:?} contains {c:?}; index names are lowercase without \\ / * ? \" < > | , # : or spaces"
                    ));
                }
            }
        }
        if let Some(Part::Literal(l)) = parts.first() {
            if l.len() > MAX_LITERAL_BYTES {
                return Err(format!(
                    "{text:?}: the text before the first value is longer than {MAX_LITERAL_BYTES} bytes"
                ));
            }
        }
        match parts.first() {
            None => return Err("the route template is empty".into()),
            Some(Part::Value(_)) => {
                return Err(format!(
                    "{text:?} must start with literal text, such as `logs-` (the pattern of its indices is that text and `*`)"
                ))
            }
            Some(Part::Literal(l)) if l.starts_with(['-', '_', '+', '.']) => {
                return Err(format!(
                    "{text:?} must not start with '-', '_', '+' or '.'"
                ))
            }
            _ => {}
        }
        Ok(Template {
            parts,
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The name for a file whose values `lookup` gives (`None`: a value is missing, or
    /// sanitises to nothing).
    pub fn render<'a>(&self, lookup: impl Fn(&Field) -> Option<&'a str>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Value(f) => {
                    let v = sanitize(lookup(f)?);
                    if v.is_empty() {
                        return None;
                    }
                    out.push_str(&v);
                }
            }
        }
        finish(out)
    }

    /// The pattern that covers every name the template renders: its text up to the
    /// first value, then `*`.
    pub fn pattern(&self) -> String {
        let mut p = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => p.push_str(l),
                Part::Value(_) => {
                    p.push('*');
                    return p;
                }
            }
        }
        p
    }
}

/// Whether `c` may appear in an index name as it is.
fn allowed(c: char) -> bool {
    !(c.is_uppercase()
        || c.is_control()
        || matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        ))
}

/// A value made fit for an index name: lowercased, each forbidden character replaced
/// by `_`.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if allowed(c) { c } else { '_' })
        .collect()
}

/// A rendered name made valid as a whole: no leading `-` `_` `+` `.`, at most
/// [`MAX_PREFIX_BYTES`] (cut at a character boundary); `None` if nothing is left.
fn finish(name: String) -> Option<String> {
    let trimmed = name.trim_start_matches(['-', '_', '+', '.']);
    let mut end = trimmed.len().min(MAX_PREFIX_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let out = &trimmed[..end];
    (!out.is_empty() && super::check_name(out).is_ok()).then(|| out.to_owned())
}

/// A name chosen from outside the configuration (a pod's annotation): sanitised, and
/// accepted only if one of `patterns` covers it.
pub fn accept(name: &str, patterns: &[String], dated: bool) -> Option<String> {
    let name = finish(sanitize(name.trim()))?;
    covered(&name, patterns, dated).then_some(name)
}

/// The pattern of the indices of one prefix (`<prefix>-*`), or a data stream's name.
pub fn pattern(name: &str, dated: bool) -> String {
    if dated {
        format!("{name}-*")
    } else {
        name.to_owned()
    }
}

/// Whether a name's indices (`<name>-<date>`, or the stream `name`) all fall under one
/// of `patterns` (each a literal, or a literal then one trailing `*`).
pub fn covered(name: &str, patterns: &[String], dated: bool) -> bool {
    let index = if dated {
        format!("{name}-")
    } else {
        name.to_owned()
    };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(head) => index.starts_with(head) && (dated || index.len() > head.len()),
        None => !dated && p == &index,
    })
}

/// From `from` on, a file's records go to `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub from: u64,
    pub name: Arc<str>,
}

/// A file's routes, oldest first (`from` ascending); usually one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(Arc<[Route]>);

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        Routes(routes.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Route] {
        &self.0
    }

    pub fn last(&self) -> Option<&Route> {
        self.0.last()
    }

    /// Where the record at `offset` goes: the last route that starts at or before it
    /// (the first route also takes anything before its start).
    pub fn index_at(&self, offset: u64) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .partition_point(|r| r.from <= offset)
                .saturating_sub(1),
        )
    }

    /// This history with `name` from `from` on (replacing a last route that starts
    /// there too); `from` never goes below the last route's start.
    pub fn then(&self, from: u64, name: Arc<str>) -> Routes {
        let mut v = self.0.to_vec();
        let from = v.last().map_or(from, |l| from.max(l.from));
        if v.last().is_some_and(|l| l.from == from) {
            v.pop();
        }
        v.push(Route { from, name });
        Routes(v.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(f: &Field) -> Option<&'static str> {
        match f {
            Field::Namespace => Some("Shop"),
            Field::Pod => Some("web-1"),
            Field::Container => Some("nginx"),
            Field::Label(k) if k == "team" => Some("Pay/ments #1"),
            Field::Label(k) if k == "app.kubernetes.io/name" => Some("cart"),
            Field::NamespaceLabel(k) if k == "tier" => Some("_gold"),
            _ => None,
        }
    }

    fn render(t: &str) -> Option<String> {
        Template::parse(t).unwrap().render(lookup)
    }

    #[test]
    fn templates_render_sanitised_values() {
        assert_eq!(render("logs-{namespace}").as_deref(), Some("logs-shop"));
        assert_eq!(
            render("k-{namespace}-{container}").as_deref(),
            Some("k-shop-nginx")
        );
        assert_eq!(
            render("logs-{labels.team}").as_deref(),
            Some("logs-pay_ments__1")
        );
        assert_eq!(
            render("logs-{labels.app.kubernetes.io/name}").as_deref(),
            Some("logs-cart")
        );
        assert_eq!(
            render("x{namespace_labels.tier}").as_deref(),
            Some("x_gold")
        );
        // A missing value renders nothing: the caller falls back.
        assert_eq!(render("logs-{labels.missing}"), None);
        assert_eq!(
            Template::parse("logs-{namespace}").unwrap().pattern(),
            "logs-*"
        );
        assert_eq!(Template::parse("fixed").unwrap().pattern(), "fixed");
    }

    #[test]
    fn bad_templates_are_errors() {
        for (t, why) in [
            ("logs-{nope}", "unknown value"),
            ("logs-{namespace", "without"),
            ("logs-}", "without"),
            ("Logs-{namespace}", "contains"),
            ("_logs-{namespace}", "must not start"),
            ("{namespace}-logs", "literal text"),
            ("logs-{namespace}-%Y.%m.%d", "index_date_format"),
            ("", "empty"),
            ("logs-{labels.}", "unknown value"),
            (&format!("{}{{pod}}", "a".repeat(101)), "longer than"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn sanitising_follows_elasticsearch_rules() {
        assert_eq!(
            sanitize("A\\b/c*d?e\"f<g>h|i j,k#l:m"),
            "a_b_c_d_e_f_g_h_i_j_k_l_m"
        );
        assert_eq!(sanitize("ÉTÉ"), "été");
        assert_eq!(finish("-_+.x".into()).as_deref(), Some("x"));
        assert_eq!(finish("..".into()), None);
        assert_eq!(finish(String::new()), None);
        let long = "é".repeat(150);
        let cut = finish(long).unwrap();
        assert!(cut.len() <= MAX_PREFIX_BYTES && cut.chars().all(|c| c == 'é'));
        for name in ["shop", "a-b_c+d.e"] {
            assert!(super::super::check_name(&finish(sanitize(name)).unwrap()).is_ok());
        }
    }

    #[test]
    fn a_pods_choice_needs_a_pattern() {
        let patterns = vec!["logstash-*".to_owned(), "logs-*".to_owned()];
        assert_eq!(
            accept("logs-Payments", &patterns, true).as_deref(),
            Some("logs-payments")
        );
        assert_eq!(
            accept("logstash", &patterns, true).as_deref(),
            Some("logstash")
        );
        assert_eq!(accept("secret", &patterns, true), None);
        assert_eq!(accept("logs", &patterns, true).as_deref(), Some("logs"));
        // Data streams: exact names, or a template's prefix with something after it.
        let streams = vec!["logs-k8s-default".to_owned(), "logs-k8s-*".to_owned()];
        assert!(covered("logs-k8s-default", &streams, false));
        assert!(covered("logs-k8s-shop", &streams, false));
        assert!(!covered("logs-k8s-", &streams, false));
        assert!(!covered("logs-other", &streams, false));
    }

    #[test]
    fn history_routes_by_offset() {
        let r = Routes::default().then(0, "a".into());
        assert_eq!(r.index_at(5), Some(0));
        let r = r.then(100, "b".into());
        assert_eq!(r.index_at(99), Some(0));
        assert_eq!(r.index_at(100), Some(1));
        // A change never starts before the last one.
        let r2 = r.then(50, "c".into());
        assert_eq!(r2.as_slice()[1].from, 100);
        assert_eq!(
            r2.as_slice().len(),
            2,
            "replaces the route that starts there"
        );
        assert_eq!(r2.index_at(100).map(|i| &*r2.as_slice()[i].name), Some("c"));
        assert_eq!(Routes::default().index_at(0), None);
    }
}
