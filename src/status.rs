//! The agent's one HTTP listener: `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /healthz` (liveness: the agent's own workers are alive and beating) and
//! `GET /readyz` (configuration loaded, buffer open, pipeline started).
//!
//! It runs on the agent's async runtime and reads only atomics (through [`Metrics`] and
//! [`crate::metrics::Liveness`]), so a scrape never waits on, or slows, the data path.
//! Liveness deliberately ignores Elasticsearch and the API server: restarting an agent
//! does not bring a cluster back, and every agent restarting at once during an outage
//! would only add load.

use crate::metrics::{GaugeFn, Metrics, Stats, CONTENT_TYPE};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more wait in the accept queue. Scrapers and probes open
/// a handful.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("metrics.addr: `{0}` is not an address (host:port)")]
    Addr(String),
    #[error("cannot listen on {addr} (metrics.addr): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// What the endpoints report.
#[derive(Debug)]
pub struct Status {
    pub metrics: Metrics,
    pub stats: Arc<Stats>,
    /// Set once the pipeline runs; cleared when it stops.
    pub ready: AtomicBool,
    /// A worker without a heartbeat for longer than this fails `/healthz`.
    pub liveness_timeout: Duration,
}

/// An answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: u16, body: impl Into<String>) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

impl Status {
    /// Answers one request (pure: no I/O).
    pub fn answer(&self, method: &Method, path: &str) -> Answer {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(404, "not found: try /metrics, /healthz or /readyz\n");
        }
        if method != Method::GET && method != Method::HEAD {
            return text(405, "method not allowed: GET only\n");
        }
        match path {
            "/metrics" => Answer {
                status: 200,
                content_type: CONTENT_TYPE,
                body: self.metrics.render(),
            },
            "/healthz" => {
                self.stats.live.beat(crate::metrics::Worker::Runtime);
                let bad = self.stats.live.check(self.liveness_timeout);
                if bad.is_empty() {
                    text(200, "ok\n")
                } else {
                    let list: Vec<String> = bad.iter().map(ToString::to_string).collect();
                    text(503, format!("unhealthy: {}\n", list.join("; ")))
                }
            }
            _ => {
                if self.ready.load(Ordering::Relaxed) {
                    text(200, "ready\n")
                } else {
                    text(503, "not ready: starting or stopping\n")
                }
            }
        }
    }
}

/// Binds the metrics/health listener (unless disabled) and serves it on `runtime`: the
/// counters in `stats` plus `gauges` read at scrape time (name, help, value).
pub fn start(
    cfg: &crate::config::Config,
    runtime: &tokio::runtime::Runtime,
    stats: &Arc<Stats>,
    gauges: Vec<(&'static str, &'static str, GaugeFn)>,
) -> anyhow::Result<Option<Arc<Status>>> {
    if !cfg.metrics.enabled {
        tracing::info!("metrics listener disabled (metrics.enabled = false)");
        return Ok(None);
    }
    let metrics = Metrics::new(stats.clone(), gauges).context("building the metrics registry")?;
    let listener = bind(&cfg.metrics.addr)?;
    let addr = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    let status = Arc::new(Status {
        metrics,
        stats: stats.clone(),
        ready: AtomicBool::new(false),
        liveness_timeout: Duration::from_millis(cfg.metrics.liveness_timeout_ms),
    });
    // The runtime answers `/healthz` itself: a request served is its heartbeat, and a
    // runtime that stopped answers nothing (the probe fails). No periodic task.
    stats.live.start(crate::metrics::Worker::Runtime);
    // Registering the listener with the reactor needs the runtime's context.
    let _entered = runtime.enter();
    runtime.spawn(serve(listener, status.clone()));
    tracing::info!(%addr, "metrics listening");
    Ok(Some(status))
}

/// Parses and binds `addr` (synchronously, so a bad address fails the start).
pub fn bind(addr: &str) -> Result<std::net::TcpListener, StatusError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| StatusError::Addr(addr.to_owned()))?;
    let bind_err = |source| StatusError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let l = std::net::TcpListener::bind(parsed).map_err(bind_err)?;
    l.set_nonblocking(true).map_err(bind_err)?;
    Ok(l)
}

/// Serves `listener` until the runtime shuts down. Must run inside a tokio runtime.
pub async fn serve(listener: std::net::TcpListener, status: Arc<Status>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable; /metrics, /healthz and /readyz are down");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                crate::log_every!(crate::logging::EVERY, warn, error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let a = status.answer(req.method(), req.uri().path());
                let mut r = Response::new(Full::new(Bytes::from(a.body)));
                *r.status_mut() =
                    StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(a.content_type),
                );
                if a.status == 405 {
                    r.headers_mut().insert(
                        hyper::header::ALLOW,
                        hyper::header::HeaderValue::from_static("GET, HEAD"),
                    );
                }
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            // A client going away mid-request is its business.
            let _ = conn.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Worker;

    fn status() -> Status {
        let stats = Arc::new(Stats::default());
        Status {
            metrics: Metrics::new(stats.clone(), vec![]).unwrap(),
            stats,
            ready: AtomicBool::new(false),
            liveness_timeout: Duration::from_millis(50),
        }
    }

    #[test]
    fn routes_methods_and_readiness() {
        let s = status();
        assert_eq!(s.answer(&Method::GET, "/nope").status, 404);
        assert_eq!(s.answer(&Method::POST, "/metrics").status, 405);
        assert_eq!(s.answer(&Method::DELETE, "/healthz").status, 405);
        let m = s.answer(&Method::GET, "/metrics");
        assert_eq!((m.status, m.content_type), (200, CONTENT_TYPE));
        assert!(m.body.contains("shipper_build_info{version="), "{}", m.body);
        assert_eq!(s.answer(&Method::GET, "/readyz").status, 503);
        s.ready.store(true, Ordering::Relaxed);
        assert_eq!(s.answer(&Method::GET, "/readyz").status, 200);
        assert_eq!(s.answer(&Method::HEAD, "/readyz").status, 200);
    }

    #[test]
    fn healthz_names_the_stale_or_dead_worker() {
        let s = status();
        assert_eq!(
            s.answer(&Method::GET, "/healthz").status,
            200,
            "nothing started"
        );
        s.stats.live.start(Worker::Reader);
        s.stats.live.start(Worker::Shipper);
        assert_eq!(s.answer(&Method::GET, "/healthz").status, 200);
        // The shipper waits on Elasticsearch: only its death counts, not its silence.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let stale = loop {
            let a = s.answer(&Method::GET, "/healthz");
            if a.status == 503 || std::time::Instant::now() > deadline {
                break a;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(stale.status, 503);
        assert!(
            stale.body.contains("reader: no heartbeat"),
            "{}",
            stale.body
        );
        assert!(!stale.body.contains("shipper"), "{}", stale.body);
        s.stats.live.beat(Worker::Reader);
        assert_eq!(s.answer(&Method::GET, "/healthz").status, 200);
        s.stats.live.exited(Worker::Shipper);
        let a = s.answer(&Method::GET, "/healthz");
        assert_eq!(a.status, 503);
        assert!(a.body.contains("shipper: exited"), "{}", a.body);
        s.stats.live.stopping();
        s.stats.live.beat(Worker::Reader);
        assert_eq!(
            s.answer(&Method::GET, "/healthz").status,
            200,
            "exits while stopping are expected"
        );
    }
}
