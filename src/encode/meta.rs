//! The `docker` and `kubernetes` parts of a document, and `shipper.metadata`: how much
//! of it is known. [`crate::enrich`] fills a [`Metadata`]; it is rendered here, once per
//! file, into the fragment `,"docker":{...},"kubernetes":{...}` that every record of the
//! file carries (see [`super::Encoder`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The workload a pod belongs to (`Deployment` resolved through its ReplicaSet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

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
    /// Rendered only when annotations are asked for (`kubernetes.annotations`).
    pub annotations: BTreeMap<String, String>,
    /// The workload (Deployment, StatefulSet, DaemonSet, Job, ...): an extra field.
    pub owner: Option<Owner>,
    pub namespace_id: Option<String>,
    pub namespace_labels: BTreeMap<String, String>,
    /// The pod was found (in the API cache or a pod list): `complete`.
    pub from_api: bool,
    /// A host file's path (rendered as `path`, which the text field `log` cannot
    /// collide with).
    pub path: Option<String>,
    /// A journal entry's systemd unit (`kernel` for the kernel's), for rules; journal
    /// documents render their own fields.
    pub unit: Option<String>,
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
    /// out). Label and annotation keys are de-dotted (`app.kubernetes.io/name` →
    /// `app_kubernetes_io/name`) when `dedot` is set, so `app` and `app.kubernetes.io/name`
    /// never collide as object and keyword in the mapping. Annotations are rendered only
    /// with `annotations` (they can be large and are rarely searched).
    pub fn render(&self, dedot: bool, annotations: bool) -> Vec<u8> {
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
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            annotations: BTreeMap<String, &'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            namespace_id: Option<&'a str>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            namespace_labels: BTreeMap<String, &'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            owner: Option<&'a Owner>,
        }
        fn keys(map: &BTreeMap<String, String>, dedot: bool) -> BTreeMap<String, &str> {
            map.iter()
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
                .collect()
        }
        let mut out = Vec::new();
        if let Some(path) = &self.path {
            out.extend_from_slice(br#","path":"#);
            let _ = serde_json::to_writer(&mut out, path);
        }
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
            labels: keys(&self.labels, dedot),
            annotations: if annotations {
                keys(&self.annotations, dedot)
            } else {
                BTreeMap::new()
            },
            namespace_id: self.namespace_id.as_deref(),
            namespace_labels: keys(&self.namespace_labels, dedot),
            owner: self.owner.as_ref(),
        };
        if k.container_name.is_some()
            || k.namespace_name.is_some()
            || k.pod_name.is_some()
            || k.pod_id.is_some()
            || k.host.is_some()
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
        assert!(m.render(true, true).is_empty());
        m.container_id = Some("abc".into());
        m.namespace = Some("shop".into());
        m.labels
            .insert("app.kubernetes.io/name".into(), "web".into());
        m.labels.insert("app".into(), "web".into());
        m.pod = Some("web-1".into());
        assert_eq!(m.level(), Level::Partial);
        m.annotations.insert("a.b/c".into(), "d".into());
        m.namespace_labels.insert("env.x".into(), "prod".into());
        m.namespace_id = Some("ns-uid".into());
        m.owner = Some(Owner {
            kind: "Deployment".into(),
            name: "web".into(),
        });
        let json = format!(
            "{{{}}}",
            std::str::from_utf8(&m.render(true, false)[1..]).unwrap()
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["docker"]["container_id"], "abc");
        assert_eq!(v["kubernetes"]["labels"]["app_kubernetes_io/name"], "web");
        assert_eq!(v["kubernetes"]["labels"]["app"], "web");
        assert_eq!(v["kubernetes"]["namespace_id"], "ns-uid");
        assert_eq!(v["kubernetes"]["namespace_labels"]["env_x"], "prod");
        assert_eq!(
            v["kubernetes"]["owner"],
            serde_json::json!({"kind": "Deployment", "name": "web"})
        );
        assert!(v["kubernetes"].get("annotations").is_none(), "opt-in");
        m.from_api = true;
        assert_eq!(m.level(), Level::Complete);
        let raw = String::from_utf8(m.render(false, true)).unwrap();
        assert!(raw.contains(r#""app.kubernetes.io/name":"web""#));
        assert!(raw.contains(r#""annotations":{"a.b/c":"d"}"#), "{raw}");
    }
}
