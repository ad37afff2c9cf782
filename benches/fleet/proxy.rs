//! The fleet harness's Elasticsearch front: one listener per agent (so every request is
//! known by its agent) before one osmem-server, admitting bulk documents through one
//! shared [`WritePool`] (K documents a second, a bounded queue, 429 whole or per item),
//! or answering 503 to everything while "down". It records, per second, what arrived and
//! what was taken, and per agent which of its sequence numbers were created: the
//! harness's proof of nothing lost and nothing twice.

use super::capacity::WritePool;
use super::report::Timeline;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything recorded since the start.
#[derive(Debug)]
pub struct Record {
    pub timeline: Timeline,
    /// Per agent, per sequence number: how many times it was created.
    pub seqs: Vec<Vec<u8>>,
    /// Per agent, the first sequence number not created yet (as far as looked).
    low: Vec<usize>,
    /// Items osmem answered 409 (already there: a retry of a created document).
    pub already: u64,
    /// Items osmem answered with anything but 201/409, or documents the proxy could not
    /// read a sequence number from.
    pub odd: u64,
}

pub struct Proxy {
    /// One URL per agent.
    pub urls: Vec<String>,
    pub record: Arc<Mutex<Record>>,
    down: Arc<AtomicBool>,
    started: Instant,
    _rt: tokio::runtime::Runtime,
}

struct Shared {
    pool: Mutex<WritePool>,
    record: Arc<Mutex<Record>>,
    down: Arc<AtomicBool>,
    started: Instant,
    upstream: String,
    client: reqwest::Client,
}

impl Proxy {
    /// Starts `agents` listeners on free loopback ports before `upstream`.
    pub fn start(upstream: &str, agents: usize, pool: WritePool) -> Proxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a benchmark without a runtime cannot run");
        let started = Instant::now();
        let record = Arc::new(Mutex::new(Record {
            timeline: Timeline::new(agents),
            seqs: vec![Vec::new(); agents],
            low: vec![0; agents],
            already: 0,
            odd: 0,
        }));
        let down = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            pool: Mutex::new(pool),
            record: record.clone(),
            down: down.clone(),
            started,
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(64)
                .build()
                .expect("a benchmark without an HTTP client cannot run"),
        });
        let mut urls = Vec::new();
        for agent in 0..agents {
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("a benchmark without a loopback port cannot run");
            let addr = listener
                .local_addr()
                .expect("a bound listener has an address");
            urls.push(format!("http://{addr}"));
            let shared = shared.clone();
            rt.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            handle(req, agent, shared.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        Proxy {
            urls,
            record,
            down,
            started,
            _rt: rt,
        }
    }

    /// Elasticsearch goes away (every request answered 503) or comes back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Seconds since the proxy started (the record's clock).
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// How many of `agent`'s lines, from the first, are all created: the first sequence
    /// number not created yet.
    pub fn shipped(&self, agent: usize) -> u64 {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let Record { seqs, low, .. } = &mut *r;
        let (seqs, low) = (&seqs[agent], &mut low[agent]);
        while seqs.get(*low).is_some_and(|&n| n > 0) {
            *low += 1;
        }
        *low as u64
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

const REFUSED: &str = r#"{"type":"es_rejected_execution_exception","reason":"rejected execution: the write queue is full (fleet harness)"}"#;

async fn handle(
    req: Request<Incoming>,
    agent: usize,
    s: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let arrived = s.started.elapsed().as_secs_f64();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let bulk = path.starts_with("/_bulk");
    if s.down.load(Ordering::SeqCst) {
        if bulk {
            let mut r = s.record.lock().unwrap_or_else(|p| p.into_inner());
            let sec = r.timeline.at(arrived);
            sec.requests += 1;
            sec.down += 1;
        }
        return Ok(reply(
            503,
            r#"{"error":{"type":"cluster_block_exception","reason":"fleet harness: down"},"status":503}"#,
        ));
    }
    if !bulk {
        return forward(&s, method, &path, body.to_vec(), gzip).await;
    }
    let raw = if gzip {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut raw)?;
        raw
    } else {
        body.to_vec()
    };
    let lines: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let docs = lines.len() / 2;
    // The pool's clock never goes back: the time is taken under its lock.
    let (arrived, admission) = {
        let mut pool = s.pool.lock().unwrap_or_else(|p| p.into_inner());
        let now = s.started.elapsed().as_secs_f64();
        (now, pool.offer(now, docs))
    };
    {
        let mut r = s.record.lock().unwrap_or_else(|p| p.into_inner());
        let sec = r.timeline.at(arrived);
        sec.requests += 1;
        sec.docs += docs as u64;
        if admission.admitted == 0 {
            sec.refused += 1;
        } else {
            sec.items_refused += (docs - admission.admitted) as u64;
        }
    }
    if admission.admitted == 0 {
        return Ok(reply(
            429,
            format!(
                r#"{{"error":{{"root_cause":[{REFUSED}],"type":"es_rejected_execution_exception","reason":"rejected execution (fleet harness)"}},"status":429}}"#
            ),
        ));
    }
    let taken = &lines[..admission.admitted * 2];
    let mut sub = Vec::with_capacity(raw.len());
    for l in taken {
        sub.extend_from_slice(l);
        sub.push(b'\n');
    }
    let due = s.started + Duration::from_secs_f64(admission.done_at);
    tokio::time::sleep_until(due.into()).await;
    let resp = forward(&s, method, &path, sub, false).await?;
    if resp.status() != 200 {
        return Ok(resp);
    }
    let out = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&out) else {
        return Ok(reply(200, out));
    };
    let done = s.started.elapsed().as_secs_f64();
    {
        let mut r = s.record.lock().unwrap_or_else(|p| p.into_inner());
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        let mut created = 0u64;
        for (i, item) in items.iter().enumerate() {
            let status = item
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v["status"].as_u64())
                .unwrap_or(0);
            match status {
                201 | 409 => match taken.get(2 * i + 1).and_then(|d| seq_of(d)) {
                    Some(seq) => {
                        let seqs = &mut r.seqs[agent];
                        if seqs.len() <= seq {
                            seqs.resize(seq + 1, 0);
                        }
                        if status == 201 {
                            seqs[seq] = seqs[seq].saturating_add(1);
                            created += 1;
                        } else {
                            // Already there: created by a request whose answer was lost.
                            seqs[seq] = seqs[seq].max(1);
                            r.already += 1;
                        }
                    }
                    None => r.odd += 1,
                },
                _ => r.odd += 1,
            }
        }
        r.timeline.at(done).created[agent] += created;
    }
    if admission.admitted < docs {
        if let Some(items) = answer["items"].as_array_mut() {
            let refused: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"create":{{"status":429,"error":{REFUSED}}}}}"#
            ))
            .map_err(std::io::Error::other)?;
            items.extend(std::iter::repeat_n(refused, docs - admission.admitted));
        }
        answer["errors"] = serde_json::Value::Bool(true);
    }
    Ok(reply(
        200,
        serde_json::to_vec(&answer).map_err(std::io::Error::other)?,
    ))
}

/// The sequence number at the end of a document's `log` ("fleet a7 000000123").
fn seq_of(doc: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    v["log"].as_str()?.split_whitespace().last()?.parse().ok()
}

async fn forward(
    s: &Shared,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    gzip: bool,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let mut fwd = s
        .client
        .request(method, format!("{}{path}", s.upstream))
        .header(
            "content-type",
            if path.starts_with("/_bulk") {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        )
        .body(body);
    if gzip {
        fwd = fwd.header("content-encoding", "gzip");
    }
    match fwd.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let out = r.bytes().await.map_err(std::io::Error::other)?;
            Ok(reply(status, out))
        }
        Err(e) => Ok(reply(
            502,
            format!(r#"{{"error":"fleet harness upstream: {e}"}}"#),
        )),
    }
}
