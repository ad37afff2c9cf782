//! `shipper retention` against a real server: osmem-server, an in-memory
//! OpenSearch-compatible server from PyPI (`.ci/setup-deps` installs it), started on a
//! free loopback port. Basic auth and TLS are checked against tiny loopback servers of
//! our own, because osmem has no security layer.

use crate::util::*;
use chrono::{Days, NaiveDate, Utc};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The osmem-server binary: `OSMEM_SERVER_BIN`, else the one bundled in the Python
/// package.
fn osmem_binary() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("OSMEM_SERVER_BIN") {
        return Some(p.into());
    }
    let o = Command::new("python3")
        .args([
            "-c",
            "import osmem_server,os;print(os.path.dirname(osmem_server.__file__))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(o.stdout).ok()?;
    let bin = std::path::Path::new(dir.trim()).join("bin/osmem-server");
    (o.status.success() && bin.exists()).then_some(bin)
}

/// A running osmem-server, killed on drop.
struct Osmem {
    child: Child,
    url: String,
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts osmem, or returns None (skip) when it is not installed outside CI.
fn osmem() -> Option<Osmem> {
    let Some(bin) = osmem_binary() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("osmem-server is not installed (.ci/setup-deps installs it)");
        }
        eprintln!("SKIPPED: osmem-server is not installed (pip install osmem-server==0.1.6)");
        return None;
    };
    // The port is free when picked; another process could take it before osmem binds,
    // so try a few.
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(&bin)
            .args(["--addr", &addr, "--no-stdin-watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting osmem-server");
        let server = Osmem {
            child,
            url: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http("GET", &server.url, "/").is_ok_and(|(s, _)| s == 200) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("osmem-server did not answer within 30 s");
}

/// A minimal blocking HTTP/1.1 request (Connection: close), for setting up and checking
/// the server independently of the code under test.
fn http(method: &str, base: &str, path: &str) -> std::io::Result<(u16, String)> {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn indices(url: &str, pattern: &str) -> Vec<String> {
    let (status, body) = http(
        "GET",
        url,
        &format!("/_cat/indices/{pattern}?format=json&h=index"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Chunked bodies: take the JSON array between the first '[' and the last ']'.
    let json = &body[body.find('[').unwrap()..=body.rfind(']').unwrap()];
    let rows: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| r["index"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn day(d: NaiveDate) -> String {
    d.format("%Y.%m.%d").to_string()
}

/// Creates daily indices around today, runs retention, and returns (today, the
/// remaining indices); retried when the UTC date changed during the run.
fn scenario(url: &str, prefix: &str, extra_args: &[&str]) -> (NaiveDate, Vec<String>, String) {
    for _ in 0..2 {
        let today = Utc::now().date_naive();
        for offset in [-30i64, -8, -7, -6, 0, 1] {
            let d = if offset < 0 {
                today - Days::new(offset.unsigned_abs())
            } else {
                today + Days::new(offset as u64)
            };
            let (s, b) = http("PUT", url, &format!("/{prefix}-{}", day(d))).unwrap();
            assert!(s == 200 || b.contains("already_exists"), "{s} {b}");
        }
        for other in [
            format!("{prefix}-foo"),
            format!("{prefix}-2001.13.01"),
            format!("other-{}", day(today - Days::new(400))),
        ] {
            let (s, b) = http("PUT", url, &format!("/{other}")).unwrap();
            assert!(s == 200 || b.contains("already_exists"), "{s} {b}");
        }
        let o = run(shipper()
            .args([
                "retention",
                "--keep-days",
                "7",
                "--es-url",
                url,
                "--index-prefix",
                prefix,
            ])
            .args(extra_args));
        assert!(o.status.success(), "{}", stderr(&o));
        if Utc::now().date_naive() == today {
            let mut remaining = indices(url, &format!("{prefix}-*"));
            remaining.extend(indices(url, "other-*"));
            return (today, remaining, String::from_utf8(o.stdout).unwrap());
        }
    }
    panic!("the date changed twice during the test");
}

#[test]
fn deletes_only_daily_indices_older_than_keep_days() {
    let Some(server) = osmem() else { return };
    let (today, remaining, out) = scenario(&server.url, "logstash", &[]);
    let mut expected: Vec<String> = [
        format!("logstash-{}", day(today - Days::new(7))),
        format!("logstash-{}", day(today - Days::new(6))),
        format!("logstash-{}", day(today)),
        format!("logstash-{}", day(today + Days::new(1))),
        "logstash-foo".into(),
        "logstash-2001.13.01".into(),
    ]
    .into_iter()
    .collect();
    expected.sort();
    expected.push(format!("other-{}", day(today - Days::new(400))));
    assert_eq!(remaining, expected);
    assert!(
        out.contains(&format!("deleted logstash-{}", day(today - Days::new(30)))),
        "{out}"
    );
    assert!(
        out.contains(&format!("deleted logstash-{}", day(today - Days::new(8)))),
        "{out}"
    );
    assert!(
        out.contains("deleted 2 of 6 daily logstash-* indices"),
        "{out}"
    );

    // Nothing left to do: a second run deletes nothing and succeeds.
    let o = run(shipper().args(["retention", "--keep-days", "7", "--es-url", &server.url]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deleted 0 of 4"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn dry_run_and_other_prefixes() {
    let Some(server) = osmem() else { return };
    let (today, remaining, out) = scenario(&server.url, "k8s-logs", &["--dry-run"]);
    assert!(
        remaining.contains(&format!("k8s-logs-{}", day(today - Days::new(30)))),
        "dry run deleted: {remaining:?}"
    );
    assert!(out.contains("would delete 2 of 6"), "{out}");
    let (_, remaining, _) = scenario(&server.url, "k8s-logs", &[]);
    assert_eq!(
        remaining
            .iter()
            .filter(|i| i.starts_with("k8s-logs-"))
            .count(),
        6
    );
}

/// Several prefixes, each with its days: a route template's pattern (`logs-*`) owns the
/// routed indices, and the plain prefix `logs` never takes `logs-shop-<date>` for its
/// own.
#[test]
fn prefixes_and_patterns_each_keep_their_days() {
    let Some(server) = osmem() else { return };
    for _ in 0..2 {
        let today = Utc::now().date_naive();
        let ago = |n: u64| day(today - Days::new(n));
        for name in [
            format!("logs-{}", ago(5)),
            format!("logs-shop-{}", ago(5)),
            format!("logs-shop-{}", ago(0)),
            format!("logs-pay-{}", ago(2)),
        ] {
            let (s, b) = http("PUT", &server.url, &format!("/{name}")).unwrap();
            assert!(s == 200 || b.contains("already_exists"), "{s} {b}");
        }
        let o = run(shipper().args([
            "retention",
            "--keep-days",
            "7",
            "--es-url",
            &server.url,
            "--index-prefix",
            "logs",
            "--index-prefix",
            "logs-*=1",
        ]));
        assert!(o.status.success(), "{}", stderr(&o));
        if Utc::now().date_naive() != today {
            continue;
        }
        let out = String::from_utf8(o.stdout).unwrap();
        assert_eq!(
            indices(&server.url, "logs-*"),
            [format!("logs-{}", ago(5)), format!("logs-shop-{}", ago(0))],
            "{out}"
        );
        assert!(out.contains("deleted 0 of 1 daily logs-* indices"), "{out}");
        assert!(
            out.contains("deleted 2 of 3 daily indices of pattern logs-*"),
            "{out}"
        );
        return;
    }
    panic!("the date changed twice during the test");
}

#[test]
fn no_matching_indices_is_fine() {
    let Some(server) = osmem() else { return };
    let o = run(shipper().args([
        "retention",
        "--keep-days",
        "1",
        "--es-url",
        &server.url,
        "--index-prefix",
        "nothing-here",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("deleted 0 of 0"));
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = run(shipper().args(["retention", "--keep-days", "7", "--es-url", &url]));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("GET ") && e.contains(&url) && e.to_lowercase().contains("connect"),
        "{e}"
    );
}

/// Basic auth from a password file, and an error status with its body: a one-connection
/// loopback server records the request and answers like a 401 from Elasticsearch.
#[test]
fn basic_auth_from_a_password_file_and_errors_name_the_status() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let body = r#"{"error":{"type":"security_exception","reason":"unable to authenticate user"},"status":401}"#;
        write!(&stream, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret-pass\n").unwrap();
    let o = run(shipper()
        .args([
            "retention",
            "--keep-days",
            "7",
            "--es-url",
            &url,
            "--es-username",
            "shipper",
            "--es-password-file",
        ])
        .arg(&pw));
    let head = server.join().unwrap();
    assert!(
        head[0].starts_with("GET /_cat/indices/logstash-*?format=json&h=index "),
        "{head:?}"
    );
    // base64("shipper:s3cret-pass"): the trailing newline of the file is not part of it.
    assert!(
        head.iter()
            .any(|h| h.eq_ignore_ascii_case("authorization: Basic c2hpcHBlcjpzM2NyZXQtcGFzcw==")),
        "{head:?}"
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("401") && e.contains("security_exception"), "{e}");
    assert!(
        !e.contains("s3cret"),
        "the password leaked into an error: {e}"
    );
}

/// `--es-ca-file` against a TLS server whose certificate is the one `shipper manifests
/// --es-security` generates for Elasticsearch (which names 127.0.0.1): the CA makes the
/// connection succeed, and without it the certificate is refused.
#[test]
fn tls_with_the_generated_ca() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

    let opts = shipper::manifests::Options::parse_from(["manifests", "--es-security"]).unwrap();
    let stack = shipper::manifests::generate(&opts).unwrap();
    let doc = stack
        .documents()
        .find(|d| d.kind == "Secret" && d.name == "elasticsearch-certs")
        .unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_yaml_ng::from_str(&doc.yaml).unwrap();
    let data = secret.string_data.unwrap();

    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(data["tls.crt"].as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(data["tls.key"].as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut answered = 0;
        // Two connections: one with the CA (answered), one without (handshake refused).
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.ends_with(b"\r\n\r\n") {
                let _ = write!(tls, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]");
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                answered += 1;
            }
        }
        answered
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &data["ca.crt"]).unwrap();
    let o = run(shipper()
        .args([
            "retention",
            "--keep-days",
            "7",
            "--es-url",
            &url,
            "--es-ca-file",
        ])
        .arg(&ca));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("deleted 0 of 0"));
    let o = run(shipper().args(["retention", "--keep-days", "7", "--es-url", &url]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "a certificate from an unknown CA must be refused"
    );
    assert_eq!(server.join().unwrap(), 1);
}
