//! The crate's own source files, for the tests that read them (`layers`, `shape`).

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, sorted, with its full path.
pub fn src_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&src_dir(), &mut out);
    out
}

/// The crate's `src/` directory.
pub fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}
