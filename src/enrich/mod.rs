//! Metadata for each log file, rendered once per file into the document fragment
//! `,"docker":{...},"kubernetes":{...}` that every record of the file carries.
//!
//! Sources, best first: a pod list (`--pods`, the output of `kubectl get pods -A -o
//! json`), then what the node itself says: the `/var/log/pods/<ns>_<pod>_<uid>/<container>`
//! path (CRI) or the `io.kubernetes.*` labels in Docker's `config.v2.json` next to the log.
//! The document says which it got: `shipper.metadata` is `complete` (pod found),
//! `partial` (path/config only) or `none`.

mod pods;
mod source;

pub use pods::{PodIndex, PodsError};
pub use source::{docker_config_labels, SourceInfo};

use serde::Serialize;
use std::collections::BTreeMap;

/// How much metadata a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Complete,
    Partial,
    None,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Complete => "complete",
            Level::Partial => "partial",
            Level::None => "none",
        }
    }
}

/// Everything known about one container, ready to render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub container_id: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_id: Option<String>,
    pub container: Option<String>,
    pub pod_ip: Option<String>,
    pub host: Option<String>,
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub from_api: bool,
}

impl Metadata {
    pub fn level(&self) -> Level {
        if self.from_api {
            Level::Complete
        } else if self.namespace.is_some() || self.pod.is_some() || self.container.is_some() {
            Level::Partial
        } else {
            Level::None
        }
    }

    /// Renders `,"docker":{...},"kubernetes":{...}` (parts with nothing in them are left
    /// out). Label keys are de-dotted (`app.kubernetes.io/name` →
    /// `app_kubernetes_io/name`) when `dedot` is set, so `app` and `app.kubernetes.io/name`
    /// never collide as object and keyword in the mapping.
    pub fn render(&self, dedot: bool) -> Vec<u8> {
        #[derive(Serialize)]
        struct Docker<'a> {
            container_id: &'a str,
        }
        #[derive(Serialize)]
        struct Kubernetes<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            container_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            namespace_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pod_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pod_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pod_ip: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            host: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            container_image: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            container_image_id: Option<&'a str>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            labels: BTreeMap<String, &'a str>,
        }
        let mut out = Vec::new();
        if let Some(id) = &self.container_id {
            out.extend_from_slice(br#","docker":"#);
            // Serialising plain strings into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &Docker { container_id: id });
        }
        let k = Kubernetes {
            container_name: self.container.as_deref(),
            namespace_name: self.namespace.as_deref(),
            pod_name: self.pod.as_deref(),
            pod_id: self.pod_id.as_deref(),
            pod_ip: self.pod_ip.as_deref(),
            host: self.host.as_deref(),
            container_image: self.image.as_deref(),
            container_image_id: self.image_id.as_deref(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| {
                    (
                        if dedot {
                            k.replace('.', "_")
                        } else {
                            k.clone()
                        },
                        v.as_str(),
                    )
                })
                .collect(),
        };
        if k.container_name.is_some()
            || k.namespace_name.is_some()
            || k.pod_name.is_some()
            || k.pod_id.is_some()
        {
            out.extend_from_slice(br#","kubernetes":"#);
            let _ = serde_json::to_writer(&mut out, &k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_levels() {
        let mut m = Metadata::default();
        assert_eq!(m.level(), Level::None);
        assert!(m.render(true).is_empty());
        m.container_id = Some("abc".into());
        m.namespace = Some("shop".into());
        m.labels
            .insert("app.kubernetes.io/name".into(), "web".into());
        m.labels.insert("app".into(), "web".into());
        m.pod = Some("web-1".into());
        assert_eq!(m.level(), Level::Partial);
        let json = format!("{{{}}}", std::str::from_utf8(&m.render(true)[1..]).unwrap());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["docker"]["container_id"], "abc");
        assert_eq!(v["kubernetes"]["labels"]["app_kubernetes_io/name"], "web");
        assert_eq!(v["kubernetes"]["labels"]["app"], "web");
        m.from_api = true;
        assert_eq!(m.level(), Level::Complete);
        let raw = String::from_utf8(m.render(false)).unwrap();
        assert!(raw.contains(r#""app.kubernetes.io/name":"web""#));
    }
}
