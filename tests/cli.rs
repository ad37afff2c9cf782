//! The binary's interface: help, config errors, exit codes.

use crate::util::*;

#[test]
fn help_documents_every_flag() {
    let o = run(shipper().arg("--help"));
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--config",
        "--docker-root",
        "--pods-root",
        "--data-dir",
        "--dry-run",
        "--pods",
        "--follow",
        "--index-prefix",
        "--max-record-bytes",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_config_names_the_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("shipper.toml");
    std::fs::write(&cfg, "[input]\npods_rot = \"/x\"\n").unwrap();
    let o = run(shipper().args(["--dry-run", "--config"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("pods_rot") && e.contains("shipper.toml"), "{e}");

    let o = run(shipper()
        .args(["--dry-run"])
        .env("SHIPPER_INPUT_MAX_RECORD_BYTES", "huge"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("SHIPPER_INPUT_MAX_RECORD_BYTES"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0123abcd";
    write(
        &dir.path().join(id).join(format!("{id}-json.log")),
        docker_line("hi\n", "stdout", "2024-07-08T03:42:57Z").as_bytes(),
    );
    let o = run(shipper()
        .args(["--dry-run", "--pods-root", "/nonexistent"])
        .env("SHIPPER_INPUT_DOCKER_ROOT", dir.path())
        .env("SHIPPER_ELASTICSEARCH_INDEX_PREFIX", "k8s"));
    assert!(o.status.success(), "{}", stderr(&o));
    let pairs = bulk_pairs(&o.stdout);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0["create"]["_index"], "k8s-2024.07.08");
}

#[test]
fn agent_mode_without_output_is_a_clear_error() {
    let o = run(shipper().args([
        "--docker-root",
        "/nonexistent",
        "--pods-root",
        "/nonexistent",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--dry-run"), "{}", stderr(&o));
}

/// `deploy/shipper.toml` documents every key with its default: keep it true.
#[test]
fn deploy_config_lists_every_key_with_its_default() {
    let path = repo().join("deploy/shipper.toml");
    let cfg = shipper::config::load(Some(&path), Vec::new(), Vec::new()).unwrap();
    assert_eq!(cfg, shipper::config::Config::default());
    let text = std::fs::read_to_string(&path).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let defaults = toml::Value::try_from(shipper::config::Config::default()).unwrap();
    for (section, keys) in defaults.as_table().unwrap() {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                file.get(section).and_then(|s| s.get(key)).is_some(),
                "{section}.{key} missing from deploy/shipper.toml"
            );
        }
    }
}
