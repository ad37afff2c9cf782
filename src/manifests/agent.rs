//! The agent: its Namespace, RBAC and PriorityClass, its ConfigMap (the crate's own
//! [`Config`] serialized to TOML, so the deployed config cannot drift from what the agent
//! parses), and the DaemonSet.

use super::common::{self, env_field, labels, meta, mount, selector};
use super::security::{self, Security};
use super::{doc, es_url, Document, ManifestError, Plan, METRICS_PORT};
use crate::config::{Config, DEFAULT_SHUTDOWN_DEADLINE_MS};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, HTTPGetAction, HostPathVolumeSource, Namespace, PodSpec,
    PodTemplateSpec, Probe, ServiceAccount, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the DaemonSet, its ServiceAccount, ClusterRole and binding.
pub const NAME: &str = "shipper";
/// ConfigMap holding `shipper.toml`.
pub const CONFIG_MAP: &str = "shipper-config";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/shipper";
/// The config file inside it.
pub const CONFIG_FILE: &str = "shipper.toml";
/// The agent's PriorityClass.
pub const PRIORITY_CLASS: &str = "shipper-node-critical";
/// Below the built-in `system-node-critical` (2000001000) and `system-cluster-critical`
/// (2000000000), above any workload: a node under pressure evicts applications before the
/// agent that carries their last log lines. A class of our own, because some platforms
/// reserve the `system-*` classes for kube-system.
pub const PRIORITY: i32 = 1_000_000;
/// Seconds the kubelet waits after SIGTERM: the agent's shutdown deadline plus a margin
/// for writing checkpoints and exiting.
pub const TERMINATION_GRACE_SECONDS: i64 = (DEFAULT_SHUTDOWN_DEADLINE_MS / 1000) as i64 + 10;

pub fn namespace(plan: &Plan) -> Namespace {
    let mut l = labels(&plan.namespace, "namespace");
    // The agent needs hostPath volumes and the Elasticsearch sysctl init container is
    // privileged: both are outside the `baseline` Pod Security Standard. Saying so on the
    // namespace keeps a cluster-wide default (`baseline`/`restricted`) from rejecting the
    // Pods.
    l.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "privileged".into(),
    );
    Namespace {
        metadata: common::cluster_meta(&plan.namespace, l),
        ..Default::default()
    }
}

/// ServiceAccount, ClusterRole (`get/list/watch` on pods and namespaces, nothing else),
/// ClusterRoleBinding, PriorityClass.
pub fn rbac(plan: &Plan) -> Result<Vec<Document>, ManifestError> {
    let l = labels(NAME, "agent");
    let sa = ServiceAccount {
        metadata: meta(NAME, &plan.namespace, l.clone()),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: common::cluster_meta(NAME, l.clone()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into(), "namespaces".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: common::cluster_meta(NAME, l.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(plan.namespace.clone()),
            ..Default::default()
        }]),
    };
    let priority = PriorityClass {
        metadata: common::cluster_meta(PRIORITY_CLASS, l),
        value: Some(PRIORITY),
        global_default: Some(false),
        description: Some(
            "Log shipper DaemonSet: evicted after application Pods, so their last lines \
             still reach Elasticsearch."
                .into(),
        ),
        ..Default::default()
    };
    Ok(vec![
        doc(&sa)?,
        doc(&role)?,
        doc(&binding)?,
        doc(&priority)?,
    ])
}

/// The agent's configuration for this plan: the defaults, pointed at the right
/// Elasticsearch with the right credentials.
pub fn config(plan: &Plan, security: Option<&Security>) -> Config {
    let mut cfg = Config::default();
    cfg.elasticsearch.index_prefix = plan.index_prefix.clone();
    cfg.elasticsearch.index_route.clone_from(&plan.index_route);
    cfg.elasticsearch.urls = vec![es_url(plan)];
    if let Some(s) = &plan.sizing {
        cfg.elasticsearch.number_of_shards = Some(s.shards);
        cfg.elasticsearch.number_of_replicas = Some(s.replicas);
    }
    if security.is_some() {
        cfg.elasticsearch.ca_file = Some(security::CLIENT_CA_FILE.into());
        cfg.elasticsearch.username = Some(security::SHIPPER_USER.into());
        cfg.elasticsearch.password_file = Some(security::CLIENT_PASSWORD_FILE.into());
    }
    cfg
}

/// Where most node logs are.
const VAR_LOG: &str = "/var/log";

/// The agent's volumes and where they are mounted: its config, its data directory
/// (hostPath, outliving the Pod), the log roots read-only, and the credentials.
fn volumes(
    plan: &Plan,
    cfg: &Config,
    security: Option<&Security>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let read_only_root = |name: &str, path: &std::path::Path| {
        let path = path.to_string_lossy().into_owned();
        (
            Volume {
                name: name.into(),
                host_path: Some(HostPathVolumeSource {
                    path: path.clone(),
                    // No type check: a node without this runtime simply has no such
                    // directory, and the agent treats a missing root as empty.
                    type_: None,
                }),
                ..Default::default()
            },
            mount(name, &path, true),
        )
    };
    let data_dir = cfg.agent.data_dir.to_string_lossy().into_owned();
    let mut volumes = vec![
        common::config_map_volume("config", CONFIG_MAP),
        Volume {
            name: "data".into(),
            host_path: Some(HostPathVolumeSource {
                path: data_dir.clone(),
                // Checkpoints (and the buffer) must outlive the Pod.
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("data", &data_dir, false),
    ];
    // The node's own logs: the directories of its host files and its journal, read-only
    // where the node has them (`node.root` is `/`). `/var/log` holds most of them, the
    // pod logs too: one mount then serves all.
    let mut node_dirs: Vec<PathBuf> = cfg
        .node
        .files
        .iter()
        .filter_map(|f| Path::new(f).parent().map(Path::to_path_buf))
        .chain(
            cfg.node
                .journal
                .then(|| cfg.node.journal_paths.iter().map(PathBuf::from))
                .into_iter()
                .flatten(),
        )
        .map(|d| {
            if d.starts_with(VAR_LOG) {
                PathBuf::from(VAR_LOG)
            } else {
                d
            }
        })
        .collect();
    node_dirs.sort();
    node_dirs.dedup();
    // Only the outermost of nested directories.
    let outer: Vec<PathBuf> = node_dirs
        .iter()
        .filter(|d| !node_dirs.iter().any(|o| o != *d && d.starts_with(o)))
        .cloned()
        .collect();
    for dir in &outer {
        // Named after the path (`host-var-log`, `host-run-log-journal`), a DNS label.
        let path: String = dir
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let name: String = format!("host-{}", path.trim_matches('-'));
        let name = name[..name.len().min(63)].trim_end_matches('-').to_owned();
        let (v, m) = read_only_root(&name, dir);
        volumes.push(v);
        mounts.push(m);
    }
    // /var/log/pods on every runtime: CRI logs, and on Docker nodes the kubelet's symlinks
    // into the Docker root, which resolve because that is mounted at the same path.
    if !outer.iter().any(|d| cfg.input.pods_root.starts_with(d)) {
        let (v, m) = read_only_root("pod-logs", &cfg.input.pods_root);
        volumes.push(v);
        mounts.push(m);
    }
    if plan.runtime.docker() {
        let (v, m) = read_only_root("docker-logs", &cfg.input.docker_root);
        volumes.push(v);
        mounts.push(m);
    }
    if security.is_some() {
        let (v, m) = security::client_volumes();
        volumes.extend(v);
        mounts.extend(m);
    }
    (volumes, mounts)
}

/// The agent's container: its config file, the node name, probes on the metrics port.
fn container(plan: &Plan, mounts: Vec<VolumeMount>) -> Container {
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    // uid 0 without any capability: container logs are root-owned 0640 under 0700/0710
    // directories, readable by their owner alone, so root is needed but none of root's
    // capabilities (DAC_OVERRIDE etc.) are.
    let mut security_context = common::restricted(0, true);
    security_context.run_as_group = Some(0);
    Container {
        name: NAME.into(),
        image: Some(common::image(&plan.agent_image, plan.registry.as_deref())),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: Some(vec![
            // The node-scoped pod watch (`spec.nodeName=$NODE_NAME`).
            env_field("NODE_NAME", "spec.nodeName"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Liveness is internal only (an Elasticsearch outage never restarts agents);
        // readiness is config loaded and buffer open.
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        readiness_probe: Some(http_probe("/readyz", 10, 3)),
        // The listener starts once the buffer is open, and opening checks every frame
        // on disk (up to buffer.max_bytes): up to 5 minutes before liveness counts.
        startup_probe: Some(http_probe("/healthz", 5, 60)),
        resources: Some(common::resources(
            &format!(
                "{}m",
                plan.sizing
                    .as_ref()
                    .map_or(crate::sizing::AGENT_CPU_MIN_MILLIS, |s| s.agent_cpu_millis)
            ),
            common::mib(crate::sizing::AGENT_MEMORY_MIB),
        )),
        security_context: Some(security_context),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// ConfigMap + DaemonSet.
pub fn documents(plan: &Plan, security: Option<&Security>) -> Result<Vec<Document>, ManifestError> {
    let cfg = config(plan, security);
    let toml = toml::to_string(&cfg).map_err(|e| ManifestError::Serialize {
        what: "the agent's config".into(),
        reason: e.to_string(),
    })?;
    let toml = format!(
        "# The agent's configuration, generated from its own Config type by `shipper \
         manifests`.\n# Every key and its meaning: deploy/shipper.toml in the shipper \
         repository.\n{toml}"
    );
    let l = labels(NAME, "agent");
    let config_map = ConfigMap {
        metadata: meta(CONFIG_MAP, &plan.namespace, l.clone()),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), toml.clone())])),
        ..Default::default()
    };

    let (volumes, mounts) = volumes(plan, &cfg, security);

    let container = container(plan, mounts);
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
        // A config change rolls the DaemonSet.
        (
            "shipper.io/config-hash".to_owned(),
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(toml.as_bytes())),
        ),
    ]);
    let pod_labels = l.clone();
    let pod = PodSpec {
        service_account_name: Some(NAME.into()),
        automount_service_account_token: Some(true),
        priority_class_name: Some(PRIORITY_CLASS.into()),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // Every taint, whatever its key or effect (control-plane, GPU, dedicated pools,
        // NoExecute during node problems): every node's logs are collected.
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]),
        node_selector: Some(BTreeMap::from([(
            "kubernetes.io/os".to_owned(),
            "linux".to_owned(),
        )])),
        enable_service_links: Some(false),
        security_context: Some(common::pod_security(None)),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    };
    let daemon_set = DaemonSet {
        metadata: meta(NAME, &plan.namespace, l),
        spec: DaemonSetSpec {
            selector: selector(NAME),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    // A tenth of the nodes at a time: checkpoints make restarts lossless,
                    // so large clusters need not roll one node at a time.
                    max_unavailable: Some(IntOrString::String("10%".into())),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(vec![doc(&config_map)?, doc(&daemon_set)?])
}
