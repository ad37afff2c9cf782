//! Pods reduced to what documents use ([`PodEntry`]), and an index of them by pod uid
//! and by container id. The same index serves a pod list file (`kubectl get pods -A -o
//! json`, `--pods`) and the live cache fed by the API watch ([`super::KubeCache`]).
//!
//! A [`Pod`] is converted to a [`PodEntry`] as soon as it arrives, so nothing else of it
//! is ever held: no `managedFields`, no spec beyond container names and images, no
//! conditions, and not the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (often the largest part of a pod).

use super::SourceInfo;
use crate::encode::{Metadata, Owner};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Pod annotation: `"true"` excludes every container of the pod.
pub const EXCLUDE_KEY: &str = "shipper.io/exclude";
/// Pod annotation: comma-separated container names whose logs are excluded.
pub const EXCLUDE_CONTAINERS_KEY: &str = "shipper.io/exclude-containers";
/// Written by `kubectl apply`: a copy of the whole manifest, useless in a log document.
const LAST_APPLIED_KEY: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The label a Deployment puts on its ReplicaSets' pods: the suffix of the ReplicaSet name.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

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

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEntry {
    pub name: String,
    /// Runtime ids without the `docker://` prefix: the current one, then the previous
    /// instance's (its log file is still on disk after a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// What is kept of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEntry {
    /// The pod uid, or `\0<namespace>/<name>` for a listed pod without one (so it can
    /// never match a uid from a path).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerEntry>,
    /// When the pod was deleted (Unix milliseconds); it stays cached for a grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<u64>,
    /// The cache's change counter when this entry last changed (not persisted).
    #[serde(skip)]
    pub rev: u64,
}

impl PodEntry {
    /// Keeps what documents use: names, uid, IP, node, labels, annotations, the owner,
    /// and per container its ids and images.
    pub fn from_pod(pod: &Pod) -> PodEntry {
        let m = &pod.metadata;
        let labels: BTreeMap<String, String> = m.labels.clone().unwrap_or_default();
        let mut annotations = m.annotations.clone().unwrap_or_default();
        annotations.remove(LAST_APPLIED_KEY);
        let mut containers: Vec<ContainerEntry> = Vec::new();
        fn container<'c>(all: &'c mut Vec<ContainerEntry>, name: &str) -> &'c mut ContainerEntry {
            let i = match all.iter().position(|c| c.name == name) {
                Some(i) => i,
                None => {
                    all.push(ContainerEntry {
                        name: name.to_owned(),
                        ..ContainerEntry::default()
                    });
                    all.len() - 1
                }
            };
            &mut all[i]
        }
        let mut specs: Vec<(String, Option<String>)> = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                specs.push((c.name.clone(), c.image.clone()));
            }
            for c in spec.ephemeral_containers.iter().flatten() {
                specs.push((c.name.clone(), c.image.clone()));
            }
        }
        for (name, image) in specs {
            container(&mut containers, &name).image = image.filter(|s| !s.is_empty());
        }
        for s in all_statuses(pod) {
            let c = container(&mut containers, &s.name);
            let previous = s
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .and_then(|t| t.container_id.as_deref());
            for id in s.container_id.as_deref().into_iter().chain(previous) {
                if let Some(id) = strip_runtime(id) {
                    if !c.ids.iter().any(|x| x == id) {
                        c.ids.push(id.to_owned());
                    }
                }
            }
            // The status names the image actually running; the spec's may be a tag
            // that has moved since.
            if !s.image.is_empty() {
                c.image = Some(s.image.clone());
            }
            if !s.image_id.is_empty() {
                c.image_id = Some(s.image_id.clone());
            }
        }
        let key = match (&m.uid, &m.namespace, &m.name) {
            (Some(uid), _, _) => uid.clone(),
            (None, ns, name) => format!(
                "\0{}/{}",
                ns.as_deref().unwrap_or(""),
                name.as_deref().unwrap_or("")
            ),
        };
        PodEntry {
            key,
            uid: m.uid.clone(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            host: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            owner: owner(pod, &labels),
            labels,
            annotations,
            containers,
            deleted_at_ms: None,
            rev: 0,
        }
    }

    /// Whether the pod's annotations (or its `shipper.io/exclude` label) exclude this
    /// container's logs.
    pub fn excludes(&self, container: Option<&str>) -> bool {
        let is_true = |v: Option<&String>| v.map(|v| v.trim()) == Some("true");
        if is_true(self.annotations.get(EXCLUDE_KEY)) || is_true(self.labels.get(EXCLUDE_KEY)) {
            return true;
        }
        match (container, self.annotations.get(EXCLUDE_CONTAINERS_KEY)) {
            (Some(c), Some(list)) => list.split(',').any(|x| x.trim() == c),
            _ => false,
        }
    }

    /// The pod's metadata for one of its containers (`from_api`: complete).
    pub fn metadata(&self, container: &str, src: &SourceInfo) -> Metadata {
        let c = self.containers.iter().find(|c| c.name == container);
        Metadata {
            container_id: src
                .container_id
                .clone()
                .or_else(|| c.and_then(|c| c.ids.first().cloned())),
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            pod_id: self.uid.clone(),
            container: Some(container.to_owned()),
            pod_ip: self.ip.clone(),
            host: self.host.clone(),
            image: c.and_then(|c| c.image.clone()),
            image_id: c.and_then(|c| c.image_id.clone()),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            owner: self.owner.clone(),
            from_api: true,
            ..Metadata::default()
        }
    }
}

/// The controlling owner; a ReplicaSet named `<deployment>-<pod-template-hash>` is
/// reported as its Deployment.
fn owner(pod: &Pod, labels: &BTreeMap<String, String>) -> Option<Owner> {
    let refs = pod.metadata.owner_references.as_ref()?;
    let r = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())?;
    if r.kind == "ReplicaSet" {
        if let Some(deployment) = deployment_of(&r.name, labels.get(TEMPLATE_HASH_LABEL)) {
            return Some(Owner {
                kind: String::from("Deployment"),
                name: deployment.to_owned(),
            });
        }
    }
    Some(Owner {
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

/// `web-7d9f8b6c5` → `web`. With the pod's `pod-template-hash` label the suffix must be
/// that hash; without it, the suffix must look like one (5 to 10 characters of the
/// alphabet Kubernetes encodes hashes with, which has no vowels).
fn deployment_of<'a>(rs: &'a str, hash: Option<&String>) -> Option<&'a str> {
    let (name, suffix) = rs.rsplit_once('-')?;
    if name.is_empty() {
        return None;
    }
    let ok = match hash {
        Some(h) => suffix == h,
        None => {
            (5..=10).contains(&suffix.len())
                && suffix
                    .bytes()
                    .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        }
    };
    ok.then_some(name)
}

/// Pods by key (uid), and (pod key, container name) by container id.
#[derive(Debug, Default, Clone)]
pub struct PodIndex {
    pods: HashMap<String, PodEntry>,
    by_container_id: HashMap<String, (String, String)>,
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
        for pod in &pods {
            index.insert(PodEntry::from_pod(pod));
        }
        Ok(index)
    }

    /// Adds or replaces (same key) a pod. Returns the entry it replaced.
    pub fn insert(&mut self, entry: PodEntry) -> Option<PodEntry> {
        let old = self.remove(&entry.key.clone());
        for c in &entry.containers {
            for id in &c.ids {
                self.by_container_id
                    .insert(id.clone(), (entry.key.clone(), c.name.clone()));
            }
        }
        self.pods.insert(entry.key.clone(), entry);
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<PodEntry> {
        let old = self.pods.remove(key)?;
        for id in old.containers.iter().flat_map(|c| &c.ids) {
            if self.by_container_id.get(id).is_some_and(|(k, _)| k == key) {
                self.by_container_id.remove(id);
            }
        }
        Some(old)
    }

    pub fn get(&self, key: &str) -> Option<&PodEntry> {
        self.pods.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut PodEntry> {
        self.pods.get_mut(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PodEntry> {
        self.pods.values()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The pod and container name a file belongs to: by Docker container id, else by
    /// pod uid + container name (CRI paths, Docker's `config.v2.json` labels).
    pub fn find<'a>(&'a self, src: &'a SourceInfo) -> Option<(&'a PodEntry, &'a str)> {
        if let Some((key, name)) = src
            .container_id
            .as_ref()
            .and_then(|id| self.by_container_id.get(id))
        {
            if let Some(pod) = self.pods.get(key) {
                return Some((pod, name.as_str()));
            }
        }
        let pod = self.pods.get(src.pod_uid.as_ref()?)?;
        Some((pod, src.container.as_deref()?))
    }

    /// Full metadata for a file's container, if the pod is known.
    pub fn lookup(&self, src: &SourceInfo) -> Option<Metadata> {
        self.find(src)
            .map(|(pod, container)| pod.metadata(container, src))
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
        "metadata":{"name":"web-1","namespace":"shop","uid":"u1","labels":{"app":"web"},
          "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{...}","team":"a"},
          "managedFields":[{"manager":"kubectl","operation":"Apply"}]},
        "spec":{"nodeName":"node-1","containers":[{"name":"nginx","image":"nginx:1.27","env":[{"name":"A","value":"b"}]}]},
        "status":{"podIP":"10.0.0.5","conditions":[{"type":"Ready","status":"True"}],
          "containerStatuses":[{"name":"nginx","image":"nginx:1.27","imageID":"sha256:aa",
          "containerID":"docker://abc","ready":true,"restartCount":1,
          "lastState":{"terminated":{"exitCode":1,"containerID":"docker://old"}}}]}}]}"#;

    #[test]
    fn lookup_by_container_id_and_by_uid() {
        let idx = PodIndex::from_json(LIST.as_bytes()).unwrap();
        let m = idx.lookup(&SourceInfo::from_docker_id("abc")).unwrap();
        assert_eq!(m.pod.as_deref(), Some("web-1"));
        assert_eq!(m.container.as_deref(), Some("nginx"));
        assert_eq!(m.host.as_deref(), Some("node-1"));
        assert_eq!(m.image_id.as_deref(), Some("sha256:aa"));
        assert_eq!(m.labels["app"], "web");
        let prev = idx.lookup(&SourceInfo::from_docker_id("old")).unwrap();
        assert_eq!(
            prev.container_id.as_deref(),
            Some("old"),
            "the previous instance's log is found too"
        );
        let cri = SourceInfo::from_cri_dirs("shop_web-1_u1", "nginx");
        let m = idx.lookup(&cri).unwrap();
        assert_eq!(m.container_id.as_deref(), Some("abc"));
        assert!(idx.lookup(&SourceInfo::from_docker_id("nope")).is_none());
        assert!(idx
            .lookup(&SourceInfo::from_cri_dirs("shop_web-1_u2", "nginx"))
            .is_none());
    }

    #[test]
    fn trimmed_to_what_documents_use() {
        let idx = PodIndex::from_json(LIST.as_bytes()).unwrap();
        let e = idx.get("u1").unwrap();
        assert_eq!(
            e.annotations,
            BTreeMap::from([("team".to_owned(), "a".to_owned())])
        );
        let json = serde_json::to_string(e).unwrap();
        for gone in ["managedFields", "manager", "env", "Ready", "last-applied"] {
            assert!(!json.contains(gone), "{gone} kept: {json}");
        }
        assert_eq!(e.containers[0].ids, ["abc", "old"]);
    }

    #[test]
    fn insert_replaces_and_remove_forgets_container_ids() {
        let mut idx = PodIndex::from_json(LIST.as_bytes()).unwrap();
        let mut e = idx.get("u1").unwrap().clone();
        e.containers[0].ids = vec!["new".into()];
        assert!(idx.insert(e).is_some());
        assert_eq!(idx.len(), 1);
        assert!(idx.lookup(&SourceInfo::from_docker_id("abc")).is_none());
        assert!(idx.lookup(&SourceInfo::from_docker_id("new")).is_some());
        assert!(idx.remove("u1").is_some());
        assert!(idx.lookup(&SourceInfo::from_docker_id("new")).is_none());
        assert!(idx.is_empty());
    }

    #[test]
    fn owners() {
        let pod = |kind: &str, name: &str, hash: Option<&str>| {
            let labels = hash.map_or(String::new(), |h| {
                format!(r#","labels":{{"pod-template-hash":"{h}"}}"#)
            });
            let json = format!(
                r#"{{"kind":"Pod","metadata":{{"uid":"u"{labels},"ownerReferences":[
                   {{"apiVersion":"v1","kind":"Other","name":"x","uid":"1"}},
                   {{"apiVersion":"apps/v1","kind":"{kind}","name":"{name}","uid":"2","controller":true}}]}}}}"#
            );
            let idx = PodIndex::from_json(json.as_bytes()).unwrap();
            let o = idx.get("u").unwrap().owner.clone().unwrap();
            (o.kind, o.name)
        };
        let o = |k: &str, n: &str| (k.to_owned(), n.to_owned());
        assert_eq!(
            pod("ReplicaSet", "web-7d9f8b6c5", Some("7d9f8b6c5")),
            o("Deployment", "web")
        );
        assert_eq!(
            pod("ReplicaSet", "my-web-7d9f8b6c5", None),
            o("Deployment", "my-web")
        );
        assert_eq!(
            pod("ReplicaSet", "web-7d9f8b6c5", Some("other")),
            o("ReplicaSet", "web-7d9f8b6c5")
        );
        assert_eq!(
            pod("ReplicaSet", "hand-made", None),
            o("ReplicaSet", "hand-made")
        );
        assert_eq!(pod("StatefulSet", "db", None), o("StatefulSet", "db"));
        assert_eq!(pod("DaemonSet", "agent", None), o("DaemonSet", "agent"));
        assert_eq!(
            pod("Job", "migrate-28700000", None),
            o("Job", "migrate-28700000")
        );
        let none = PodIndex::from_json(br#"{"kind":"Pod","metadata":{"uid":"u"}}"#).unwrap();
        assert_eq!(none.get("u").unwrap().owner, None);
    }

    #[test]
    fn exclusion_annotations() {
        let mut e = PodEntry::default();
        assert!(!e.excludes(Some("a")));
        e.annotations
            .insert(EXCLUDE_CONTAINERS_KEY.into(), "a, b".into());
        assert!(e.excludes(Some("a")) && e.excludes(Some("b")));
        assert!(!e.excludes(Some("c")) && !e.excludes(None));
        e.annotations.insert(EXCLUDE_KEY.into(), "false".into());
        assert!(!e.excludes(Some("c")));
        e.annotations.insert(EXCLUDE_KEY.into(), "true".into());
        assert!(e.excludes(Some("c")) && e.excludes(None));
    }

    #[test]
    fn the_exclude_label_works_like_the_annotation() {
        let mut e = PodEntry::default();
        e.labels.insert(EXCLUDE_KEY.into(), "false".into());
        assert!(!e.excludes(Some("a")));
        e.labels.insert(EXCLUDE_KEY.into(), " true".into());
        assert!(e.excludes(Some("a")) && e.excludes(None));
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
