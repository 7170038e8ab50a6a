//! The modules of each crate import one another one way: no cycle between the top-level modules
//! of any crate in `crates/`. A module's imports are its `crate::…` paths (tests excluded), taken
//! from the source text; the crate root only declares modules and re-exports (and, in the store,
//! the `Store` type every module uses), so paths to it are not counted.
//!
//! `cargo modules dependencies --acyclic` checks items, not modules (every type and its methods
//! form a cycle there), so this check reads modules itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// The top-level module a file belongs to (`None`: the crate root or a binary's main).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main" && name != "bin").then_some(name)
}

/// The code of a file without its test module and comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The first path segment of each item after `crate::`: `crate::a::b` gives `a`,
/// `crate::{a::b, c, D}` gives `a`, `c`, `D`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let preceded = rest[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if !preceded {
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(group.len(), |(j, _)| j);
                let mut depth = 0;
                let mut item = String::new();
                for c in group[..end].chars().chain(std::iter::once(',')) {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let head: String =
                                item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                            if !head.is_empty() {
                                heads.push(head);
                            }
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
            } else {
                let head: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !head.is_empty() {
                    heads.push(head);
                }
            }
        }
        rest = after;
    }
    heads
}

fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let Some(from) = top_module(src, file) else { continue };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for to in crate_paths(&code) {
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    graph
}

/// Every cycle's modules (strongly connected components of more than one module).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit(g: &Graph, m: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(m.to_string()) {
            return;
        }
        for n in &g[m] {
            visit(g, n, seen, out);
        }
        out.push(m.to_string());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for m in graph.keys() {
        visit(graph, m, &mut seen, &mut order);
    }
    let mut reversed: Graph = graph.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (m, ns) in graph {
        for n in ns {
            reversed.get_mut(n).unwrap().insert(m.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for m in order.iter().rev() {
        let mut component = Vec::new();
        visit(&reversed, m, &mut seen, &mut component);
        if component.len() > 1 {
            component.sort();
            found.push(component);
        }
    }
    found
}

#[test]
fn no_crate_has_a_module_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut problems = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = graph_of(&src);
        checked += graph.len();
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|m| graph[m].iter().filter(|n| cycle.contains(n)).map(move |n| format!("{m} → {n}")))
                .collect();
            problems.push(format!("{}: {}", src.display(), edges.join(", ")));
        }
    }
    assert!(checked > 40, "only {checked} modules found: is the layout what this test expects?");
    assert!(problems.is_empty(), "module cycles:\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_and_a_grouped_import() {
    let code = "use crate::{a::X, b::{c, d}, E};\nfn f() { crate::g::h(); my_crate::z(); }";
    assert_eq!(crate_paths(code), ["a", "b", "E", "g"]);
    let graph: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(m, ns)| (m.to_string(), ns.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
