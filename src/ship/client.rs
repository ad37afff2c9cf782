//! HTTP to Elasticsearch: endpoints, credentials, TLS, version detection, the index
//! template, and the bulk request itself.
//!
//! Endpoints are used round-robin; one that fails is skipped for a growing backoff (the
//! headless Service gives one URL per pod). Credentials never appear in logs or errors:
//! they are held as [`Secret`]s and any `user:pass@` in a URL is moved into basic auth.

use crate::config::{redact_url, Elasticsearch, Secret};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Url;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("elasticsearch.urls: `{0}` is not a usable URL")]
    Url(String),
    #[error("reading {what} from {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("reading CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("building the HTTP client: {0}")]
    Build(String),
    #[error("{method} {url}: {reason}")]
    Http {
        method: &'static str,
        url: String,
        reason: String,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected answer to GET /: {reason}")]
    Info { url: String, reason: String },
}

/// Which server answered `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub opensearch: bool,
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// Composable `_index_template` exists from Elasticsearch 7.8 and in every OpenSearch.
    pub fn composable_templates(&self) -> bool {
        self.opensearch || (self.major, self.minor) >= (7, 8)
    }

    /// Data streams exist from Elasticsearch 7.9 and in every OpenSearch.
    pub fn data_streams(&self) -> bool {
        self.opensearch || (self.major, self.minor) >= (7, 9)
    }

    pub fn parse_info(body: &[u8]) -> Result<Version, String> {
        #[derive(Deserialize)]
        struct Info {
            version: V,
        }
        #[derive(Deserialize)]
        struct V {
            number: String,
            #[serde(default)]
            distribution: Option<String>,
        }
        let info: Info = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let mut parts = info.version.number.split(['.', '-']);
        let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let (major, minor) = (num().ok_or("no major version")?, num().unwrap_or(0));
        Ok(Version {
            opensearch: info.version.distribution.as_deref() == Some("opensearch"),
            major,
            minor,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.opensearch {
            "OpenSearch"
        } else {
            "Elasticsearch"
        };
        write!(f, "{name} {}.{}", self.major, self.minor)
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub endpoint: usize,
}

struct Health {
    failures: u32,
    retry_at: Option<Instant>,
}

/// The Elasticsearch client.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    auth: Arc<Credentials>,
    next: AtomicUsize,
    health: Mutex<Vec<Health>>,
    /// Endpoints whose last request got an answer below 500; kept beside `health` so
    /// metrics read it without that lock.
    answering: AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self.endpoints.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn read_secret(what: &'static str, path: &std::path::Path) -> Result<Secret, ClientError> {
    std::fs::read_to_string(path)
        .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
        .map_err(|source| ClientError::SecretFile {
            what,
            path: path.display().to_string(),
            source,
        })
}

/// The `Authorization` header the settings give (credential files read now), with the
/// URLs stripped of any `user:pass@`.
fn credentials(cfg: &Elasticsearch) -> Result<(Option<HeaderValue>, Vec<Url>), ClientError> {
    let mut username = cfg.username.clone();
    let mut password = match &cfg.password_file {
        Some(p) => Some(read_secret("password", p)?),
        None => cfg.password.clone(),
    };
    let mut endpoints = Vec::new();
    for u in &cfg.urls {
        let mut url = Url::parse(u).map_err(|_| ClientError::Url(redact_url(u)))?;
        if !url.username().is_empty() {
            username.get_or_insert_with(|| url.username().to_owned());
            if let Some(p) = url.password() {
                password.get_or_insert_with(|| Secret(p.to_owned()));
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        endpoints.push(url);
    }
    let api_key = match &cfg.api_key_file {
        Some(p) => Some(read_secret("API key", p)?),
        None => cfg.api_key.clone(),
    };
    let auth = match (api_key, username) {
        (Some(key), _) => Some(format!("ApiKey {}", key.0)),
        (None, Some(user)) => {
            use base64::Engine;
            let pass = password.map(|p| p.0).unwrap_or_default();
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            ))
        }
        (None, None) => None,
    };
    let auth = match auth {
        Some(a) => {
            let mut v = HeaderValue::from_str(&a).map_err(|_| {
                ClientError::Build(String::from("credentials contain invalid characters"))
            })?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    Ok((auth, endpoints))
}

/// The credentials every request carries; replaced when their files change (Secret
/// volumes are updated in place).
#[derive(Default)]
pub struct Credentials(std::sync::RwLock<Option<HeaderValue>>);

impl Credentials {
    fn get(&self) -> Option<HeaderValue> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the credential files again; returns whether the credentials changed.
    pub fn reload(&self, cfg: &Elasticsearch) -> Result<bool, ClientError> {
        let (auth, _) = credentials(cfg)?;
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = *cur != auth;
        *cur = auth;
        Ok(changed)
    }
}

impl Client {
    pub fn new(cfg: &Elasticsearch) -> Result<Client, ClientError> {
        let (auth, endpoints) = credentials(cfg)?;
        let auth = Arc::new(Credentials(std::sync::RwLock::new(auth)));
        // One process-wide TLS provider; a second install attempt is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("shipper/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ClientError::Ca {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::Ca {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ClientError::Ca {
                    path: ca.display().to_string(),
                    reason: String::from("no certificate in file"),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if cfg.tls_skip_verify {
            tracing::warn!("elasticsearch.tls_skip_verify is set: TLS certificates are NOT verified; anyone on the path can read and alter the logs");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let health = endpoints
            .iter()
            .map(|_| Health {
                failures: 0,
                retry_at: None,
            })
            .collect();
        let answering = AtomicUsize::new(endpoints.len());
        Ok(Client {
            http,
            endpoints,
            auth,
            next: AtomicUsize::new(0),
            health: Mutex::new(health),
            answering,
        })
    }

    /// The next endpoint to use: round-robin over healthy ones; when none is healthy, the
    /// one that becomes retryable first.
    fn pick(&self) -> usize {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| health[i].retry_at.is_none_or(|t| t <= now))
            .unwrap_or_else(|| (0..n).min_by_key(|&i| health[i].retry_at).unwrap_or(0))
    }

    fn mark(&self, i: usize, ok: bool) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = health.get_mut(i) else { return };
        if ok {
            h.failures = 0;
            h.retry_at = None;
        } else {
            h.failures = h.failures.saturating_add(1);
            let backoff = Duration::from_millis(250u64 << h.failures.min(7));
            h.retry_at = Some(Instant::now() + backoff);
        }
        let answering = health.iter().filter(|h| h.failures == 0).count();
        self.answering.store(answering, Ordering::Relaxed);
    }

    /// Endpoints configured.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Endpoints whose last request was answered (below 500); lock-free, for metrics.
    pub fn answering_endpoints(&self) -> usize {
        self.answering.load(Ordering::Relaxed)
    }

    /// Endpoints currently considered healthy.
    #[cfg(test)]
    pub fn healthy_endpoints(&self) -> usize {
        let now = Instant::now();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health
            .iter()
            .filter(|h| h.retry_at.is_none_or(|t| t <= now))
            .count()
    }

    /// The endpoint's URL for `path`, which may carry a query (`/_bulk?filter_path=…`).
    fn url(&self, i: usize, path: &str) -> Url {
        let mut u = self.endpoints[i].clone();
        let base = u.path().trim_end_matches('/').to_owned();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        u.set_path(&format!("{base}{path}"));
        if !query.is_empty() {
            // Keep a query the endpoint itself carries (a gateway's token, say).
            let merged = match u.query() {
                Some(own) if !own.is_empty() => format!("{own}&{query}"),
                _ => query.to_owned(),
            };
            u.set_query(Some(&merged));
        }
        u
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let i = self.pick();
        let url = self.url(i, path);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some(a) = self.auth.get() {
            req = req.header(AUTHORIZATION, a);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let result = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        match result {
            Ok((status, body)) => {
                // A node that answers is reachable; 5xx marks it unhealthy so others get
                // the load while it recovers.
                self.mark(i, status < 500);
                Ok(Answer {
                    status,
                    body,
                    endpoint: i,
                })
            }
            Err(e) => {
                self.mark(i, false);
                Err(ClientError::Http {
                    method: method_name(&method),
                    url: url.to_string(),
                    reason: error_chain(&e),
                })
            }
        }
    }

    /// `GET /`: which server and version.
    pub async fn info(&self) -> Result<Version, ClientError> {
        let a = self
            .send(reqwest::Method::GET, "/", HeaderMap::new(), None)
            .await?;
        let url = self.endpoints[a.endpoint].to_string();
        if a.status != 200 {
            return Err(ClientError::Status {
                method: "GET",
                url,
                status: a.status,
                body: snippet(&a.body),
            });
        }
        Version::parse_info(&a.body).map_err(|reason| ClientError::Info { url, reason })
    }

    /// What the server holds as the target's index template (404: missing).
    pub async fn get_template(
        &self,
        v: &Version,
        target: &crate::index::Target,
    ) -> Result<super::template::Installed, ClientError> {
        let path = super::template::path(v, target);
        let a = self
            .send(reqwest::Method::GET, &path, HeaderMap::new(), None)
            .await?;
        let url = || self.url(a.endpoint, &path).to_string();
        match a.status {
            404 => Ok(super::template::Installed::Missing),
            200 => super::template::parse_installed(&a.body).ok_or_else(|| ClientError::Status {
                method: "GET",
                url: url(),
                status: a.status,
                body: snippet(&a.body),
            }),
            status => Err(ClientError::Status {
                method: "GET",
                url: url(),
                status,
                body: snippet(&a.body),
            }),
        }
    }

    /// Installs the index template for the target, in the form the server supports.
    pub async fn put_template(
        &self,
        v: &Version,
        target: &crate::index::Target,
        opts: &super::template::Options,
    ) -> Result<(), ClientError> {
        let (path, body) = super::template::request(v, target, opts);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let a = self
            .send(reqwest::Method::PUT, &path, h, Some(Bytes::from(body)))
            .await?;
        if a.status / 100 != 2 {
            return Err(ClientError::Status {
                method: "PUT",
                url: self.url(a.endpoint, &path).to_string(),
                status: a.status,
                body: snippet(&a.body),
            });
        }
        Ok(())
    }

    /// A request that must succeed: the body of a 2xx answer, else an error naming the
    /// method, the URL and the answer.
    pub async fn request_ok(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Bytes, ClientError> {
        let a = self
            .send(method.clone(), path, HeaderMap::new(), None)
            .await?;
        if a.status / 100 != 2 {
            return Err(ClientError::Status {
                method: method_name(&method),
                url: self.url(a.endpoint, path).to_string(),
                status: a.status,
                body: snippet(&a.body),
            });
        }
        Ok(a.body)
    }

    /// `POST /_bulk` with an NDJSON body (gzip-compressed when `gzip`).
    pub async fn bulk(&self, body: Bytes, gzip: bool) -> Result<Answer, ClientError> {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        // Only what is needed to settle each item: a response of a few bytes per
        // document instead of a few hundred (`_index`, `_id`, `_shards`, … dropped).
        self.send(reqwest::Method::POST, BULK_PATH, h, Some(body))
            .await
    }

    /// The endpoint's URL, for logs (never with credentials).
    /// The credentials requests carry, to replace them when their files change.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.auth.clone()
    }

    pub fn endpoint_url(&self, i: usize) -> String {
        self.endpoints
            .get(i)
            .map(Url::to_string)
            .unwrap_or_default()
    }
}

/// The bulk endpoint, asking for the fields the response is read for only (the
/// server keeps `items` in request order, so positions still match).
pub const BULK_PATH: &str = "/_bulk?filter_path=errors,items.*.status,items.*.error";

/// The first bytes of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    s.replace(['\n', '\r'], " ")
}

fn method_name(m: &reqwest::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "request",
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let es7 = Version::parse_info(br#"{"version":{"number":"7.2.0"}}"#).unwrap();
        assert_eq!(
            es7,
            Version {
                opensearch: false,
                major: 7,
                minor: 2
            }
        );
        assert!(!es7.composable_templates());
        let es8 =
            Version::parse_info(br#"{"version":{"number":"8.15.1","build_flavor":"default"}}"#)
                .unwrap();
        assert!(es8.composable_templates());
        let os1 =
            Version::parse_info(br#"{"version":{"distribution":"opensearch","number":"1.3.0"}}"#)
                .unwrap();
        assert!(os1.opensearch && os1.composable_templates());
        assert!(Version::parse_info(b"<html>").is_err());
        assert!(Version::parse_info(br#"{"version":{"number":"x"}}"#).is_err());
    }

    #[test]
    fn credentials_move_out_of_urls_and_never_print() {
        let cfg = Elasticsearch {
            urls: vec!["http://elastic:s3cret@127.0.0.1:9/".into()],
            ..Elasticsearch::default()
        };
        let c = Client::new(&cfg).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cret") && !c.endpoint_url(0).contains("s3cret"),
            "{dbg}"
        );
        assert!(c.auth.get().unwrap().is_sensitive());
    }

    #[test]
    fn unhealthy_endpoints_are_skipped() {
        let cfg = Elasticsearch {
            urls: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            ..Elasticsearch::default()
        };
        let c = Client::new(&cfg).unwrap();
        c.mark(0, false);
        assert_eq!(c.healthy_endpoints(), 1);
        for _ in 0..4 {
            assert_eq!(c.pick(), 1);
        }
        c.mark(1, false);
        assert_eq!(c.healthy_endpoints(), 0);
        let _ = c.pick();
        c.mark(0, true);
        assert_eq!(c.pick(), 0);
    }

    #[test]
    fn request_urls_keep_the_endpoint_path_and_query() {
        let cfg = Elasticsearch {
            urls: vec![
                "http://127.0.0.1:9200".into(),
                "https://gw.example/es/?token=abc".into(),
            ],
            ..Elasticsearch::default()
        };
        let c = Client::new(&cfg).unwrap();
        assert_eq!(
            c.url(0, BULK_PATH).as_str(),
            "http://127.0.0.1:9200/_bulk?filter_path=errors,items.*.status,items.*.error"
        );
        assert_eq!(
            c.url(1, BULK_PATH).as_str(),
            "https://gw.example/es/_bulk?token=abc&filter_path=errors,items.*.status,items.*.error"
        );
        assert_eq!(
            c.url(1, "/_index_template/x").as_str(),
            "https://gw.example/es/_index_template/x?token=abc"
        );
    }
}
