//! Selection: which settings apply to a file, decided once per file (and again when its
//! metadata changes), never per line.
//!
//! A file is selected by who it belongs to: namespace, pod and container (globs), pod
//! labels (when the Kubernetes API or a pod list gives them) and its source kind. The
//! `[[rules]]` table is read top to bottom; for each setting, the first matching rule
//! that sets it wins. The pod's annotations come last and override the rules for the
//! record-shaping settings (`shipper.io/multiline`), either one value for every container
//! or a per-container list: `app=java,istio-proxy=off`. Exclusion is the exception: a
//! rule's `exclude = true` is never undone by an annotation (annotations and labels can
//! exclude more, never less; the reader adds theirs).

use crate::config;
use crate::encode::Metadata;
use crate::index::route::{self, Field, Template};
use crate::record::filter::Filter;
use globset::{Glob, GlobMatcher};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Pod annotation: the multiline mode of the pod's containers.
pub const MULTILINE_ANNOTATION: &str = "shipper.io/multiline";
/// Pod annotation: the field parser of the pod's containers.
pub const PARSER_ANNOTATION: &str = "shipper.io/parser";
/// Pod annotation: the index prefix (or data stream) of the pod's containers, taken
/// only when a configured pattern covers it.
pub const INDEX_ANNOTATION: &str = "shipper.io/index";

/// What kind of source a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Container,
    /// A plain-text host file (`[node] files`), selected by `path`.
    Host,
    /// The systemd journal, selected by `unit`.
    Journal,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::Container => "container",
            SourceKind::Host => "host",
            SourceKind::Journal => "journal",
        }
    }
}

/// Where a setting came from (for logs and the dry-run's explanations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The agent's configuration default.
    Default,
    /// A `[[rules]]` entry (its name, or `rules[N]`).
    Rule(String),
    /// A pod annotation.
    Annotation(&'static str),
    /// `elasticsearch.index_route`.
    Template,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Rule(name) => write!(f, "rule {name}"),
            Origin::Annotation(key) => write!(f, "annotation {key}"),
            Origin::Template => f.write_str("elasticsearch.index_route"),
        }
    }
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub value: String,
    pub origin: Origin,
}

/// The settings that apply to one file (`None`: the configuration's default).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub multiline: Option<Chosen>,
    /// The field parser per stream (stdout, stderr).
    pub parser: [Option<Chosen>; 2],
    /// Whether the file is shipped at all (`Some(true)`: excluded by a rule).
    pub exclude: Option<(bool, Origin)>,
    /// The line filter of the first matching rule that has one.
    pub filter: Option<Arc<Filter>>,
    /// `Some(false)`: no redaction (from the named rule).
    pub redact: Option<(bool, Origin)>,
    /// The container's rate limit.
    pub rate_limit: Option<(config::RateLimit, Origin)>,
    /// The index prefix (or data stream) the first rule that sets one names.
    pub index: Option<Chosen>,
}

impl Selection {
    /// One line on what was decided and by whom (`--dry-run --explain`); `excluded_by_pod`:
    /// the pod's annotations or labels, or its namespace's label, exclude the file.
    pub fn explain(&self, excluded_by_pod: bool) -> String {
        let chosen = |c: &Option<Chosen>| match c {
            Some(c) => format!("{} ({})", c.value, c.origin),
            None => "default".to_owned(),
        };
        let shipped = match (&self.exclude, excluded_by_pod) {
            (Some((true, o)), _) => format!("excluded ({o})"),
            (_, true) => "excluded (pod annotation or label, or namespace label)".to_owned(),
            (Some((false, o)), _) => format!("shipped ({o})"),
            (None, false) => "shipped".to_owned(),
        };
        let filter = match &self.filter {
            Some(f) => format!("{} (rule {})", f.describe(), f.rule),
            None => "none".to_owned(),
        };
        let redact = match &self.redact {
            Some((on, o)) => format!("{} ({o})", if *on { "on" } else { "off" }),
            None => "default".to_owned(),
        };
        let limit = match &self.rate_limit {
            Some((l, o)) => format!(
                "records/s {} bytes/s {} burst {}s ({o})",
                l.records_per_sec.map_or("-".into(), |r| r.to_string()),
                l.bytes_per_sec.map_or("-".into(), |r| r.to_string()),
                l.burst_secs
            ),
            None => "none".to_owned(),
        };
        format!(
            "{shipped}; multiline {}; parser stdout {}, stderr {}; filter {filter}; redact {redact}; rate limit {limit}; index {}",
            chosen(&self.multiline),
            chosen(&self.parser[0]),
            chosen(&self.parser[1]),
            chosen(&self.index),
        )
    }
}

impl PartialEq for Selection {
    fn eq(&self, other: &Selection) -> bool {
        self.multiline == other.multiline
            && self.parser == other.parser
            && self.exclude == other.exclude
            && self.filter == other.filter
            && self.redact == other.redact
            && self.rate_limit == other.rate_limit
            && self.index == other.index
    }
}

#[derive(Clone)]
struct Compiled {
    name: String,
    namespace: Option<GlobMatcher>,
    pod: Option<GlobMatcher>,
    container: Option<GlobMatcher>,
    path: Option<GlobMatcher>,
    unit: Option<GlobMatcher>,
    labels: Vec<(String, GlobMatcher)>,
    namespace_labels: Vec<(String, GlobMatcher)>,
    source: Option<String>,
    multiline: Option<String>,
    parser: Option<config::ParserSetting>,
    exclude: Option<bool>,
    filter: Option<Arc<Filter>>,
    redact: Option<bool>,
    rate_limit: Option<config::RateLimit>,
    index: Option<String>,
}

/// The compiled `[[rules]]` table.
#[derive(Default, Clone)]
pub struct Rules {
    rules: Vec<Compiled>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn glob(g: &Option<String>) -> Option<GlobMatcher> {
    // The configuration was validated: every glob compiles.
    g.as_deref()
        .and_then(|g| Glob::new(g).ok())
        .map(|g| g.compile_matcher())
}

fn globs(labels: &BTreeMap<String, String>) -> Vec<(String, GlobMatcher)> {
    labels
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), glob(&Some(v.clone()))?)))
        .collect()
}

impl Rules {
    pub fn from_config(rules: &[config::Rule]) -> Rules {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = r.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
                // The configuration was validated: every expression compiles.
                let filter = match (&r.drop, &r.keep) {
                    (Some(re), _) => Filter::new(&name, false, re).ok(),
                    (None, Some(re)) => Filter::new(&name, true, re).ok(),
                    (None, None) => None,
                }
                .map(|f| f.on_field(r.field.clone()));
                Compiled {
                    name,
                    namespace: glob(&r.namespace),
                    pod: glob(&r.pod),
                    container: glob(&r.container),
                    path: glob(&r.path),
                    unit: glob(&r.unit),
                    labels: globs(&r.labels),
                    namespace_labels: globs(&r.namespace_labels),
                    source: r.source.clone(),
                    multiline: r.multiline.clone(),
                    parser: r.parser.clone(),
                    exclude: r.exclude,
                    filter: filter.map(Arc::new),
                    redact: r.redact,
                    rate_limit: r.rate_limit.clone(),
                    index: r.index.clone(),
                }
            })
            .collect();
        Rules { rules }
    }

    /// The settings for a file of `kind` whose metadata is `meta`.
    pub fn select(&self, meta: &Metadata, kind: SourceKind) -> Selection {
        let mut sel = Selection::default();
        for r in self.rules.iter().filter(|r| r.matches(meta, kind)) {
            let chosen = |v: &str| Chosen {
                value: v.to_owned(),
                origin: Origin::Rule(r.name.clone()),
            };
            if sel.multiline.is_none() {
                sel.multiline = r.multiline.as_deref().map(chosen);
            }
            let origin = || Origin::Rule(r.name.clone());
            if sel.exclude.is_none() {
                sel.exclude = r.exclude.map(|e| (e, origin()));
            }
            if sel.filter.is_none() {
                sel.filter.clone_from(&r.filter);
            }
            if sel.redact.is_none() {
                sel.redact = r.redact.map(|e| (e, origin()));
            }
            if sel.rate_limit.is_none() {
                sel.rate_limit = r.rate_limit.clone().map(|l| (l, origin()));
            }
            if sel.index.is_none() {
                sel.index = r.index.as_deref().map(chosen);
            }
            if let Some(p) = &r.parser {
                for (slot, name) in sel.parser.iter_mut().zip(p.names()) {
                    if slot.is_none() {
                        *slot = name.map(chosen);
                    }
                }
            }
        }
        if let Some(v) = annotation(
            &meta.annotations,
            PARSER_ANNOTATION,
            meta.container.as_deref(),
        ) {
            let chosen = Chosen {
                value: v,
                origin: Origin::Annotation(PARSER_ANNOTATION),
            };
            sel.parser = [Some(chosen.clone()), Some(chosen)];
        }
        if let Some(v) = annotation(
            &meta.annotations,
            MULTILINE_ANNOTATION,
            meta.container.as_deref(),
        ) {
            sel.multiline = Some(Chosen {
                value: v,
                origin: Origin::Annotation(MULTILINE_ANNOTATION),
            });
        }
        sel
    }
}

/// How a file's route (index prefix or data stream) is chosen: the pod's annotation
/// when a pattern covers it, else the first rule that names one, else the route
/// template over the file's metadata, else the default.
#[derive(Debug, Clone)]
pub struct Routing {
    pub default: Arc<str>,
    /// The prefix of host-file and journal documents (`[node] index_prefix`).
    pub node: Arc<str>,
    pub template: Option<Template>,
    /// What the index template covers (see [`config::Config::index_patterns`]).
    pub patterns: Vec<String>,
    /// Dated indices (`<prefix>-<date>`), else data streams.
    pub dated: bool,
}

impl Routing {
    pub fn from_config(cfg: &config::Config) -> Routing {
        let es = &cfg.elasticsearch;
        Routing {
            default: es.index_prefix.as_str().into(),
            node: cfg.node.index_prefix.as_str().into(),
            // The configuration was validated: the template parses.
            template: es
                .index_route
                .as_deref()
                .and_then(|t| Template::parse(t).ok()),
            patterns: cfg.index_patterns(),
            dated: !es.data_stream,
        }
    }

    /// The route of a file with metadata `meta`, given what its rules chose
    /// ([`Selection::index`]), and where it came from.
    pub fn choose(&self, meta: &Metadata, rule: Option<&Chosen>) -> (Arc<str>, Origin) {
        if let Some(v) = annotation(
            &meta.annotations,
            INDEX_ANNOTATION,
            meta.container.as_deref(),
        ) {
            match route::accept(&v, &self.patterns, self.dated) {
                Some(name) => return (name.into(), Origin::Annotation(INDEX_ANNOTATION)),
                None => {
                    crate::log_every!(crate::logging::EVERY, warn, index = %v, pod = ?meta.pod, patterns = ?self.patterns, "the pod's shipper.io/index is not covered by the configured index patterns; ignored")
                }
            }
        }
        if let Some(c) = rule {
            return (c.value.as_str().into(), c.origin.clone());
        }
        if meta.path.is_some() || meta.unit.is_some() {
            // The node's own logs: the route template names pods, not these.
            return (self.node.clone(), Origin::Default);
        }
        let rendered = self.template.as_ref().and_then(|t| {
            t.render(|f| match f {
                Field::Namespace => meta.namespace.as_deref(),
                Field::Pod => meta.pod.as_deref(),
                Field::Container => meta.container.as_deref(),
                Field::Label(k) => meta.labels.get(k).map(String::as_str),
                Field::NamespaceLabel(k) => meta.namespace_labels.get(k).map(String::as_str),
            })
        });
        match rendered {
            Some(name) => (name.into(), Origin::Template),
            None => (self.default.clone(), Origin::Default),
        }
    }
}

impl Compiled {
    fn matches(&self, meta: &Metadata, kind: SourceKind) -> bool {
        let field = |g: &Option<GlobMatcher>, v: &Option<String>| match g {
            None => true,
            Some(g) => v.as_deref().is_some_and(|v| g.is_match(v)),
        };
        self.source.as_deref().unwrap_or("container") == kind.name()
            && field(&self.namespace, &meta.namespace)
            && field(&self.pod, &meta.pod)
            && field(&self.container, &meta.container)
            && field(&self.path, &meta.path)
            && field(&self.unit, &meta.unit)
            && has(&self.labels, &meta.labels)
            && has(&self.namespace_labels, &meta.namespace_labels)
    }
}

/// Whether `labels` has every key of `want`, with a value its glob matches.
fn has(want: &[(String, GlobMatcher)], labels: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, g)| labels.get(k).is_some_and(|v| g.is_match(v)))
}

/// The value of a per-pod annotation for `container`: the whole value, or the entry for
/// the container in a `name=value,name=value` list (`None` when it has none).
pub fn annotation(
    annotations: &BTreeMap<String, String>,
    key: &str,
    container: Option<&str>,
) -> Option<String> {
    let v = annotations.get(key)?.trim();
    if !v.contains('=') {
        return (!v.is_empty()).then(|| v.to_owned());
    }
    let container = container?;
    v.split(',').find_map(|entry| {
        let (name, value) = entry.split_once('=')?;
        (name.trim() == container).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, pod: &str, container: &str, labels: &[(&str, &str)]) -> Metadata {
        Metadata {
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            container: Some(container.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Metadata::default()
        }
    }

    fn rule(f: impl FnOnce(&mut config::Rule)) -> config::Rule {
        let mut r = config::Rule::default();
        f(&mut r);
        r
    }

    #[test]
    fn host_files_and_journal_units_are_selected_by_kind_path_and_unit() {
        let rules = Rules::from_config(&[
            rule(|r| {
                r.source = Some("host".into());
                r.path = Some("/var/log/kube-proxy*".into());
                r.exclude = Some(true);
            }),
            rule(|r| {
                r.source = Some("journal".into());
                r.unit = Some("sshd.*".into());
                r.index = Some("audit".into());
            }),
            rule(|r| r.exclude = Some(true)),
        ]);
        let host = |path: &str| Metadata {
            path: Some(path.into()),
            ..Metadata::default()
        };
        let unit = |u: &str| Metadata {
            unit: Some(u.into()),
            ..Metadata::default()
        };
        let excluded = |m: &Metadata, k| rules.select(m, k).exclude.map(|e| e.0);
        assert_eq!(
            excluded(&host("/var/log/kube-proxy.log"), SourceKind::Host),
            Some(true)
        );
        assert_eq!(
            excluded(&host("/var/log/kubelet.log"), SourceKind::Host),
            None
        );
        assert_eq!(
            excluded(&unit("kubelet.service"), SourceKind::Journal),
            None,
            "a rule without source is a container rule"
        );
        assert_eq!(
            excluded(&meta("a", "b", "c", &[]), SourceKind::Container),
            Some(true)
        );
        let sel = rules.select(&unit("sshd.service"), SourceKind::Journal);
        assert_eq!(sel.index.map(|c| c.value).as_deref(), Some("audit"));
        assert!(rules
            .select(&unit("sshd.service"), SourceKind::Host)
            .index
            .is_none());
        // The node's prefix, unless a rule says otherwise; never the pod template.
        let mut cfg = config::Config::default();
        cfg.elasticsearch.index_route = Some("logs-{namespace}".into());
        let routing = Routing::from_config(&cfg);
        assert_eq!(&*routing.choose(&host("/var/log/x.log"), None).0, "node");
        assert_eq!(&*routing.choose(&unit("kernel"), None).0, "node");
    }

    #[test]
    fn the_first_matching_rule_that_sets_a_setting_wins() {
        let rules = Rules::from_config(&[
            rule(|r| {
                r.name = Some("shop-web".into());
                r.namespace = Some("shop*".into());
                r.container = Some("web".into());
                r.multiline = Some("java".into());
            }),
            rule(|r| {
                r.labels.insert("team".into(), "pay*".into());
                r.multiline = Some("python".into());
            }),
            rule(|r| {
                r.namespace = Some("shop".into());
            }),
            rule(|r| {
                r.multiline = Some("off".into());
            }),
        ]);
        let pick = |m: &Metadata| rules.select(m, SourceKind::Container).multiline;
        assert_eq!(
            pick(&meta("shop-eu", "web-1", "web", &[])),
            Some(Chosen {
                value: "java".into(),
                origin: Origin::Rule("shop-web".into())
            })
        );
        assert_eq!(
            pick(&meta("x", "p", "c", &[("team", "payments")])).map(|c| c.value),
            Some("python".into())
        );
        assert_eq!(
            pick(&meta("shop", "p", "c", &[])),
            Some(Chosen {
                value: "off".into(),
                origin: Origin::Rule("rules[3]".into())
            }),
            "a rule that sets nothing does not stop the search"
        );
        let mut unlabelled = meta("x", "p", "c", &[]);
        unlabelled.labels.clear();
        assert_eq!(pick(&unlabelled).map(|c| c.value), Some("off".into()));
    }

    #[test]
    fn exclusion_filters_and_redaction_follow_the_first_rule_that_sets_them() {
        let rules = Rules::from_config(&[
            rule(|r| {
                r.name = Some("keep-shop".into());
                r.namespace = Some("shop".into());
                r.exclude = Some(false);
            }),
            rule(|r| {
                r.name = Some("probes".into());
                r.container = Some("nginx".into());
                r.drop = Some("kube-probe".into());
                r.redact = Some(false);
            }),
            rule(|r| {
                r.name = Some("only-shop".into());
                r.exclude = Some(true);
                r.keep = Some("ERROR".into());
            }),
        ]);
        let shop = rules.select(&meta("shop", "web-1", "nginx", &[]), SourceKind::Container);
        assert_eq!(
            shop.exclude,
            Some((false, Origin::Rule("keep-shop".into())))
        );
        assert_eq!(shop.filter.as_ref().map(|f| &*f.rule), Some("probes"));
        assert_eq!(shop.redact, Some((false, Origin::Rule("probes".into()))));
        let mut other_meta = meta("dev", "x", "app", &[]);
        let other = rules.select(&other_meta, SourceKind::Container);
        assert_eq!(
            other.exclude,
            Some((true, Origin::Rule("only-shop".into())))
        );
        assert_eq!(other.filter.as_ref().map(|f| &*f.rule), Some("only-shop"));
        assert_eq!(other.redact, None);

        // Namespace labels select too (from the API).
        let by_ns = Rules::from_config(&[rule(|r| {
            r.namespace_labels.insert("team".into(), "pay*".into());
            r.exclude = Some(true);
        })]);
        let pick = |m: &Metadata| by_ns.select(m, SourceKind::Container).exclude.map(|e| e.0);
        assert_eq!(pick(&other_meta), None);
        other_meta
            .namespace_labels
            .insert("team".into(), "payments".into());
        assert_eq!(pick(&other_meta), Some(true));
    }

    #[test]
    fn annotations_override_rules_per_container() {
        let rules = Rules::from_config(&[rule(|r| r.multiline = Some("java".into()))]);
        let mut m = meta("ns", "p", "app", &[]);
        m.annotations.insert(
            MULTILINE_ANNOTATION.into(),
            "app=python, istio-proxy=off".into(),
        );
        let pick = |m: &Metadata| rules.select(m, SourceKind::Container).multiline;
        assert_eq!(
            pick(&m),
            Some(Chosen {
                value: "python".into(),
                origin: Origin::Annotation(MULTILINE_ANNOTATION)
            })
        );
        m.container = Some("istio-proxy".into());
        assert_eq!(pick(&m).map(|c| c.value), Some("off".into()));
        m.container = Some("other".into());
        assert_eq!(
            pick(&m).map(|c| c.value),
            Some("java".into()),
            "not listed: the rule"
        );
        m.annotations
            .insert(MULTILINE_ANNOTATION.into(), " go ".into());
        assert_eq!(
            pick(&m).map(|c| c.value),
            Some("go".into()),
            "one value for all"
        );
    }

    #[test]
    fn routes_come_from_the_annotation_a_rule_the_template_or_the_default() {
        let mut cfg = config::Config::default();
        cfg.elasticsearch.index_prefix = "logstash".into();
        cfg.elasticsearch.index_route = Some("logs-{namespace}-{labels.team}".into());
        cfg.rules = vec![rule(|r| {
            r.name = Some("audit".into());
            r.namespace = Some("audit".into());
            r.index = Some("audit".into());
        })];
        cfg.validate().unwrap();
        assert_eq!(
            cfg.index_patterns(),
            ["audit-*", "logs-*", "logstash-*", "node-*"]
        );
        let routing = Routing::from_config(&cfg);
        let rules = Rules::from_config(&cfg.rules);
        let route = |m: &Metadata| {
            let sel = rules.select(m, SourceKind::Container);
            let (name, origin) = routing.choose(m, sel.index.as_ref());
            (name.to_string(), origin)
        };
        let shop = meta("Shop", "web-1", "nginx", &[("team", "Web Store")]);
        assert_eq!(
            route(&shop),
            ("logs-shop-web_store".into(), Origin::Template)
        );
        // A missing value: the default prefix.
        let bare = meta("shop", "web-1", "nginx", &[]);
        assert_eq!(route(&bare), ("logstash".into(), Origin::Default));
        let audit = meta("audit", "a-1", "app", &[("team", "sec")]);
        assert_eq!(
            route(&audit),
            ("audit".into(), Origin::Rule("audit".into()))
        );
        // The pod's annotation wins when a pattern covers it, per container too...
        let mut annotated = shop.clone();
        annotated
            .annotations
            .insert(INDEX_ANNOTATION.into(), "nginx=logs-Edge,other=x".into());
        assert_eq!(
            route(&annotated),
            ("logs-edge".into(), Origin::Annotation(INDEX_ANNOTATION))
        );
        // ...and is ignored when none does: a pod cannot write into any index it likes.
        let mut rogue = audit.clone();
        rogue
            .annotations
            .insert(INDEX_ANNOTATION.into(), ".kibana".into());
        assert_eq!(
            route(&rogue),
            ("audit".into(), Origin::Rule("audit".into()))
        );
        rogue
            .annotations
            .insert(INDEX_ANNOTATION.into(), "secrets".into());
        assert_eq!(route(&rogue).0, "audit");
    }

    #[test]
    fn data_streams_are_routed_by_name() {
        let mut cfg = config::Config::default();
        cfg.elasticsearch.data_stream = true;
        cfg.elasticsearch.index_prefix = "logs-k8s-default".into();
        cfg.elasticsearch.index_route = Some("logs-k8s-{namespace}".into());
        cfg.validate().unwrap();
        assert_eq!(
            cfg.index_patterns(),
            ["logs-k8s-*", "logs-k8s-default", "node"]
        );
        let routing = Routing::from_config(&cfg);
        let m = meta("shop", "web-1", "nginx", &[]);
        assert_eq!(&*routing.choose(&m, None).0, "logs-k8s-shop");
        let mut a = m.clone();
        a.annotations
            .insert(INDEX_ANNOTATION.into(), "logs-k8s-edge".into());
        assert_eq!(&*routing.choose(&a, None).0, "logs-k8s-edge");
        a.annotations
            .insert(INDEX_ANNOTATION.into(), "logs-k8s-".into());
        assert_eq!(&*routing.choose(&a, None).0, "logs-k8s-shop");
        // Each document's action names the stream, with no date.
        let enc = crate::encode::Encoder::for_target(&cfg.elasticsearch.target());
        let routes = crate::index::route::Routes::default().then(0, "logs-k8s-shop".into());
        let mut ctx = enc.file_context(crate::ids::FileId::compute("docker:x", b"l"), &m);
        ctx.heads = enc.heads(&routes);
        let doc = crate::encode::Doc {
            offset: 0,
            time: crate::timestamp::Timestamp::parse(b"2024-07-08T03:42:57Z").unwrap(),
            stream: None,
            text: &crate::encode::Text::Raw(b"hi"),
            truncated: false,
            parse_error: None,
            fields: None,
        };
        let mut out = Vec::new();
        enc.encode(&mut out, &ctx, &doc);
        let action: serde_json::Value =
            serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(action["create"]["_index"], "logs-k8s-shop");
    }
}
