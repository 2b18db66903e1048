//! Crashes and broken properties the fuzz targets (fuzz/, docs/testing.md) found,
//! each kept as the smallest input that showed it. The fuzzers' own inputs are in
//! the corpora too (fuzz/corpus/*/crash-*), replayed by `cargo test -p fulcrum-fuzz`;
//! the HTTP/1 chunk-line limits are tested next to their parser
//! (src/proxy/h1/body_coding.rs).

use std::path::Path;

/// toml has no words for a control character in a comment: the diagnostic was
/// `fulcrum.toml:2:5: ` with an empty message. It names the character now.
#[test]
fn a_toml_syntax_error_always_says_something() {
    for text in [
        "a = 1\n# x\u{1f}y\n",
        "# \u{7f}\n",
        "x = \"a\u{1}\"\n",
        "[a\n",
    ] {
        let e = fulcrum::config::parse(Path::new("f.toml"), text).expect_err(text);
        assert!(!e.diagnostics.is_empty(), "{text:?}");
        for d in &e.diagnostics {
            assert!(!d.message.trim().is_empty(), "{text:?}: {d}");
        }
    }
    let e = fulcrum::config::parse(Path::new("f.toml"), "a = 1\n# x\u{1f}y\n").expect_err("bad");
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.col), (2, 4), "{d}");
    assert!(d.message.contains("'\\u{1f}'"), "{d}");
}

/// Blocks nested a few thousand deep (`a{a{a{...`, 8 KB) overflowed the nginx
/// reader's stack and aborted `fulcrum convert`. Past `MAX_DEPTH` they are an error
/// on the line of the `{` too many; at the limit they still read.
#[test]
fn deeply_nested_nginx_blocks_are_an_error_not_a_crash() {
    use fulcrum::convert::parser::{parse_file, ParseErrorKind, MAX_DEPTH};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nginx.conf");
    let deep = "a{\n".repeat(100_000);
    std::fs::write(&path, &deep).expect("write");
    let e = parse_file(&path).expect_err("too deep");
    assert!(matches!(e.kind, ParseErrorKind::TooDeep), "{e}");
    assert_eq!(e.line, MAX_DEPTH + 1, "{e}");
    let fine = format!("{}{}", "a{\n".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
    std::fs::write(&path, fine).expect("write");
    let mut tree = parse_file(&path).expect("at the limit");
    let mut depth = 0;
    while let Some(d) = tree.pop() {
        depth += 1;
        tree = d.block.unwrap_or_default();
    }
    assert_eq!(depth, MAX_DEPTH);
}
