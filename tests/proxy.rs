//! A fault-injecting HTTP proxy between the agent and the test Elasticsearch: the faults
//! a real cluster produces and an in-memory server cannot (429, 5xx, 413, slow answers,
//! dropped connections, garbage bodies, another version in `GET /`).

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to requests; change it at any time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every request 503 without forwarding.
    pub down: bool,
    /// Close connections without answering.
    pub drop_connections: bool,
    /// Answer every Nth bulk request with this status, without forwarding.
    pub bulk_status_every: Option<(u64, u16)>,
    /// After forwarding, report every Nth item as this status (the document was created:
    /// the retry meets a 409).
    pub item_status_every: Option<(u64, u16)>,
    /// Answer 413 to bulk requests with more documents than this.
    pub max_docs: Option<usize>,
    /// Answer every Nth bulk request 200 with a body that is not JSON.
    pub garbage_every: Option<u64>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Rewrite `version.number` in `GET /`.
    pub version: Option<String>,
    /// Demand this Authorization header (401 otherwise).
    pub require_auth: Option<String>,
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub bulk: AtomicU64,
    /// Items answered so far (the item faults count across requests, so a retried item
    /// is not failed forever).
    pub items: AtomicU64,
    pub injected: AtomicU64,
    pub status_413: AtomicU64,
    pub unauthorized: AtomicU64,
    pub auth_headers: Mutex<Vec<String>>,
    /// `(path, body)` of every template request (`PUT /_template/…`, `/_index_template/…`).
    pub templates: Mutex<Vec<(String, String)>>,
    /// Bulk request paths and action lines (the first 10 000).
    pub bulk_paths: Mutex<Vec<String>>,
    pub actions: Mutex<Vec<String>>,
}

pub struct Proxy {
    pub url: String,
    pub faults: Arc<Mutex<Faults>>,
    pub seen: Arc<Seen>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }

    pub fn injected(&self) -> u64 {
        self.seen.injected.load(Ordering::Relaxed)
    }
}

/// Starts a proxy to `upstream` on a free loopback port.
pub fn start(upstream: &str) -> Proxy {
    start_with(upstream, None)
}

/// Starts a proxy; with `tls`, it serves HTTPS with that acceptor.
pub fn start_with(upstream: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Proxy {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let faults = Arc::new(Mutex::new(Faults::default()));
    let seen = Arc::new(Seen::default());
    let upstream = upstream.trim_end_matches('/').to_owned();
    crate::util::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (f2, s2) = (faults.clone(), seen.clone());
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (faults, seen, client, upstream, tls) = (
                f2.clone(),
                s2.clone(),
                client.clone(),
                upstream.clone(),
                tls.clone(),
            );
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    handle(
                        req,
                        faults.clone(),
                        seen.clone(),
                        client.clone(),
                        upstream.clone(),
                    )
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    Proxy {
        url: format!("{scheme}://{addr}"),
        faults,
        seen,
        _rt: rt,
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Seen>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let f = faults.lock().unwrap().clone();
    if f.drop_connections {
        return Err(std::io::Error::other("dropped by the test proxy"));
    }
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    if f.down {
        seen.injected.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(503, r#"{"error":"test proxy: down"}"#));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(a) = &auth {
        seen.auth_headers.lock().unwrap().push(a.clone());
    }
    if let Some(want) = &f.require_auth {
        if auth.as_deref() != Some(want.as_str()) {
            seen.unauthorized.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(
                401,
                r#"{"error":"missing authentication credentials"}"#,
            ));
        }
    }
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let is_bulk = path.starts_with("/_bulk");
    if method == hyper::Method::PUT && path.contains("template/") {
        seen.templates
            .lock()
            .unwrap()
            .push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
    }
    if is_bulk {
        let n = seen.bulk.fetch_add(1, Ordering::Relaxed) + 1;
        let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        let raw = if gzip {
            let mut raw = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut raw)?;
            raw
        } else {
            body.to_vec()
        };
        let docs = raw.iter().filter(|&&b| b == b'\n').count() / 2;
        seen.bulk_paths.lock().unwrap().push(path.clone());
        {
            let mut actions = seen.actions.lock().unwrap();
            for line in raw.split(|&b| b == b'\n').step_by(2) {
                if actions.len() < 10_000 && !line.is_empty() {
                    actions.push(String::from_utf8_lossy(line).into_owned());
                }
            }
        }
        if let Some((every, status)) = f.bulk_status_every {
            if n.is_multiple_of(every) {
                seen.injected.fetch_add(1, Ordering::Relaxed);
                return Ok(reply(
                    status,
                    format!(r#"{{"error":"test proxy: {status}"}}"#),
                ));
            }
        }
        if f.max_docs.is_some_and(|m| docs > m) {
            seen.status_413.fetch_add(1, Ordering::Relaxed);
            seen.injected.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(413, ""));
        }
        if f.garbage_every.is_some_and(|every| n.is_multiple_of(every)) {
            seen.injected.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(200, "<html>upstream gateway hiccup</html>"));
        }
    }
    let mut fwd = client
        .request(method.clone(), format!("{upstream}{path}"))
        .body(body);
    for name in ["content-type", "content-encoding"] {
        if let Some(v) = headers.get(name) {
            fwd = fwd.header(name, v.clone());
        }
    }
    let resp = match fwd.send().await {
        Ok(r) => r,
        Err(e) => {
            return Ok(reply(
                502,
                format!(r#"{{"error":"test proxy upstream: {e}"}}"#),
            ))
        }
    };
    let status = resp.status().as_u16();
    let mut out = resp.bytes().await.map_err(std::io::Error::other)?;
    if path == "/" && method == hyper::Method::GET {
        if let Some(v) = &f.version {
            let mut info: serde_json::Value = serde_json::from_slice(&out).unwrap();
            info["version"]["number"] = serde_json::Value::String(v.clone());
            info["version"]
                .as_object_mut()
                .unwrap()
                .remove("distribution");
            out = Bytes::from(serde_json::to_vec(&info).unwrap());
        }
    }
    if is_bulk && status == 200 {
        if let Some((every, item_status)) = f.item_status_every {
            let mut r: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let mut changed = 0;
            for item in r["items"].as_array_mut().unwrap().iter_mut() {
                let i = seen.items.fetch_add(1, Ordering::Relaxed) + 1;
                if i.is_multiple_of(every) {
                    let inner = item.as_object_mut().unwrap().values_mut().next().unwrap();
                    inner["status"] = serde_json::json!(item_status);
                    inner["error"] = serde_json::json!({"type": "es_rejected_execution_exception", "reason": "test proxy"});
                    changed += 1;
                }
            }
            if changed > 0 {
                r["errors"] = serde_json::Value::Bool(true);
                seen.injected.fetch_add(changed, Ordering::Relaxed);
                out = Bytes::from(serde_json::to_vec(&r).unwrap());
            }
        }
    }
    Ok(reply(status, out))
}
