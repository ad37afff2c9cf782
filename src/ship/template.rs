//! The index template: mappings that keep the documents' fields queryable and free of
//! mapping conflicts, in the form the server supports.
//!
//! `@timestamp` is `date_nanos` (or `date`), `log` is text, `stream`, `docker.*` and every
//! `kubernetes.*` string is a keyword, and label/annotation values are keywords whatever
//! their key (keys are de-dotted by default, so `app` and `app.kubernetes.io/name` do not
//! collide as keyword and object).
//!
//! Parsed fields (`fields.*`, or the root) are mapped so that the common conflicts do not
//! happen: strings are keywords and are never guessed to be dates (`date_detection` off),
//! a value of the wrong type for a numeric or date field is dropped from the document
//! instead of refusing it (`index.mapping.ignore_malformed`), and the total fields limit
//! is raised. What is left (an object where a value was mapped) is cured by sending the
//! document again without its fields (see [`super::conflict`]).

use super::client::Version;
use crate::index::Target;
use serde_json::json;

/// What the template sets beyond the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Map `@timestamp` as `date_nanos` (else `date`).
    pub nanos: bool,
    /// Elasticsearch index lifecycle policy for the indices (`index.lifecycle.name`):
    /// rollover and deletion of a data stream's backing indices. Ignored on OpenSearch,
    /// whose ISM policies attach themselves by index pattern.
    pub ilm_policy: Option<String>,
    /// `index.number_of_shards` and `index.number_of_replicas` (`None`: the server's).
    pub shards: Option<u32>,
    pub replicas: Option<u32>,
    /// Where parsed fields go (`None`: at the root).
    pub fields_key: Option<String>,
    /// Every index pattern the routes produce (see
    /// [`crate::config::Config::index_patterns`]); empty: the target's own. One template
    /// lists them all, so two templates of ours never overlap at one priority (which
    /// Elasticsearch refuses).
    pub patterns: Vec<String>,
}

/// Fields per index at most (Elasticsearch's default is 1000: a few apps' JSON fields in
/// one daily index reach it).
pub const TOTAL_FIELDS_LIMIT: u32 = 5000;

/// The template's `version`: raised whenever what [`request`] installs changes, so an
/// agent finds a template older than its own (installed by an older agent) and replaces
/// it, and never replaces a newer agent's during a rolling update.
pub const VERSION: u64 = 3;

/// What the server holds under the template's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Missing,
    Present {
        version: Option<u64>,
        patterns: Vec<String>,
    },
}

/// Why the installed template must be installed again, if it must: it is missing (an
/// operator deleted it, a snapshot restore replaced the templates), older than this
/// agent's, or of this version but without every pattern the routes need.
pub fn outdated(installed: &Installed, target: &Target, opts: &Options) -> Option<&'static str> {
    match installed {
        Installed::Missing => Some("missing"),
        Installed::Present { version, .. } if version.unwrap_or(0) < VERSION => {
            Some("older than this agent's")
        }
        Installed::Present {
            version: Some(VERSION),
            patterns,
        } if !patterns_of(target, opts)
            .iter()
            .all(|p| patterns.contains(p)) =>
        {
            Some("without every index pattern the routes need")
        }
        Installed::Present { .. } => None,
    }
}

/// Reads a `GET` of the template's path: `{"index_templates":[{"index_template":{..}}]}`
/// (composable) or `{"<name>":{..}}` (legacy). `None` when it is neither.
pub fn parse_installed(body: &[u8]) -> Option<Installed> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let t = match v.get("index_templates") {
        Some(list) => list.get(0)?.get("index_template")?,
        None => v.as_object()?.values().next()?,
    };
    let patterns = match t.get("index_patterns")? {
        serde_json::Value::String(p) => vec![p.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        _ => return None,
    };
    Some(Installed::Present {
        version: t.get("version").and_then(serde_json::Value::as_u64),
        patterns,
    })
}

/// The index patterns the template lists.
fn patterns_of(target: &Target, opts: &Options) -> Vec<String> {
    if !opts.patterns.is_empty() {
        return opts.patterns.clone();
    }
    match target {
        Target::Dated { prefix, .. } => vec![format!("{prefix}-*")],
        Target::Fixed(name) => vec![name.clone()],
    }
}

/// The path of the template (for `PUT` and `GET`).
pub fn path(v: &Version, target: &Target) -> String {
    let name = match target {
        Target::Dated { prefix, .. } => format!("shipper-{prefix}"),
        Target::Fixed(name) => format!("shipper-{name}"),
    };
    if matches!(target, Target::Fixed(_)) || v.composable_templates() {
        format!("/_index_template/{name}")
    } else {
        format!("/_template/{name}")
    }
}

/// `(path, body)` of the request that installs the template for `<prefix>-*` (dated
/// indices) or for the data stream.
pub fn request(v: &Version, target: &Target, opts: &Options) -> (String, Vec<u8>) {
    let nanos = opts.nanos;
    let mut settings = json!({
        "index.mapping.ignore_malformed": true,
        "index.mapping.total_fields.limit": TOTAL_FIELDS_LIMIT,
    });
    if !v.opensearch && (v.major, v.minor) >= (8, 6) {
        // New fields past the limit are left unindexed instead of refusing the document.
        settings["index.mapping.total_fields.ignore_dynamic_beyond_limit"] = json!(true);
    }
    if let (Some(policy), false) = (&opts.ilm_policy, v.opensearch) {
        settings["index.lifecycle.name"] = json!(policy);
    }
    if let Some(n) = opts.shards {
        settings["index.number_of_shards"] = json!(n);
    }
    if let Some(n) = opts.replicas {
        settings["index.number_of_replicas"] = json!(n);
    }
    let parsed_strings = match &opts.fields_key {
        Some(key) => {
            json!({"parsed_fields": {"path_match": format!("{key}.*"), "match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}})
        }
        None => {
            json!({"parsed_fields": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}})
        }
    };
    let mappings = json!({
        "date_detection": false,
        "dynamic_templates": [
            {"kubernetes_labels": {"path_match": "kubernetes.labels.*", "mapping": {"type": "keyword"}}},
            {"kubernetes_namespace_labels": {"path_match": "kubernetes.namespace_labels.*", "mapping": {"type": "keyword"}}},
            {"kubernetes_annotations": {"path_match": "kubernetes.annotations.*", "mapping": {"type": "keyword"}}},
            {"kubernetes_strings": {"path_match": "kubernetes.*", "match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            parsed_strings
        ],
        "properties": {
            "@timestamp": {"type": if nanos { "date_nanos" } else { "date" }},
            "log": {"type": "text"},
            "stream": {"type": "keyword"},
            "level": {"type": "keyword"},
            "docker": {"properties": {"container_id": {"type": "keyword"}}},
            // The node's own logs: a host file's path, a journal entry's fields.
            "path": {"type": "keyword", "ignore_above": 1024},
            "priority": {"type": "byte"},
            "systemd": {"properties": {
                "unit": {"type": "keyword"},
                "transport": {"type": "keyword"},
                "comm": {"type": "keyword"},
                "boot_id": {"type": "keyword"},
                "pid": {"type": "long"}
            }},
            "syslog": {"properties": {
                "identifier": {"type": "keyword"},
                "facility": {"type": "byte"}
            }},
            "shipper": {"properties": {
                "metadata": {"type": "keyword"},
                "truncated": {"type": "boolean"},
                "parse_error": {"type": "keyword"},
                "fields": {"type": "keyword"},
                "fields_rejected": {"type": "keyword", "ignore_above": 1024}
            }}
        }
    });
    let pattern = patterns_of(target, opts);
    let body = if let Target::Fixed(_) = target {
        // A data stream exists only through a composable template that says so; the
        // server creates it on the first `create` into its name.
        json!({"index_patterns": pattern, "data_stream": {}, "priority": 200, "version": VERSION, "template": {"settings": settings, "mappings": mappings}})
    } else if v.composable_templates() {
        json!({"index_patterns": pattern, "priority": 200, "version": VERSION, "template": {"settings": settings, "mappings": mappings}})
    } else {
        // Elasticsearch 7.0-7.7: the legacy API, typeless mappings (no `_type`, ever).
        json!({"index_patterns": pattern, "order": 100, "version": VERSION, "settings": settings, "mappings": mappings})
    };
    (path(v, target), body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(nanos: bool) -> Options {
        Options {
            nanos,
            ilm_policy: None,
            shards: None,
            replicas: None,
            fields_key: Some("fields".into()),
            patterns: Vec::new(),
        }
    }

    /// What a GET answers is read in both forms; a template is installed again when
    /// missing, older, or short of a pattern; a newer agent's is left alone.
    #[test]
    fn a_missing_or_outdated_template_is_found() {
        let composable = br#"{"index_templates":[{"name":"shipper-logs","index_template":{"index_patterns":["logs-*"],"version":2,"priority":200}}]}"#;
        let legacy = br#"{"shipper-logs":{"order":100,"index_patterns":["logs-*","audit-*"],"settings":{}}}"#;
        assert_eq!(
            parse_installed(composable),
            Some(Installed::Present {
                version: Some(2),
                patterns: vec!["logs-*".into()]
            })
        );
        assert_eq!(
            parse_installed(legacy),
            Some(Installed::Present {
                version: None,
                patterns: vec!["logs-*".into(), "audit-*".into()]
            })
        );
        assert_eq!(parse_installed(b"not json"), None);
        assert_eq!(parse_installed(br#"{"index_templates":[]}"#), None);
        let t = Target::daily("logs");
        let opts = nanos(true);
        let present = |version, patterns: &[&str]| Installed::Present {
            version,
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(outdated(&Installed::Missing, &t, &opts), Some("missing"));
        assert!(outdated(&present(None, &["logs-*"]), &t, &opts).is_some());
        assert!(outdated(&present(Some(VERSION - 1), &["logs-*"]), &t, &opts).is_some());
        assert_eq!(
            outdated(&present(Some(VERSION), &["logs-*"]), &t, &opts),
            None
        );
        let routed = Options {
            patterns: vec!["logs-*".into(), "logs-shop-*".into()],
            ..nanos(true)
        };
        assert!(outdated(&present(Some(VERSION), &["logs-*"]), &t, &routed).is_some());
        assert_eq!(
            outdated(&present(Some(VERSION + 1), &["x-*"]), &t, &routed),
            None
        );
    }

    #[test]
    fn legacy_and_composable() {
        let v7 = Version {
            opensearch: false,
            major: 7,
            minor: 2,
        };
        let (path, body) = request(&v7, &Target::daily("logstash"), &nanos(true));
        assert_eq!(path, "/_template/shipper-logstash");
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["index_patterns"][0], "logstash-*");
        assert_eq!(
            b["mappings"]["properties"]["@timestamp"]["type"],
            "date_nanos"
        );
        let v8 = Version {
            opensearch: false,
            major: 8,
            minor: 15,
        };
        let (path, body) = request(&v8, &Target::daily("k8s"), &nanos(false));
        assert_eq!(path, "/_index_template/shipper-k8s");
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            b["template"]["mappings"]["properties"]["@timestamp"]["type"],
            "date"
        );
        assert!(
            !String::from_utf8(body.clone())
                .unwrap()
                .contains("\"_type\""),
            "never a mapping type"
        );
        let t = &b["template"];
        assert_eq!(t["settings"]["index.mapping.ignore_malformed"], true);
        assert_eq!(
            t["settings"]["index.mapping.total_fields.limit"],
            TOTAL_FIELDS_LIMIT
        );
        assert_eq!(
            t["settings"]["index.mapping.total_fields.ignore_dynamic_beyond_limit"],
            true
        );
        assert_eq!(t["mappings"]["date_detection"], false);
        assert_eq!(
            t["mappings"]["dynamic_templates"][4]["parsed_fields"]["path_match"],
            "fields.*"
        );
        // Before 8.6 (and on OpenSearch) the setting does not exist: never sent.
        let (_, body) = request(&v7, &Target::daily("k8s"), &nanos(false));
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(b["settings"]
            .get("index.mapping.total_fields.ignore_dynamic_beyond_limit")
            .is_none());
    }

    #[test]
    fn one_template_lists_every_routed_pattern() {
        let v8 = Version {
            opensearch: false,
            major: 8,
            minor: 15,
        };
        let opts = Options {
            patterns: vec!["logs-*".into(), "logstash-*".into(), "shop-*".into()],
            ..nanos(true)
        };
        let (path, body) = request(&v8, &Target::daily("logstash"), &opts);
        assert_eq!(path, "/_index_template/shipper-logstash");
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            b["index_patterns"],
            serde_json::json!(["logs-*", "logstash-*", "shop-*"])
        );
    }

    #[test]
    fn data_stream_template() {
        let v = Version {
            opensearch: false,
            major: 8,
            minor: 15,
        };
        let opts = Options {
            nanos: true,
            ilm_policy: Some("logs-30d".into()),
            shards: Some(3),
            replicas: Some(1),
            fields_key: None,
            patterns: Vec::new(),
        };
        let (path, body) = request(&v, &Target::Fixed("logs-k8s-default".into()), &opts);
        assert_eq!(path, "/_index_template/shipper-logs-k8s-default");
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["index_patterns"], serde_json::json!(["logs-k8s-default"]));
        assert_eq!(b["data_stream"], serde_json::json!({}));
        assert_eq!(
            b["template"]["settings"]["index.lifecycle.name"], "logs-30d",
            "the data stream rolls over and ages out by its policy"
        );
        let settings = &b["template"]["settings"];
        assert_eq!(
            (
                &settings["index.number_of_shards"],
                &settings["index.number_of_replicas"]
            ),
            (&serde_json::json!(3), &serde_json::json!(1)),
            "the sizing's shards and replicas"
        );
        let (_, body) = request(&v, &Target::Fixed("x".into()), &nanos(true));
        // `request` renders a `serde_json::Value`: its bytes are JSON.
        let b: serde_json::Value = serde_json::from_slice(&body).expect("the body is JSON");
        assert!(
            b["template"]["settings"]
                .get("index.number_of_shards")
                .is_none(),
            "unset: the server's default"
        );
        let os = Version {
            opensearch: true,
            major: 2,
            minor: 19,
        };
        let (_, body) = request(&os, &Target::Fixed("logs-k8s-default".into()), &opts);
        let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            b["template"]["settings"]
                .get("index.lifecycle.name")
                .is_none(),
            "no ILM on OpenSearch"
        );
        assert_eq!(
            b["template"]["mappings"]["properties"]["@timestamp"]["type"],
            "date_nanos"
        );
    }
}
