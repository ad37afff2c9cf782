//! Every committed fuzz seed and regression input, replayed through the same checks the
//! fuzz targets run (`shipper::fuzzing`), so a regression of a fixed fuzz crash fails
//! `cargo test` without cargo-fuzz.

use crate::util::repo;
use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_seed_and_regression_passes_its_target() {
    let fuzz = repo().join("fuzz");
    let mut replayed = 0;
    for &(target, check) in shipper::fuzzing::TARGETS {
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .exists(),
            "no fuzz target file for {target}"
        );
        for kind in ["seeds", "regressions"] {
            for input in inputs(&fuzz.join(kind).join(target)) {
                let bytes = std::fs::read(&input).unwrap();
                let result = std::panic::catch_unwind(|| check(&bytes));
                assert!(
                    result.is_ok(),
                    "{target} fails on {} (replay with: cargo fuzz run -s none {target} {})",
                    input.display(),
                    input.display()
                );
                replayed += 1;
            }
        }
    }
    // Every target has seeds; every regression directory names a target.
    for &(target, _) in shipper::fuzzing::TARGETS {
        assert!(
            !inputs(&fuzz.join("seeds").join(target)).is_empty(),
            "no seeds for {target}"
        );
    }
    for dir in inputs(&fuzz.join("regressions")) {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            shipper::fuzzing::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} names no target"
        );
    }
    for target in inputs(&fuzz.join("fuzz_targets")) {
        let name = target.file_stem().unwrap().to_str().unwrap().to_owned();
        assert!(
            shipper::fuzzing::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz target {name} has no check in shipper::fuzzing::TARGETS"
        );
    }
    assert!(replayed >= 100, "only {replayed} inputs replayed");
}
