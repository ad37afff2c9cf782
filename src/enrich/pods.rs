//! A pod list file (`kubectl get pods -A -o json`), indexed for lookups by Docker
//! container id and by pod uid + container name.

use super::{Metadata, SourceInfo};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("reading pod list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod list {path} is not `kubectl get pods -o json` output: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Pods by uid, and (pod index, container name) by container id.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: Vec<Pod>,
    by_uid: HashMap<String, usize>,
    by_container_id: HashMap<String, (usize, String)>,
}

impl PodIndex {
    pub fn load(path: &Path) -> Result<PodIndex, PodsError> {
        let bytes = std::fs::read(path).map_err(|source| PodsError::Read {
            path: path.to_owned(),
            source,
        })?;
        PodIndex::from_json(&bytes).map_err(|source| PodsError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Accepts a `List`/`PodList` (`{"items":[...]}`) or a single Pod (`"kind":"Pod"`).
    pub fn from_json(bytes: &[u8]) -> Result<PodIndex, serde_json::Error> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<Pod>,
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let pods = if value.get("items").is_some() {
            List::deserialize(value)?.items
        } else if value.get("kind").and_then(|k| k.as_str()) == Some("Pod") {
            vec![Pod::deserialize(value)?]
        } else {
            return Err(serde::de::Error::custom(
                "expected a pod list ({\"items\":[...]}) or a Pod",
            ));
        };
        let mut index = PodIndex::default();
        for pod in pods {
            index.insert(pod);
        }
        Ok(index)
    }

    pub fn insert(&mut self, pod: Pod) {
        let i = self.pods.len();
        if let Some(uid) = &pod.metadata.uid {
            self.by_uid.insert(uid.clone(), i);
        }
        for status in all_statuses(&pod) {
            if let Some(id) = status.container_id.as_deref().and_then(strip_runtime) {
                self.by_container_id
                    .insert(id.to_owned(), (i, status.name.clone()));
            }
        }
        self.pods.push(pod);
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Full metadata for a file's container, if the pod is known.
    pub fn lookup(&self, src: &SourceInfo) -> Option<Metadata> {
        let (pod, container) = match (&src.container_id, &src.pod_uid) {
            (Some(id), _) if self.by_container_id.contains_key(id) => {
                let (i, name) = &self.by_container_id[id];
                (&self.pods[*i], name.clone())
            }
            (_, Some(uid)) => (&self.pods[*self.by_uid.get(uid)?], src.container.clone()?),
            _ => return None,
        };
        let status = all_statuses(pod).find(|s| s.name == container);
        let spec_image = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| c.name == container)
            .and_then(|c| c.image.clone());
        Some(Metadata {
            container_id: src.container_id.clone().or_else(|| {
                status
                    .and_then(|s| s.container_id.as_deref())
                    .and_then(strip_runtime)
                    .map(str::to_owned)
            }),
            namespace: pod.metadata.namespace.clone(),
            pod: pod.metadata.name.clone(),
            pod_id: pod.metadata.uid.clone(),
            container: Some(container),
            pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            host: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            image: status
                .map(|s| s.image.clone())
                .filter(|i| !i.is_empty())
                .or(spec_image),
            image_id: status.map(|s| s.image_id.clone()).filter(|i| !i.is_empty()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            from_api: true,
        })
    }
}

fn all_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status.iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
    })
}

/// `docker://abc` → `abc` (also `containerd://`, `cri-o://`).
fn strip_runtime(id: &str) -> Option<&str> {
    id.split_once("://")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"apiVersion":"v1","kind":"List","items":[{
        "metadata":{"name":"web-1","namespace":"shop","uid":"u1","labels":{"app":"web"}},
        "spec":{"nodeName":"node-1","containers":[{"name":"nginx","image":"nginx:1.27"}]},
        "status":{"podIP":"10.0.0.5","containerStatuses":[{"name":"nginx","image":"nginx:1.27","imageID":"sha256:aa",
          "containerID":"docker://abc","ready":true,"restartCount":0}]}}]}"#;

    #[test]
    fn lookup_by_container_id_and_by_uid() {
        let idx = PodIndex::from_json(LIST.as_bytes()).unwrap();
        let m = idx.lookup(&SourceInfo::from_docker_id("abc")).unwrap();
        assert_eq!(m.pod.as_deref(), Some("web-1"));
        assert_eq!(m.container.as_deref(), Some("nginx"));
        assert_eq!(m.host.as_deref(), Some("node-1"));
        assert_eq!(m.image_id.as_deref(), Some("sha256:aa"));
        assert_eq!(m.labels["app"], "web");
        let cri = SourceInfo::from_cri_dirs("shop_web-1_u1", "nginx");
        let m = idx.lookup(&cri).unwrap();
        assert_eq!(m.container_id.as_deref(), Some("abc"));
        assert!(idx.lookup(&SourceInfo::from_docker_id("nope")).is_none());
        assert!(idx
            .lookup(&SourceInfo::from_cri_dirs("shop_web-1_u2", "nginx"))
            .is_none());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(PodIndex::from_json(b"[]").is_err());
        assert!(PodIndex::from_json(b"{\"items\":[{\"metadata\":7}]}").is_err());
        assert!(PodIndex::from_json(b"{\"metadata\":{}}").is_err());
        let one = PodIndex::from_json(br#"{"kind":"Pod","metadata":{"uid":"u"}}"#).unwrap();
        assert_eq!(one.len(), 1);
    }
}
