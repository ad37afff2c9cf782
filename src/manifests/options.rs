//! `shipper manifests` flags, and their validation into a [`Plan`]: every check happens
//! here, once, so the component builders only assemble objects.

use super::ManifestError;
use crate::config::DEFAULT_INDEX_PREFIX;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// The namespace of the reference setup users come from.
pub const DEFAULT_NAMESPACE: &str = "kube-log";
/// The Elasticsearch and Kibana release deployed unless `--es-version` says otherwise: the
/// last 8.x minor, pinned to one patch release so the output is reproducible. Settings go
/// through `elasticsearch.yml`, not dotted environment variables, which the Ubuntu 24.04
/// based images of 8.17 and later silently drop (elastic/elasticsearch#142676).
pub const DEFAULT_ES_VERSION: &str = "8.19.13";
/// Three master-eligible nodes: the smallest cluster that survives losing one.
pub const DEFAULT_ES_REPLICAS: u16 = 3;
/// JVM heap per node; the container's memory is twice this (Lucene uses the page cache).
pub const DEFAULT_ES_HEAP: &str = "1g";
/// Volume per Elasticsearch node; with the default 7-day retention this holds roughly
/// 1.5 GB of logs a day per node after replication and overhead.
pub const DEFAULT_ES_STORAGE: &str = "30Gi";
/// Daily indices are deleted after this many days (0 = no retention CronJob).
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// The image `docker build -t shipper:<version> .` produces from this repository.
pub const DEFAULT_AGENT_IMAGE: &str = concat!("shipper:", env!("CARGO_PKG_VERSION"));

/// Print the Kubernetes manifests of the whole EFK stack (Elasticsearch StatefulSet,
/// Kibana, the shipper DaemonSet, index retention) as multi-document YAML.
///
/// `shipper manifests | kubectl apply -f -` deploys it; `--output-dir DIR` writes one file
/// per component plus a kustomization.yaml instead (`kubectl apply -k DIR`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Namespace of every namespaced object.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Elasticsearch and Kibana version (both always the same): an exact 7.x or 8.x release.
    #[arg(long, value_name = "X.Y.Z", default_value = DEFAULT_ES_VERSION)]
    pub es_version: String,

    /// Elasticsearch nodes (all master-eligible data nodes; 1 = single-node discovery).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ES_REPLICAS)]
    pub es_replicas: u16,

    /// JVM heap per Elasticsearch node, e.g. 512m or 2g; the memory limit is twice this.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_ES_HEAP)]
    pub es_heap: String,

    /// Volume size per Elasticsearch node (a Kubernetes quantity, e.g. 30Gi).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_ES_STORAGE)]
    pub es_storage_size: String,

    /// Size Elasticsearch for this many Kubernetes nodes (with --gb-per-day and
    /// --retention-days), as `shipper sizing` prints: the nodes, heap, volumes, the
    /// agent's CPU request, and the template's shards and replicas.
    #[arg(
        long,
        value_name = "N",
        requires = "gb_per_day",
        conflicts_with_all = ["es_replicas", "es_heap", "es_storage_size", "es_url"]
    )]
    pub nodes: Option<u32>,

    /// Raw logs of all nodes together, in GB a day (with --nodes).
    #[arg(long, value_name = "GB", requires = "nodes")]
    pub gb_per_day: Option<f64>,

    /// Routed index prefixes the container logs spread over, evenly (with --nodes).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "nodes")]
    pub prefixes: u32,

    /// StorageClass of the Elasticsearch volumes (default: the cluster's default class).
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,

    /// Use an existing Elasticsearch at URL: no Elasticsearch or Kibana is generated, the
    /// agent and the retention job point there.
    #[arg(long, value_name = "URL", conflicts_with = "es_security")]
    pub es_url: Option<String>,

    /// Type of the Kibana Service.
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = ServiceType::ClusterIP)]
    pub kibana_service_type: ServiceType,

    /// Pull every image from this registry instead (air-gapped clusters), keeping the
    /// repository path: docker.elastic.co/kibana/kibana:8.19.13 becomes
    /// REGISTRY/kibana/kibana:8.19.13. Also applies to --agent-image.
    #[arg(long, value_name = "REGISTRY")]
    pub image_registry: Option<String>,

    /// Image of the agent (built from this repository's Dockerfile).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,

    /// 8.x only: TLS on HTTP and transport, and a Secret of generated credentials (the
    /// `elastic` user, Kibana's `kibana_system`, and a `shipper` user that may only write
    /// and delete the log indices). The output then holds private keys and passwords:
    /// generate it once and keep it like any other Secret.
    #[arg(long)]
    pub es_security: bool,

    /// Container runtime of the nodes: which host log directories the agent mounts.
    #[arg(long, value_enum, value_name = "RUNTIME", default_value_t = Runtime::Both)]
    pub runtime: Runtime,

    /// Delete daily indices older than this many days, every night (0: no retention job).
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_RETENTION_DAYS)]
    pub retention_days: u32,

    /// Index prefix of the daily indices (<PREFIX>-YYYY.MM.DD): the agent's
    /// elasticsearch.index_prefix, the retention job's and the Kibana data view's.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_INDEX_PREFIX)]
    pub index_prefix: String,

    /// Route template for the index prefix, e.g. `logs-{namespace}` (the agent's
    /// elasticsearch.index_route): the retention job, the shipper's role and the Kibana
    /// data view cover its indices too.
    #[arg(long, value_name = "TEMPLATE")]
    pub index_route: Option<String>,

    /// Leave out the privileged init container that raises vm.max_map_count to 262144
    /// (for nodes already configured so, or clusters that forbid privileged pods).
    #[arg(long)]
    pub no_sysctl_init: bool,

    /// Add an init container that chowns the Elasticsearch data volume to uid 1000, for
    /// volumes where fsGroup has no effect (NFS and other volumes without ownership
    /// management).
    #[arg(long)]
    pub es_chown_init: bool,

    /// Write one file per component and a kustomization.yaml into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// `parse_from` needs a parser; `shipper manifests` itself is a subcommand of the CLI.
#[derive(Parser)]
#[command(name = "manifests")]
struct Standalone {
    #[command(flatten)]
    options: Options,
}

impl Options {
    /// Parses flags as `shipper manifests` would (the first item is the program name).
    pub fn parse_from<I, T>(args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Standalone::try_parse_from(args).map(|s| s.options)
    }
}

impl Default for Options {
    fn default() -> Options {
        // The flags' own defaults: an empty command line cannot fail to parse.
        Options::parse_from(["manifests"]).expect("defaults parse")
    }
}

/// Kubernetes Service types Kibana may be exposed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceType {
    /// Reachable inside the cluster and through `kubectl port-forward` only (Kibana has
    /// no login without --es-security, so this is the safe default).
    #[value(name = "ClusterIP")]
    ClusterIP,
    /// Also on a port of every node.
    #[value(name = "NodePort")]
    NodePort,
    /// Through the cloud's load balancer.
    #[value(name = "LoadBalancer")]
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Which runtime's log files the nodes have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// Docker json-file logs (dockershim, cri-dockerd): the Docker root and the
    /// /var/log/pods symlinks into it.
    Docker,
    /// CRI logs (containerd, CRI-O): /var/log/pods.
    Containerd,
    /// Both, for clusters with mixed or unknown nodes.
    Both,
}

impl Runtime {
    pub fn docker(self) -> bool {
        matches!(self, Runtime::Docker | Runtime::Both)
    }
}

/// An Elasticsearch release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let num = |p: &str| {
            if !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u16>().ok()
            } else {
                None
            }
        };
        match parts.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(major), Some(minor), Some(patch)) => Ok(Version {
                    major,
                    minor,
                    patch,
                }),
                _ => Err(format!("`{s}` is not a version like 8.19.13")),
            },
            _ => Err(format!(
                "`{s}` is not an exact release like 8.19.13 (images are pinned, never `latest`)"
            )),
        }
    }
}

/// Where the agent and the retention job send data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The Elasticsearch and Kibana generated here.
    InCluster { version: Version, secure: bool },
    /// An Elasticsearch that exists already, at this URL.
    Existing { url: String },
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct Plan {
    pub namespace: String,
    pub target: Target,
    pub es_replicas: u16,
    /// Heap in MiB.
    pub es_heap_mib: u32,
    pub es_storage_size: String,
    pub storage_class: Option<String>,
    pub kibana_service_type: ServiceType,
    pub registry: Option<String>,
    pub agent_image: String,
    pub runtime: Runtime,
    pub retention_days: u32,
    pub index_prefix: String,
    pub index_route: Option<String>,
    /// Every index pattern the agent writes to (see
    /// [`crate::config::Config::index_patterns`]).
    pub index_patterns: Vec<String>,
    pub sysctl_init: bool,
    pub chown_init: bool,
    /// `--nodes` and `--gb-per-day`: the sizing the numbers above come from.
    pub sizing: Option<crate::sizing::Sizing>,
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        option,
        reason: reason.into(),
    }
}

/// A DNS-1123 label: what namespaces and object names must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `512m`, `1g`, `2G` → MiB.
fn parse_heap(s: &str) -> Option<u32> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u32 = num.parse().ok()?;
    match unit {
        "m" | "M" => Some(n),
        "g" | "G" => n.checked_mul(1024),
        _ => None,
    }
}

/// A Kubernetes quantity as used for storage: digits and an optional binary or decimal
/// suffix.
fn is_storage_quantity(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && s[..digits].bytes().any(|b| b != b'0')
        && matches!(
            &s[digits..],
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "k" | "M" | "G" | "T" | "P"
        )
}

/// An image reference we are willing to template: no whitespace, quotes or shell
/// metacharacters (it ends up in YAML and nowhere else, but a typo should fail here).
fn is_image_ref(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':' | b'@')
        })
}

impl Options {
    /// Where Elasticsearch is: a URL given, or the in-cluster StatefulSet of a version.
    fn target(&self) -> Result<Target, ManifestError> {
        Ok(match &self.es_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.chars().any(|c| c.is_whitespace() || c == '"')
                {
                    return Err(invalid(
                        "--es-url",
                        format!("`{url}` is not an http:// or https:// URL"),
                    ));
                }
                Target::Existing {
                    url: url.trim_end_matches('/').to_owned(),
                }
            }
            None => {
                let version: Version = self
                    .es_version
                    .parse()
                    .map_err(|e| invalid("--es-version", e))?;
                if !(7..=8).contains(&version.major) {
                    return Err(invalid(
                        "--es-version",
                        format!("{version}: only 7.x and 8.x are supported"),
                    ));
                }
                if self.es_security && version.major < 8 {
                    return Err(invalid(
                        "--es-security",
                        format!(
                            "needs Elasticsearch 8.x (got {version}); on 7.x configure \
                             security yourself and use --es-url"
                        ),
                    ));
                }
                Target::InCluster {
                    version,
                    secure: self.es_security,
                }
            }
        })
    }

    /// The StorageClass and image registry flags, checked; the registry without a
    /// trailing `/`.
    fn storage_and_registry(&self) -> Result<Option<String>, ManifestError> {
        if let Some(sc) = &self.storage_class {
            let ok = !sc.is_empty()
                && sc.len() <= 253
                && sc.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(invalid(
                    "--storage-class",
                    format!("`{sc}` is not a StorageClass name"),
                ));
            }
        }
        Ok(match &self.image_registry {
            Some(r) => {
                let r = r.trim_end_matches('/');
                if !is_image_ref(r) || r.contains('@') || r.starts_with('/') {
                    return Err(invalid(
                        "--image-registry",
                        format!("`{r}` is not a registry like registry.local:5000/mirror"),
                    ));
                }
                Some(r.to_owned())
            }
            None => None,
        })
    }

    /// Checks every flag and derives the plan.
    pub fn plan(&self) -> Result<Plan, ManifestError> {
        if !is_dns_label(&self.namespace) {
            return Err(invalid(
                "--namespace",
                format!("`{}` is not a DNS label (a-z, 0-9, -)", self.namespace),
            ));
        }
        let target = self.target()?;
        if self.es_replicas == 0 {
            return Err(invalid("--es-replicas", "must be at least 1"));
        }
        let es_heap_mib = parse_heap(&self.es_heap)
            .filter(|m| (256..=31 * 1024).contains(m))
            .ok_or_else(|| {
                invalid(
                    "--es-heap",
                    format!(
                        "`{}` is not a heap size between 256m and 31g (like 512m or 2g; above \
                         31g the JVM loses compressed pointers)",
                        self.es_heap
                    ),
                )
            })?;
        if !is_storage_quantity(&self.es_storage_size) {
            return Err(invalid(
                "--es-storage-size",
                format!(
                    "`{}` is not a storage quantity like 30Gi",
                    self.es_storage_size
                ),
            ));
        }
        let registry = self.storage_and_registry()?;
        let sizing = match (self.nodes, self.gb_per_day) {
            (Some(nodes), Some(gb_per_day)) => {
                let volume = crate::sizing::Volume {
                    nodes,
                    gb_per_day,
                    prefixes: self.prefixes,
                };
                if self.retention_days == 0 {
                    return Err(invalid(
                        "--retention-days",
                        "must be above 0 with --nodes: the plan sizes the disk for the days kept",
                    ));
                }
                Some(
                    crate::sizing::plan(&volume, self.retention_days)
                        .map_err(|e| invalid(e.option, e.reason))?,
                )
            }
            _ => None,
        };
        let (es_replicas, es_heap_mib, es_storage_size) = match &sizing {
            Some(s) => (
                u16::try_from(s.data_nodes).map_err(|_| {
                    invalid(
                        "--nodes",
                        "sizes a cluster beyond 65535 Elasticsearch nodes",
                    )
                })?,
                s.heap_gib * 1024,
                format!("{}Gi", s.disk_gib),
            ),
            None => (self.es_replicas, es_heap_mib, self.es_storage_size.clone()),
        };
        if !is_image_ref(&self.agent_image) {
            return Err(invalid(
                "--agent-image",
                format!("`{}` is not an image reference", self.agent_image),
            ));
        }
        // The same rule the agent applies to its own config.
        let mut cfg = crate::config::Config::default();
        cfg.elasticsearch.index_prefix = self.index_prefix.clone();
        cfg.validate()
            .map_err(|e| invalid("--index-prefix", e.to_string()))?;
        cfg.elasticsearch.index_route.clone_from(&self.index_route);
        cfg.validate()
            .map_err(|e| invalid("--index-route", e.to_string()))?;
        Ok(Plan {
            namespace: self.namespace.clone(),
            target,
            es_replicas,
            es_heap_mib,
            es_storage_size,
            storage_class: self.storage_class.clone(),
            kibana_service_type: self.kibana_service_type,
            registry,
            agent_image: self.agent_image.clone(),
            runtime: self.runtime,
            retention_days: self.retention_days,
            index_prefix: self.index_prefix.clone(),
            index_route: self.index_route.clone(),
            index_patterns: cfg.index_patterns(),
            sysctl_init: !self.no_sysctl_init,
            chown_init: self.es_chown_init,
            sizing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            "7.6.2".parse::<Version>().unwrap(),
            Version {
                major: 7,
                minor: 6,
                patch: 2
            }
        );
        for bad in ["8", "8.19", "latest", "8.19.x", "v8.1.0", "8.1.0.1", ""] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert!(DEFAULT_ES_VERSION.parse::<Version>().unwrap().major == 8);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_heap("512m"), Some(512));
        assert_eq!(parse_heap("2g"), Some(2048));
        assert_eq!(parse_heap("2"), None);
        assert_eq!(parse_heap(""), None);
        assert!(is_storage_quantity("30Gi") && is_storage_quantity("100G"));
        assert!(!is_storage_quantity("0Gi") && !is_storage_quantity("Gi"));
        assert!(!is_storage_quantity("30 Gi") && !is_storage_quantity("30GB"));
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut all = vec!["manifests"];
        all.extend_from_slice(args);
        Options::parse_from(all)
            .map_err(|e| e.to_string())?
            .plan()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn validation_names_the_flag() {
        assert!(plan(&[]).is_ok());
        for (args, flag) in [
            (&["--namespace", "Kube_Log"][..], "--namespace"),
            (&["--es-version", "6.8.0"], "--es-version"),
            (&["--es-version", "latest"], "--es-version"),
            (&["--es-version", "7.6.2", "--es-security"], "--es-security"),
            (&["--es-heap", "100m"], "--es-heap"),
            (&["--es-heap", "64g"], "--es-heap"),
            (&["--es-storage-size", "lots"], "--es-storage-size"),
            (&["--es-replicas", "0"], "--es-replicas"),
            (&["--es-url", "elasticsearch:9200"], "--es-url"),
            (&["--image-registry", "a b"], "--image-registry"),
            (&["--index-prefix", "Logs"], "--index-prefix"),
            (&["--storage-class", "NFS"], "--storage-class"),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        let e = plan(&["--es-url", "http://es:9200", "--es-security"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }
}
