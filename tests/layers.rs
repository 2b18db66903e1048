//! The module graph is one-way: `docs/architecture.md`'s table "module → may depend
//! on" is the rule, and this test reads it and every `crate::` / `super::` path in
//! `src/**/*.rs`, failing with the `file:line` of each import the table forbids and of
//! each import that closes a cycle between the files of one module.
//!
//! It reads source text, not the compiler's view: a path counts wherever it is
//! written outside a comment (code, tests, macros alike), so it errs on the strict side.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

mod source;
use source::{src_dir, src_files};

/// One crate-internal path use: where it is and which module file it names.
#[derive(Debug, Clone)]
struct Import {
    /// `src/...` path of the file it is written in.
    file: String,
    line: usize,
    /// Module path of the file, e.g. `["proxy", "server"]`.
    from: Vec<String>,
    /// Module path it names, resolved to the modules that exist (`["proxy", "h1"]`).
    to: Vec<String>,
}

/// The module path of a source file: `src/proxy/mod.rs` → `proxy`,
/// `src/proxy/server.rs` → `proxy::server`; `lib.rs` and `main.rs` are the root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every module path that has a file, for resolving `crate::a::b::Item` to `a::b`.
fn known_modules(files: &[PathBuf]) -> BTreeSet<Vec<String>> {
    let src = src_dir();
    files
        .iter()
        .map(|f| module_of(f.strip_prefix(&src).expect("under src")))
        .collect()
}

/// The longest prefix of `path` that is a module with a file.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Vec<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
        .unwrap_or_default()
}

/// Text of a line outside `//` comments and string literals (good enough for
/// rustfmt'd code: a `//` inside a string is rare and only hides a path).
fn code_part(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut prev = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        if c == '"' {
            in_str = true;
            prev = ' ';
            continue;
        }
        out.push(c);
    }
    out
}

/// Path segments following each `crate::` and `super::` chain on a line, with `{a, b}`
/// groups expanded one level (`use crate::{x, y::z}`).
fn paths_on(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts = |kw: &str| {
            rest.starts_with(kw)
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        };
        if !(starts("crate::") || starts("super::")) {
            i += 1;
            continue;
        }
        let mut supers = 0;
        let mut j = i;
        let mut base_crate = false;
        loop {
            let r = &code[j..];
            if r.starts_with("super::") {
                supers += 1;
                j += "super::".len();
            } else if r.starts_with("crate::") && supers == 0 && !base_crate {
                base_crate = true;
                j += "crate::".len();
            } else {
                break;
            }
        }
        let tail = &code[j..];
        let mut heads = Vec::new();
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                heads.push(segments(item.trim()));
            }
        } else {
            heads.push(segments(tail));
        }
        for segs in heads {
            let depth = if base_crate { usize::MAX } else { supers };
            found.push((depth, segs));
        }
        i = j.max(i + 1);
    }
    found
}

/// The `a::b::c` identifiers at the start of `s` (stops at `{`, `;`, `(`, spaces).
fn segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    for part in s.split("::") {
        let ident: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() || ident == "self" {
            break;
        }
        let whole = ident.len() == part.len();
        segs.push(ident);
        if !whole {
            break;
        }
    }
    segs
}

/// Paths on a line that start with a child module of `here` (`child::x`,
/// `self::child::x`), resolved to the child's file.
fn child_paths(code: &str, here: &[String], known: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("::") {
        let start = code[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |k| k + 1);
        let ident = &code[start..i];
        // Part of a longer path (`a::child::x`) unless introduced by `self::`.
        let after_path = start >= 2 && &bytes[start - 2..start] == b"::";
        let via_self = after_path && code[..start - 2].ends_with("self");
        if ident.is_empty() || ident == "self" || (after_path && !via_self) {
            continue;
        }
        let mut path = here.to_vec();
        path.extend(segments(&code[start..]));
        let to = resolve(&path, known);
        if to.len() > here.len() {
            found.push(to);
        }
    }
    found
}

/// Every crate-internal import of every file under `src/`.
fn imports() -> Vec<Import> {
    let src = src_dir();
    let files = src_files();
    let known = known_modules(&files);
    let mut all = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let file_mod = module_of(rel);
        let text = fs::read_to_string(f).expect("source is readable");
        // Inline `mod x {` blocks, so `super::` inside a test module means this file.
        let mut inline: Vec<(usize, String)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let indent = raw.len() - raw.trim_start().len();
            let trimmed = raw.trim();
            if trimmed == "}" {
                if inline.last().is_some_and(|(ind, _)| *ind == indent) {
                    inline.pop();
                }
                continue;
            }
            let code = code_part(raw);
            // `child::item` and `self::child::item`: a module's own children, named
            // without `crate::` or `super::`.
            for child in child_paths(&code, &file_mod, &known) {
                all.push(Import {
                    file: format!("src/{}", rel.display()),
                    line: n + 1,
                    from: file_mod.clone(),
                    to: child,
                });
            }
            for (depth, segs) in paths_on(&code) {
                let mut here = file_mod.clone();
                here.extend(inline.iter().map(|(_, m)| m.clone()));
                let target = if depth == usize::MAX {
                    segs
                } else {
                    if depth > here.len() {
                        continue;
                    }
                    let mut t = here[..here.len() - depth].to_vec();
                    t.extend(segs);
                    t
                };
                let to = resolve(&target, &known);
                all.push(Import {
                    file: format!("src/{}", rel.display()),
                    line: n + 1,
                    from: file_mod.clone(),
                    to,
                });
            }
            let words: Vec<&str> = trimmed.split_whitespace().collect();
            let mod_at = match words.as_slice() {
                ["mod", name, "{", ..] | ["pub", "mod", name, "{", ..] => Some(*name),
                _ => None,
            };
            if let Some(name) = mod_at {
                inline.push((indent, name.to_string()));
            }
        }
    }
    all
}

/// The table of `docs/architecture.md`: module → the modules it may use.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md");
    let doc = fs::read_to_string(&path).expect("docs/architecture.md exists");
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in doc.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if line.contains("may depend on") && line.trim_start().starts_with('|') {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            break;
        }
        if cells.len() < 3 || cells[0].contains("---") {
            continue;
        }
        let ticked = |s: &str| -> Vec<String> {
            s.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let Some(module) = ticked(cells[1]).into_iter().next() else {
            continue;
        };
        rows.insert(module, ticked(cells[2]).into_iter().collect());
    }
    assert!(
        !rows.is_empty(),
        "no 'module | may depend on' table in {}",
        path.display()
    );
    rows
}

/// Imports between top-level modules that the table forbids, as `file:line` lines.
fn forbidden(imports: &[Import], table: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for i in imports {
        let (Some(from), Some(to)) = (i.from.first(), i.to.first()) else {
            continue;
        };
        if from == to {
            continue;
        }
        match table.get(from) {
            None => bad.push(format!(
                "{}:{}: module `{from}` has no row in docs/architecture.md",
                i.file, i.line
            )),
            Some(allowed) if !allowed.contains(to) => bad.push(format!(
                "{}:{}: `{}` may not use `{}` (docs/architecture.md: `{from}` may depend on {:?})",
                i.file,
                i.line,
                i.from.join("::"),
                i.to.join("::"),
                allowed
            )),
            Some(_) => {}
        }
    }
    bad
}

/// Strongly connected groups of more than one file, by file-level imports.
fn cycles(imports: &[Import], within: Option<&str>) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for i in imports {
        let inside = |m: &Vec<String>| match within {
            None => true,
            Some(w) => m.first().is_some_and(|f| f == w),
        };
        if i.from == i.to || i.to.is_empty() || !inside(&i.from) || !inside(&i.to) {
            continue;
        }
        // A module file re-exporting or calling its own children is how Rust
        // modules are built, not a cycle.
        if i.to.starts_with(&i.from) {
            continue;
        }
        graph
            .entry(i.from.clone())
            .or_default()
            .insert(i.to.clone());
        graph.entry(i.to.clone()).or_default();
    }
    let nodes: Vec<Vec<String>> = graph.keys().cloned().collect();
    let reach = |from: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<_, _> = nodes.iter().map(|n| (n.clone(), reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut groups = Vec::new();
    for n in &nodes {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let group: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .map(|m| {
                done.insert(m.clone());
                m.join("::")
            })
            .collect();
        groups.push(group);
    }
    groups
}

#[test]
fn imports_follow_the_architecture_table() {
    let imports = imports();
    assert!(
        imports.len() > 100,
        "the import scan found too little ({}): is it still reading src/?",
        imports.len()
    );
    let bad = forbidden(&imports, &table());
    assert!(
        bad.is_empty(),
        "{} import(s) break docs/architecture.md:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn no_cycles_between_the_files_of_a_module() {
    let imports = imports();
    let tops: BTreeSet<String> = imports
        .iter()
        .filter_map(|i| i.from.first().cloned())
        .collect();
    let mut report = Vec::new();
    for top in &tops {
        for group in cycles(&imports, Some(top)) {
            let members: BTreeSet<&String> = group.iter().collect();
            let lines: Vec<String> = imports
                .iter()
                .filter(|i| {
                    i.from != i.to
                        && members.contains(&i.from.join("::"))
                        && members.contains(&i.to.join("::"))
                        && !i.to.starts_with(&i.from)
                })
                .map(|i| format!("  {}:{}: uses {}", i.file, i.line, i.to.join("::")))
                .collect();
            report.push(format!(
                "cycle {{{}}}:\n{}",
                group.join(", "),
                lines.join("\n")
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn no_cycles_in_the_whole_crate() {
    // Between top-level modules the table already forbids cycles if it is layered;
    // this catches a table that allows two modules each other.
    let imports = imports();
    let tops: Vec<Import> = imports
        .iter()
        .filter(|i| !i.to.is_empty() && !i.from.is_empty())
        .map(|i| Import {
            from: vec![i.from[0].clone()],
            to: vec![i.to[0].clone()],
            ..i.clone()
        })
        .collect();
    let groups = cycles(&tops, None);
    assert!(groups.is_empty(), "module cycles: {groups:?}");
}

/// The file-level cycles of the crate, printed for the record
/// (`cargo test --test layers -- --ignored --nocapture`).
#[test]
#[ignore]
fn print_file_cycles() {
    for g in cycles(&imports(), None) {
        println!("{} files: {}", g.len(), g.join(" "));
    }
}

#[test]
fn the_scanner_sees_grouped_super_and_nested_paths() {
    let p = paths_on("use crate::{config::Upstream, route::uri};");
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].1, vec!["config", "Upstream"]);
    let p = paths_on("let x = super::super::forward::is_hop_by_hop(&n);");
    assert_eq!(
        p,
        vec![(2, vec!["forward".to_string(), "is_hop_by_hop".to_string()])]
    );
    assert!(paths_on(&code_part("// see crate::runtime")).is_empty());
    let known: BTreeSet<Vec<String>> = [vec!["a".to_string()], vec!["a".into(), "b".into()]]
        .into_iter()
        .collect();
    let here = vec!["a".to_string()];
    let b = vec![vec!["a".to_string(), "b".to_string()]];
    assert_eq!(child_paths("use b::Thing;", &here, &known), b);
    assert_eq!(child_paths("let t = self::b::f();", &here, &known), b);
    assert!(child_paths("use std::b::Thing;", &here, &known).is_empty());
    assert!(paths_on(&code_part(r#"let s = "crate::runtime";"#)).is_empty());
}
