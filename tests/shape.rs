//! Sizes a reader can hold: no source file over 600 lines before its tests, no
//! function over 80 lines, unless the file's opening comment says why in a line that
//! starts `//! Why it is long:`. rustfmt's layout makes a function's end the first `}`
//! back at its own indentation, which is what this reads.

use std::fs;
use std::path::Path;

mod source;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
const EXCUSE: &str = "//! Why it is long:";

/// Lines before the file's first `#[cfg(test)]` (its unit tests are not counted).
fn code_lines(text: &str) -> usize {
    text.lines()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or_else(|| text.lines().count())
}

/// The name of the function a line declares: `[pub[(...)]] [const] [async] [unsafe]
/// [extern ["abi"]] fn name`, in any order of the qualifiers rustc accepts.
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            // `pub(crate)`, `pub(super)`, `pub(in path)`: up to the closing paren.
            Some(inner) => inner.split_once(')')?.1,
            None => r,
        }
        .trim_start();
    }
    loop {
        let word = rest.split_whitespace().next()?;
        match word {
            "const" | "async" | "unsafe" | "extern" => {
                rest = rest[word.len()..].trim_start();
            }
            // `extern "C" fn`
            _ if word.starts_with('"') => {
                let close = rest[1..].find('"')? + 2;
                rest = rest[close..].trim_start();
            }
            _ => break,
        }
    }
    let after = rest.strip_prefix("fn ")?;
    let end = after
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    (end > 0).then(|| &after[..end])
}

/// `(first line, length, name)` of every `fn` with a body longer than `max`.
fn long_functions(text: &str, max: usize) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let Some(name) = declared_fn(t) else { continue };
        if t.ends_with(';') {
            continue;
        }
        let end = lines[i + 1..]
            .iter()
            .position(|m| {
                m.len() - m.trim_start().len() == indent && m.trim_start().starts_with('}')
            })
            .map(|p| i + 1 + p);
        let Some(end) = end else { continue };
        let len = end - i + 1;
        if len > max {
            long.push((i + 1, len, name.to_string()));
        }
    }
    long
}

fn excused(text: &str) -> bool {
    text.lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .any(|l| l.starts_with(EXCUSE))
}

#[test]
fn files_and_functions_fit_on_a_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = source::src_files();
    let mut report = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).expect("readable source");
        // Files of unit tests only (`balance/tests_algorithms.rs`) are tests.
        let test_only = f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tests"));
        if excused(&text) || test_only {
            continue;
        }
        let rel = f.strip_prefix(root).expect("under the root").display();
        let n = code_lines(&text);
        if n > MAX_FILE_LINES {
            report.push(format!(
                "{rel}: {n} lines before its tests (max {MAX_FILE_LINES})"
            ));
        }
        for (line, len, name) in long_functions(&text, MAX_FN_LINES) {
            report.push(format!(
                "{rel}:{line}: fn {name} is {len} lines (max {MAX_FN_LINES})"
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_reader_finds_a_long_function() {
    let body = "    x();\n".repeat(5);
    let text = format!("fn short() {{\n}}\n\npub fn long() {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 4), vec![(4, 7, "long".to_string())]);
    assert!(long_functions(&text, 10).is_empty());
}

#[test]
fn the_reader_knows_every_fn_form() {
    let body = "    x();\n".repeat(5);
    let text = format!("pub(super) fn long() {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 4), vec![(1, 7, "long".to_string())]);
    for (line, name) in [
        ("fn a() {", Some("a")),
        ("pub(super) fn b_2<T>(x: T) {", Some("b_2")),
        ("pub(in crate::proxy) fn c() {", Some("c")),
        ("pub(crate) const async unsafe fn d() {", Some("d")),
        ("pub const fn e() -> u8 {", Some("e")),
        ("unsafe extern \"C\" fn f() {", Some("f")),
        ("extern fn g() {", Some("g")),
        ("async fn h() {", Some("h")),
        ("let fn_ptr = f;", None),
        ("// fn not_code() {", None),
        ("pub struct Fn {", None),
        ("impl Fn for X {", None),
    ] {
        assert_eq!(declared_fn(line), name, "{line}");
    }
}
