//! What a log file's location tells about its container, without any API.

use crate::encode::Metadata;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Facts read off paths and `config.v2.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// Docker container id (from `<docker-root>/<id>/<id>-json.log`).
    pub container_id: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    /// A host file (not a container's): where it lives, the live path its rotations
    /// keep. Its records carry the path and the node, never a pod.
    pub host_path: Option<String>,
}

impl SourceInfo {
    /// A host file found at `path` (a configured glob matched it).
    pub fn host(path: &std::path::Path) -> SourceInfo {
        SourceInfo {
            host_path: Some(path.to_string_lossy().into_owned()),
            ..SourceInfo::default()
        }
    }

    /// `<pods-root>/<ns>_<pod>_<uid>/<container>/<n>.log`: the pod directory and container
    /// directory of a CRI log path. Namespace and pod names cannot contain `_`, so the
    /// split is unambiguous.
    pub fn from_cri_dirs(pod_dir: &str, container_dir: &str) -> SourceInfo {
        let mut parts = pod_dir.splitn(3, '_');
        let (ns, pod, uid) = (parts.next(), parts.next(), parts.next());
        let ok = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        match (ok(ns), ok(pod), ok(uid)) {
            (Some(ns), Some(pod), Some(uid)) => SourceInfo {
                namespace: Some(ns),
                pod: Some(pod),
                pod_uid: Some(uid),
                container: ok(Some(container_dir)),
                container_id: None,
                host_path: None,
            },
            _ => SourceInfo {
                container: ok(Some(container_dir)),
                ..SourceInfo::default()
            },
        }
    }

    pub fn from_docker_id(id: &str) -> SourceInfo {
        SourceInfo {
            container_id: Some(id.to_owned()),
            ..SourceInfo::default()
        }
    }

    /// Fills what `self` lacks from `other`.
    pub fn merge(&mut self, other: SourceInfo) {
        fn fill(a: &mut Option<String>, b: Option<String>) {
            if a.is_none() {
                *a = b;
            }
        }
        fill(&mut self.container_id, other.container_id);
        fill(&mut self.namespace, other.namespace);
        fill(&mut self.pod, other.pod);
        fill(&mut self.pod_uid, other.pod_uid);
        fill(&mut self.container, other.container);
        fill(&mut self.host_path, other.host_path);
    }

    /// The identity source: the container the file belongs to.
    pub fn source_key(&self) -> String {
        if let Some(path) = &self.host_path {
            return format!("host:{path}");
        }
        match (&self.container_id, &self.pod_uid, &self.container) {
            (Some(id), _, _) => format!("docker:{id}"),
            (None, Some(uid), Some(c)) => format!("cri:{uid}/{c}"),
            (None, Some(uid), None) => format!("cri:{uid}"),
            _ => String::from("unknown:"),
        }
    }

    pub fn to_metadata(&self) -> Metadata {
        Metadata {
            container_id: self.container_id.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            pod_id: self.pod_uid.clone(),
            container: self.container.clone(),
            path: self.host_path.clone(),
            ..Metadata::default()
        }
    }
}

/// Largest `config.v2.json` we read; real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads the Kubernetes labels dockershim/cri-dockerd put on a container, from the
/// `config.v2.json` next to its log.
pub fn docker_config_labels(container_dir: &Path) -> Result<SourceInfo, String> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "Config")]
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<HashMap<String, String>>,
    }
    let path = container_dir.join("config.v2.json");
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: Config =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut labels = config.config.and_then(|c| c.labels).unwrap_or_default();
    let mut take = |k: &str| labels.remove(k).filter(|v| !v.is_empty());
    Ok(SourceInfo {
        container_id: None,
        namespace: take("io.kubernetes.pod.namespace"),
        pod: take("io.kubernetes.pod.name"),
        pod_uid: take("io.kubernetes.pod.uid"),
        container: take("io.kubernetes.container.name"),
        host_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_dirs() {
        let s = SourceInfo::from_cri_dirs("shop_web-7d9f_14feb587-c878", "nginx");
        assert_eq!(s.namespace.as_deref(), Some("shop"));
        assert_eq!(s.pod.as_deref(), Some("web-7d9f"));
        assert_eq!(s.pod_uid.as_deref(), Some("14feb587-c878"));
        assert_eq!(s.container.as_deref(), Some("nginx"));
        assert_eq!(s.source_key(), "cri:14feb587-c878/nginx");
        let odd = SourceInfo::from_cri_dirs("no-underscores", "c");
        assert_eq!(odd.namespace, None);
        assert_eq!(odd.container.as_deref(), Some("c"));
    }

    #[test]
    fn docker_labels() {
        let dir = tempfile::tempdir().unwrap();
        assert!(docker_config_labels(dir.path()).is_err());
        std::fs::write(dir.path().join("config.v2.json"), b"{not json").unwrap();
        assert!(docker_config_labels(dir.path()).is_err());
        std::fs::write(
            dir.path().join("config.v2.json"),
            br#"{"Config":{"Labels":{"io.kubernetes.pod.namespace":"ns","io.kubernetes.pod.name":"p","io.kubernetes.container.name":"c","io.kubernetes.pod.uid":"u"}}}"#,
        )
        .unwrap();
        let s = docker_config_labels(dir.path()).unwrap();
        assert_eq!(
            (
                s.namespace.as_deref(),
                s.pod.as_deref(),
                s.container.as_deref()
            ),
            (Some("ns"), Some("p"), Some("c"))
        );
        std::fs::write(dir.path().join("config.v2.json"), br#"{"Config":{}}"#).unwrap();
        assert_eq!(
            docker_config_labels(dir.path()).unwrap(),
            SourceInfo::default()
        );
    }
}
