//! The crate's shape, checked: every module is in the map in `src/lib.rs`, and no module
//! refers to another against the order that map documents.
//!
//! The map has three groups. Entry and wiring modules may use anything after them; a
//! stage of the data path may use only the stages after it and the shared modules (it
//! never reaches back up the pipeline); a shared module may use only the shared modules
//! after it. A strict order has no cycles; the test checks that too, on the references
//! it found. References are `crate::x` paths in code (comments are not references) and
//! `super::` chains that climb out of a top-level module.

use crate::util::repo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Wiring,
    Stage,
    Shared,
}

/// The map: every module with its group and rank, in the order listed.
fn map() -> Vec<(String, Group)> {
    let lib = std::fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    let mut group = None;
    let mut out: Vec<(String, Group)> = Vec::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//!")) {
        if line.starts_with(" Entry and wiring") {
            group = Some(Group::Wiring);
        } else if line.starts_with(" The data path") {
            group = Some(Group::Stage);
        } else if line.starts_with(" Shared") {
            group = Some(Group::Shared);
        }
        let (Some(g), Some(item)) = (group, line.strip_prefix(" - ")) else {
            continue;
        };
        // Every [`name`] on an item line, in order.
        let mut rest = item;
        while let Some(i) = rest.find("[`") {
            rest = &rest[i + 2..];
            let Some(j) = rest.find("`]") else { break };
            let name = &rest[..j];
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !out.iter().any(|(n, _)| n == name)
            {
                out.push((name.to_owned(), g));
            }
            rest = &rest[j..];
        }
    }
    out
}

/// The modules `src/lib.rs` declares.
fn declared() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a line of code names through `crate::`.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` inside macros means the same crate.
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d}`: the first segment of each item at depth 0.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(item.trim().split("::").next().unwrap_or("").to_owned());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(item.trim().split("::").next().unwrap_or("").to_owned());
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

/// How many `super::` a path starting at `at` climbs.
fn supers(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s;
    while let Some(r) = rest.strip_prefix("super::") {
        n += 1;
        rest = r;
    }
    n
}

/// (from, to, file:line) for every reference between top-level modules, and every
/// `super::` chain that climbs out of its top-level module.
fn references() -> (Vec<(String, String, String)>, Vec<String>) {
    let src = repo().join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut refs = Vec::new();
    let mut escapes = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&src).unwrap().to_owned();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        if parts == ["lib.rs"] || parts == ["main.rs"] {
            continue;
        }
        let from = parts[0].trim_end_matches(".rs").to_owned();
        // Depth of the file's own module below the crate root: src/x.rs and
        // src/x/mod.rs are 1, src/x/y.rs is 2.
        let mut depth = parts.len();
        if parts.last() == Some(&"mod.rs") {
            depth -= 1;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // Test modules sit at the end of a file, one level deeper.
            if code.starts_with("mod tests {") {
                in_tests = true;
            }
            let here = depth + usize::from(in_tests);
            let at = format!("{}:{}", rel.display(), n + 1);
            for to in crate_refs(code) {
                if !to.is_empty() && to != from {
                    refs.push((from.clone(), to, at.clone()));
                }
            }
            let mut rest = code;
            while let Some(i) = rest.find("super::") {
                let k = supers(&rest[i..]);
                if k >= here {
                    escapes.push(format!("{at}: {}", code.trim()));
                }
                rest = &rest[i + k * "super::".len()..];
            }
        }
    }
    (refs, escapes)
}

#[test]
fn the_map_lists_every_module() {
    let listed: BTreeSet<String> = map().into_iter().map(|(n, _)| n).collect();
    let declared = declared();
    assert_eq!(
        listed, declared,
        "src/lib.rs's map and its `mod` declarations differ"
    );
}

#[test]
fn no_module_refers_against_the_documented_order() {
    let map = map();
    let rank: BTreeMap<&str, (usize, Group)> = map
        .iter()
        .enumerate()
        .map(|(i, (n, g))| (n.as_str(), (i, *g)))
        .collect();
    let (refs, escapes) = references();
    assert!(
        refs.len() > 50,
        "the scan found only {} references",
        refs.len()
    );
    let mut bad = Vec::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for (from, to, at) in &refs {
        let (Some(&(fr, fg)), Some(&(tr, tg))) = (rank.get(from.as_str()), rank.get(to.as_str()))
        else {
            continue; // a macro or an item at the crate root, not a module
        };
        edges.insert((from.clone(), to.clone()));
        let ok = match fg {
            Group::Wiring => tr > fr,
            Group::Stage => tg == Group::Shared || (tg == Group::Stage && tr > fr),
            Group::Shared => tg == Group::Shared && tr > fr,
        };
        if !ok {
            bad.push(format!("{at}: {from} ({fg:?}) uses {to} ({tg:?})"));
        }
    }
    assert!(
        bad.is_empty(),
        "references against the order in src/lib.rs:\n{}",
        bad.join("\n")
    );
    assert!(
        escapes.is_empty(),
        "`super::` reaching out of a module (use `crate::` and mind the order):\n{}",
        escapes.join("\n")
    );
    // No cycle among the modules (implied by the order; checked on the graph itself).
    let names: Vec<&str> = map.iter().map(|(n, _)| n.as_str()).collect();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        edges: &'a BTreeSet<(String, String)>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) {
        match state.get(n) {
            Some(2) => return,
            Some(1) => panic!("module cycle: {} -> {n}", path.join(" -> ")),
            _ => {}
        }
        state.insert(n, 1);
        path.push(n);
        for (_, to) in edges.iter().filter(|(f, _)| f == n) {
            visit(to, edges, state, path);
        }
        path.pop();
        state.insert(n, 2);
    }
    for n in names {
        visit(n, &edges, &mut state, &mut Vec::new());
    }
}

#[test]
fn the_scanner_sees_grouped_imports() {
    assert_eq!(
        crate_refs("use crate::{a::b, c, d::{e, f}};"),
        vec!["a", "c", "d"]
    );
    assert_eq!(
        crate_refs("let x = crate::tail::Tail::new();"),
        vec!["tail"]
    );
    assert_eq!(supers("super::super::x"), 2);
}
