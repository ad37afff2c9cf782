//! Parse and encode throughput, from one line up to the whole in-memory read path.
//!
//! `cargo bench --bench parse_encode` (about a minute; add `-- --quick` for a rough pass).
//!
//! The log content follows `../shared/bench/gen_docker_logs.py`: nginx-style access logs,
//! JSON application logs with escaped quotes and `<>&` written as Go's encoding/json does
//! (`\u003c`), klog lines, Java stack-trace frames on stderr, and a few messages over
//! 16 KiB split into partial lines the way dockerd splits them. Everything is generated
//! from a fixed seed, so runs compare.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shipper::{cri, docker, Line, ParseError, Stream, Text};
use shipper::{
    Doc, Encoder, FileContext, FileId, Level, Merger, MetaSource, Reader, ReaderSettings, Stats,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// dockerd and containerd split messages at this size.
const PARTIAL: usize = 16 * 1024;
/// Size of the mixed line buffers.
const MIXED_BYTES: usize = 4 * 1024;
/// Size of the log file the pipeline bench reads.
const PIPELINE_BYTES: usize = 32 << 20;
const MAX_RECORD_BYTES: usize = 4 << 20;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const METHODS: &[&str] = &["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v2/users/4711/profile",
    "/healthz",
    "/metrics",
    "/static/js/app.8f3a1c.js",
    "/search?q=shoes&page=3",
    "/api/v1/cart/93/items",
    "/api/v1/payments/1207/capture",
];
const STATUS: &[&str] = &["200", "200", "200", "200", "201", "304", "404", "500"];
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "kube-probe/1.29",
    "Prometheus/2.53.0",
    "okhttp/4.12.0",
];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const LOGGERS: &[&str] = &[
    "com.acme.orders.OrderService",
    "com.acme.http.RequestLogger",
    "app.worker.tasks",
    "io.grpc.netty.NettyServerHandler",
];
const MSGS: &[&str] = &[
    "order accepted",
    "payment authorized",
    "cache miss for key user:{n}",
    "slow query detected: {n} ms",
    "JWT validated for subject <user-{n}> & scope \"orders:write\"",
    "Ünïcödé customer name: Zoë Ångström #{n}",
    "upstream responded 503, circuit breaker half-open",
];
const FRAMES: &[&str] = &[
    "com.acme.orders.OrderService.place(OrderService.java:{n})",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:{n})",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:{n})",
    "java.base/java.lang.Thread.run(Thread.java:{n})",
];
const WORDS: &[&str] = &[
    "lorem", "ipsum", "dolor", "sit", "amet", "select", "from", "where", "order", "by", "limit",
    "join", "inner", "left", "group", "having",
];

/// The access log line of bench 1 (a Docker line as dockerd writes it).
const ACCESS_LINE: &[u8] = br#"{"log":"10.244.1.17 - - [08/Jul/2024:03:43:01 +0000] \"GET /products?category=shoes\u0026sort=price_asc\u0026page=2 HTTP/1.1\" 200 5120 \"https://shop.example.com/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0\" 0.042 4bf92f3577b34da6a3ce929d0e0e4736\n","stream":"stdout","time":"2024-07-08T03:43:01.104582Z"}"#;

/// One message: (stream, text).
fn message(rng: &mut Rng, huge: bool) -> (Stream, String) {
    let n = rng.below(100_000);
    let kind = if huge { 9 } else { rng.below(9) };
    match kind {
        0..=3 => {
            let status = rng.pick(STATUS);
            let msg = format!(
                "10.{}.{}.{} - - [08/Jul/2024:03:42:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\" 0.{:03} {:016x}{:016x}",
                rng.below(256),
                rng.below(256),
                rng.below(254) + 1,
                n % 60,
                rng.pick(METHODS),
                rng.pick(PATHS),
                status,
                rng.below(60_000),
                rng.pick(UAS),
                rng.below(1000),
                rng.next(),
                rng.next()
            );
            let stream = if status == "500" { Stream::Stderr } else { Stream::Stdout };
            (stream, msg)
        }
        4..=6 => {
            let v = serde_json::json!({
                "ts": format!("2024-07-08T03:42:{:02}.{:06}Z", n % 60, n),
                "level": rng.pick(LEVELS),
                "logger": rng.pick(LOGGERS),
                "msg": rng.pick(MSGS).replace("{n}", &n.to_string()),
                "trace_id": format!("{:016x}{:016x}", rng.next(), rng.next()),
                "span_id": format!("{:016x}", rng.next()),
                "user_id": n,
                "duration_ms": rng.below(25_000) as f64 / 100.0,
            });
            (Stream::Stdout, v.to_string())
        }
        7 => (
            Stream::Stderr,
            format!(
                "\tat {}",
                rng.pick(FRAMES)
                    .replace("{n}", &(rng.below(2000) + 20).to_string())
            ),
        ),
        8 => (
            Stream::Stderr,
            format!(
                "I0708 03:42:{:02}.{:06}       1 controller.go:{}] \"Successfully synced\" key=\"payments/checkout-{}\"",
                n % 60,
                n,
                n % 900 + 20,
                n % 1000
            ),
        ),
        _ => {
            let len = 17 * 1024 + rng.below(48 * 1024);
            (Stream::Stdout, huge_message(rng, len))
        }
    }
}

/// A message of exactly `len` bytes of words (ASCII, like the generator's).
fn huge_message(rng: &mut Rng, len: usize) -> String {
    let mut msg = format!("INFO payload snapshot id={} data=", rng.below(100_000));
    while msg.len() < len {
        msg.push_str(rng.pick(WORDS));
        msg.push(' ');
    }
    msg.truncate(len);
    msg
}

/// A JSON string as Go's encoding/json writes it (with quotes).
fn go_json_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Go's RFC3339Nano: trailing zeros of the fraction trimmed.
fn docker_time(ns: u64) -> String {
    let frac = format!("{:09}", ns % 1_000_000_000);
    let frac = frac.trim_end_matches('0');
    let s = ns / 1_000_000_000;
    let base = format!("2024-07-08T03:{:02}:{:02}", (s / 60) % 60, s % 60);
    if frac.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{frac}Z")
    }
}

fn cri_time(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    format!(
        "2024-07-08T03:{:02}:{:02}.{:09}Z",
        (s / 60) % 60,
        s % 60,
        ns % 1_000_000_000
    )
}

/// Appends a message as Docker json-file lines (split into 16 KiB partials).
fn push_docker(out: &mut String, ns: u64, stream: Stream, msg: &str) {
    let time = docker_time(ns);
    let mut rest = msg;
    loop {
        let mut cut = rest.len().min(PARTIAL);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        let log = if tail.is_empty() {
            go_json_string(&format!("{chunk}\n"))
        } else {
            go_json_string(chunk)
        };
        let _ = writeln!(
            out,
            r#"{{"log":{log},"stream":"{}","time":"{time}"}}"#,
            stream.as_str()
        );
        if tail.is_empty() {
            return;
        }
        rest = tail;
    }
}

/// Appends a message as CRI lines (split into 16 KiB partials).
fn push_cri(out: &mut String, ns: u64, stream: Stream, msg: &str) {
    let time = cri_time(ns);
    let mut rest = msg;
    loop {
        let mut cut = rest.len().min(PARTIAL);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        let tag = if tail.is_empty() { "F" } else { "P" };
        let _ = writeln!(out, "{time} {} {tag} {chunk}", stream.as_str());
        if tail.is_empty() {
            return;
        }
        rest = tail;
    }
}

/// About `MIXED_BYTES` of whole Docker lines and the same messages as CRI lines.
fn mixed_buffers() -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut docker, mut cri) = (String::new(), String::new());
    let mut ns = 1_000_000_000;
    while docker.len() < MIXED_BYTES {
        let (stream, msg) = message(&mut rng, false);
        ns += 1 + rng.below(4_000_000) as u64;
        let before = docker.len();
        push_docker(&mut docker, ns, stream, &msg);
        if docker.len() > MIXED_BYTES && before > 0 {
            docker.truncate(before);
            break;
        }
        push_cri(&mut cri, ns, stream, &msg);
    }
    (docker.into_bytes(), cri.into_bytes())
}

type ParseFn = for<'a> fn(&'a [u8]) -> Result<Line<'a>, ParseError>;

fn context() -> FileContext {
    FileContext {
        id: FileId::compute("docker:bench", b"first line"),
        meta: br#","docker":{"container_id":"4bf92f3577b34da6a3ce929d0e0e4736"},"kubernetes":{"namespace_name":"payments","pod_name":"checkout-6b8f9c7d4-p9zqk","container_name":"checkout","labels":{"app":"checkout"}}"#.to_vec(),
        level: Level::Complete,
        heads: Vec::new(),
    }
}

/// Parses every line of `buf` and encodes it, as the read path does for whole lines.
fn parse_encode(buf: &[u8], parse: ParseFn, enc: &Encoder, ctx: &FileContext, out: &mut Vec<u8>) {
    let mut offset = 0u64;
    for raw in buf.split(|&b| b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        let line = parse(raw).expect("bench lines parse");
        let doc = Doc {
            offset,
            time: line.time,
            stream: Some(line.stream),
            text: &line.text,
            truncated: false,
            parse_error: None,
            fields: None,
        };
        enc.encode(out, ctx, &doc);
        offset += raw.len() as u64 + 1;
    }
}

fn bench_docker_line(c: &mut Criterion) {
    let mut g = c.benchmark_group("docker_parse");
    g.throughput(Throughput::Bytes(ACCESS_LINE.len() as u64));
    assert!(matches!(
        docker::parse(ACCESS_LINE).unwrap().text,
        Text::Escaped(_)
    ));
    g.bench_function("access_line_fast_path", |b| {
        b.iter(|| docker::parse(black_box(ACCESS_LINE)))
    });
    g.finish();
}

fn bench_mixed(c: &mut Criterion) {
    let (docker_buf, cri_buf) = mixed_buffers();
    let enc = Encoder::new("logstash");
    let ctx = context();
    let mut out = Vec::with_capacity(4 * MIXED_BYTES);
    let mut g = c.benchmark_group("parse_encode_4k");
    for (name, buf, parse) in [
        ("docker", &docker_buf, docker::parse as ParseFn),
        ("cri", &cri_buf, cri::parse as ParseFn),
    ] {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| {
                out.clear();
                parse_encode(black_box(buf), parse, &enc, &ctx, &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

fn bench_partial(c: &mut Criterion) {
    // One 64 KiB message, as four 16 KiB chunks: three partials and the final one.
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let msg = &huge_message(&mut rng, 4 * PARTIAL);
    let (mut docker_lines, mut cri_lines) = (String::new(), String::new());
    push_docker(&mut docker_lines, 1, Stream::Stdout, msg);
    push_cri(&mut cri_lines, 1, Stream::Stdout, msg);
    let mut g = c.benchmark_group("partial_merge_16k_chunks");
    for (name, buf, parse) in [
        ("docker", &docker_lines, docker::parse as ParseFn),
        ("cri", &cri_lines, cri::parse as ParseFn),
    ] {
        let lines: Vec<(u64, Line<'_>)> = buf
            .lines()
            .scan(0u64, |at, l| {
                let offset = *at;
                *at += l.len() as u64 + 1;
                Some((offset, parse(l.as_bytes()).unwrap()))
            })
            .collect();
        assert_eq!(lines.len(), 4);
        let bytes: usize = lines
            .iter()
            .map(|(_, l)| match &l.text {
                Text::Escaped(t) | Text::Raw(t) => t.len(),
                Text::Owned(s) => s.len(),
            })
            .sum();
        let mut merger = Merger::new(MAX_RECORD_BYTES);
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut merged = 0;
                for (offset, line) in &lines {
                    if let Some(m) = merger.push(*offset, line.clone(), None) {
                        merged += black_box(m).chunks;
                    }
                }
                assert_eq!(merged, 4);
            })
        });
    }
    g.finish();
}

/// Writes a Docker container tree with one ~32 MiB json-file log; returns its size.
fn write_docker_tree(root: &Path) -> u64 {
    let id = "4bf92f3577b34da6a3ce929d0e0e47364bf92f3577b34da6a3ce929d0e0e4736";
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0003);
    let mut text = String::with_capacity(PIPELINE_BYTES + (1 << 20));
    let mut ns = 1_000_000_000;
    while text.len() < PIPELINE_BYTES {
        // About one message in 400 is over 16 KiB, as in the generator's mix.
        let huge = rng.below(400) == 0;
        let (stream, msg) = message(&mut rng, huge);
        ns += 1 + rng.below(4_000_000) as u64;
        push_docker(&mut text, ns, stream, &msg);
    }
    let path = dir.join(format!("{id}-json.log"));
    std::fs::write(&path, &text).unwrap();
    text.len() as u64
}

/// The two log roots of a node.
struct Roots {
    docker: PathBuf,
    pods: PathBuf,
}

fn read_all(roots: &Roots) -> (Arc<Stats>, usize) {
    let mut cfg = shipper::config::Config::default();
    cfg.input.docker_root = roots.docker.clone();
    cfg.input.pods_root = roots.pods.clone();
    cfg.input.max_record_bytes = MAX_RECORD_BYTES as u64;
    cfg.input.read_bytes = 256 << 10;
    cfg.input.turn_budget_bytes = 1 << 20;
    cfg.kubernetes.dedot_labels = false;
    let stats = Arc::new(Stats::default());
    let mut reader = Reader::new(
        ReaderSettings::from_config(&cfg).unwrap(),
        MetaSource::Node,
        Default::default(),
        stats.clone(),
    );
    reader.start();
    let mut out = Vec::with_capacity(2 << 20);
    let mut encoded = 0;
    let mut sink = |b: &mut Vec<u8>| {
        encoded += b.len();
        b.clear();
        Ok(())
    };
    reader.read_in_order(&mut out, 1 << 20, &mut sink).unwrap();
    encoded += out.len();
    (stats, encoded)
}

fn bench_pipeline(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let roots = Roots {
        docker: tmp.path().join("containers"),
        pods: tmp.path().join("pods"),
    };
    let size = write_docker_tree(&roots.docker);
    // Everything is read, nothing is a parse error.
    let (stats, encoded) = read_all(&roots);
    assert_eq!(stats.bytes.load(Ordering::Relaxed), size);
    assert_eq!(stats.parse_errors.load(Ordering::Relaxed), 0);
    assert!(stats.partials_merged.load(Ordering::Relaxed) > 0);
    assert!(encoded as u64 > size);

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(12));
    g.throughput(Throughput::Bytes(size));
    g.bench_function("tailer_docker_32MiB", |b| b.iter(|| read_all(&roots).1));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_docker_line, bench_mixed, bench_partial, bench_pipeline
}
criterion_main!(benches);
