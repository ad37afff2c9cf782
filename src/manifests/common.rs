//! Small builders shared by the components: metadata and labels, environment variables,
//! resources, security contexts, and image references.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector,
    PodSecurityContext, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// `app.kubernetes.io/part-of` of every object.
pub const PART_OF: &str = "efk";

/// Labels of a component's objects and Pods. `name` alone is the selector, so it never
/// changes once deployed (selectors are immutable).
pub fn labels(name: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), PART_OF.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "shipper-manifests".to_owned(),
        ),
    ])
}

pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), name.to_owned())])
}

pub fn selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(name)),
        ..Default::default()
    }
}

/// Metadata of a namespaced object.
pub fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// Metadata of a cluster-scoped object.
pub fn cluster_meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..Default::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An environment variable from the downward API (`metadata.name`, `spec.nodeName`).
pub fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn quantity(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

/// MiB as a quantity, in Gi when it divides evenly.
pub fn mib(n: u32) -> Quantity {
    if n.is_multiple_of(1024) {
        quantity(format!("{}Gi", n / 1024))
    } else {
        quantity(format!("{n}Mi"))
    }
}

/// CPU and memory requests, and a memory limit equal to the request. No CPU limit: CFS
/// throttling turns a busy moment into latency spikes and timeouts (JVM GC pauses, bulk
/// requests timing out); the request alone guarantees the share.
pub fn resources(cpu: &str, memory: Quantity) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity(cpu)),
            ("memory".to_owned(), memory.clone()),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
        ..Default::default()
    }
}

/// A container that runs as `uid`, cannot gain privileges and has no capabilities.
pub fn restricted(uid: i64, read_only_root: bool) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(uid),
        run_as_non_root: Some(uid != 0),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// Pod-level defaults: the runtime's default seccomp profile.
pub fn pod_security(fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        fs_group,
        fs_group_change_policy: fs_group.map(|_| "OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

pub fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Secret volume with only `keys` (as `key → path`), readable by the owner and the
/// group (the Pod's fsGroup).
pub fn secret_volume(name: &str, secret: &str, keys: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            items: Some(
                keys.iter()
                    .map(|(k, p)| k8s_openapi::api::core::v1::KeyToPath {
                        key: (*k).to_owned(),
                        path: (*p).to_owned(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn tcp_probe(port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

pub fn exec_probe(script: &str, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(10),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The image reference with its registry replaced by `registry` (the repository path is
/// kept, as `docker pull X && docker tag X REGISTRY/path && docker push` mirrors it). A
/// first path component with a `.` or `:`, or `localhost`, is a registry host; anything
/// else is a Docker Hub name.
pub fn image(reference: &str, registry: Option<&str>) -> String {
    let Some(registry) = registry else {
        return reference.to_owned();
    };
    let path = match reference.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => reference,
    };
    format!("{registry}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_rewrite() {
        let r = Some("registry.local:5000/mirror");
        assert_eq!(
            image("docker.elastic.co/kibana/kibana:8.19.13", r),
            "registry.local:5000/mirror/kibana/kibana:8.19.13"
        );
        assert_eq!(
            image("shipper:0.1.0", r),
            "registry.local:5000/mirror/shipper:0.1.0"
        );
        assert_eq!(
            image("library/busybox@sha256:abc", Some("r.io")),
            "r.io/library/busybox@sha256:abc"
        );
        assert_eq!(image("localhost/x:1", Some("r.io")), "r.io/x:1");
        assert_eq!(image("ghcr.io/a/b:1", None), "ghcr.io/a/b:1");
    }

    #[test]
    fn quantities() {
        assert_eq!(mib(2048).0, "2Gi");
        assert_eq!(mib(1536).0, "1536Mi");
    }
}
