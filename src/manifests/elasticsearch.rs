//! Elasticsearch: its `elasticsearch.yml` ConfigMap, the headless Service, the
//! StatefulSet and its PodDisruptionBudget.
//!
//! Fixes over the reference setup users come from: settings in `elasticsearch.yml` rather
//! than dotted environment variables (dropped by the 8.17+ images' shell), no
//! `discovery.zen.*` (gone since 7.0), no `ulimit` init container (it changes only its own
//! process; the image already has the right limits), `fsGroup` instead of a `chown` init
//! container, readiness and liveness probes, a memory limit, a PodDisruptionBudget and
//! anti-affinity.

use super::common::{self, env, env_field, env_secret, labels, meta, mount, selector};
use super::security::{self, Security};
use super::{
    doc, Document, ManifestError, Plan, Version, ES_HTTP_PORT, ES_SERVICE, ES_STATEFULSET,
    ES_TRANSPORT_PORT,
};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, Container, ContainerPort, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

/// `cluster.name`.
pub const CLUSTER_NAME: &str = "k8s-logs";
/// ConfigMap holding `elasticsearch.yml`.
pub const CONFIG_MAP: &str = "elasticsearch-config";
/// The official images run Elasticsearch and Kibana as this uid.
pub const ELASTIC_UID: i64 = 1000;
/// The value Elasticsearch's bootstrap checks require (mmapfs).
pub const MAX_MAP_COUNT: u32 = 262_144;
const HOME: &str = "/usr/share/elasticsearch";

/// The Elasticsearch image for `version`, after `--image-registry`.
pub fn image(plan: &Plan, version: Version) -> String {
    common::image(
        &format!("docker.elastic.co/elasticsearch/elasticsearch:{version}"),
        plan.registry.as_deref(),
    )
}

/// The names of the nodes, `es-cluster-0` …
fn node_names(plan: &Plan) -> Vec<String> {
    (0..plan.es_replicas)
        .map(|i| format!("{ES_STATEFULSET}-{i}"))
        .collect()
}

/// `elasticsearch.yml`, as a YAML mapping in a readable order.
pub fn config(plan: &Plan, security: bool) -> Mapping {
    let mut m = Mapping::new();
    let mut set = |k: &str, v: Value| {
        m.insert(Value::String(k.to_owned()), v);
    };
    let list = |items: Vec<String>| Value::Sequence(items.into_iter().map(Value::String).collect());
    set("cluster.name", CLUSTER_NAME.into());
    // Resolved by Elasticsearch from the environment (the downward API's metadata.name).
    set("node.name", "${NODE_NAME}".into());
    set("network.host", "0.0.0.0".into());
    if plan.es_replicas == 1 {
        set("discovery.type", "single-node".into());
    } else {
        // Every node's stable DNS name through the headless Service; it resolves before
        // the Pod is ready (publishNotReadyAddresses), which forming a cluster needs.
        set(
            "discovery.seed_hosts",
            list(
                node_names(plan)
                    .into_iter()
                    .map(|n| format!("{n}.{ES_SERVICE}"))
                    .collect(),
            ),
        );
        // Only read when the cluster forms for the very first time; all nodes are
        // master-eligible. (No discovery.zen.minimum_master_nodes: removed in 7.0, the
        // voting configuration replaced it.)
        set("cluster.initial_master_nodes", list(node_names(plan)));
    }
    set("xpack.security.enabled", security.into());
    if security {
        for layer in ["http", "transport"] {
            set(&format!("xpack.security.{layer}.ssl.enabled"), true.into());
            set(
                &format!("xpack.security.{layer}.ssl.key"),
                "certs/tls.key".into(),
            );
            set(
                &format!("xpack.security.{layer}.ssl.certificate"),
                "certs/tls.crt".into(),
            );
            set(
                &format!("xpack.security.{layer}.ssl.certificate_authorities"),
                list(vec!["certs/ca.crt".into()]),
            );
        }
        // Nodes are addressed by Pod IP on the transport layer, which no certificate
        // names: check the chain only (the CA is ours alone).
        set(
            "xpack.security.transport.ssl.verification_mode",
            "certificate".into(),
        );
    }
    m
}

/// Headless: DNS returns every node (the agent balances over them itself) and gives each
/// Pod its stable name es-cluster-N.elasticsearch. Not-ready addresses are published
/// because a node is only ready once the cluster has formed, and the cluster forms
/// through these names.
fn service(plan: &Plan, l: BTreeMap<String, String>) -> Service {
    let port = |name: &str, p: i32| ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(ES_SERVICE, &plan.namespace, l),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(common::selector_labels(ES_SERVICE)),
            ports: Some(vec![
                port("http", ES_HTTP_PORT),
                port("transport", ES_TRANSPORT_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Elasticsearch container and the volumes it mounts.
fn container(
    plan: &Plan,
    version: Version,
    security: Option<&Security>,
) -> (Container, Vec<Volume>) {
    let secure = security.is_some();
    let scheme = if secure { "https" } else { "http" };
    let auth = if secure {
        " --cacert config/certs/ca.crt -u \"elastic:$ELASTIC_PASSWORD\""
    } else {
        ""
    };
    // Ready = this node answers and knows a cluster state (local=true asks no master).
    let readiness = format!(
        "curl -fsS --max-time 5 -o /dev/null{auth} \
         '{scheme}://127.0.0.1:{ES_HTTP_PORT}/_cluster/health?local=true'"
    );
    let mut env_vars = vec![
        env_field("NODE_NAME", "metadata.name"),
        // Heap at half the memory limit: the rest is Lucene's page cache.
        env(
            "ES_JAVA_OPTS",
            format!("-Xms{0}m -Xmx{0}m", plan.es_heap_mib),
        ),
    ];
    let mut mounts = vec![mount("data", &format!("{HOME}/data"), false), {
        let mut m = mount("config", &format!("{HOME}/config/elasticsearch.yml"), true);
        m.sub_path = Some("elasticsearch.yml".into());
        m
    }];
    let mut volumes = vec![common::config_map_volume("config", CONFIG_MAP)];
    if secure {
        // The bootstrap password of `elastic`, read on the first start.
        env_vars.push(env_secret(
            "ELASTIC_PASSWORD",
            security::CREDENTIALS_SECRET,
            security::ELASTIC_PASSWORD_KEY,
        ));
        mounts.push(mount("certs", &format!("{HOME}/config/certs"), true));
        volumes.push(common::secret_volume(
            "certs",
            security::CERTS_SECRET,
            &[
                ("ca.crt", "ca.crt"),
                ("tls.crt", "tls.crt"),
                ("tls.key", "tls.key"),
            ],
        ));
    }
    let container_port = |name: &str, p: i32| ContainerPort {
        name: Some(name.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let es_image = image(plan, version);
    let container = Container {
        name: "elasticsearch".into(),
        image: Some(es_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env_vars),
        ports: Some(vec![
            container_port("http", ES_HTTP_PORT),
            container_port("transport", ES_TRANSPORT_PORT),
        ]),
        // Up to 5 minutes to start (first start, recovery of large shards); after that,
        // liveness only asks whether the process still accepts connections, never about
        // cluster health, so a red cluster is not made worse by restarts.
        startup_probe: Some(common::tcp_probe("http", 10, 30)),
        liveness_probe: Some(common::tcp_probe("http", 20, 3)),
        readiness_probe: Some(common::exec_probe(&readiness, 10, 3)),
        resources: Some(common::resources("500m", common::mib(plan.es_heap_mib * 2))),
        security_context: Some(common::restricted(ELASTIC_UID, false)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    (container, volumes)
}

/// Init containers: raise `vm.max_map_count`, and chown the data volume where fsGroup
/// cannot.
fn init_containers(plan: &Plan, es_image: String) -> Vec<Container> {
    let mut init = Vec::new();
    if plan.sysctl_init {
        // Bootstrap checks refuse to start a node bound to a non-loopback address with a
        // lower vm.max_map_count. The setting is node-wide, hence privileged; it is never
        // lowered. Optional (--no-sysctl-init) where nodes are configured already.
        init.push(Container {
            name: "sysctl".into(),
            image: Some(es_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "v=$(sysctl -n vm.max_map_count); \
                     [ \"$v\" -ge {MAX_MAP_COUNT} ] || sysctl -w vm.max_map_count={MAX_MAP_COUNT}"
                ),
            ]),
            resources: Some(common::resources("10m", common::mib(32))),
            security_context: Some(SecurityContext {
                privileged: Some(true),
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if plan.chown_init {
        // Only for volumes fsGroup cannot change (NFS): root with just the capabilities
        // chown -R needs.
        init.push(Container {
            name: "chown-data".into(),
            image: Some(es_image),
            image_pull_policy: Some("IfNotPresent".into()),
            // One shell string: a bare `1000:0` list item would be a base-60 number
            // to YAML 1.1 parsers.
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("chown -R {ELASTIC_UID}:0 {HOME}/data"),
            ]),
            resources: Some(common::resources("10m", common::mib(32))),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: Some(vec!["CHOWN".into(), "DAC_READ_SEARCH".into()]),
                }),
                ..Default::default()
            }),
            volume_mounts: Some(vec![mount("data", &format!("{HOME}/data"), false)]),
            ..Default::default()
        });
    }
    init
}

/// Prefer one node per host, without making a small cluster unschedulable.
fn affinity() -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector(ES_SERVICE)),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The data volume claim of each node.
fn data_claim(plan: &Plan) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(common::selector_labels(ES_SERVICE)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: plan.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    common::quantity(plan.es_storage_size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn documents(
    plan: &Plan,
    version: Version,
    security: Option<&Security>,
) -> Result<Vec<Document>, ManifestError> {
    let l = labels(ES_SERVICE, "elasticsearch");
    let yml = serde_yaml_ng::to_string(&config(plan, security.is_some())).map_err(|e| {
        ManifestError::Serialize {
            what: "elasticsearch.yml".into(),
            reason: e.to_string(),
        }
    })?;
    let config_map = ConfigMap {
        metadata: meta(CONFIG_MAP, &plan.namespace, l.clone()),
        data: Some(BTreeMap::from([("elasticsearch.yml".to_owned(), yml)])),
        ..Default::default()
    };

    let service = service(plan, l.clone());

    let (container, volumes) = container(plan, version, security);
    let es_image = image(plan, version);
    let init = init_containers(plan, es_image);

    let affinity = affinity();
    let pvc = data_claim(plan);
    let stateful_set = StatefulSet {
        metadata: meta(ES_STATEFULSET, &plan.namespace, l.clone()),
        spec: StatefulSetSpec {
            replicas: Some(i32::from(plan.es_replicas)),
            service_name: Some(ES_SERVICE.into()),
            // Parallel: all nodes start at once. The default OrderedReady would start
            // es-cluster-1 only after es-cluster-0 is ready, but a node is ready only once
            // a cluster has formed, which needs a majority of the initial master nodes:
            // it would wait forever. Rolling updates stay one Pod at a time either way.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            selector: selector(ES_SERVICE),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l.clone()),
                    annotations: Some(BTreeMap::from([(
                        "shipper.io/config-hash".to_owned(),
                        format!(
                            "{:016x}",
                            xxhash_rust::xxh3::xxh3_64(
                                config_map
                                    .data
                                    .as_ref()
                                    .and_then(|d| d.get("elasticsearch.yml"))
                                    .map_or(&[][..], |s| s.as_bytes())
                            )
                        ),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    affinity: Some(affinity),
                    // Time to finish in-flight writes and hand shards over.
                    termination_grace_period_seconds: Some(120),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    // fsGroup makes the data volume writable by the Elasticsearch user,
                    // so no chown init container is needed on volumes that support
                    // ownership management (all block storage).
                    security_context: Some(common::pod_security(Some(ELASTIC_UID))),
                    init_containers: if init.is_empty() { None } else { Some(init) },
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![pvc]),
            ..Default::default()
        },
        ..Default::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(ES_STATEFULSET, &plan.namespace, l),
        spec: Some(PodDisruptionBudgetSpec {
            // One node down at a time during drains: with one replica per shard, the
            // cluster stays yellow, never red.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(common::selector_labels(ES_SERVICE)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(vec![
        doc(&config_map)?,
        doc(&service)?,
        doc(&stateful_set)?,
        doc(&pdb)?,
    ])
}
