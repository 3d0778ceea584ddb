//! The workspace keeps its layers: Cargo already refuses a crate that
//! imports one above it; these tests keep what Cargo cannot see. Inside
//! each crate, no import circle between its top-level modules (counted from
//! `crate::x` paths, and `super::x` in a top-level module's own files),
//! and source, transform, sink and ledger stay siblings (none depends on
//! another).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every crate's `src` folder: the binary's and each under `crates/`.
fn crate_sources() -> Vec<(String, PathBuf)> {
    let root = checkout();
    let mut out = vec![("etl".to_string(), root.join("src"))];
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/ exists") {
        let dir = entry.unwrap().path();
        if dir.join("src").is_dir() {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, dir.join("src")));
        }
    }
    assert!(out.len() > 5, "the workspace's crates are found: {out:?}");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names that follow `prefix` in code (comments and tests left out).
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        // Comments left out (a `//` inside a string cuts it short too,
        // which only hides paths, never adds one).
        let mut rest = line.split("//").next().unwrap_or("");
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let body = rest.strip_prefix('{').unwrap_or(rest);
            let end = if rest.starts_with('{') {
                body.find('}').unwrap_or(body.len())
            } else {
                body.find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(body.len())
            };
            for name in body[..end].split(',') {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// Top-level module -> the crate's other top-level modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top_of = |f: &Path| -> (String, bool) {
        let rel = f.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        // `super` is the crate root in `x.rs` and `x/mod.rs`.
        let at_top = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        (top, at_top)
    };
    let tops: BTreeSet<String> = files.iter().map(|f| top_of(f).0).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let (top, at_top) = top_of(f);
        let mut used = paths_after(code, "crate::");
        if at_top {
            used.extend(paths_after(code, "super::"));
        }
        let entry = graph.entry(top.clone()).or_default();
        for u in used {
            if u != top && tops.contains(&u) {
                entry.insert(u);
            }
        }
    }
    graph
}

/// A circle through `graph`, if any (depth-first search).
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut circles = Vec::new();
    for (name, src) in crate_sources() {
        let graph = module_graph(&src);
        assert!(!graph.is_empty(), "{name}: no modules read in {src:?}");
        if let Some(c) = circle(&graph) {
            circles.push(format!("{name}: {}", c.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circle(&graph).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        paths_after(
            "use crate::{a::X, b, C};\nlet x = crate::d::f(); // crate::e",
            "crate::"
        ),
        ["a", "b", "d"].map(String::from).into()
    );
}

#[test]
fn source_transform_sink_and_ledger_are_siblings() {
    let manifest = |name: &str| {
        std::fs::read_to_string(checkout().join("crates").join(name).join("Cargo.toml")).unwrap()
    };
    for (name, others) in [
        (
            "source",
            ["etl-transform", "etl-sink", "etl-ledger", "etl-run"],
        ),
        (
            "transform",
            ["etl-source", "etl-sink", "etl-ledger", "etl-run"],
        ),
        (
            "sink",
            ["etl-source", "etl-transform", "etl-ledger", "etl-run"],
        ),
        (
            "ledger",
            ["etl-source", "etl-transform", "etl-sink", "etl-run"],
        ),
    ] {
        let text = manifest(name);
        for other in others {
            assert!(
                !text.contains(&format!("{other} =")),
                "crates/{name} depends on {other}"
            );
        }
    }
    let root = std::fs::read_to_string(checkout().join("Cargo.toml")).unwrap();
    let root_dependencies = root
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("the root manifest has [dependencies]");
    for (what, text) in [
        ("crates/sink", manifest("sink")),
        ("crates/ledger", manifest("ledger")),
        ("crates/schema", manifest("schema")),
        ("crates/source", manifest("source")),
        ("the binary", root_dependencies.to_string()),
    ] {
        assert!(
            !text.contains("datafusion ="),
            "{what} depends on DataFusion; it stays in etl-transform"
        );
    }
}
