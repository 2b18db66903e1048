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
