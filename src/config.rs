//! Configuration: one TOML file, then `SHIPPER_SECTION_KEY` environment variables, then
//! flags, merged into one validated [`Config`].
//!
//! The three layers are merged as TOML tables before anything is typed, so every key has
//! exactly one definition (the structs below) and one error path: an unknown key or a bad
//! value names its `section.key` and where it came from. Environment values are parsed as
//! the type of the key's default (a string stays a string even if it looks like a number).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
/// The headless Service of the Elasticsearch StatefulSet in the agent's namespace.
pub const DEFAULT_ES_URL: &str = "http://elasticsearch:9200";
/// Elasticsearch's own guidance: bulk requests of a few MiB; larger ones only add
/// latency and heap pressure on the data nodes.
pub const DEFAULT_BATCH_BYTES: u64 = 5 << 20;
/// Upper bound on documents per bulk request (many tiny lines).
pub const DEFAULT_BATCH_DOCS: u64 = 5_000;
/// A quiet node still ships within a second.
pub const DEFAULT_LINGER_MS: u64 = 1_000;
/// Requests in flight at most; adaptive concurrency moves below it. Four per node keeps
/// a thousand-node cluster's bulk queues sane.
pub const DEFAULT_MAX_CONCURRENCY: u64 = 4;
/// A bulk request that takes longer than this is abandoned and retried.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Retries back off exponentially up to this, with jitter.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
/// Room for hours of an Elasticsearch outage on a busy node, small next to a node disk.
pub const DEFAULT_BUFFER_MAX_BYTES: u64 = 2 << 30;
/// Segment size: a fully acknowledged segment is deleted whole, and a restart re-sends at
/// most the unacknowledged part of a few segments.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Unfinished records across every file: 64 MiB (sixteen records at the default cap).
pub const DEFAULT_PENDING_MEMORY_BYTES: u64 = 64 << 20;
/// The most primary shards an index may have (Elasticsearch's `index.number_of_shards`
/// limit), and the most replicas this agent's template sets.
pub const MAX_NUMBER_OF_SHARDS: u32 = 1024;
pub const MAX_NUMBER_OF_REPLICAS: u32 = 16;
/// The largest `elasticsearch.batch_bytes` (Elasticsearch's default
/// `http.max_content_length` is 100 MiB).
pub const MAX_BATCH_BYTES: u64 = 100 << 20;
/// The largest `input.max_record_bytes`. A batch is cut once it holds `batch_bytes`, so
/// its frame is at most `batch_bytes` plus one document; a document is at most its text
/// escaped (6 bytes per byte for control characters) twice (the text and the fields
/// parsed from it) plus its metadata. With this cap every frame stays under the one
/// frame size limit the buffer writes and reads ([`crate::buffer::frame::MAX_PAYLOAD`]).
pub const MAX_RECORD_BYTES_LIMIT: u64 = 12 << 20;
const _: () = assert!(
    MAX_BATCH_BYTES + 12 * MAX_RECORD_BYTES_LIMIT + (4 << 20)
        <= crate::buffer::frame::MAX_PAYLOAD as u64
);
/// The free-space floor: 10 % of the volume or 256 MiB, whichever is larger, stays free.
/// 10 % is kubelet's default hard eviction threshold for the node's filesystem
/// (`nodefs.available<10%`): the buffer never pushes a node past it.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;
pub const DEFAULT_MIN_FREE_PERCENT: u8 = 10;
/// After SIGTERM the agent keeps flushing and shipping this long before it exits. The
/// generated DaemonSet's `terminationGracePeriodSeconds` is derived from it with a margin,
/// so the kubelet never SIGKILLs an agent that is still within its own deadline.
pub const DEFAULT_SHUTDOWN_DEADLINE_MS: u64 = 20_000;
/// Rejected documents kept for inspection; the oldest are dropped (and counted) beyond.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 256 << 20;
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
/// The metrics/health listener is on unless turned off.
pub const DEFAULT_METRICS_ENABLED: bool = true;
/// All interfaces, so Prometheus and the kubelet's probes reach it at the Pod IP; 2020 is
/// the port the generated DaemonSet names `metrics` (Fluent Bit's customary port).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:2020";
/// A worker without a heartbeat for this long fails `/healthz`. Workers beat about every
/// second; 30 s rides out a slow fsync or a long metadata wait, and the probe's own
/// failure threshold adds more before the kubelet restarts anything.
pub const DEFAULT_LIVENESS_TIMEOUT_MS: u64 = 30_000;
/// Multiline grouping for every container unless a rule or an annotation says otherwise:
/// `auto` joins stack traces of the common languages (Java, Python, Go, Ruby, Node.js,
/// .NET, PHP) and nothing else; measured on real-looking logs it makes no false joins
/// (see the README).
pub const DEFAULT_MULTILINE_MODE: &str = "auto";
/// Lines of one event are written within microseconds of each other; 200 ms leaves room
/// for a slow writer and still closes a trace at the end of a file quickly.
pub const DEFAULT_MULTILINE_GAP_MS: u64 = 200;
/// Filebeat's default: a trace longer than this becomes several documents.
pub const DEFAULT_MULTILINE_MAX_LINES: u32 = 500;
/// A group's text is capped like any record's (0: `input.max_record_bytes`).
pub const DEFAULT_MULTILINE_MAX_BYTES: u64 = 0;

/// JSON lines are parsed into fields for everyone: most applications on Kubernetes log
/// JSON, and a conflict between two of them costs no document (see the README).
pub const DEFAULT_FIELDS_PARSER: &str = "json";
/// Under one key: application fields never collide with `kubernetes.*` or the agent's
/// keys, and the index template maps them on their own.
pub const DEFAULT_FIELDS_TARGET: &str = "fields";
/// Room for any real log event; a line with more keys is a dump, kept as text.
pub const DEFAULT_FIELDS_MAX_KEYS: u32 = 100;
/// Elasticsearch's own default limit is 20 levels; logs rarely nest past a few.
pub const DEFAULT_FIELDS_MAX_DEPTH: u32 = 8;
/// Longer keys are data, not names (a map keyed by ids).
pub const DEFAULT_FIELDS_MAX_KEY_BYTES: u32 = 128;

/// The downward API's conventional variable for the node name; accepted as an alias of
/// `SHIPPER_KUBERNETES_NODE_NAME` (which wins when both are set).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// Environment variables with this prefix are configuration.
pub const ENV_PREFIX: &str = "SHIPPER_";
/// Environment variables with the prefix that are not `section.key` settings.
/// `SHIPPER_TEST_WEDGE` is the test hook documented at [`crate::app::TEST_WEDGE_ENV`].
pub const ENV_RESERVED: &[&str] = &[
    "SHIPPER_CONFIG",
    "SHIPPER_LOG",
    "SHIPPER_LOG_FORMAT",
    "SHIPPER_TEST_WEDGE",
];

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
    pub buffer: Buffer,
    pub kubernetes: Kubernetes,
    pub metrics: MetricsConfig,
    pub multiline: Multiline,
    pub fields: FieldsConfig,
    pub redact: Redact,
    pub node: Node,
    /// `[[rules]]`: settings for the files a rule selects; for each setting, the first
    /// matching rule that sets it wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// One `[[rules]]` entry: whom it selects (every condition given must hold; none given
/// selects every file) and what it sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for logs and the dry-run's explanations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Glob on the namespace (`shop`, `team-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Glob on the pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Glob on the container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Pod labels that must be present, with globs on their values (needs the
    /// Kubernetes API or a pod list; a file without that metadata never matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Namespace labels that must be present, with globs on their values (needs the
    /// Kubernetes API; a file without that metadata never matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_labels: BTreeMap<String, String>,
    /// `container` (the default for rules that name none: container logs), `host`
    /// (the `[node] files`) or `journal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Glob on a host file's path (`source = "host"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Glob on a journal entry's systemd unit (`source = "journal"`; the kernel's
    /// entries have the unit `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Multiline mode for the selected files (see `[multiline] mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<String>,
    /// Field parser for the selected files (see `[fields] parser`): one name for both
    /// streams, or `{ stdout = "json", stderr = "none" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parser: Option<ParserSetting>,
    /// `true`: the selected files are not shipped (their checkpoints still move);
    /// `false`: they are, whatever a later rule says (an include list is `exclude =
    /// false` rules before a catch-all `exclude = true`). Pod annotations and labels
    /// can exclude more, never less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<bool>,
    /// Records whose text matches this regular expression are dropped (counted by the
    /// rule's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
    /// Only records whose text matches this regular expression are kept (the others
    /// are dropped and counted by the rule's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    /// `drop`/`keep` match this top-level parsed field (by the file's parser) instead of
    /// the text; a record without it is shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `false`: no redaction for the selected files (see `[redact]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<bool>,
    /// A rate limit per container of the selected files: over it, the container's files
    /// are read more slowly (never dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The index prefix (with `data_stream`, the data stream) of the selected files'
    /// documents, instead of `elasticsearch.index_route` or `index_prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

/// A per-container rate limit (one bucket per container).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Bytes of log file per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_sec: Option<u64>,
    /// Records per second, as read (physical lines: each line of a stack trace counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_sec: Option<u64>,
    /// How many seconds of each rate may be read at once after a quiet spell (1).
    #[serde(default = "one_second")]
    pub burst_secs: f64,
}

fn one_second() -> f64 {
    1.0
}

/// A parser for both streams, or one per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParserSetting {
    Both(String),
    PerStream {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr: Option<String>,
    },
}

impl ParserSetting {
    /// The names it gives (stdout, stderr).
    pub fn names(&self) -> [Option<&str>; 2] {
        match self {
            ParserSetting::Both(n) => [Some(n), Some(n)],
            ParserSetting::PerStream { stdout, stderr } => [stdout.as_deref(), stderr.as_deref()],
        }
    }
}

/// Source kinds a rule may select.
pub const RULE_SOURCES: &[&str] = &["container", "host", "journal"];

/// The host files read by default: the node components' own log files where a
/// distribution keeps them (kops, GKE's COS, kubeadm with file logging), and
/// `/var/log/containers/*.log`, links to the pod logs the agent reads anyway (read once,
/// as the pod log: see [`crate::discover`]).
pub const DEFAULT_NODE_FILES: &[&str] = &[
    "/var/log/kubelet.log",
    "/var/log/kube-proxy.log",
    "/var/log/containerd.log",
    "/var/log/docker.log",
    "/var/log/crio.log",
    "/var/log/containers/*.log",
];
/// Where journald keeps the node's journal: persistent, then volatile.
pub const DEFAULT_JOURNAL_PATHS: &[&str] = &["/var/log/journal", "/run/log/journal"];
/// The systemd units whose journal entries are read by default (`kernel`: the kernel's
/// messages).
pub const DEFAULT_JOURNAL_UNITS: &[&str] = &[
    "kubelet.service",
    "containerd.service",
    "docker.service",
    "crio.service",
    "kernel",
];

/// `[node]`: the node's own logs (host files and the systemd journal), shipped beside
/// the container logs into their own indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// Where the node's filesystem is seen: `files` and `journal_paths` are read under
    /// it (`/` in the DaemonSet, which mounts them where the node has them).
    pub root: String,
    /// Plain-text host files: paths, or globs on the file name (`/var/log/*.log`; the
    /// directory part is a plain path). `[]`: none.
    pub files: Vec<String>,
    /// Read the systemd journal.
    pub journal: bool,
    /// Journal directories (each holds `<machine-id>/*.journal`).
    pub journal_paths: Vec<String>,
    /// Units whose entries are shipped (`kernel`: the kernel's; `[]`: every entry).
    pub journal_units: Vec<String>,
    /// Index prefix (with `elasticsearch.data_stream`, the data stream) of host-file
    /// and journal documents, unless a rule names another.
    pub index_prefix: String,
    /// How often the journal is checked for new entries, in milliseconds.
    pub journal_poll_ms: u64,
}

impl Default for Node {
    fn default() -> Node {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Node {
            root: "/".into(),
            files: strings(DEFAULT_NODE_FILES),
            journal: true,
            journal_paths: strings(DEFAULT_JOURNAL_PATHS),
            journal_units: strings(DEFAULT_JOURNAL_UNITS),
            index_prefix: "node".into(),
            journal_poll_ms: 1000,
        }
    }
}

impl Node {
    /// Whether any node source is on.
    pub fn any(&self) -> bool {
        !self.files.is_empty() || self.journal
    }

    /// `path` (absolute, as on the node) under [`Node::root`].
    pub fn under_root(&self, path: &str) -> String {
        let root = self.root.trim_end_matches('/');
        format!("{root}/{}", path.trim_start_matches('/'))
    }
}

/// `[metrics]`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the listener at all (`false`: no metrics, and no HTTP probes possible).
    pub enabled: bool,
    /// `host:port` to listen on; port 0 picks a free one (logged at start).
    pub addr: String,
    /// A worker without a heartbeat for this long fails `/healthz` (milliseconds).
    pub liveness_timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            enabled: DEFAULT_METRICS_ENABLED,
            addr: DEFAULT_METRICS_ADDR.into(),
            liveness_timeout_ms: DEFAULT_LIVENESS_TIMEOUT_MS,
        }
    }
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
    /// Where files are read from on the very first start (no checkpoints yet):
    /// `beginning`, or `end` to skip what another shipper already sent.
    pub start_at: StartAt,
    /// What unfinished records (split lines waiting for their last chunk) may hold in
    /// memory across every file; past it a record is released and read again from its
    /// file when complete (0: no bound).
    pub pending_memory_bytes: u64,
}

/// `input.start_at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
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
            start_at: StartAt::Beginning,
            pending_memory_bytes: DEFAULT_PENDING_MEMORY_BYTES,
        }
    }
}

/// `[agent]`: the agent's own state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Directory for checkpoints, the buffer and the dead-letter file.
    pub data_dir: PathBuf,
    /// On SIGTERM: stop reading, flush, then keep shipping for at most this long.
    pub shutdown_deadline_ms: u64,
    /// Size cap of the dead-letter file (documents Elasticsearch rejected).
    pub dead_letter_max_bytes: u64,
}

impl Default for Agent {
    fn default() -> Agent {
        Agent {
            data_dir: DEFAULT_DATA_DIR.into(),
            shutdown_deadline_ms: DEFAULT_SHUTDOWN_DEADLINE_MS,
            dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES,
        }
    }
}

/// A credential: never printed by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[elasticsearch]`: where documents go and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Elasticsearch {
    /// Endpoints, used round-robin with health tracking.
    pub urls: Vec<String>,
    /// Documents go to `<index_prefix>-<date>` (daily indices by default), or, with
    /// `data_stream`, to the data stream named `index_prefix`.
    pub index_prefix: String,
    /// A route template for the prefix (or data stream name), rendered per file over its
    /// metadata: `{namespace}`, `{pod}`, `{container}`, `{labels.KEY}`,
    /// `{namespace_labels.KEY}`, e.g. `logs-{namespace}`. Values are lowercased and made
    /// fit for an index name; a file with a missing value goes to `index_prefix`. Rules
    /// (`index`) and the pod annotation `shipper.io/index` (when a pattern of these
    /// covers it) come first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_route: Option<String>,
    /// The date part of index names, from the record's `@timestamp` in UTC: `%Y` `%y`
    /// `%m` `%d` `%H` `%j` `%G` `%V` and literal characters, e.g. `%Y.%m.%d` (daily),
    /// `%Y.%m.%d.%H` (hourly), `%G.%V` (ISO weeks). Not used with `data_stream`.
    pub index_date_format: String,
    /// Write to a data stream (Elasticsearch 7.9+, OpenSearch) instead of dated indices;
    /// the server rolls it over, retention is its lifecycle policy's job.
    pub data_stream: bool,
    /// Install an index template for the indices (or the data stream) at start.
    pub template: bool,
    /// How often the installed template is checked, and installed again if it went
    /// missing or is older than this agent's, in milliseconds.
    pub template_check_interval_ms: u64,
    /// Elasticsearch lifecycle (ILM) policy the template gives the indices or the data
    /// stream's backing indices (`index.lifecycle.name`): how a data stream rolls over
    /// and ages out. The policy itself is created in Elasticsearch. Ignored on OpenSearch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ilm_policy: Option<String>,
    /// Primary shards and replicas of every index the template covers
    /// (`index.number_of_shards`, `index.number_of_replicas`; unset: the server's
    /// default, 1 and 1). `shipper sizing` says what to set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_of_shards: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_of_replicas: Option<u32>,
    /// Map `@timestamp` as `date_nanos` (keeps nanosecond order); `false` maps `date`.
    pub timestamp_nanos: bool,
    /// gzip request bodies (compressed once, in the buffer).
    pub compression: bool,
    /// A batch is sent when it reaches this many bytes of NDJSON...
    pub batch_bytes: u64,
    /// ...or this many documents...
    pub batch_docs: u64,
    /// ...or its first record is this old (milliseconds); 10 ms when the pipeline is
    /// idle (see [`crate::batch`]).
    pub linger_ms: u64,
    /// Bulk requests in flight at most.
    pub max_concurrency: u64,
    /// Per-request timeout (milliseconds).
    pub request_timeout_ms: u64,
    /// Cap of the retry backoff (milliseconds).
    pub max_backoff_ms: u64,
    /// Basic auth user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth password (prefer `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the password (a mounted Secret); read at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// API key (the base64 `id:key` form; prefer `api_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// File holding the API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust (in addition to the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify TLS certificates. Dangerous; logged loudly.
    pub tls_skip_verify: bool,
}

impl Elasticsearch {
    /// Where documents go (the config is validated, so the date format parses).
    pub fn target(&self) -> crate::index::Target {
        use crate::index::{DateFormat, Target};
        if self.data_stream {
            return Target::Fixed(self.index_prefix.clone());
        }
        Target::Dated {
            prefix: self.index_prefix.clone(),
            format: DateFormat::parse(&self.index_date_format).unwrap_or_default(),
        }
    }
}

impl Default for Elasticsearch {
    fn default() -> Elasticsearch {
        Elasticsearch {
            urls: vec![DEFAULT_ES_URL.into()],
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
            index_route: None,
            index_date_format: crate::index::DEFAULT_DATE_FORMAT.into(),
            data_stream: false,
            template: true,
            template_check_interval_ms: 60_000,
            ilm_policy: None,
            number_of_shards: None,
            number_of_replicas: None,
            timestamp_nanos: true,
            compression: true,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_docs: DEFAULT_BATCH_DOCS,
            linger_ms: DEFAULT_LINGER_MS,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            username: None,
            password: None,
            password_file: None,
            api_key: None,
            api_key_file: None,
            ca_file: None,
            tls_skip_verify: false,
        }
    }
}

/// `[buffer]`: the disk buffer between reading and shipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Buffer {
    /// Size cap; reading pauses while the buffer is full.
    pub max_bytes: u64,
    /// Size of one segment file.
    pub segment_bytes: u64,
    /// `always`: sync every batch before checkpoints move (survives power loss);
    /// `never`: leave it to the OS (survives process crashes only).
    pub fsync: crate::buffer::Fsync,
    /// Bytes left free on the data directory's volume: a batch that would take the free
    /// space under this waits (reading pauses) until shipping frees room (0: off).
    pub min_free_bytes: u64,
    /// The same as a percentage of the volume's size; the larger bound wins (0: off).
    pub min_free_percent: u8,
}

impl Buffer {
    /// The free-space floor these settings keep.
    pub fn floor(&self) -> crate::disk::Floor {
        crate::disk::Floor {
            min_free_bytes: self.min_free_bytes,
            min_free_percent: self.min_free_percent,
        }
    }
}

impl Default for Buffer {
    fn default() -> Buffer {
        Buffer {
            max_bytes: DEFAULT_BUFFER_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: crate::buffer::Fsync::Always,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            min_free_percent: DEFAULT_MIN_FREE_PERCENT,
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
    /// A restart that has the metadata snapshot lists pods and namespaces after a delay
    /// of up to this long (milliseconds), the same for a node every time and spread
    /// evenly over the nodes, so a DaemonSet rollout does not list in lockstep (0: at
    /// once). A first start, with no snapshot, lists at once.
    pub start_jitter_ms: u64,
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
            start_jitter_ms: 10_000,
        }
    }
}

/// `[multiline]`: joining the lines of one event (a stack trace) into one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multiline {
    /// `auto`, `off`, a language (`java`, `python`, `go`, `ruby`, `nodejs`, `dotnet`,
    /// `php`) or the name of a pattern below.
    pub mode: String,
    /// Consecutive lines further apart than this (their runtime timestamps) never join;
    /// at the end of a file, a group is closed this long after its last line.
    pub gap_ms: u64,
    /// A group closes at this many lines.
    pub max_lines: u32,
    /// A group closes at this many bytes of text (0: `input.max_record_bytes`).
    pub max_bytes: u64,
    /// User patterns by name: `start` (a line that begins an event) and/or `continue`
    /// (a line that belongs to the one before), regular expressions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub patterns: BTreeMap<String, MultilinePattern>,
}

/// A user multiline pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilinePattern {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
}

impl Default for Multiline {
    fn default() -> Multiline {
        Multiline {
            mode: DEFAULT_MULTILINE_MODE.into(),
            gap_ms: DEFAULT_MULTILINE_GAP_MS,
            max_lines: DEFAULT_MULTILINE_MAX_LINES,
            max_bytes: DEFAULT_MULTILINE_MAX_BYTES,
            patterns: BTreeMap::new(),
        }
    }
}

/// `[fields]`: structured fields parsed from the log text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsConfig {
    /// `json`, `logfmt`, `none`, or the name of a pattern below, for every container
    /// unless a rule or the annotation `shipper.io/parser` says otherwise.
    pub parser: String,
    /// Parsed fields go under this key; empty: at the document's root (where the
    /// agent's own keys always win).
    pub target: String,
    /// Keep the original text in `log`; `false`: `log` becomes the first of
    /// `message_keys` that holds a string.
    pub keep_log: bool,
    pub message_keys: Vec<String>,
    /// A field with an RFC 3339 time that becomes `@timestamp` (empty: none). The index
    /// still comes from the runtime's timestamp.
    pub time_key: String,
    /// Fields whose value becomes a normalised `level` (trace, debug, info, warn,
    /// error, fatal); empty: no `level`.
    pub level_keys: Vec<String>,
    /// Past these, a record keeps its text only (counted).
    pub max_keys: u32,
    pub max_depth: u32,
    pub max_key_bytes: u32,
    /// User patterns by name: a regular expression whose named captures become fields.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub patterns: BTreeMap<String, FieldPattern>,
}

/// A user field pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPattern {
    pub regex: String,
}

impl Default for FieldsConfig {
    fn default() -> FieldsConfig {
        FieldsConfig {
            parser: DEFAULT_FIELDS_PARSER.into(),
            target: DEFAULT_FIELDS_TARGET.into(),
            keep_log: true,
            message_keys: vec!["msg".into(), "message".into()],
            time_key: String::new(),
            level_keys: Vec::new(),
            max_keys: DEFAULT_FIELDS_MAX_KEYS,
            max_depth: DEFAULT_FIELDS_MAX_DEPTH,
            max_key_bytes: DEFAULT_FIELDS_MAX_KEY_BYTES,
            patterns: BTreeMap::new(),
        }
    }
}

/// `[redact]`: secrets masked in the text (and so in the fields parsed from it) before
/// anything is shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redact {
    /// Redact at all (a rule's `redact = false` turns it off for the files it selects).
    pub enabled: bool,
    /// Built-in patterns: `bearer`, `password`, `aws_access_key`, `private_key`,
    /// `credit_card`.
    pub builtins: Vec<String>,
    /// What replaces a secret: a text, or `hash` for `[REDACTED:<16 hex digits>]`, an
    /// HMAC-SHA256 of the secret under the key in `hash_key_file` (equal secrets stay
    /// correlatable, and without the key the hash cannot be tested against guesses).
    pub replacement: String,
    /// The key for `replacement = "hash"` (a Secret volume); read at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key_file: Option<PathBuf>,
    /// User patterns by name: a regular expression; its first capture group is what is
    /// replaced when it has one, else the whole match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub patterns: BTreeMap<String, RedactPattern>,
}

/// A user redaction pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactPattern {
    pub regex: String,
}

/// Built-in redaction pattern names (the first four are on by default).
pub const REDACT_BUILTINS: &[&str] = &[
    "bearer",
    "password",
    "aws_access_key",
    "private_key",
    "credit_card",
];

impl Default for Redact {
    fn default() -> Redact {
        Redact {
            enabled: true,
            // Not `credit_card`: its digit scan costs more than the rest together, and
            // 16-digit ids that pass the Luhn check (one in ten) would be redacted too.
            builtins: REDACT_BUILTINS[..4]
                .iter()
                .map(|b| (*b).to_owned())
                .collect(),
            replacement: "[REDACTED]".into(),
            hash_key_file: None,
            patterns: BTreeMap::new(),
        }
    }
}

/// Built-in field parser names (besides user patterns).
pub const FIELD_PARSERS: &[&str] = &["none", "json", "logfmt"];

/// Built-in multiline mode names (besides user patterns).
pub const MULTILINE_MODES: &[&str] = &[
    "off", "auto", "java", "python", "go", "ruby", "nodejs", "node", "dotnet", "php",
];

/// Checks the configuration file at `path` alone (no environment, no flags), as
/// `shipper check-config` does: `Err` holds `path:line:column: what is wrong` (the line
/// and column of the offending value when the file has it).
pub fn check_file(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let where_ = |offset: Option<usize>| match offset {
        Some(o) => {
            let before = &text[..o.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{}:{line}:{col}", path.display())
        }
        None => path.display().to_string(),
    };
    match load(Some(path), std::iter::empty(), Vec::new()) {
        Ok(cfg) => Ok(cfg),
        Err(ConfigError::Toml { source, .. }) => {
            let at = source.span().map(|s| s.start);
            Err(format!("{}: {}", where_(at), source.message()))
        }
        Err(e @ ConfigError::Invalid { .. }) => {
            let ConfigError::Invalid { key, .. } = &e else {
                unreachable!()
            };
            Err(format!("{}: {e}", where_(locate(&text, key))))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The byte offset in `text` of the value of `key` (`rules[2].drop`,
/// `redact.patterns.session`), when the file holds it.
fn locate(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &toml_edit::Table = doc.as_table();
    let mut span = None;
    let segs: Vec<&str> = key.split('.').collect();
    for (n, seg) in segs.iter().enumerate() {
        let (name, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*seg, None),
        };
        let last = n + 1 == segs.len();
        let item = table.get(name)?;
        match (item, index) {
            (toml_edit::Item::ArrayOfTables(a), Some(i)) => {
                table = a.get(i)?;
                span = table.span();
            }
            (toml_edit::Item::Table(t), None) => {
                table = t;
                span = t.span();
            }
            (toml_edit::Item::Value(v), _) => {
                span = match (v, index) {
                    (toml_edit::Value::Array(a), Some(i)) => a.get(i).and_then(|v| v.span()),
                    (toml_edit::Value::InlineTable(t), None) if !last => {
                        t.get(segs[n + 1]).and_then(|v| v.span())
                    }
                    _ => v.span(),
                };
                break;
            }
            _ => return span.map(|s| s.start),
        }
    }
    span.map(|s| s.start)
}

/// Builds the configuration from its three layers. `flags` are `(section.key, value)`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&'static str, toml::Value)>,
) -> Result<Config, ConfigError> {
    let defaults =
        toml::Value::try_from(Config::with_every_key()).map_err(|e| ConfigError::Invalid {
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
        // `SHIPPER_ELASTICSEARCH_URLS=http://a:9200,http://b:9200`
        toml::Value::Array(_) => toml::Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| toml::Value::String(p.to_owned()))
                .collect(),
        ),
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
    /// The defaults with every optional key set too: the list of keys (and their types)
    /// that environment variables may set.
    pub fn with_every_key() -> Config {
        let mut c = Config::default();
        let e = &mut c.elasticsearch;
        e.index_route = Some(String::new());
        e.username = Some(String::new());
        e.password = Some(Secret(String::new()));
        e.password_file = Some(PathBuf::new());
        e.api_key = Some(Secret(String::new()));
        e.api_key_file = Some(PathBuf::new());
        e.ca_file = Some(PathBuf::new());
        e.ilm_policy = Some(String::new());
        c.redact.hash_key_file = Some(PathBuf::new());
        c
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_input()?;
        self.validate_multiline()?;
        self.validate_rules()?;
        self.validate_fields()?;
        self.validate_redact()?;
        self.validate_elasticsearch()?;
        self.validate_index()?;
        self.validate_node()?;
        let b = &self.buffer;
        within("buffer.segment_bytes", b.segment_bytes, 4096..=(1 << 30))?;
        within(
            "buffer.min_free_percent",
            u64::from(b.min_free_percent),
            0..=90,
        )?;
        if b.max_bytes < b.segment_bytes {
            return invalid(
                "buffer.max_bytes",
                format!(
                    "{} is below buffer.segment_bytes ({})",
                    b.max_bytes, b.segment_bytes
                ),
            );
        }
        if b.max_bytes < 2 * self.elasticsearch.batch_bytes {
            return invalid(
                "buffer.max_bytes",
                format!(
                    "{} is below twice elasticsearch.batch_bytes ({}): the buffer must hold the batch being shipped and the next",
                    b.max_bytes, self.elasticsearch.batch_bytes
                ),
            );
        }
        let k = &self.kubernetes;
        if k.pending_wait_ms > 10_000 {
            return invalid(
                "kubernetes.pending_wait_ms",
                format!(
                    "{} is above 10000: reading a new file must not wait long for the API",
                    k.pending_wait_ms
                ),
            );
        }
        within(
            "kubernetes.snapshot_interval_ms",
            k.snapshot_interval_ms,
            100..=3_600_000,
        )?;
        within("kubernetes.start_jitter_ms", k.start_jitter_ms, 0..=600_000)?;
        if k.deleted_grace_ms > 86_400_000 {
            return invalid(
                "kubernetes.deleted_grace_ms",
                format!("{} is above 86400000 (a day)", k.deleted_grace_ms),
            );
        }
        if k.node_name.contains([',', '=', '!', ' ']) {
            return invalid(
                "kubernetes.node_name",
                format!("`{}` is not a node name", k.node_name),
            );
        }
        let m = &self.metrics;
        if m.addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "metrics.addr",
                format!(
                    "`{}` is not an address (host:port, e.g. 0.0.0.0:2020)",
                    m.addr
                ),
            );
        }
        within(
            "metrics.liveness_timeout_ms",
            m.liveness_timeout_ms,
            1_000..=3_600_000,
        )
    }

    fn validate_multiline(&self) -> Result<(), ConfigError> {
        let m = &self.multiline;
        if !MULTILINE_MODES.contains(&m.mode.as_str()) && !m.patterns.contains_key(&m.mode) {
            return invalid(
                "multiline.mode",
                format!(
                    "`{}` is neither a built-in mode ({}) nor a pattern under [multiline.patterns]",
                    m.mode,
                    MULTILINE_MODES.join(", ")
                ),
            );
        }
        within("multiline.gap_ms", m.gap_ms, 1..=60_000)?;
        within("multiline.max_lines", u64::from(m.max_lines), 2..=100_000)?;
        // A group is one record: it fits the record cap (and so the frame size limit).
        within(
            "multiline.max_bytes",
            m.max_bytes,
            0..=self.input.max_record_bytes,
        )?;
        for (name, p) in &m.patterns {
            let key = format!("multiline.patterns.{name}");
            if MULTILINE_MODES.contains(&name.as_str()) {
                return invalid(&key, format!("`{name}` is a built-in mode's name"));
            }
            if p.start.is_none() && p.continues.is_none() {
                return invalid(&key, "needs `start`, `continue` or both".into());
            }
            for re in p.start.iter().chain(&p.continues) {
                if let Err(e) = regex::bytes::Regex::new(re) {
                    return invalid(&key, format!("bad regular expression: {e}"));
                }
            }
        }
        Ok(())
    }

    fn validate_fields(&self) -> Result<(), ConfigError> {
        let f = &self.fields;
        self.check_parser("fields.parser", &f.parser)?;
        within("fields.max_keys", u64::from(f.max_keys), 1..=10_000)?;
        within("fields.max_depth", u64::from(f.max_depth), 1..=100)?;
        within(
            "fields.max_key_bytes",
            u64::from(f.max_key_bytes),
            1..=65_536,
        )?;
        for (name, p) in &f.patterns {
            let key = format!("fields.patterns.{name}");
            if FIELD_PARSERS.contains(&name.as_str()) {
                return invalid(&key, format!("`{name}` is a built-in parser's name"));
            }
            match regex::Regex::new(&p.regex) {
                Err(e) => return invalid(&key, format!("bad regular expression: {e}")),
                Ok(re) if re.capture_names().flatten().next().is_none() => {
                    return invalid(&key, "has no named capture group ((?P<name>...))".into())
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    fn validate_redact(&self) -> Result<(), ConfigError> {
        let r = &self.redact;
        for b in &r.builtins {
            if !REDACT_BUILTINS.contains(&b.as_str()) {
                return invalid(
                    "redact.builtins",
                    format!("`{b}`: expected some of {}", REDACT_BUILTINS.join(", ")),
                );
            }
        }
        if r.replacement == "hash" {
            if r.hash_key_file
                .as_ref()
                .is_none_or(|p| p.as_os_str().is_empty())
            {
                return invalid(
                    "redact.hash_key_file",
                    "`replacement = \"hash\"` needs a key file".into(),
                );
            }
        } else if r
            .replacement
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || b < 0x20)
        {
            return invalid(
                "redact.replacement",
                "may not hold quotes, backslashes or control characters".into(),
            );
        }
        for (name, p) in &r.patterns {
            let key = format!("redact.patterns.{name}");
            if REDACT_BUILTINS.contains(&name.as_str()) {
                return invalid(&key, format!("`{name}` is a built-in pattern's name"));
            }
            if let Err(e) = regex::bytes::Regex::new(&p.regex) {
                return invalid(&key, format!("bad regular expression: {e}"));
            }
        }
        Ok(())
    }

    fn check_parser(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if FIELD_PARSERS.contains(&name) || self.fields.patterns.contains_key(name) {
            return Ok(());
        }
        invalid(
            key,
            format!(
                "`{name}` is neither a built-in parser ({}) nor a pattern under [fields.patterns]",
                FIELD_PARSERS.join(", ")
            ),
        )
    }

    fn validate_rules(&self) -> Result<(), ConfigError> {
        for (i, r) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            let globs = [
                ("namespace", &r.namespace),
                ("pod", &r.pod),
                ("container", &r.container),
                ("path", &r.path),
                ("unit", &r.unit),
            ];
            for (k, g) in globs {
                if let Some(g) = g {
                    if let Err(e) = globset::Glob::new(g) {
                        return invalid(&key(k), format!("bad glob: {e}"));
                    }
                }
            }
            for (section, labels) in [
                ("labels", &r.labels),
                ("namespace_labels", &r.namespace_labels),
            ] {
                for (label, g) in labels {
                    if let Err(e) = globset::Glob::new(g) {
                        return invalid(
                            &key(&format!("{section}.{label}")),
                            format!("bad glob: {e}"),
                        );
                    }
                }
            }
            if let Some(src) = &r.source {
                if !RULE_SOURCES.contains(&src.as_str()) {
                    return invalid(
                        &key("source"),
                        format!("`{src}`: expected one of {}", RULE_SOURCES.join(", ")),
                    );
                }
            }
            if let Some(p) = &r.parser {
                for name in p.names().into_iter().flatten() {
                    self.check_parser(&key("parser"), name)?;
                }
            }
            if let Some(l) = &r.rate_limit {
                if l.bytes_per_sec.is_none() && l.records_per_sec.is_none() {
                    return invalid(
                        &key("rate_limit"),
                        "set bytes_per_sec, records_per_sec or both".into(),
                    );
                }
                if l.bytes_per_sec == Some(0) || l.records_per_sec == Some(0) {
                    return invalid(&key("rate_limit"), "a rate of 0 would never read".into());
                }
                let rates = [l.bytes_per_sec, l.records_per_sec];
                if rates
                    .iter()
                    .flatten()
                    .any(|&r| (r as f64) * l.burst_secs < 1.0)
                {
                    return invalid(
                        &key("rate_limit.burst_secs"),
                        "a burst must hold at least one record and one byte (rate × burst_secs ≥ 1)".into(),
                    );
                }
                if !(0.1..=3600.0).contains(&l.burst_secs) {
                    return invalid(
                        &key("rate_limit.burst_secs"),
                        format!("{} is outside 0.1..=3600", l.burst_secs),
                    );
                }
            }
            if r.field.is_some() && r.drop.is_none() && r.keep.is_none() {
                return invalid(&key("field"), "`field` goes with `drop` or `keep`".into());
            }
            if r.drop.is_some() && r.keep.is_some() {
                return invalid(&key("keep"), "a rule has `drop` or `keep`, not both".into());
            }
            for (k, re) in [("drop", &r.drop), ("keep", &r.keep)] {
                if let Some(Err(e)) = re.as_deref().map(regex::bytes::Regex::new) {
                    return invalid(&key(k), format!("bad regular expression: {e}"));
                }
            }
            if let Some(m) = &r.multiline {
                if !MULTILINE_MODES.contains(&m.as_str())
                    && !self.multiline.patterns.contains_key(m)
                {
                    return invalid(
                        &key("multiline"),
                        format!("`{m}` is neither a built-in mode nor a pattern under [multiline.patterns]"),
                    );
                }
            }
        }
        Ok(())
    }

    fn validate_input(&self) -> Result<(), ConfigError> {
        let i = &self.input;
        within(
            "input.max_record_bytes",
            i.max_record_bytes,
            1024..=MAX_RECORD_BYTES_LIMIT,
        )?;
        within("input.read_bytes", i.read_bytes, 4096..=(64 << 20))?;
        if i.turn_budget_bytes < 4096 {
            return invalid(
                "input.turn_budget_bytes",
                format!("{} is below 4096", i.turn_budget_bytes),
            );
        }
        within(
            "input.rescan_interval_ms",
            i.rescan_interval_ms,
            10..=600_000,
        )?;
        if i.drain_grace_ms > 3_600_000 {
            return invalid(
                "input.drain_grace_ms",
                format!("{} is above 3600000", i.drain_grace_ms),
            );
        }
        Ok(())
    }

    fn validate_elasticsearch(&self) -> Result<(), ConfigError> {
        let e = &self.elasticsearch;
        if e.urls.is_empty() {
            return invalid(
                "elasticsearch.urls",
                String::from("at least one URL is needed"),
            );
        }
        for u in &e.urls {
            match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return invalid(
                        "elasticsearch.urls",
                        format!("`{}` is not an http(s) URL", redact_url(u)),
                    )
                }
            }
        }
        within(
            "elasticsearch.batch_bytes",
            e.batch_bytes,
            1024..=MAX_BATCH_BYTES,
        )?;
        if e.batch_docs == 0 {
            return invalid(
                "elasticsearch.batch_docs",
                String::from("must be at least 1"),
            );
        }
        within("elasticsearch.max_concurrency", e.max_concurrency, 1..=256)?;
        within(
            "elasticsearch.template_check_interval_ms",
            e.template_check_interval_ms,
            100..=86_400_000,
        )?;
        if e.request_timeout_ms < 100 {
            return invalid(
                "elasticsearch.request_timeout_ms",
                format!("{} is below 100", e.request_timeout_ms),
            );
        }
        if e.password.is_some() && e.password_file.is_some() {
            return invalid(
                "elasticsearch.password",
                String::from("set password or password_file, not both"),
            );
        }
        if e.api_key.is_some() && e.api_key_file.is_some() {
            return invalid(
                "elasticsearch.api_key",
                String::from("set api_key or api_key_file, not both"),
            );
        }
        Ok(())
    }

    fn validate_node(&self) -> Result<(), ConfigError> {
        let n = &self.node;
        within("node.journal_poll_ms", n.journal_poll_ms, 10..=60_000)?;
        if n.any() {
            if let Err(why) = crate::index::check_name(&n.index_prefix) {
                return invalid("node.index_prefix", format!("is not a valid name: {why}"));
            }
        }
        for (i, f) in n.files.iter().enumerate() {
            let key = format!("node.files[{i}]");
            let path = std::path::Path::new(f);
            if !path.is_absolute() {
                return invalid(&key, format!("`{f}` is not an absolute path"));
            }
            let dir = path
                .parent()
                .map(|d| d.to_string_lossy())
                .unwrap_or_default();
            if dir.contains(['*', '?', '[', '{']) {
                return invalid(
                    &key,
                    format!("`{f}`: only the file name may hold a glob, not the directory"),
                );
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            if let Err(e) = globset::Glob::new(&name) {
                return invalid(&key, format!("bad glob: {e}"));
            }
        }
        Ok(())
    }

    fn validate_index(&self) -> Result<(), ConfigError> {
        let es = &self.elasticsearch;
        if let Err(why) = crate::index::check_name(&es.index_prefix) {
            let what = if es.data_stream {
                "is not a valid data stream name"
            } else {
                "is not a valid index name prefix"
            };
            return invalid("elasticsearch.index_prefix", format!("{what}: {why}"));
        }
        if es
            .ilm_policy
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return invalid(
                "elasticsearch.ilm_policy",
                "is empty; leave it out for no policy".into(),
            );
        }
        if es
            .number_of_shards
            .is_some_and(|n| !(1..=1024).contains(&n))
        {
            return invalid(
                "elasticsearch.number_of_shards",
                "must be between 1 and 1024 (Elasticsearch's limit)".into(),
            );
        }
        if es.number_of_replicas.is_some_and(|n| n > 16) {
            return invalid(
                "elasticsearch.number_of_replicas",
                "must be at most 16".into(),
            );
        }
        if let Some(t) = &es.index_route {
            if let Err(why) = crate::index::route::Template::parse(t) {
                return invalid("elasticsearch.index_route", why);
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if let Some(Err(why)) = r.index.as_deref().map(crate::index::check_name) {
                return invalid(&format!("rules[{i}].index"), why);
            }
        }
        match crate::index::DateFormat::parse(&es.index_date_format) {
            Err(why) => invalid("elasticsearch.index_date_format", why),
            // Elasticsearch refuses index names over 255 bytes; a prefix has up to
            // MAX_PREFIX_BYTES.
            Ok(f) if !es.data_stream && 1 + f.rendered_len() > 255 - MAX_PREFIX_BYTES => {
                invalid(
                    "elasticsearch.index_date_format",
                    format!(
                        "`{}` renders {} bytes; at most {} leave room for the prefix in an index name's 255",
                        es.index_date_format,
                        f.rendered_len(),
                        254 - MAX_PREFIX_BYTES
                    ),
                )
            }
            Ok(_) => Ok(()),
        }
    }

    /// The index patterns every route can produce (the default prefix, the route
    /// template's and the rules' names), deduplicated: what the index template covers
    /// and what a pod's annotation may choose from.
    pub fn index_patterns(&self) -> Vec<String> {
        use crate::index::route::{pattern, Template};
        let es = &self.elasticsearch;
        let dated = !es.data_stream;
        let mut out = vec![pattern(&es.index_prefix, dated)];
        if self.node.any() {
            out.push(pattern(&self.node.index_prefix, dated));
        }
        if let Some(Ok(t)) = es.index_route.as_deref().map(Template::parse) {
            let p = t.pattern();
            out.push(if p.ends_with('*') {
                p
            } else {
                pattern(&p, dated)
            });
        }
        out.extend(
            self.rules
                .iter()
                .filter_map(|r| r.index.as_deref())
                .map(|n| pattern(n, dated)),
        );
        out.sort();
        out.dedup();
        out
    }

    /// [`Config::index_patterns`], and a pattern for each of `names` (routes files
    /// still hold) that none of them covers.
    pub fn index_patterns_with(&self, names: impl IntoIterator<Item = String>) -> Vec<String> {
        use crate::index::route::{covered, pattern};
        let dated = !self.elasticsearch.data_stream;
        let mut out = self.index_patterns();
        for n in names {
            if !covered(&n, &out, dated) {
                out.push(pattern(&n, dated));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

const MAX_PREFIX_BYTES: usize = crate::index::route::MAX_PREFIX_BYTES;

pub(crate) fn invalid(key: &str, reason: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        reason,
    })
}

/// `key`'s value must lie in `range`.
fn within(key: &str, v: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&v) {
        return Ok(());
    }
    invalid(
        key,
        format!("{v} is outside {}..={}", range.start(), range.end()),
    )
}

/// A URL as it may be printed: any `user:password@` removed.
pub fn redact_url(u: &str) -> String {
    match reqwest::Url::parse(u) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => String::from("(unparseable URL)"),
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
    fn optional_keys_arrays_and_secrets() {
        let c = load(
            None,
            env(&[
                (
                    "SHIPPER_ELASTICSEARCH_URLS",
                    "http://a:9200, https://b:9200",
                ),
                ("SHIPPER_ELASTICSEARCH_USERNAME", "elastic"),
                ("SHIPPER_ELASTICSEARCH_PASSWORD", "hunter2"),
                ("SHIPPER_BUFFER_FSYNC", "never"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(c.elasticsearch.urls, ["http://a:9200", "https://b:9200"]);
        assert_eq!(c.elasticsearch.username.as_deref(), Some("elastic"));
        assert_eq!(c.buffer.fsync, crate::buffer::Fsync::Never);
        assert!(!format!("{c:?}").contains("hunter2"), "secrets never print");
        let e = load(None, env(&[("SHIPPER_BUFFER_FSYNC", "sometimes")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("buffer.fsync"), "{e}");
        let e = load(
            None,
            env(&[("SHIPPER_ELASTICSEARCH_URLS", "ftp://x")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("elasticsearch.urls"), "{e}");
        assert_eq!(redact_url("https://u:p@es:9200/"), "https://es:9200/");
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
            env(&[("SHIPPER_ELASTICSEARCH_INDEX_DATE_FORMAT", "%Y-%m-%d %H:%M")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("elasticsearch.index_date_format"), "{e}");
        let ok = load(
            None,
            env(&[
                ("SHIPPER_ELASTICSEARCH_DATA_STREAM", "true"),
                ("SHIPPER_ELASTICSEARCH_INDEX_PREFIX", "logs-k8s-default"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(
            ok.elasticsearch.target(),
            crate::index::Target::Fixed("logs-k8s-default".into())
        );
        let e = load(
            None,
            env(&[("SHIPPER_INPUT_MAX_RECORD_BYTES", "10")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("input.max_record_bytes"), "{e}");
        let e = load(
            None,
            env(&[
                ("SHIPPER_BUFFER_MAX_BYTES", "16777216"),
                ("SHIPPER_BUFFER_SEGMENT_BYTES", "4096"),
                ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "10000000"),
            ]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("twice elasticsearch.batch_bytes"), "{e}");
        let e = load(
            None,
            env(&[("SHIPPER_BUFFER_MIN_FREE_PERCENT", "95")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("buffer.min_free_percent"), "{e}");
    }

    #[test]
    fn metrics_section() {
        let c = load(
            None,
            env(&[
                ("SHIPPER_METRICS_ENABLED", "false"),
                ("SHIPPER_METRICS_ADDR", "127.0.0.1:0"),
                ("SHIPPER_TEST_WEDGE", "reader"),
            ]),
            vec![],
        )
        .unwrap();
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.addr, "127.0.0.1:0");
        for (var, value, key) in [
            ("SHIPPER_METRICS_ADDR", "localhost", "metrics.addr"),
            (
                "SHIPPER_METRICS_LIVENESS_TIMEOUT_MS",
                "10",
                "metrics.liveness_timeout_ms",
            ),
        ] {
            let e = load(None, env(&[(var, value)]), vec![])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
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
    fn index_patterns_cover_every_route_files_still_hold() {
        let mut c = Config::default();
        c.elasticsearch.index_route = Some("logs-{namespace}".into());
        assert_eq!(c.index_patterns(), ["logs-*", "logstash-*", "node-*"]);
        let held = ["logs-shop", "logstash", "gone"].map(String::from);
        assert_eq!(
            c.index_patterns_with(held),
            ["gone-*", "logs-*", "logstash-*", "node-*"]
        );
        c.node.files.clear();
        c.node.journal = false;
        assert_eq!(c.index_patterns(), ["logs-*", "logstash-*"], "no node logs");
    }
}
