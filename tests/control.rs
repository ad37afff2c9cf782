//! Control without the Kubernetes API: `[[rules]]` exclusion, line filters and
//! parsers, redaction, and `shipper check-config`, through the real binary.

use crate::util::*;
use std::path::Path;

fn cri(time_ms: u32, msg: &str) -> String {
    format!("2024-07-08T03:42:57.{time_ms:03}000000Z stdout F {msg}\n")
}

/// A CRI tree: `shop/web-1` (nginx) and `dev/app-1` (app).
fn tree(root: &Path) {
    let nginx = [
        cri(1, "10.0.0.1 GET /healthz 200 kube-probe/1.29"),
        cri(2, "10.0.0.2 GET /login?user=bob&password=hunter2 302"),
        cri(
            3,
            "level=info msg=\"order placed\" card=4111-1111-1111-1111",
        ),
        cri(4, "10.0.0.1 GET /healthz 200 kube-probe/1.29"),
    ]
    .concat();
    write(&root.join("shop_web-1_uid-1/nginx/0.log"), nginx.as_bytes());
    let app = [cri(1, "debug noise"), cri(2, "more noise")].concat();
    write(&root.join("dev_app-1_uid-2/app/0.log"), app.as_bytes());
}

/// `shipper --dry-run` over the CRI tree `pods` with the configuration file `cfg`.
fn dry_run(pods: &Path, cfg: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = shipper();
    cmd.arg("--dry-run")
        .args(extra)
        .args(["--docker-root", "/nonexistent", "--pods-root"])
        .arg(pods)
        .arg("--config")
        .arg(cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// The `log` of every document a successful dry-run printed.
fn logs(o: &std::process::Output) -> Vec<String> {
    assert!(o.status.success(), "{}", stderr(o));
    bulk_pairs(&o.stdout)
        .iter()
        .map(|(_, d)| d["log"].as_str().unwrap().to_owned())
        .collect()
}

const RULES: &str = r#"
[redact]
builtins = ["bearer", "password", "aws_access_key", "private_key", "credit_card"]

[[rules]]
name = "no-dev"
namespace = "dev"
exclude = true

[[rules]]
name = "probes"
container = "nginx"
drop = 'kube-probe/'
parser = "logfmt"
"#;

#[test]
fn rules_exclude_drop_and_parse_and_secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    tree(&pods);
    let cfg = dir.path().join("shipper.toml");
    std::fs::write(&cfg, RULES).unwrap();
    let o = dry_run(&pods, &cfg, &[], &[]);
    let docs = bulk_pairs(&o.stdout);
    assert_eq!(
        logs(&o),
        [
            "10.0.0.2 GET /login?user=bob&password=[REDACTED] 302",
            "level=info msg=\"order placed\" card=[REDACTED]",
        ]
    );
    // The rule's parser applies, to the redacted text.
    assert_eq!(docs[1].1["fields"]["card"], "[REDACTED]");
    assert_eq!(docs[1].1["fields"]["msg"], "order placed");
    let s = summary(&stderr(&o));
    assert_eq!(s["records_dropped"], 2, "{s:?}");
    assert_eq!(s["redactions"], 2, "{s:?}");
    assert_eq!(s["excluded_lines"], 2, "{s:?}");
    assert_eq!(s["lines"], 6, "{s:?}");

    // --explain says what decided each file.
    let o = dry_run(&pods, &cfg, &["--explain"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let line = |who: &str| {
        e.lines()
            .find(|l| l.starts_with(&format!("shipper explain: {who} ")))
            .unwrap_or_else(|| panic!("no explanation for {who} in {e}"))
            .to_owned()
    };
    let dev = line("dev/app-1/app");
    assert!(dev.contains(": excluded (rule no-dev);"), "{dev}");
    let web = line("shop/web-1/nginx");
    for part in [
        ": shipped;",
        "multiline default;",
        "parser stdout logfmt (rule probes), stderr logfmt (rule probes);",
        "filter drop /kube-probe// (rule probes);",
        "redact default;",
        "rate limit none;",
        "index logstash (default)",
    ] {
        assert!(web.contains(part), "{part} not in {web}");
    }
    // With a route template, the file's namespace names its index (in the explanation
    // and in each document's action).
    let o = dry_run(
        &pods,
        &cfg,
        &["--explain"],
        &[("SHIPPER_ELASTICSEARCH_INDEX_ROUTE", "logs-{namespace}")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("index logs-shop (elasticsearch.index_route)"),
        "{e}"
    );
    let actions: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .step_by(2)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!actions.is_empty());
    for a in actions {
        assert_eq!(a["create"]["_index"], "logs-shop-2024.07.08");
    }

    // Redaction off: the text is shipped as written.
    let o = dry_run(&pods, &cfg, &[], &[("SHIPPER_REDACT_ENABLED", "false")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = bulk_pairs(&o.stdout);
    assert!(docs[0].1["log"].as_str().unwrap().contains("hunter2"));
}

#[test]
fn a_keyed_hash_replaces_secrets_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    tree(&pods);
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let cfg = dir.path().join("shipper.toml");
    std::fs::write(
        &cfg,
        format!(
            "[redact]\nreplacement = \"hash\"\nhash_key_file = {:?}\n",
            key.display().to_string()
        ),
    )
    .unwrap();
    let o = dry_run(&pods, &cfg, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = bulk_pairs(&o.stdout);
    let login = docs
        .iter()
        .map(|(_, d)| d["log"].as_str().unwrap())
        .find(|l| l.contains("/login"))
        .unwrap();
    let re = regex::Regex::new(r"password=\[REDACTED:[0-9a-f]{16}\] 302$").unwrap();
    assert!(re.is_match(login), "{login}");

    std::fs::remove_file(&key).unwrap();
    let o = dry_run(&pods, &cfg, &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("redact.hash_key_file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_config_accepts_the_documented_file_and_points_at_errors() {
    let o = run(shipper()
        .arg("check-config")
        .arg(repo().join("deploy/shipper.toml")));
    assert!(o.status.success(), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A bad regular expression in the second rule: its line and column.
        (
            "[[rules]]\nname = \"a\"\nexclude = true\n\n[[rules]]\nname = \"b\"\ndrop = '(unclosed'\n",
            ":7:8: setting `rules[1].drop`: bad regular expression",
        ),
        ("[input]\npods_rot = \"/x\"\n", ":2:1: unknown field `pods_rot`"),
        ("[redact]\nbuiltins = [\"ssn\"]\n", ":2:12: setting `redact.builtins`"),
        ("[fields\n", ":1:"),
        (
            "[[rules]]\nrate_limit = { records_per_sec = 1, burst_secs = 0.5 }\n",
            ":2:50: setting `rules[0].rate_limit.burst_secs`: a burst must hold at least one record",
        ),
        (
            "[[rules]]\ndrop = 'a'\nkeep = 'b'\n",
            ":3:8: setting `rules[0].keep`: a rule has `drop` or `keep`, not both",
        ),
        (
            "[elasticsearch]\nindex_route = \"logs-{nope}\"\n",
            ":2:15: setting `elasticsearch.index_route`: \"logs-{nope}\": unknown value {nope}",
        ),
        (
            "[[rules]]\nnamespace = \"a\"\nindex = \"Shop\"\n",
            ":3:9: setting `rules[0].index`",
        ),
    ];
    for (text, want) in cases {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        let o = run(shipper().arg("check-config").arg(&f));
        assert_eq!(o.status.code(), Some(1), "{text}");
        let e = stderr(&o);
        assert!(
            e.contains(&format!("c.toml{want}")),
            "{text:?}: want {want:?} in {e}"
        );
    }
}

/// Puts container `c` in namespace `ns` through its Docker labels (as the kubelet
/// creates containers), so rules can select it without the API.
fn in_namespace(node: &crate::agent::Node, c: usize, ns: &str) {
    let labels = serde_json::json!({"Config": {"Labels": {
        "io.kubernetes.pod.namespace": ns,
        "io.kubernetes.pod.name": format!("{ns}-1"),
        "io.kubernetes.container.name": ns,
    }}});
    write(
        &node.log(c).with_file_name("config.v2.json"),
        labels.to_string().as_bytes(),
    );
}

/// A container over its rate limit is read more slowly while another is delivered at
/// once; when the noise stops, every line of both is in the index, none twice.
#[test]
fn a_rate_limited_container_lags_while_a_quiet_one_is_on_time() {
    use crate::agent::{sigterm, Node};
    use std::time::Duration;
    let Some(es) = es() else { return };
    let mut node = Node::new();
    // Container 0 is the noisy one: its Docker labels put it in namespace `noisy`.
    node.write(0, 2000, 8);
    in_namespace(&node, 0, "noisy");
    let cfg = node.data().with_file_name("shipper.toml");
    std::fs::write(
        &cfg,
        "[[rules]]\nname = \"slow-noisy\"\nnamespace = \"noisy\"\nrate_limit = { records_per_sec = 200, burst_secs = 1 }\n",
    )
    .unwrap();
    let cfg_env = cfg.to_string_lossy().into_owned();
    let mut agent = node.agent(&es.url, "limited", &[("SHIPPER_CONFIG", &cfg_env)]);
    let count = |c: &str| {
        es_logs(&es.url, "limited-*")
            .iter()
            .filter(|l| l.starts_with(&format!("line {c} ")))
            .count()
    };
    wait_until(
        "the noisy container's first documents",
        Duration::from_secs(30),
        || count("c0") > 0,
    );
    node.write(1, 10, 8);
    wait_until(
        "the quiet container's lines",
        Duration::from_secs(30),
        || count("c1") == 10,
    );
    let noisy = count("c0");
    assert!(
        noisy < 2000,
        "the noisy container is held back: {noisy} of 2000 already"
    );
    let metrics = http()
        .get(format!("http://{}/metrics", node.metrics_addr()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("shipper_files_throttled 1"), "{metrics}");
    node.assert_all_indexed(&es.url, "limited");
    assert!(sigterm(&mut agent).success());
}

/// Appends `lines` (text) to container `c`'s log, stamped now.
fn append(node: &crate::agent::Node, c: usize, lines: &[String]) {
    use std::io::Write;
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string();
    let s: String = lines
        .iter()
        .map(|l| docker_line(&format!("{l}\n"), "stdout", &now))
        .collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(node.log(c))
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// A changed configuration file (replaced the way a ConfigMap volume is) adds an
/// exclusion and a redaction: both apply within seconds, nothing read before is lost or
/// sent twice. A broken configuration (SIGHUP too) is refused: the agent keeps running
/// on the previous one.
#[test]
fn a_reload_applies_rules_and_a_broken_one_is_refused() {
    use crate::agent::{sigterm, Node};
    use std::time::{Duration, Instant};
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 100, 8);
    node.write(1, 100, 8);
    in_namespace(&node, 1, "muted");
    let conf = node.data().with_file_name("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let cfg = conf.join("shipper.toml");
    std::fs::write(&cfg, "# nothing yet\n").unwrap();
    let cfg_env = cfg.to_string_lossy().into_owned();
    let mut agent = node.agent(&es.url, "reload", &[("SHIPPER_CONFIG", &cfg_env)]);
    node.assert_all_indexed(&es.url, "reload");
    let addr = node.metrics_addr();

    // The new file is written aside and renamed into place, as the kubelet swaps a
    // ConfigMap's files.
    let replace = |text: &str| {
        let tmp = conf.join(".new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    let start = Instant::now();
    replace(
        "[[rules]]\nname = \"mute\"\nnamespace = \"muted\"\nexclude = true\n\n[redact.patterns.order]\nregex = 'order-([0-9]+)'\n",
    );
    wait_until("the reload", Duration::from_secs(10), || {
        metric(&addr, "shipper_config_reloads_total{result=\"success\"}") >= 1.0
    });
    eprintln!(
        "reload applied {} ms after the file changed",
        start.elapsed().as_millis()
    );
    let muted: Vec<String> = (0..50).map(|i| format!("muted after reload {i}")).collect();
    append(&node, 1, &muted);
    let orders: Vec<String> = (0..20).map(|i| format!("paid order-{i}")).collect();
    append(&node, 0, &orders);
    wait_until(
        "the muted lines counted as excluded",
        Duration::from_secs(30),
        || metric(&addr, "shipper_records_total{outcome=\"excluded\"}") >= 50.0,
    );
    wait_until("the orders indexed", Duration::from_secs(30), || {
        es_count(&es.url, "reload-*") >= 220
    });
    let logs = es_logs(&es.url, "reload-*");
    assert_eq!(
        logs.len(),
        220,
        "200 before the reload, 20 after; none twice"
    );
    assert_eq!(
        logs.iter()
            .filter(|l| *l == "paid order-[REDACTED]")
            .count(),
        20
    );
    assert!(!logs.iter().any(|l| l.starts_with("muted after")));
    assert_eq!(
        metric(&addr, "shipper_redactions_total{pattern=\"order\"}"),
        20.0
    );

    // A broken file, then SIGHUP: refused both times, the agent keeps the rules it has.
    replace("[[rules]\nbroken");
    std::process::Command::new("kill")
        .args(["-HUP", &agent.id().to_string()])
        .status()
        .unwrap();
    wait_until("the refusal", Duration::from_secs(10), || {
        metric(&addr, "shipper_config_reloads_total{result=\"failure\"}") >= 1.0
    });
    assert_eq!(metric(&addr, "shipper_config_last_reload_successful"), 0.0);
    assert!(agent.try_wait().unwrap().is_none(), "the agent still runs");
    append(&node, 0, &["late order-7".to_owned()]);
    wait_until("the late line", Duration::from_secs(30), || {
        es_logs(&es.url, "reload-*")
            .iter()
            .any(|l| l == "late order-[REDACTED]")
    });
    assert!(node.agent_log().contains("new configuration refused"));
    assert!(sigterm(&mut agent).success());
}

/// A credential file replaced in place (as the kubelet updates a Secret volume) is read
/// again without a restart: a revoked key gets 401s (retried, nothing lost), the new key
/// delivers everything.
#[test]
fn a_replaced_credential_file_is_read_again_without_a_restart() {
    use crate::agent::{sigterm, Node};
    use base64::Engine;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let Some(es) = es() else { return };
    let p = crate::proxy::start(&es.url);
    let good = base64::engine::general_purpose::STANDARD.encode("id-1:new-secret");
    p.set(|f| f.require_auth = Some(format!("ApiKey {good}")));
    let mut node = Node::new();
    let secret = node.data().with_file_name("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let key_file = secret.join("api-key");
    std::fs::write(&key_file, "cmV2b2tlZDprZXk=\n").unwrap();
    node.write(0, 40, 8);
    let key_env = key_file.to_string_lossy().into_owned();
    let mut agent = node.agent(
        &p.url,
        "rotated",
        &[("SHIPPER_ELASTICSEARCH_API_KEY_FILE", &key_env)],
    );
    wait_until("401s with the revoked key", Duration::from_secs(30), || {
        p.seen.unauthorized.load(Ordering::Relaxed) > 1
    });
    let tmp = secret.join(".new");
    std::fs::write(&tmp, format!("{good}\n")).unwrap();
    std::fs::rename(&tmp, &key_file).unwrap();
    node.assert_all_indexed(&es.url, "rotated");
    assert!(agent.try_wait().unwrap().is_none(), "no restart");
    let log = node.agent_log();
    assert!(log.contains("credentials read again"), "{log}");
    assert!(!log.contains(&good), "the key reached the log");
    assert!(sigterm(&mut agent).success());
}

/// A filter on a parsed field: debug records of a JSON app are dropped by their
/// `level`, whatever their message says; a stack trace (no fields) is shipped.
#[test]
fn a_filter_on_a_parsed_field() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let lines = [
        cri(1, r#"{"level":"debug","msg":"cache warm"}"#),
        cri(2, r#"{"level":"info","msg":"debug endpoint enabled"}"#),
        cri(3, "ERROR [main] App - boom"),
        cri(3, "java.lang.IllegalStateException: debug"),
        cri(3, "\tat a.B.c(B.java:1)"),
        cri(4, r#"{"level":"DEBUG","msg":"upper"}"#),
    ]
    .concat();
    write(&pods.join("shop_api-1_uid-3/api/0.log"), lines.as_bytes());
    let cfg = dir.path().join("shipper.toml");
    std::fs::write(
        &cfg,
        "[[rules]]\nname = \"no-debug\"\ncontainer = \"api\"\nfield = \"level\"\ndrop = '(?i)^debug$'\n",
    )
    .unwrap();
    let o = dry_run(&pods, &cfg, &[], &[]);
    assert_eq!(
        logs(&o),
        [
            r#"{"level":"info","msg":"debug endpoint enabled"}"#,
            "ERROR [main] App - boom\njava.lang.IllegalStateException: debug\n\tat a.B.c(B.java:1)",
        ]
    );
    assert_eq!(summary(&stderr(&o))["records_dropped"], 2);
}

/// Documents grouped by index: `index → logs`, over every index matching `pattern`.
fn logs_by_index(url: &str, pattern: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (index, log) in es_hits(url, pattern) {
        out.entry(index).or_default().push(log);
    }
    out
}

/// Routing: a template over the namespace, a rule, and the default for a container
/// without metadata, each in its own index, all covered by one index template. A
/// restart with a different route replays the records past the checkpoint into the
/// index they went to (no duplicate in the new one); only lines written after the
/// restart take the new route.
#[test]
fn routes_send_each_container_to_its_index_and_a_replay_never_moves() {
    use crate::agent::{sigterm, Node};
    use std::time::Duration;
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 60, 8);
    node.write(1, 40, 8);
    node.write(2, 30, 8);
    in_namespace(&node, 0, "shop");
    in_namespace(&node, 1, "pay");
    let cfg = node.data().with_file_name("shipper.toml");
    let config = |shop_rule: &str| {
        format!(
            "[elasticsearch]\nindex_route = \"rns-{{namespace}}\"\n\n[[rules]]\nnamespace = \"pay\"\nindex = \"rpay\"\n{shop_rule}"
        )
    };
    std::fs::write(&cfg, config("")).unwrap();
    let cfg_env = cfg.to_string_lossy().into_owned();
    let mut agent = node.agent(&es.url, "rdef", &[("SHIPPER_CONFIG", &cfg_env)]);
    let all = || logs_by_index(&es.url, "rns-*,rpay-*,rdef-*,rmoved-*");
    let total = |m: &std::collections::BTreeMap<String, Vec<String>>| {
        m.values().map(Vec::len).sum::<usize>()
    };
    wait_until("130 documents", Duration::from_secs(30), || {
        total(&all()) >= 130
    });
    let by_index = all();
    let sizes = |m: &std::collections::BTreeMap<String, Vec<String>>| {
        m.iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect::<Vec<_>>()
    };
    let count = |m: &std::collections::BTreeMap<String, Vec<String>>, index: &str, c: &str| {
        m.get(index).map_or(0, |v| {
            v.iter()
                .filter(|l| l.starts_with(&format!("line {c} ")))
                .count()
        })
    };
    assert_eq!(
        count(&by_index, "rns-shop-2024.07.08", "c0"),
        60,
        "{:?}",
        sizes(&by_index)
    );
    assert_eq!(count(&by_index, "rpay-2024.07.08", "c1"), 40);
    assert_eq!(count(&by_index, "rdef-2024.07.08", "c2"), 30);
    assert_eq!(by_index.len(), 3, "{:?}", by_index.keys());
    let template: serde_json::Value = http()
        .get(format!("{}/_index_template/shipper-rdef", es.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        template["index_templates"][0]["index_template"]["index_patterns"],
        serde_json::json!(["node-*", "rdef-*", "rns-*", "rpay-*"])
    );
    assert!(sigterm(&mut agent).success());

    // As if the agent had died before its last checkpoint save: every file resumes at
    // 0, with the routes it persisted. And the shop's route changes meanwhile.
    {
        let mut cps = shipper::Checkpoints::load(&node.data()).unwrap();
        let ids: Vec<_> = cps.ids().cloned().collect();
        for id in ids {
            let path = cps.get(&id).unwrap().path.clone();
            assert!(!cps.get(&id).unwrap().routes.is_empty(), "routes persisted");
            cps.update(id, shipper::Position::at(0, None, path));
        }
        cps.save().unwrap();
    }
    std::fs::write(
        &cfg,
        config("\n[[rules]]\nnamespace = \"shop\"\nindex = \"rmoved\"\n"),
    )
    .unwrap();
    let mut agent = node.agent(&es.url, "rdef", &[("SHIPPER_CONFIG", &cfg_env)]);
    let addr = node.metrics_addr();
    wait_until("the replay", Duration::from_secs(30), || {
        metric(&addr, "shipper_records_total{outcome=\"duplicate\"}") >= 130.0
    });
    let later: Vec<String> = (0..5).map(|i| format!("line c0 after {i}")).collect();
    append(&node, 0, &later);
    wait_until("the new lines", Duration::from_secs(30), || {
        total(&all()) >= 135
    });
    let by_index = all();
    assert_eq!(
        total(&by_index),
        135,
        "no duplicate: {:?}",
        sizes(&by_index)
    );
    assert_eq!(count(&by_index, "rns-shop-2024.07.08", "c0"), 60);
    let moved: usize = by_index
        .iter()
        .filter(|(k, _)| k.starts_with("rmoved-"))
        .map(|(_, v)| v.len())
        .sum();
    assert_eq!(moved, 5, "only the new lines take the new route");
    assert!(sigterm(&mut agent).success());
}
