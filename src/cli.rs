//! Command-line flags. Parsing here does no I/O: flags become `(section.key, value)`
//! overrides for [`crate::config::load`] plus the run mode.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Ships Kubernetes container logs to Elasticsearch with nothing lost.
///
/// Settings come from a TOML file (--config), then SHIPPER_<SECTION>_<KEY> environment
/// variables (e.g. SHIPPER_INPUT_DOCKER_ROOT), then these flags.
#[derive(Debug, Parser)]
#[command(name = "shipper", version, about, long_about)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Without a subcommand, `shipper` runs the agent (or --dry-run).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file (also SHIPPER_CONFIG).
    #[arg(long, value_name = "FILE", env = "SHIPPER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Docker json-file log root [input.docker_root; default /var/lib/docker/containers].
    #[arg(long, value_name = "DIR")]
    pub docker_root: Option<PathBuf>,

    /// CRI pod log root [input.pods_root; default /var/log/pods].
    #[arg(long, value_name = "DIR")]
    pub pods_root: Option<PathBuf>,

    /// Where the node's filesystem is seen: its host files and journal are read under
    /// it (a directory of samples, for a dry-run) [node.root; default /].
    #[arg(long, value_name = "DIR")]
    pub node_root: Option<PathBuf>,

    /// Read no host file and no journal, only container logs [node.files = [], node.journal
    /// = false].
    #[arg(long)]
    pub no_node_logs: bool,

    /// Directory for checkpoints and the buffer [agent.data_dir; default /var/lib/shipper].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Index prefix: documents go to <PREFIX>-YYYY.MM.DD [elasticsearch.index_prefix;
    /// default logstash].
    #[arg(long, value_name = "PREFIX")]
    pub index_prefix: Option<String>,

    /// Largest message per record; longer ones are cut and flagged
    /// [input.max_record_bytes; default 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_record_bytes: Option<u64>,

    /// Elasticsearch URL; repeat for several endpoints [elasticsearch.urls; default
    /// http://elasticsearch:9200]. Credentials belong in SHIPPER_ELASTICSEARCH_PASSWORD
    /// or a password file, not here.
    #[arg(long = "es-url", value_name = "URL")]
    pub es_urls: Vec<String>,

    /// PEM file of CA certificates to trust for Elasticsearch [elasticsearch.ca_file].
    #[arg(long, value_name = "FILE")]
    pub es_ca_file: Option<PathBuf>,

    /// Do not verify Elasticsearch's TLS certificate (dangerous)
    /// [elasticsearch.tls_skip_verify].
    #[arg(long)]
    pub es_tls_skip_verify: bool,

    /// Print the Elasticsearch bulk body (NDJSON) for every log file to stdout instead of
    /// sending it, then a one-line summary on stderr. Reads from the beginning of every
    /// file, writes no checkpoint, opens no listener.
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: keep following the files (and new ones) instead of exiting at the
    /// end.
    #[arg(long, requires = "dry_run")]
    pub follow: bool,

    /// With --dry-run: print, for every file, the settings its rules and annotations
    /// decided and which rule or annotation decided each (on stderr).
    #[arg(long, requires = "dry_run")]
    pub explain: bool,

    /// With --dry-run: pod metadata from a file of `kubectl get pods -A -o json` output.
    #[arg(
        long,
        value_name = "FILE",
        requires = "dry_run",
        conflicts_with = "kubeconfig"
    )]
    pub pods: Option<PathBuf>,

    /// Kubeconfig for the Kubernetes API (pod and namespace metadata)
    /// [kubernetes.kubeconfig; default: in-cluster service account, then KUBECONFIG].
    /// --dry-run talks to an API only when this is given.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// No Kubernetes API: metadata from log paths and Docker's config.v2.json only
    /// [kubernetes.enabled=false].
    #[arg(long, conflicts_with_all = ["kubeconfig", "pods"])]
    pub no_kubernetes: bool,

    /// Log level of the agent's own logs (error, warn, info, debug, trace); RUST_LOG
    /// filters override it.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Format of the agent's own logs on stderr [default: json when stderr is not a
    /// terminal (in a container), text on a terminal and for --dry-run] (also
    /// SHIPPER_LOG_FORMAT).
    #[arg(long, value_enum, value_name = "FORMAT", env = "SHIPPER_LOG_FORMAT")]
    pub log_format: Option<crate::logging::Format>,

    /// Address of the /metrics, /healthz and /readyz listener [metrics.addr; default
    /// 0.0.0.0:2020]; port 0 picks a free port, logged as `metrics listening addr=...`.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// No /metrics, /healthz or /readyz listener [metrics.enabled=false].
    #[arg(long, conflicts_with = "metrics_addr")]
    pub no_metrics: bool,
}

/// Tools beside the agent.
#[derive(Debug, Subcommand)]
pub enum Command {
    Manifests(crate::manifests::Options),
    Retention(crate::retention::Options),
    Sizing(crate::sizing::Options),
    /// Check a configuration file offline (for a ConfigMap in CI): prints where the
    /// first error is (file:line:column) and exits 1, or exits 0.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

impl Args {
    /// The flags that override configuration keys.
    pub fn overrides(&self) -> Vec<(&'static str, toml::Value)> {
        let path = |p: &PathBuf| toml::Value::String(p.to_string_lossy().into_owned());
        let mut out = Vec::new();
        if let Some(p) = &self.docker_root {
            out.push(("input.docker_root", path(p)));
        }
        if let Some(p) = &self.pods_root {
            out.push(("input.pods_root", path(p)));
        }
        if let Some(p) = &self.node_root {
            out.push(("node.root", path(p)));
        }
        if self.no_node_logs {
            out.push(("node.files", toml::Value::Array(Vec::new())));
            out.push(("node.journal", toml::Value::Boolean(false)));
        }
        if let Some(p) = &self.data_dir {
            out.push(("agent.data_dir", path(p)));
        }
        if let Some(p) = &self.index_prefix {
            out.push(("elasticsearch.index_prefix", toml::Value::String(p.clone())));
        }
        if !self.es_urls.is_empty() {
            let urls = self
                .es_urls
                .iter()
                .map(|u| toml::Value::String(u.clone()))
                .collect();
            out.push(("elasticsearch.urls", toml::Value::Array(urls)));
        }
        if let Some(p) = &self.es_ca_file {
            out.push(("elasticsearch.ca_file", path(p)));
        }
        if self.es_tls_skip_verify {
            out.push(("elasticsearch.tls_skip_verify", toml::Value::Boolean(true)));
        }
        if let Some(p) = &self.kubeconfig {
            out.push(("kubernetes.kubeconfig", path(p)));
        }
        if self.no_kubernetes {
            out.push(("kubernetes.enabled", toml::Value::Boolean(false)));
        }
        if let Some(a) = &self.metrics_addr {
            out.push(("metrics.addr", toml::Value::String(a.clone())));
        }
        if self.no_metrics {
            out.push(("metrics.enabled", toml::Value::Boolean(false)));
        }
        if let Some(n) = self.max_record_bytes {
            out.push((
                "input.max_record_bytes",
                toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_and_document_themselves() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "shipper",
            "--dry-run",
            "--docker-root",
            "/d",
            "--pods",
            "p.json",
        ])
        .unwrap();
        assert!(a.dry_run);
        assert_eq!(a.overrides()[0].0, "input.docker_root");
        assert!(
            Args::try_parse_from(["shipper", "--follow"]).is_err(),
            "--follow needs --dry-run"
        );
        assert!(Args::try_parse_from(["shipper", "--no-kubernetes", "--kubeconfig", "k"]).is_err());
        let a = Args::try_parse_from(["shipper", "--no-kubernetes"]).unwrap();
        assert_eq!(
            a.overrides(),
            [("kubernetes.enabled", toml::Value::Boolean(false))]
        );
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--docker-root",
            "--pods-root",
            "--node-root",
            "--no-node-logs",
            "--data-dir",
            "--dry-run",
            "--pods",
            "--follow",
            "--config",
            "--kubeconfig",
            "--no-kubernetes",
            "--metrics-addr",
            "--no-metrics",
            "--log-format",
        ] {
            assert!(help.contains(flag), "{flag} undocumented");
        }
    }
}
