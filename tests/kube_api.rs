//! A Kubernetes API server on loopback for Pods and Namespaces, speaking the wire
//! protocol the real one does, so tests run the real `kube` client against it:
//!
//! - `GET /api/v1/pods` and `/api/v1/namespaces`: lists with `metadata.resourceVersion`,
//!   `limit`/`continue` pagination and `fieldSelector` (`spec.nodeName`,
//!   `metadata.name`, `metadata.namespace`; `=`, `==`, `!=`);
//! - the same with `watch=true&resourceVersion=N`: a chunked stream of JSON lines
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`) of every change after `N`, then live;
//!   a version older than the last compaction gets an `ERROR` event with a `410 Expired`
//!   status, as from a real server;
//! - faults on demand: watches ended cleanly or cut mid-stream, slow list responses, and
//!   a "down" mode that accepts connections and closes them at once.
//!
//! Resource versions are one counter for both kinds, like etcd's revision.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Body = UnsyncBoxBody<Bytes, io::Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Namespace,
}

impl Kind {
    fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Namespace => "NamespaceList",
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Req {
    pub kind: Kind,
    pub watch: bool,
    pub query: BTreeMap<String, String>,
}

/// One event written on a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub kind: Kind,
    pub kind_of_event: String,
    pub rv: u64,
    pub name: String,
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    event: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    /// Watches from a version below this get `410 Gone`.
    compacted: u64,
    /// The version of the latest bookmark (0: none).
    bookmark: u64,
    /// Lines of garbage to send on open watches, counted since start.
    garbage: u64,
    down: bool,
    list_delay: Duration,
    /// Bumped to end every open watch; `abort` says whether mid-stream (an error on the
    /// client's side) or cleanly (the client just watches again).
    cut: u64,
    abort: bool,
    requests: Vec<Req>,
    delivered: Vec<Delivered>,
    /// Bytes of list responses sent.
    list_bytes: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the watch streams.
    tick: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.tick.send_modify(|t| *t += 1);
    }
}

/// The server, running on its own thread until dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 100,
                ..State::default()
            }),
            tick: tokio::sync::watch::channel(0).0,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let mut stopped = stopped;
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                if shared.lock().down {
                                    drop(stream);
                                    continue;
                                }
                                let shared = shared.clone();
                                tokio::spawn(async move {
                                    let io = hyper_util::rt::TokioIo::new(stream);
                                    let svc = hyper::service::service_fn(move |req| {
                                        let shared = shared.clone();
                                        async move { Ok::<_, io::Error>(handle(&shared, req).await) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(io, svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
        };
        FakeApi {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Writes a kubeconfig pointing at this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user:\n    token: test-token\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// Creates or updates an object (`kind` is read from the object). Returns its version.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = match object["kind"].as_str() {
            Some("Pod") => Kind::Pod,
            Some("Namespace") => Kind::Namespace,
            k => panic!("unsupported kind {k:?}"),
        };
        let mut s = self.shared.lock();
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(kind, &object);
        let event = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, object.clone());
        s.history.push(Change {
            rv,
            kind,
            event,
            object,
        });
        drop(s);
        self.shared.wake();
        rv
    }

    /// Deletes an object. Returns the version of the deletion.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        let mut s = self.shared.lock();
        let mut object = s
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
            .expect("deleting an object that does not exist");
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.history.push(Change {
            rv,
            kind,
            event: "DELETED",
            object,
        });
        drop(s);
        self.shared.wake();
        rv
    }

    /// A change elsewhere in the cluster (another node's pod): the version moves, no
    /// watcher of this node sees an event.
    pub fn bump(&self) -> u64 {
        let mut s = self.shared.lock();
        s.rv += 1;
        s.rv
    }

    /// Sends a `BOOKMARK` at the current version to every watch that asked for them.
    pub fn bookmark(&self) -> u64 {
        let rv = {
            let mut s = self.shared.lock();
            s.bookmark = s.rv;
            s.rv
        };
        self.shared.wake();
        rv
    }

    /// Writes a line that is not JSON on every open watch.
    pub fn send_garbage(&self) {
        self.shared.lock().garbage += 1;
        self.shared.wake();
    }

    /// Forgets history: a watch from any version seen so far gets `410 Gone`.
    pub fn compact(&self) {
        let mut s = self.shared.lock();
        s.compacted = s.rv + 1;
        s.history.clear();
    }

    /// Ends every open watch: `abort` cuts the connection mid-stream, otherwise the
    /// stream ends cleanly (as at `timeoutSeconds`).
    pub fn drop_watches(&self, abort: bool) {
        {
            let mut s = self.shared.lock();
            s.cut += 1;
            s.abort = abort;
        }
        self.shared.wake();
    }

    /// Down: every new connection is closed at once (connections already open keep
    /// going; pair with [`FakeApi::drop_watches`]).
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Lists answer only after this long.
    pub fn set_list_delay(&self, d: Duration) {
        self.shared.lock().list_delay = d;
    }

    pub fn version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Bytes of list responses sent so far.
    pub fn list_bytes(&self) -> u64 {
        self.shared.lock().list_bytes
    }

    pub fn requests(&self) -> Vec<Req> {
        self.shared.lock().requests.clone()
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.lock().delivered.clone()
    }

    /// Number of (list, watch) requests for `kind`.
    pub fn count(&self, kind: Kind) -> (usize, usize) {
        let r = self.requests();
        let n = |w: bool| r.iter().filter(|q| q.kind == kind && q.watch == w).count();
        (n(false), n(true))
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open watch streams end with the runtime.
        self.drop_watches(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `cond` holds, at most `timeout`; panics naming `what` otherwise.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn key_of(kind: Kind, object: &Value) -> (Kind, String, String) {
    let m = &object["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (kind, s(&m["namespace"]), s(&m["name"]))
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// `a=b&c=d%3De` → map, percent- and `+`-decoded.
fn parse_query(q: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether `object` passes a field selector such as `spec.nodeName=node-1,metadata.name!=x`.
fn selected(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            return false;
        };
        let have = match field {
            "spec.nodeName" => object["spec"]["nodeName"].as_str(),
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            _ => return false,
        }
        .unwrap_or("");
        (have == want) == equal
    })
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let kind = match req.uri().path() {
        "/api/v1/pods" => Kind::Pod,
        "/api/v1/namespaces" => Kind::Namespace,
        other => {
            return full(
                StatusCode::NOT_FOUND,
                status(
                    404,
                    "NotFound",
                    &format!("the server could not find {other}"),
                ),
            )
        }
    };
    let query = parse_query(req.uri().query().unwrap_or(""));
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    // What a watch has already seen is fixed when its request is counted: garbage sent
    // after a test saw the watch open is sent on it.
    let (delay, garbage_seen) = {
        let mut s = shared.lock();
        s.requests.push(Req {
            kind,
            watch,
            query: query.clone(),
        });
        (s.list_delay, s.garbage)
    };
    if watch {
        return watch_stream(shared.clone(), kind, query, garbage_seen);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    list(shared, kind, &query)
}

fn list(shared: &Shared, kind: Kind, query: &BTreeMap<String, String>) -> Response<Body> {
    let mut s = shared.lock();
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((k, _, _), o)| *k == kind && selected(query.get("fieldSelector"), o))
        .map(|(_, o)| {
            // Items of a real list carry no kind/apiVersion of their own.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let start: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page = items.get(start..end).unwrap_or(&[]).to_vec();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(end.to_string());
    }
    let body =
        json!({"kind": kind.list_kind(), "apiVersion": "v1", "metadata": metadata, "items": page});
    s.list_bytes += serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);
    drop(s);
    full(StatusCode::OK, body)
}

fn watch_stream(
    shared: Arc<Shared>,
    kind: Kind,
    query: BTreeMap<String, String>,
    garbage_seen: u64,
) -> Response<Body> {
    let (mut tx, body) = Channel::<Bytes, io::Error>::new(64);
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let selector = query.get("fieldSelector").cloned();
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).unwrap();
            b.push(b'\n');
            Bytes::from(b)
        };
        let mut ticks = shared.tick.subscribe();
        let (cut_at_start, too_old) = {
            let s = shared.lock();
            (s.cut, from < s.compacted)
        };
        if too_old {
            let gone = status(410, "Expired", &format!("too old resource version: {from}"));
            let _ = tx
                .send_data(line(json!({"type": "ERROR", "object": gone})))
                .await;
            return;
        }
        let mut cursor = from;
        let mut bookmark_sent = 0;
        let mut garbage_sent = garbage_seen;
        loop {
            ticks.borrow_and_update();
            let (frames, cut) = {
                let mut s = shared.lock();
                if s.cut != cut_at_start {
                    (Vec::new(), Some(s.abort))
                } else {
                    let mut frames = Vec::new();
                    if s.garbage > garbage_sent {
                        garbage_sent = s.garbage;
                        frames.push(Bytes::from_static(
                            b"{\"type\": \"ADDED\", \"object\": [garbage\n",
                        ));
                    }
                    let changes: Vec<Change> = s
                        .history
                        .iter()
                        .filter(|c| {
                            c.rv > cursor
                                && c.kind == kind
                                && selected(selector.as_ref(), &c.object)
                        })
                        .cloned()
                        .collect();
                    for c in changes {
                        cursor = c.rv;
                        s.delivered.push(Delivered {
                            kind,
                            kind_of_event: c.event.to_owned(),
                            rv: c.rv,
                            name: c.object["metadata"]["name"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        });
                        frames.push(line(json!({"type": c.event, "object": c.object})));
                    }
                    if bookmarks && s.bookmark > bookmark_sent && s.bookmark >= cursor {
                        bookmark_sent = s.bookmark;
                        let (k, api) = match kind {
                            Kind::Pod => ("Pod", "v1"),
                            Kind::Namespace => ("Namespace", "v1"),
                        };
                        let rv = s.bookmark;
                        s.delivered.push(Delivered {
                            kind,
                            kind_of_event: String::from("BOOKMARK"),
                            rv,
                            name: String::new(),
                        });
                        frames.push(line(json!({"type": "BOOKMARK", "object": {
                            "kind": k, "apiVersion": api,
                            "metadata": {"resourceVersion": s.bookmark.to_string()}}})));
                    }
                    (frames, None)
                }
            };
            for f in frames {
                if tx.send_data(f).await.is_err() {
                    return;
                }
            }
            match cut {
                Some(true) => {
                    tx.abort(io::Error::other("connection cut by the test"));
                    return;
                }
                Some(false) => return,
                None => {}
            }
            if ticks.changed().await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body.boxed_unsync())
        .unwrap()
}

/// A pod as the API returns it. `containers` are (name, runtime container id).
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    containers: &[(&str, &str)],
    labels: Value,
    annotations: Value,
) -> Value {
    let specs: Vec<Value> = containers
        .iter()
        .map(|(c, _)| json!({"name": c, "image": format!("registry.example/{c}:1.0")}))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, id)| {
            json!({"name": c, "image": format!("registry.example/{c}:1.0"),
                   "imageID": format!("registry.example/{c}@sha256:{}", "ab".repeat(32)),
                   "containerID": format!("containerd://{id}"), "ready": true, "restartCount": 0,
                   "state": {"running": {"startedAt": "2024-07-08T03:40:00Z"}}})
        })
        .collect();
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{}-5d78c9869d", name.split('-').next().unwrap_or(name)),
                "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "time": "2024-07-08T03:40:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}}}],
            "creationTimestamp": "2024-07-08T03:40:00Z"
        },
        "spec": {"nodeName": node, "containers": specs, "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIP": "10.244.1.7", "hostIP": "192.168.1.10",
                   "podIPs": [{"ip": "10.244.1.7"}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": statuses}
    })
}

pub fn namespace(name: &str, uid: &str, labels: Value) -> Value {
    json!({"kind": "Namespace", "apiVersion": "v1",
           "metadata": {"name": name, "uid": uid, "labels": labels,
                        "creationTimestamp": "2024-07-01T00:00:00Z"},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}
