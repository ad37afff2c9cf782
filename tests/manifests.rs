//! `shipper manifests`: the structure of the generated stack, `deploy/` kept in sync, and
//! strict schema validation with kubernetes-validate across a matrix of options.

use crate::util::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use shipper::manifests::{self, Options, Stack};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Option combinations validated and checked structurally; the first is the default.
pub const MATRIX: &[&[&str]] = &[
    &[],
    &["--es-version", "7.6.2", "--runtime", "docker"],
    &[
        "--es-version",
        "7.2.0",
        "--es-replicas",
        "1",
        "--runtime",
        "containerd",
        "--kibana-service-type",
        "NodePort",
        "--es-chown-init",
    ],
    &[
        "--es-security",
        "--runtime",
        "containerd",
        "--storage-class",
        "nfs-client",
        "--es-heap",
        "2g",
    ],
    &[
        "--es-url",
        "https://logs.example.com:9243",
        "--runtime",
        "docker",
    ],
    &[
        "--image-registry",
        "registry.local:5000/mirror",
        "--agent-image",
        "ghcr.io/example/shipper:1.2.3",
        "--es-security",
        "--no-sysctl-init",
    ],
    &[
        "--es-version",
        "7.6.2",
        "--image-registry",
        "registry.local",
        "--retention-days",
        "0",
        "--namespace",
        "logging",
        "--index-prefix",
        "k8s",
        "--es-replicas",
        "5",
        "--kibana-service-type",
        "LoadBalancer",
    ],
];

fn stack(args: &[&str]) -> Stack {
    let mut all = vec!["manifests"];
    all.extend_from_slice(args);
    let opts = Options::parse_from(all).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    manifests::generate(&opts).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Every object of the stack as `(kind, name, yaml)`.
fn objects(s: &Stack) -> Vec<(String, String, String)> {
    s.documents()
        .map(|d| (d.kind.clone(), d.name.clone(), d.yaml.clone()))
        .collect()
}

/// The one object of this kind and name, parsed back into its type.
fn get<T: DeserializeOwned>(s: &Stack, kind: &str, name: &str) -> T {
    let d = s
        .documents()
        .find(|d| d.kind == kind && d.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_yaml_ng::from_str(&d.yaml).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

fn all_of<T: DeserializeOwned>(s: &Stack, kind: &str) -> Vec<T> {
    s.documents()
        .filter(|d| d.kind == kind)
        .map(|d| serde_yaml_ng::from_str(&d.yaml).unwrap())
        .collect()
}

/// Every Pod spec in the stack (workloads, Jobs, the CronJob's template).
fn pod_specs(s: &Stack) -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for d in all_of::<DaemonSet>(s, "DaemonSet") {
        out.push((
            format!("DaemonSet {:?}", d.metadata.name),
            d.spec.template.spec.unwrap(),
        ));
    }
    for d in all_of::<StatefulSet>(s, "StatefulSet") {
        out.push((
            format!("StatefulSet {:?}", d.metadata.name),
            d.spec.template.spec.unwrap(),
        ));
    }
    for d in all_of::<Deployment>(s, "Deployment") {
        out.push((
            format!("Deployment {:?}", d.metadata.name),
            d.spec.template.spec.unwrap(),
        ));
    }
    for j in all_of::<Job>(s, "Job") {
        out.push((
            format!("Job {:?}", j.metadata.name),
            j.spec.unwrap().template.spec.unwrap(),
        ));
    }
    for c in all_of::<CronJob>(s, "CronJob") {
        let spec = c.spec.job_template.spec.unwrap().template.spec.unwrap();
        out.push((format!("CronJob {:?}", c.metadata.name), spec));
    }
    out
}

fn containers(p: &PodSpec) -> impl Iterator<Item = &Container> {
    p.init_containers
        .iter()
        .flatten()
        .chain(p.containers.iter())
}

fn image_of(s: &Stack, kind: &str, name: &str) -> String {
    pod_specs(s)
        .into_iter()
        .find(|(k, _)| k == &format!("{kind} {:?}", Some(name)))
        .map(|(_, p)| p.containers[0].image.clone().unwrap())
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The retention CronJob's container arguments.
fn retention_args(s: &Stack) -> Vec<String> {
    let cron: CronJob = get(s, "CronJob", "shipper-retention");
    cron.spec
        .job_template
        .spec
        .and_then(|j| j.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.args)
        .unwrap()
}

#[test]
fn stdout_is_every_document_in_apply_order() {
    let o = run(shipper().arg("manifests"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text, stack(&[]).to_yaml());
    let kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let v = serde_yaml_ng::Value::deserialize(d).unwrap();
            assert!(v["metadata"]["name"].as_str().is_some(), "{v:?}");
            assert!(v["apiVersion"].as_str().is_some(), "{v:?}");
            v["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds[0], "Namespace", "the namespace is created first");
    for k in [
        "StatefulSet",
        "Service",
        "Deployment",
        "DaemonSet",
        "CronJob",
        "ClusterRole",
        "Job",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
}

#[test]
fn statefulset_is_governed_by_a_headless_service() {
    for args in MATRIX.iter().filter(|a| !a.contains(&"--es-url")) {
        let s = stack(args);
        let sts: StatefulSet = get(&s, "StatefulSet", "es-cluster");
        let service_name = sts.spec.service_name.clone().unwrap();
        let svc: Service = get(&s, "Service", &service_name);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "{args:?}");
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: BTreeSet<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, BTreeSet::from([9200, 9300]));
        // The Service selects the StatefulSet's Pods.
        let pod_labels = sts.spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v));
        }
        assert_eq!(svc.metadata.namespace, sts.metadata.namespace);
        assert_eq!(sts.spec.pod_management_policy.as_deref(), Some("Parallel"));
    }
}

#[test]
fn elasticsearch_has_volumes_probes_limits_and_a_budget() {
    let s = stack(&[
        "--storage-class",
        "nfs-client",
        "--es-storage-size",
        "100Gi",
        "--es-heap",
        "2g",
    ]);
    let sts: StatefulSet = get(&s, "StatefulSet", "es-cluster");
    let pvcs = sts.spec.volume_claim_templates.clone().unwrap();
    assert_eq!(pvcs.len(), 1);
    let pvc = pvcs[0].spec.clone().unwrap();
    assert_eq!(pvc.storage_class_name.as_deref(), Some("nfs-client"));
    assert_eq!(
        pvc.resources.unwrap().requests.unwrap()["storage"].0,
        "100Gi"
    );
    let pod = sts.spec.template.spec.unwrap();
    let es = &pod.containers[0];
    let data = es
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == pvcs[0].metadata.name.clone().unwrap());
    assert_eq!(data.unwrap().mount_path, "/usr/share/elasticsearch/data");
    assert!(es.readiness_probe.is_some() && es.liveness_probe.is_some());
    let res = es.resources.clone().unwrap();
    assert_eq!(
        res.limits.unwrap()["memory"].0,
        "4Gi",
        "memory limit = 2 × heap"
    );
    assert!(es
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.name == "ES_JAVA_OPTS" && e.value.as_deref() == Some("-Xms2048m -Xmx2048m")));
    assert_eq!(pod.security_context.unwrap().fs_group, Some(1000));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert!(anti
        .preferred_during_scheduling_ignored_during_execution
        .is_some());
    assert!(anti
        .required_during_scheduling_ignored_during_execution
        .is_none());
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
        get(&s, "PodDisruptionBudget", "es-cluster");
    assert!(pdb.spec.unwrap().max_unavailable.is_some());
    // The max_map_count init container is there by default, and only the chown one is
    // opt-in.
    let init: Vec<String> = pod
        .init_containers
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(init, ["sysctl"]);
    let pod = get::<StatefulSet>(&stack(&["--no-sysctl-init"]), "StatefulSet", "es-cluster")
        .spec
        .template
        .spec
        .unwrap();
    assert!(pod.init_containers.is_none());
}

/// The pitfalls of the setups users copy, none of which may come back.
#[test]
fn no_known_pitfalls() {
    for args in MATRIX {
        let s = stack(args);
        let all = s.to_yaml();
        assert!(
            !all.contains("ulimit"),
            "{args:?}: ulimit in an init container has no effect"
        );
        assert!(
            !all.contains("ELASTICSEARCH_URL"),
            "{args:?}: ignored since Kibana 7.0"
        );
        assert!(
            !all.contains("minimum_master_nodes"),
            "{args:?}: removed in 7.0"
        );
        assert!(!all.contains("node-role.kubernetes.io/master"), "{args:?}");
        for (what, pod) in pod_specs(&s) {
            for c in containers(&pod) {
                let cmd = c.command.iter().flatten().chain(c.args.iter().flatten());
                assert!(!cmd.clone().any(|a| a.contains("ulimit")), "{what}");
                if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
                    assert_eq!(
                        c.name, "sysctl",
                        "{what}: only the sysctl init container is privileged"
                    );
                }
                if !pod
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|i| i.name == c.name)
                {
                    let r = c
                        .resources
                        .as_ref()
                        .unwrap_or_else(|| panic!("{what}/{}: no resources", c.name));
                    assert!(
                        r.limits.as_ref().unwrap().contains_key("memory"),
                        "{what}/{}: no memory limit",
                        c.name
                    );
                }
            }
        }
    }
}

#[test]
fn cluster_role_grants_only_read_on_pods_and_namespaces() {
    let s = stack(&[]);
    let roles: Vec<ClusterRole> = all_of(&s, "ClusterRole");
    assert_eq!(roles.len(), 1);
    assert!(all_of::<serde_yaml_ng::Value>(&s, "Role").is_empty());
    let rules = roles[0].rules.clone().unwrap();
    let mut resources = BTreeSet::new();
    for r in &rules {
        assert_eq!(r.api_groups.as_deref(), Some(&[String::new()][..]));
        let verbs: BTreeSet<&str> = r.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        resources.extend(r.resources.clone().unwrap());
    }
    assert_eq!(
        resources,
        BTreeSet::from(["namespaces".to_owned(), "pods".to_owned()])
    );
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
        get(&s, "ClusterRoleBinding", "shipper");
    assert_eq!(binding.role_ref.name, "shipper");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", Some("kube-log"))
    );
}

#[test]
fn agent_daemonset() {
    use shipper::config::DEFAULT_SHUTDOWN_DEADLINE_MS;
    for (args, docker) in [
        (&[][..], true),
        (&["--runtime", "docker"][..], true),
        (&["--runtime", "containerd"][..], false),
    ] {
        let s = stack(args);
        let ds: DaemonSet = get(&s, "DaemonSet", "shipper");
        let annotations = ds
            .spec
            .template
            .metadata
            .clone()
            .unwrap()
            .annotations
            .unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "2020");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let pod = ds.spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("shipper"));
        assert!(
            pod.termination_grace_period_seconds.unwrap() * 1000
                > DEFAULT_SHUTDOWN_DEADLINE_MS as i64
        );
        assert!(pod.priority_class_name.is_some());
        let tol = pod.tolerations.clone().unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert!(
            tol[0].key.is_none() && tol[0].effect.is_none(),
            "tolerates every taint"
        );
        assert_eq!(
            pod.node_selector.clone().unwrap()["kubernetes.io/os"],
            "linux"
        );
        let c = &pod.containers[0];
        let node_name = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "NODE_NAME")
            .unwrap();
        assert_eq!(
            node_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert!(sc.privileged.is_none());
        assert!(c.resources.as_ref().unwrap().requests.is_some());
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(port.container_port, 2020);

        // Host paths: the log roots read-only, the data dir read-write and created.
        let cfg = agent_config(&s);
        let volumes: BTreeMap<String, _> = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        let mut host_mounts = BTreeMap::new();
        for m in c.volume_mounts.as_ref().unwrap() {
            if let Some(hp) = &volumes[&m.name].host_path {
                assert_eq!(
                    hp.path, m.mount_path,
                    "host paths are mounted where they are"
                );
                host_mounts.insert(m.mount_path.clone(), (m.read_only, hp.type_.clone()));
            }
        }
        let data = cfg.agent.data_dir.to_str().unwrap();
        assert_eq!(
            host_mounts.remove(data),
            Some((Some(false), Some("DirectoryOrCreate".to_owned())))
        );
        let docker_root = cfg.input.docker_root.to_str().unwrap();
        // /var/log read-only: the pod logs, the node's host files and its persistent
        // journal; the volatile journal beside it.
        assert!(cfg.input.pods_root.starts_with("/var/log"));
        assert_eq!(
            host_mounts.remove("/var/log").map(|m| m.0),
            Some(Some(true))
        );
        assert_eq!(
            host_mounts.remove("/run/log/journal").map(|m| m.0),
            Some(Some(true))
        );
        assert_eq!(
            host_mounts.remove(docker_root).map(|m| m.0),
            docker.then_some(Some(true)),
            "{args:?}"
        );
        assert!(host_mounts.is_empty(), "{host_mounts:?}");
        // The config file the container is told to read is the ConfigMap's.
        let args_ = c.args.clone().unwrap();
        assert_eq!(args_, ["--config", "/etc/shipper/shipper.toml"]);
    }
}

/// The agent's config as deployed, loaded by the agent's own loader.
fn agent_config(s: &Stack) -> shipper::config::Config {
    let cm: ConfigMap = get(s, "ConfigMap", "shipper-config");
    let text = &cm.data.unwrap()["shipper.toml"];
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("shipper.toml");
    std::fs::write(&f, text).unwrap();
    shipper::config::load(Some(&f), Vec::new(), Vec::new()).expect("the generated config loads")
}

#[test]
fn agent_config_comes_from_the_config_type() {
    let cfg = agent_config(&stack(&[]));
    let mut expected = shipper::config::Config::default();
    expected.elasticsearch.urls = vec!["http://elasticsearch.kube-log.svc:9200".into()];
    assert_eq!(cfg, expected);

    let cfg = agent_config(&stack(&[
        "--es-url",
        "https://logs.example.com:9243/",
        "--index-prefix",
        "k8s",
    ]));
    assert_eq!(cfg.elasticsearch.urls, ["https://logs.example.com:9243"]);
    assert_eq!(cfg.elasticsearch.index_prefix, "k8s");
}

#[test]
fn existing_elasticsearch_skips_elasticsearch_and_kibana() {
    let s = stack(&["--es-url", "http://es.example.com:9200"]);
    let kinds: BTreeSet<String> = objects(&s).into_iter().map(|o| o.0).collect();
    for gone in [
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Job",
        "Secret",
    ] {
        assert!(!kinds.contains(gone), "{gone} generated with --es-url");
    }
    let args = retention_args(&s);
    assert_eq!(
        args,
        [
            "retention",
            "--keep-days",
            "7",
            "--es-url",
            "http://es.example.com:9200",
            "--index-prefix",
            "logstash"
        ]
    );
}

#[test]
fn retention_cron_job() {
    let s = stack(&["--retention-days", "14", "--index-prefix", "k8s"]);
    let cron: CronJob = get(&s, "CronJob", "shipper-retention");
    assert_eq!(cron.spec.concurrency_policy.as_deref(), Some("Forbid"));
    let c = cron
        .spec
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .clone();
    assert_eq!(
        c.image.as_deref(),
        Some(concat!("shipper:", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        c.args.unwrap(),
        [
            "retention",
            "--keep-days",
            "14",
            "--es-url",
            "http://elasticsearch.kube-log.svc:9200",
            "--index-prefix",
            "k8s"
        ]
    );
    // Those arguments parse as the subcommand they are meant for.
    let mut argv = vec!["shipper".to_owned()];
    argv.extend(retention_args(&s));
    let parsed = <shipper::Args as clap::Parser>::try_parse_from(argv).unwrap();
    assert!(
        matches!(parsed.command, Some(shipper::Command::Retention(ref r)) if r.keep_days == 14 && r.index_prefix == ["k8s"])
    );

    let s = stack(&["--retention-days", "0"]);
    assert!(all_of::<CronJob>(&s, "CronJob").is_empty());
}

#[test]
fn elasticsearch_and_kibana_versions_match() {
    for args in MATRIX.iter().filter(|a| !a.contains(&"--es-url")) {
        let s = stack(args);
        let tag = |image: String| image.rsplit_once(':').unwrap().1.to_owned();
        let es = tag(image_of(&s, "StatefulSet", "es-cluster"));
        let kibana = tag(image_of(&s, "Deployment", "kibana"));
        let expected = args
            .iter()
            .position(|a| *a == "--es-version")
            .map_or(manifests::options::DEFAULT_ES_VERSION, |i| args[i + 1]);
        assert_eq!(
            (es.as_str(), kibana.as_str()),
            (expected, expected),
            "{args:?}"
        );
        let deployment: Deployment = get(&s, "Deployment", "kibana");
        let env = deployment.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let hosts = env
            .iter()
            .find(|e| e.name == "ELASTICSEARCH_HOSTS")
            .unwrap();
        assert!(
            hosts.value.as_deref().unwrap().contains("elasticsearch."),
            "{hosts:?}"
        );
    }
}

#[test]
fn every_image_honours_the_registry() {
    for args in MATRIX.iter().filter(|a| a.contains(&"--image-registry")) {
        let i = args.iter().position(|a| *a == "--image-registry").unwrap();
        let registry = args[i + 1];
        let s = stack(args);
        let mut n = 0;
        for (what, pod) in pod_specs(&s) {
            for c in containers(&pod) {
                let image = c.image.clone().unwrap();
                assert!(
                    image.starts_with(&format!("{registry}/")),
                    "{what}/{}: {image}",
                    c.name
                );
                n += 1;
            }
        }
        assert!(n >= 5, "{n} containers");
        // And without it, nothing is rewritten.
        assert!(stack(&[])
            .to_yaml()
            .contains("docker.elastic.co/elasticsearch/elasticsearch:"));
    }
    let s = stack(&[
        "--image-registry",
        "r.local/m",
        "--agent-image",
        "ghcr.io/example/shipper:1.2.3",
    ]);
    assert_eq!(
        image_of(&s, "DaemonSet", "shipper"),
        "r.local/m/example/shipper:1.2.3"
    );
    assert_eq!(
        image_of(&s, "Deployment", "kibana"),
        format!(
            "r.local/m/kibana/kibana:{}",
            manifests::options::DEFAULT_ES_VERSION
        )
    );
}

#[test]
fn es_security_wires_tls_and_credentials_everywhere() {
    let s = stack(&["--es-security"]);
    let cm: ConfigMap = get(&s, "ConfigMap", "elasticsearch-config");
    let yml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&cm.data.unwrap()["elasticsearch.yml"]).unwrap();
    assert_eq!(yml["xpack.security.enabled"], true);
    assert_eq!(yml["xpack.security.http.ssl.enabled"], true);
    assert_eq!(yml["xpack.security.transport.ssl.enabled"], true);
    let creds: k8s_openapi::api::core::v1::Secret = get(&s, "Secret", "elasticsearch-credentials");
    let data = creds.string_data.unwrap();
    assert_eq!(data.len(), 3);
    assert!(data.values().all(|p| p.len() >= 20));
    let certs: k8s_openapi::api::core::v1::Secret = get(&s, "Secret", "elasticsearch-certs");
    assert_eq!(certs.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(certs.string_data.unwrap()["tls.key"].contains("PRIVATE KEY"));
    assert!(s
        .components
        .iter()
        .any(|c| c.sensitive && c.documents.iter().any(|d| d.kind == "Secret")));

    // The agent uses https, the CA and the shipper user, and has those files mounted.
    let cfg = agent_config(&s);
    assert_eq!(
        cfg.elasticsearch.urls,
        ["https://elasticsearch.kube-log.svc:9200"]
    );
    assert_eq!(cfg.elasticsearch.username.as_deref(), Some("shipper"));
    let ds: DaemonSet = get(&s, "DaemonSet", "shipper");
    let pod = ds.spec.template.spec.unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    for file in [
        cfg.elasticsearch.ca_file.unwrap(),
        cfg.elasticsearch.password_file.unwrap(),
    ] {
        let m = mounts
            .iter()
            .filter(|m| file.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{file:?} not mounted"));
        assert_eq!(m.read_only, Some(true));
        let v = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == m.name)
            .unwrap();
        let items = v.secret.as_ref().unwrap().items.clone().unwrap();
        assert!(
            items.iter().any(|i| file.ends_with(&i.path)),
            "{file:?} not in {items:?}"
        );
    }
    // Kibana connects as kibana_system over TLS.
    let k: Deployment = get(&s, "Deployment", "kibana");
    let env = k.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let val = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        val("ELASTICSEARCH_USERNAME").as_deref(),
        Some("kibana_system")
    );
    assert!(val("ELASTICSEARCH_HOSTS").unwrap().starts_with("https://"));
    // The retention job authenticates too.
    let args = retention_args(&s);
    for flag in ["--es-ca-file", "--es-username", "--es-password-file"] {
        assert!(args.iter().any(|a| a == flag), "{args:?}");
    }
    let _setup: Job = get(&s, "Job", "elasticsearch-setup");
}

#[test]
fn kibana_data_view_job() {
    let s = stack(&["--index-prefix", "k8s"]);
    let job: Job = get(&s, "Job", "kibana-data-view");
    let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let env: BTreeMap<String, String> = c
        .env
        .unwrap()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    assert_eq!(env["INDEX_PATTERN"], "k8s-*,node-*");
    assert_eq!(env["KIBANA_URL"], "http://kibana.kube-log.svc:5601");
    let script = &c.command.unwrap()[2];
    assert!(
        script.contains("/api/saved_objects/index-pattern/")
            && script.contains("\\\"timeFieldName\\\":\\\"@timestamp\\\""),
        "{script}"
    );
}

/// A route template reaches every part that names indices: the agent's config, the
/// retention job (its pattern), the shipper's role and the Kibana data view.
#[test]
fn a_route_template_is_covered_everywhere() {
    let s = stack(&["--index-prefix", "k8s", "--index-route", "logs-{namespace}"]);
    let cfg = agent_config(&s);
    assert_eq!(
        cfg.elasticsearch.index_route.as_deref(),
        Some("logs-{namespace}")
    );
    let args = retention_args(&s);
    assert!(
        args.windows(4)
            .any(|w| w == ["--index-prefix", "k8s", "--index-prefix", "logs-*"]),
        "{args:?}"
    );
    let job: Job = get(&s, "Job", "kibana-data-view");
    let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let pattern = c
        .env
        .unwrap()
        .into_iter()
        .find(|e| e.name == "INDEX_PATTERN")
        .and_then(|e| e.value);
    assert_eq!(pattern.as_deref(), Some("k8s-*,logs-*,node-*"));
    let secured = stack(&["--index-route", "logs-{namespace}", "--es-security"]);
    let setup: Job = get(&secured, "Job", "elasticsearch-setup");
    let env = setup.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let role: serde_json::Value = serde_json::from_str(
        &env.iter()
            .find(|e| e.name == "SHIPPER_ROLE")
            .and_then(|e| e.value.clone())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        role["indices"][0]["names"],
        serde_json::json!(["logs-*", "logstash-*", "node-*"])
    );
    let bad = shipper()
        .args(["manifests", "--index-route", "logs-{nope}"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--index-route"));
}

#[test]
fn output_dir_writes_one_file_per_component_and_a_kustomization() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(shipper()
        .args(["manifests", "--es-security", "--output-dir"])
        .arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let kust: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir.path().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let resources: Vec<&str> = kust["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    assert_eq!(resources, on_disk);
    assert!(resources.contains(&"11-elasticsearch-security.yaml"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("11-elasticsearch-security.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secrets are private: {mode:o}");
    }
}

/// `--nodes`/`--gb-per-day` put `shipper sizing`'s plan into the StatefulSet, the
/// agent's template settings and its CPU request.
#[test]
fn a_sizing_plan_is_deployed() {
    let args = [
        "--nodes",
        "1000",
        "--gb-per-day",
        "1000",
        "--retention-days",
        "7",
    ];
    let volume = shipper::sizing::Volume {
        nodes: 1000,
        gb_per_day: 1000.0,
        prefixes: 1,
    };
    let plan = shipper::sizing::plan(&volume, 7).unwrap();
    let s = stack(&args);
    let sts: StatefulSet = get(&s, "StatefulSet", "es-cluster");
    let spec = sts.spec.clone();
    assert_eq!(spec.replicas, Some(plan.data_nodes as i32));
    let pvc = spec.volume_claim_templates.unwrap()[0]
        .spec
        .clone()
        .unwrap();
    assert_eq!(
        pvc.resources.unwrap().requests.unwrap()["storage"].0,
        format!("{}Gi", plan.disk_gib)
    );
    let es = &spec.template.spec.unwrap().containers[0];
    let heap = format!("-Xms{0}m -Xmx{0}m", plan.heap_gib * 1024);
    assert!(es
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.name == "ES_JAVA_OPTS" && e.value.as_deref() == Some(heap.as_str())));
    let cfg = agent_config(&s);
    assert_eq!(cfg.elasticsearch.number_of_shards, Some(plan.shards));
    assert_eq!(cfg.elasticsearch.number_of_replicas, Some(1));
    // The numbers behind it: 1 TB a day kept 8 days, twice, with 25 % headroom.
    assert_eq!(plan.shards, 25);
    assert_eq!((plan.data_nodes, plan.heap_gib), (11, 31));
    // Without the flags, the server's defaults.
    let cfg = agent_config(&stack(&[]));
    assert_eq!(cfg.elasticsearch.number_of_shards, None);
    // The sizing and the hand-set sizes exclude each other; each flag needs the other.
    for (args, needle) in [
        (
            &[
                "manifests",
                "--nodes",
                "10",
                "--gb-per-day",
                "5",
                "--es-heap",
                "2g",
            ][..],
            "cannot be used with",
        ),
        (&["manifests", "--nodes", "10"], "--gb-per-day"),
        (
            &["manifests", "--nodes", "10", "--gb-per-day", "0"],
            "--gb-per-day",
        ),
        (
            &[
                "manifests",
                "--nodes",
                "10",
                "--gb-per-day",
                "5",
                "--retention-days",
                "0",
            ],
            "--retention-days",
        ),
    ] {
        let o = run(shipper().args(args));
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn invalid_flags_fail_with_the_flag_named() {
    for (args, needle) in [
        (
            &["manifests", "--es-version", "7.6.2", "--es-security"][..],
            "--es-security",
        ),
        (&["manifests", "--es-heap", "lots"], "--es-heap"),
        (&["manifests", "--runtime", "podman"], "--runtime"),
        (&["--dry-run", "manifests"], "cannot be used with"),
    ] {
        let o = run(shipper().args(args));
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

/// `deploy/` is the default output. Regenerate with `BLESS=1 cargo test deploy_dir`.
#[test]
fn deploy_dir_is_the_default_output() {
    let deploy = repo().join("deploy");
    let files = stack(&[]).files().unwrap();
    if std::env::var_os("BLESS").is_some() {
        for (name, text) in &files {
            std::fs::write(deploy.join(name), text).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "deploy/ has other files than `shipper manifests --output-dir` writes (BLESS=1 cargo test deploy_dir regenerates)");
    for (name, text) in &files {
        let have = std::fs::read_to_string(deploy.join(name)).unwrap();
        assert!(have == *text, "deploy/{name} differs from `shipper manifests` output: regenerate with BLESS=1 cargo test deploy_dir");
    }
}

/// `kubernetes-validate` on the PATH, else as a Python module.
fn kubernetes_validate() -> Option<Command> {
    let works = |mut c: Command| {
        c.arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some()
    };
    if works(Command::new("kubernetes-validate")) {
        return Some(Command::new("kubernetes-validate"));
    }
    let module = || {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    };
    works(module()).then(module)
}

/// Strict schema validation of every generated document, for the oldest Kubernetes
/// version kubernetes-validate has schemas for that we support (1.25) and the newest it
/// has. Skipped when the tool is missing, except in CI.
#[test]
fn kubernetes_validate_strict_accepts_every_document() {
    let Some(_) = kubernetes_validate() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("kubernetes-validate is not installed (.ci/setup-deps installs it)");
        }
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return;
    };
    let help = kubernetes_validate()
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // "... Defaults to 1.37.0": the newest version its schemas cover.
    let newest = help
        .split("Defaults to ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !(c.is_ascii_digit() || c == '.')).next())
        .map(|v| v.trim_end_matches('.').to_owned())
        .expect("kubernetes-validate --help names its default (newest) version");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, args) in MATRIX.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        for path in stack(args).write_dir(&case).unwrap() {
            if path.file_name().unwrap() != "kustomization.yaml" {
                files.push(path);
            }
        }
    }
    for version in ["1.25.0", newest.as_str()] {
        let o = kubernetes_validate()
            .unwrap()
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && !out.contains("ERROR"),
            "Kubernetes {version}:\n{out}"
        );
        eprintln!(
            "kubernetes-validate --strict -k {version}: {} files of {} option sets valid",
            files.len(),
            MATRIX.len()
        );
    }
}
