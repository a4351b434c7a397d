//! Helpers shared by the integration tests: the test vectors in `proto/graph/`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// `proto/graph/` at the top of the workspace.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/graph")
}

/// Every `.json` vector below `proto/graph/` (recursively), sorted.
pub fn all_vectors() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&vectors_dir(), &mut out);
    out.sort();
    out
}

/// A vector of the seed by file name, as a JSON value.
pub fn vector(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(vectors_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}
