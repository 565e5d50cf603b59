//! The import layering of the Borgmaster and the Borglet (issue 15): each top-level module of
//! their library may use only modules of its own layer or below, and no two modules use each
//! other. The layers are listed here and in docs/ARCHITECTURE.md; a new module must be placed in
//! one (the test fails on a module it does not know).
//!
//! "Uses" means a `crate::<module>` path in the module's code (doc comments and `#[cfg(test)]`
//! modules at the end of a file are not code the library runs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The Borgmaster's layers, bottom first.
const BORGMASTER: &[&[&str]] = &[
    &["state", "liveness", "soft", "tls"],
    &["snapshot", "usage", "convert", "raft", "reservation"],
    &["metrics"],
    &["master"],
    &["scheduler_loop", "link_shard"],
    &["leader"],
    &["service", "status", "dns"],
    &["http"],
];

/// The Borglet's layers, bottom first.
const BORGLET: &[&[&str]] = &[
    &["cgroup", "lock", "machine", "metrics"],
    &["process"],
    &["runtime"],
    &["service", "probe"],
    &["hollow"],
    &["register"],
];

/// The files of module `name` under `src` (`name.rs`, or every file under `name/`).
fn files_of(src: &Path, name: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src.join(name)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The crate modules that `text` (one source file) uses.
fn uses(text: &str) -> BTreeSet<String> {
    let code = match text.find("\n#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Checks the crate at `src` against `layers`; returns every violation, readable.
fn check(src: &Path, layers: &[&[&str]]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, ms)| ms.iter().map(move |m| (*m, i))).collect();
    // every module the crate declares must have a layer
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let mut problems = Vec::new();
    for m in &declared {
        if !layer_of.contains_key(m.as_str()) {
            problems.push(format!("module {m} is in no layer: add it to this test and docs/ARCHITECTURE.md"));
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in declared.iter().filter(|m| layer_of.contains_key(m.as_str())) {
        let mut deps = BTreeSet::new();
        for f in files_of(src, m) {
            deps.extend(uses(&std::fs::read_to_string(&f).unwrap()));
        }
        deps.remove(m);
        for d in &deps {
            match layer_of.get(d.as_str()) {
                Some(&l) if l > layer_of[m.as_str()] => {
                    problems.push(format!("{m} (layer {}) uses {d} (layer {l}, above it)", layer_of[m.as_str()]))
                }
                _ => {}
            }
        }
        graph.insert(m.clone(), deps);
    }
    for (a, deps) in &graph {
        for b in deps {
            if graph.get(b).is_some_and(|d| d.contains(a)) && a < b {
                problems.push(format!("{a} and {b} use each other"));
            }
        }
    }
    problems
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("src")
}

#[test]
fn borgmaster_modules_import_only_their_layer_or_below() {
    let problems = check(&src("borgmaster"), BORGMASTER);
    assert!(problems.is_empty(), "borgmaster layering:\n  {}", problems.join("\n  "));
}

#[test]
fn borglet_modules_import_only_their_layer_or_below() {
    let problems = check(&src("borglet"), BORGLET);
    assert!(problems.is_empty(), "borglet layering:\n  {}", problems.join("\n  "));
}

#[test]
fn only_raft_names_openraft() {
    let root = src("borgmaster");
    let mut offenders = Vec::new();
    for m in BORGMASTER.iter().flat_map(|l| l.iter()).filter(|m| **m != "raft") {
        for f in files_of(&root, m) {
            let text = std::fs::read_to_string(&f).unwrap();
            if text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains("openraft::")) {
                offenders.push(f.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "openraft named outside borgmaster/src/raft/: {offenders:?}");
}

#[test]
fn the_checker_sees_a_circle_and_an_upward_import() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(d.path().join("a.rs"), "use crate::b::X;\n").unwrap();
    std::fs::write(d.path().join("b.rs"), "use crate::a::Y;\n// crate::c in a comment is no use\n").unwrap();
    std::fs::write(d.path().join("c.rs"), "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n").unwrap();
    let problems = check(d.path(), &[&["a", "b"], &["c"]]);
    assert_eq!(problems, vec!["a and b use each other".to_string()]);
    let problems = check(d.path(), &[&["a"], &["b", "c"]]);
    assert!(problems.contains(&"a (layer 0) uses b (layer 1, above it)".to_string()), "{problems:?}");
    assert!(check(d.path(), &[&["a", "b"]]).iter().any(|p| p.contains("module c is in no layer")));
}
