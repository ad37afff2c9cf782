//! Configuration: one TOML file, then `SHIPPER_SECTION_KEY` environment variables, then
//! flags, merged into one validated [`Config`].
//!
//! The three layers are merged as TOML tables before anything is typed, so every key has
//! exactly one definition (the structs below) and one error path: an unknown key or a bad
//! value names its `section.key` and where it came from. Environment values are parsed as
//! the type of the key's default (a string stays a string even if it looks like a number).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where Docker's json-file logs live (dockerd's default data root).
pub const DEFAULT_DOCKER_ROOT: &str = "/var/lib/docker/containers";
/// Where the kubelet links CRI container logs (all runtimes since Kubernetes 1.24).
pub const DEFAULT_PODS_ROOT: &str = "/var/log/pods";
/// Checkpoints (and later the buffer) live here; a hostPath so they survive Pod restarts.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/shipper";
/// Largest message per record: 4 MiB holds any stack trace or JSON dump a sane app
/// writes, and stays well under Elasticsearch's 100 MB `http.max_content_length`.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 4 << 20;
/// One read: large enough that syscalls are noise, small enough to stay in L2 cache.
pub const DEFAULT_READ_BYTES: u64 = 256 << 10;
/// Bytes one file may read per round before the next file's turn (fairness).
pub const DEFAULT_TURN_BUDGET_BYTES: u64 = 1 << 20;
/// A full rescan this often even without inotify events (inotify drops events).
pub const DEFAULT_RESCAN_INTERVAL_MS: u64 = 2_000;
/// How long a rotated file stays open at its end: containerd keeps writing to the old
/// file until the kubelet's reopen request reaches it.
pub const DEFAULT_DRAIN_GRACE_MS: u64 = 5_000;
/// Fluentd's default index prefix, so existing Kibana index patterns keep working.
pub const DEFAULT_INDEX_PREFIX: &str = "logstash";
/// Metadata from the Kubernetes API whenever an API configuration can be found.
pub const DEFAULT_KUBERNETES_ENABLED: bool = true;
/// Label keys are de-dotted: `app` and `app.kubernetes.io/name` would otherwise be an
/// object and a keyword at the same path in the mapping, and one of them is rejected.
pub const DEFAULT_DEDOT_LABELS: bool = true;
/// Annotations are often large (and sometimes carry whole manifests) and are rarely
/// searched: opt-in.
pub const DEFAULT_ANNOTATIONS: bool = false;
/// How long a deleted pod's metadata is kept: the last lines of a pod can still be read
/// (and a backlog drained) minutes after it is gone. Five minutes outlasts the kubelet's
/// log rotation check and a typical backlog; peers keep 60 s.
pub const DEFAULT_DELETED_GRACE_MS: u64 = 300_000;
/// How long a new file whose pod is not in the cache yet waits for the watch to catch
/// up before it is read with path metadata. Watch events usually arrive within a few
/// hundred milliseconds of a pod starting; two seconds covers a slow API server without
/// noticeably delaying logs.
pub const DEFAULT_PENDING_WAIT_MS: u64 = 2_000;
/// Snapshot the metadata cache at most this often: a restart loses at most this much
/// of the API's history, and a busy node does not fsync on every pod update.
pub const DEFAULT_SNAPSHOT_INTERVAL_MS: u64 = 10_000;
/// The downward API's conventional variable for the node name; accepted as an alias of
/// `SHIPPER_KUBERNETES_NODE_NAME` (which wins when both are set).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// Environment variables with this prefix are configuration.
pub const ENV_PREFIX: &str = "SHIPPER_";
/// Environment variables with the prefix that are not `section.key` settings.
pub const ENV_RESERVED: &[&str] = &["SHIPPER_CONFIG", "SHIPPER_LOG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub input: Input,
    pub agent: Agent,
    pub elasticsearch: Elasticsearch,
    pub kubernetes: Kubernetes,
}

/// `[input]`: where logs are and how they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Input {
    /// Docker json-file root: `<root>/<id>/<id>-json.log`.
    pub docker_root: PathBuf,
    /// CRI pod log root: `<root>/<ns>_<pod>_<uid>/<container>/<n>.log`.
    pub pods_root: PathBuf,
    /// Largest message per record; longer ones are cut and flagged `shipper.truncated`.
    pub max_record_bytes: u64,
    /// Size of one read.
    pub read_bytes: u64,
    /// Bytes one file may read before the next file's turn.
    pub turn_budget_bytes: u64,
    /// Full rescan period, in milliseconds.
    pub rescan_interval_ms: u64,
    /// How long a rotated or deleted file stays open at its end, in milliseconds.
    pub drain_grace_ms: u64,
}

impl Default for Input {
    fn default() -> Input {
        Input {
            docker_root: DEFAULT_DOCKER_ROOT.into(),
            pods_root: DEFAULT_PODS_ROOT.into(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            read_bytes: DEFAULT_READ_BYTES,
            turn_budget_bytes: DEFAULT_TURN_BUDGET_BYTES,
            rescan_interval_ms: DEFAULT_RESCAN_INTERVAL_MS,
            drain_grace_ms: DEFAULT_DRAIN_GRACE_MS,
        }
    }
}

/// `[agent]`: the agent's own state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Directory for checkpoints (and the buffer).
    pub data_dir: PathBuf,
}

impl Default for Agent {
    fn default() -> Agent {
        Agent {
            data_dir: DEFAULT_DATA_DIR.into(),
        }
    }
}

/// `[elasticsearch]`: where documents go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Elasticsearch {
    /// Daily indices are `<index_prefix>-YYYY.MM.DD`.
    pub index_prefix: String,
}

impl Default for Elasticsearch {
    fn default() -> Elasticsearch {
        Elasticsearch {
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
        }
    }
}

/// `[kubernetes]`: metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// Use the Kubernetes API for metadata (`--no-kubernetes` turns it off: paths and
    /// Docker's `config.v2.json` only).
    pub enabled: bool,
    /// Kubeconfig file (empty: in-cluster service account, then `KUBECONFIG`). The
    /// dry-run uses an API only when this is set.
    pub kubeconfig: PathBuf,
    /// This node's name, to watch only its pods (empty: from `NODE_NAME`).
    pub node_name: String,
    /// Replace `.` in label keys with `_` (`app.kubernetes.io/name` →
    /// `app_kubernetes_io/name`), so `app` and `app.kubernetes.io/name` cannot conflict in
    /// the index mapping.
    pub dedot_labels: bool,
    /// Add pod annotations as `kubernetes.annotations.*`.
    pub annotations: bool,
    /// How long a deleted pod or namespace stays cached, in milliseconds.
    pub deleted_grace_ms: u64,
    /// How long a file whose pod is unknown waits for the watch, in milliseconds.
    pub pending_wait_ms: u64,
    /// Minimum time between two snapshots of the metadata cache, in milliseconds.
    pub snapshot_interval_ms: u64,
}

impl Default for Kubernetes {
    fn default() -> Kubernetes {
        Kubernetes {
            enabled: DEFAULT_KUBERNETES_ENABLED,
            kubeconfig: PathBuf::new(),
            node_name: String::new(),
            dedot_labels: DEFAULT_DEDOT_LABELS,
            annotations: DEFAULT_ANNOTATIONS,
            deleted_grace_ms: DEFAULT_DELETED_GRACE_MS,
            pending_wait_ms: DEFAULT_PENDING_WAIT_MS,
            snapshot_interval_ms: DEFAULT_SNAPSHOT_INTERVAL_MS,
        }
    }
}

/// Builds the configuration from its three layers. `flags` are `(section.key, value)`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&'static str, toml::Value)>,
) -> Result<Config, ConfigError> {
    let defaults = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
        key: String::from("(defaults)"),
        reason: e.to_string(),
    })?;
    let mut merged = toml::Table::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let toml_err = |source| ConfigError::Toml {
            path: path.to_owned(),
            source,
        };
        // The typed parse reports unknown keys and bad values with line and column.
        toml::from_str::<Config>(&text).map_err(toml_err)?;
        merged = toml::from_str(&text).map_err(toml_err)?;
    }
    let mut node_name = None;
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, v)| {
            if k == NODE_NAME_ENV && !v.is_empty() {
                node_name = Some(v.clone());
            }
            k.starts_with(ENV_PREFIX)
        })
        .collect();
    env.sort();
    if let Some(node) = node_name {
        set(
            &mut merged,
            "kubernetes",
            "node_name",
            toml::Value::String(node),
        );
    }
    for (var, value) in env {
        if ENV_RESERVED.contains(&var.as_str()) {
            continue;
        }
        let (section, key, default) = env_key(&defaults, &var)?;
        let parsed = parse_like(default, &value).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
        set(&mut merged, &section, &key, parsed);
    }
    for (dotted, value) in flags {
        let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
        set(&mut merged, section, key, value);
    }
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            ConfigError::Invalid {
                key: e.path().to_string(),
                reason: e.inner().to_string(),
            }
        })?;
    config.validate()?;
    Ok(config)
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    }
}

/// `SHIPPER_INPUT_DOCKER_ROOT` → (`input`, `docker_root`, default value).
fn env_key<'d>(
    defaults: &'d toml::Value,
    var: &str,
) -> Result<(String, String, &'d toml::Value), ConfigError> {
    let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let unknown = || ConfigError::Env {
        var: var.to_owned(),
        reason: format!(
            "unknown setting (expected SHIPPER_<SECTION>_<KEY> for one of: {})",
            all_keys(defaults).join(", ")
        ),
    };
    let sections = defaults.as_table().ok_or_else(unknown)?;
    for (section, keys) in sections {
        let Some(key) = rest
            .strip_prefix(section.as_str())
            .and_then(|r| r.strip_prefix('_'))
        else {
            continue;
        };
        if let Some(default) = keys.as_table().and_then(|t| t.get(key)) {
            return Ok((section.clone(), key.to_owned(), default));
        }
    }
    Err(unknown())
}

fn all_keys(defaults: &toml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (section, keys) in defaults.as_table().into_iter().flatten() {
        for key in keys.as_table().into_iter().flat_map(|t| t.keys()) {
            out.push(format!("{section}.{key}"));
        }
    }
    out
}

fn parse_like(default: &toml::Value, s: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(s.to_owned()),
        toml::Value::Integer(_) => toml::Value::Integer(
            s.trim()
                .parse()
                .map_err(|_| format!("`{s}` is not an integer"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match s.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("`{s}` is not a boolean (true/false)")),
        }),
        toml::Value::Float(_) => toml::Value::Float(
            s.trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a number"))?,
        ),
        _ => {
            let doc: toml::Table =
                toml::from_str(&format!("v = {s}")).map_err(|e| format!("`{s}`: {e}"))?;
            doc.get("v")
                .cloned()
                .ok_or_else(|| format!("`{s}` is not a value"))?
        }
    })
}

impl Config {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason,
            })
        };
        let i = &self.input;
        if !(1024..=(1 << 30)).contains(&i.max_record_bytes) {
            return bad(
                "input.max_record_bytes",
                format!("{} is outside 1024..=1073741824", i.max_record_bytes),
            );
        }
        if !(4096..=(64 << 20)).contains(&i.read_bytes) {
            return bad(
                "input.read_bytes",
                format!("{} is outside 4096..=67108864", i.read_bytes),
            );
        }
        if i.turn_budget_bytes < 4096 {
            return bad(
                "input.turn_budget_bytes",
                format!("{} is below 4096", i.turn_budget_bytes),
            );
        }
        if !(10..=600_000).contains(&i.rescan_interval_ms) {
            return bad(
                "input.rescan_interval_ms",
                format!("{} is outside 10..=600000", i.rescan_interval_ms),
            );
        }
        if i.drain_grace_ms > 3_600_000 {
            return bad(
                "input.drain_grace_ms",
                format!("{} is above 3600000", i.drain_grace_ms),
            );
        }
        let k = &self.kubernetes;
        if k.pending_wait_ms > 10_000 {
            return bad(
                "kubernetes.pending_wait_ms",
                format!(
                    "{} is above 10000: reading a new file must not wait long for the API",
                    k.pending_wait_ms
                ),
            );
        }
        if !(100..=3_600_000).contains(&k.snapshot_interval_ms) {
            return bad(
                "kubernetes.snapshot_interval_ms",
                format!("{} is outside 100..=3600000", k.snapshot_interval_ms),
            );
        }
        if k.deleted_grace_ms > 86_400_000 {
            return bad(
                "kubernetes.deleted_grace_ms",
                format!("{} is above 86400000 (a day)", k.deleted_grace_ms),
            );
        }
        if k.node_name.contains([',', '=', '!', ' ']) {
            return bad(
                "kubernetes.node_name",
                format!("`{}` is not a node name", k.node_name),
            );
        }
        let p = &self.elasticsearch.index_prefix;
        let forbidden = |c: char| c.is_ascii_uppercase() || " \\/*?\"<>|,#:".contains(c);
        if p.is_empty()
            || p.starts_with(['-', '_', '+'])
            || p.chars().any(forbidden)
            || p.len() > 200
        {
            return bad(
                "elasticsearch.index_prefix",
                format!("`{p}` is not a valid index name prefix (lowercase, no spaces or \\/*?\"<>|,#:, not starting with -_+)"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = load(None, env(&[]), vec![]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.input.docker_root, PathBuf::from(DEFAULT_DOCKER_ROOT));
    }

    #[test]
    fn layers_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shipper.toml");
        std::fs::write(&f, "[input]\npods_root = \"/from/file\"\ndocker_root = \"/file/docker\"\n[elasticsearch]\nindex_prefix = \"file\"\n").unwrap();
        let c = load(
            Some(&f),
            env(&[
                ("SHIPPER_INPUT_DOCKER_ROOT", "/from/env"),
                ("SHIPPER_ELASTICSEARCH_INDEX_PREFIX", "123"),
                ("SHIPPER_CONFIG", "x"),
                ("OTHER", "y"),
            ]),
            vec![(
                "input.docker_root",
                toml::Value::String("/from/flag".into()),
            )],
        )
        .unwrap();
        assert_eq!(c.input.pods_root, PathBuf::from("/from/file"));
        assert_eq!(c.input.docker_root, PathBuf::from("/from/flag"));
        assert_eq!(
            c.elasticsearch.index_prefix, "123",
            "a string key stays a string"
        );
    }

    #[test]
    fn env_types_follow_defaults() {
        let c = load(
            None,
            env(&[
                ("SHIPPER_INPUT_MAX_RECORD_BYTES", "2048"),
                ("SHIPPER_KUBERNETES_DEDOT_LABELS", "false"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(c.input.max_record_bytes, 2048);
        assert!(!c.kubernetes.dedot_labels);
        let e = load(
            None,
            env(&[("SHIPPER_INPUT_MAX_RECORD_BYTES", "lots")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SHIPPER_INPUT_MAX_RECORD_BYTES") && e.contains("not an integer"),
            "{e}"
        );
        let e = load(None, env(&[("SHIPPER_INPUT_NOPE", "1")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SHIPPER_INPUT_NOPE")
                && e.contains("unknown setting")
                && e.contains("input.docker_root"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[input]\ndocker_rot = \"/x\"\n").unwrap();
        let e = load(Some(&f), env(&[]), vec![]).unwrap_err().to_string();
        assert!(e.contains("docker_rot") && e.contains("c.toml"), "{e}");
        std::fs::write(&f, "[inputs]\n").unwrap();
        let e = load(Some(&f), env(&[]), vec![]).unwrap_err().to_string();
        assert!(e.contains("inputs"), "{e}");
        std::fs::write(&f, "[input]\nmax_record_bytes = \"big\"\n").unwrap();
        let e = load(Some(&f), env(&[]), vec![]).unwrap_err().to_string();
        assert!(e.contains("max_record_bytes"), "{e}");
        std::fs::write(&f, "not toml at all [").unwrap();
        assert!(matches!(
            load(Some(&f), env(&[]), vec![]),
            Err(ConfigError::Toml { .. })
        ));
        assert!(matches!(
            load(Some(&dir.path().join("missing.toml")), env(&[]), vec![]),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn node_name_from_the_downward_api_variable() {
        let c = load(None, env(&[("NODE_NAME", "node-7")]), vec![]).unwrap();
        assert_eq!(c.kubernetes.node_name, "node-7");
        let c = load(
            None,
            env(&[
                ("NODE_NAME", "node-7"),
                ("SHIPPER_KUBERNETES_NODE_NAME", "node-8"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(c.kubernetes.node_name, "node-8", "the SHIPPER_ name wins");
        let e = load(None, env(&[("NODE_NAME", "a,b")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kubernetes.node_name"), "{e}");
        let c = load(
            None,
            env(&[
                ("SHIPPER_KUBERNETES_ENABLED", "false"),
                ("SHIPPER_KUBERNETES_DELETED_GRACE_MS", "1000"),
            ]),
            vec![],
        )
        .unwrap();
        assert!(!c.kubernetes.enabled);
        assert_eq!(c.kubernetes.deleted_grace_ms, 1000);
    }

    #[test]
    fn validation() {
        let e = load(
            None,
            env(&[("SHIPPER_ELASTICSEARCH_INDEX_PREFIX", "Logs")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("elasticsearch.index_prefix"), "{e}");
        let e = load(
            None,
            env(&[("SHIPPER_INPUT_MAX_RECORD_BYTES", "10")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("input.max_record_bytes"), "{e}");
    }
}
