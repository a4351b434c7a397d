//! The CI check for import cycles between the daemon's modules.
//!
//! Reads `src/*.rs`, strips comments, string and char literals and `#[cfg(test)]` items, collects every
//! `crate::<module>` reference (in `use` lines, grouped `use crate::{a, b::c}` and paths in code) into a module
//! dependency graph, and fails naming the cycle if there is one. A reference to the crate root (`crate::Config`, a
//! re-export) counts as a dependency on `lib`, which depends on every module it declares: modules import from each
//! other's paths, never from the root.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Source text without comments, string/char literal contents and `#[cfg(test)]` items.
fn strip(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < bytes.len() {
                if source[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if source[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(len) = raw_string_len(rest) {
            out.push_str("\"\"");
            i += len;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' {
            // A char literal ('x', '\n', '\'', '"') — or a lifetime ('a), which is kept.
            match char_literal_len(rest) {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    remove_cfg_test(&out)
}

fn raw_string_len(rest: &str) -> Option<usize> {
    let after_r = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = after_r.bytes().take_while(|&b| b == b'#').count();
    if !after_r[hashes..].starts_with('"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let body_start = rest.len() - after_r.len() + hashes + 1;
    let end = rest[body_start..].find(&close)?;
    Some(body_start + end + close.len())
}

fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, c) = chars.next()?;
    if c == '\\' {
        // An escape: up to the closing quote.
        let end = rest[2..].find('\'')?;
        return Some(2 + end + 1);
    }
    let (next, close) = chars.next()?;
    (close == '\'').then_some(next + 1)
}

/// Removes `#[cfg(test)]` and the item after it (a `mod … { … }`, a `use …;`, a `fn … { … }`).
fn remove_cfg_test(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let brace = item.find('{');
        let semi = item.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment after every `crate::` (expanding `crate::{a, b::c, d as e}` groups).
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate".len()..];
        rest = after;
        if before.is_some_and(is_ident) {
            continue;
        }
        let after = after.trim_start();
        let Some(path) = after.strip_prefix("::") else {
            continue;
        };
        let path = path.trim_start();
        if let Some(group) = path.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_segment(&item, &mut found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            push_first_segment(&item, &mut found);
        } else {
            push_first_segment(path, &mut found);
        }
    }
    found
}

fn push_first_segment(path: &str, found: &mut BTreeSet<String>) {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|&c| is_ident(c))
        .collect();
    if !name.is_empty() && name != "self" {
        found.insert(name);
    } else if name == "self" {
        found.insert("lib".to_owned());
    }
}

/// `mod x;` / `pub mod x;` declarations (the root's edges).
fn declared_modules(source: &str) -> BTreeSet<String> {
    source
        .split(';')
        .filter_map(|statement| {
            let words: Vec<&str> = statement.split_whitespace().collect();
            match words.as_slice() {
                [.., "mod", name] if name.chars().all(is_ident) => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Module → modules it uses. `files` are (module name, source); `lib` is the root.
fn graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(name, _)| name.clone()).collect();
    let mut edges = BTreeMap::new();
    for (name, source) in files {
        let code = strip(source);
        let mut deps: BTreeSet<String> = crate_references(&code)
            .into_iter()
            .map(|first| {
                if modules.contains(&first) && first != "lib" {
                    first
                } else {
                    "lib".to_owned()
                }
            })
            .collect();
        if name == "lib" {
            deps.extend(
                declared_modules(&code)
                    .into_iter()
                    .filter(|m| modules.contains(m)),
            );
        }
        deps.remove(name);
        edges.insert(name.clone(), deps);
    }
    edges
}

/// A cycle, as the modules along it (first repeated at the end), or `None`.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::OnStack);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::OnStack => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn daemon_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_daemon_modules_import_each_other_in_one_direction_only() {
    let files = daemon_sources();
    assert!(files.len() >= 10, "read {} files", files.len());
    let edges = graph(&files);
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "import cycle between the daemon's modules: {}\nthe whole graph: {edges:#?}",
            cycle.join(" -> ")
        );
    }
    // The layering the crate docs describe: the HTTP mapping stays on top, the session state at the bottom.
    for lower in ["config", "error", "health", "session"] {
        for upper in ["api", "engine", "worker", "ws", "bots", "metrics"] {
            assert!(
                !edges[lower].contains(upper),
                "`{lower}` must not use `{upper}`"
            );
        }
    }
    for module in edges.keys().filter(|m| *m != "api" && *m != "lib") {
        assert!(
            !edges[module].contains("api"),
            "only the crate root may use `api`; `{module}` does"
        );
    }
}

#[test]
fn the_check_finds_cycles_through_use_groups_and_paths() {
    let file = |name: &str, source: &str| (name.to_owned(), source.to_owned());
    let cyclic = [
        file("lib", "pub mod a;\npub mod b;\npub mod c;\n"),
        file("a", "use crate::{b::Thing, config as cfg};\nfn f() {}"),
        file("b", "fn g() { let x = crate::c::make(); }"),
        file("c", "use crate :: {\n    a,\n};"),
    ];
    let cycle = find_cycle(&graph(&cyclic)).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");

    // Comments, strings, chars and test modules do not count.
    let clean = [
        file("lib", "pub mod a;\npub mod b;\n"),
        file("a", "use crate::b::Thing;"),
        file(
            "b",
            "// use crate::a;\n/* crate::a /* nested */ crate::a */\n\
             const S: &str = \"crate::a\"; const R: &str = r#\"crate::a\"#; const C: char = '\"';\n\
             fn f<'x>(_: &'x str) {}\n\
             #[cfg(test)]\nmod tests { use crate::a; fn t() { crate::a::x(); } }\n",
        ),
    ];
    let edges = graph(&clean);
    assert_eq!(find_cycle(&edges), None, "{edges:?}");
    assert!(edges["a"].contains("b"));

    // A re-export from the root is a dependency on the root, which depends on every module.
    let through_root = [
        file("lib", "pub mod a;\npub use a::Config;\n"),
        file("a", "fn f(_: crate::Config) {}"),
    ];
    assert!(find_cycle(&graph(&through_root)).is_some());
}
