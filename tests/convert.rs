//! `fulcrum convert` end to end: the binary on a realistic nginx.conf (with an
//! `include` glob), its output checked by `fulcrum check`, its warnings, a location
//! that fails closed, and a parse error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fulcrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(args)
        .output()
        .expect("fulcrum runs")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/convert")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_realistic_config_converts_and_passes_check() {
    let conf = data("nginx.conf");
    let out = fulcrum(&["convert", conf.to_str().expect("utf-8 path")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("fulcrum.toml");
    std::fs::write(&toml, &stdout).expect("write");
    let check = fulcrum(&["check", "--config", toml.to_str().expect("utf-8 path")]);
    assert!(check.status.success(), "{}\n{stdout}", text(&check.stderr));
    assert_eq!(text(&check.stdout).trim(), "configuration ok");

    // Pools and servers from the included files, each under its source line.
    assert!(
        stdout.contains("# 10-upstreams.conf:1 upstream app\n[upstream.app]"),
        "{stdout}"
    );
    assert!(stdout.contains("hash_key = \"$cookie_sid\"\nconsistent = true"));
    assert!(stdout.contains("proxy_pass = \"http://sessions/v2/\""));
    assert!(
        stdout.contains("return = { status = 200, body = \"ok\\n\" }"),
        "{stdout}"
    );
    // The default_server comes first.
    let default = stdout
        .find("# 20-site.conf:38 server")
        .expect("default server");
    let site = stdout.find("# 20-site.conf:1 server").expect("site");
    assert!(default < site, "{stdout}");
    // Fail closed: the admin location is a 403, never an open proxy.
    assert!(
        stdout.contains("# 20-site.conf:26 location /admin/\n# guarded by auth_basic"),
        "{stdout}"
    );
    assert!(stdout.contains("path = \"/admin/\"\nreturn = { status = 403 }"));
    // The server-level return answers every request of its server.
    assert!(stdout.contains("path = \"/\"\nreturn = { status = 301, location = \"https://example.com$request_uri\" }"), "{stdout}");

    // Warnings name the file (the included one too) and the line.
    let conf_d = data("conf.d/20-site.conf");
    for w in [
        format!("{}:3: directive \"user\"", conf.display()),
        format!("{}:8: directive \"events\"", conf.display()),
        format!("{}:1: directive \"types\"", data("mime.types").display()),
        format!("{}:17: directive \"gzip\"", conf.display()),
        format!("{}:27: directive \"auth_basic\"", conf_d.display()),
        format!("{}:33: directive \"root\"", conf_d.display()),
        format!("{}:34: directive \"expires\"", conf_d.display()),
    ] {
        assert!(stderr.contains(&w), "missing {w}:\n{stderr}");
    }
    // The WebSocket idiom and the upgrade map are carried silently.
    assert!(!stderr.contains("\"map\""), "{stderr}");
    assert!(!stderr.contains("Upgrade"), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.contains("directives carried") && l.contains("warned")),
        "{stderr}"
    );
}

#[test]
fn a_parse_error_exits_1_with_path_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, "http {\n    server {\n        listen 80;\n}\n").expect("write");
    let out = fulcrum(&["convert", conf.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:4: unexpected end of file", conf.display())),
        "{stderr}"
    );
}

/// The public configs of `tests/data/convert/public/` (nginx's docs and test suite,
/// popular apps; each file names its origin): every one converts (exit 0), its
/// output passes `fulcrum check`, and every directive in it is carried or warned
/// with its line (a block warned as a whole covers what is inside it).
#[test]
fn public_configs_convert_pass_check_and_account_for_every_directive() {
    let dir = data("public");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("public configs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in &files {
        let path = f.to_str().expect("utf-8 path");
        let out = fulcrum(&["convert", path]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{path}: {stderr}");
        let toml = tmp.path().join("fulcrum.toml");
        std::fs::write(&toml, &stdout).expect("write");
        let check = fulcrum(&["check", "--config", toml.to_str().expect("utf-8 path")]);
        assert!(
            check.status.success(),
            "{path}: {}\n{stdout}",
            text(&check.stderr)
        );

        let conv = fulcrum::convert::convert(f).expect("converts");
        let tree = fulcrum::convert::parser::parse_file(f).expect("parses");
        let mut missing = Vec::new();
        unaccounted(&tree, &conv, &mut missing);
        assert!(
            missing.is_empty(),
            "{path}: neither carried nor warned: {missing:?}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "{} directives carried, {} warned",
                conv.carried,
                conv.warnings.len()
            )),
            "{stderr}"
        );
    }
}

/// The directives of `tree` whose line is neither carried nor warned; the inside of
/// a block that is not carried (warned as a whole), or that is not a context of
/// directives, is not looked at.
fn unaccounted(
    tree: &[fulcrum::convert::parser::Directive],
    conv: &fulcrum::convert::Output,
    out: &mut Vec<String>,
) {
    for d in tree {
        let at = d.at();
        let carried = conv.carried_at.contains(&at);
        let warned = conv.warnings.iter().any(|w| w.at == at);
        if !carried && !warned {
            out.push(format!("{at} {}", d.name));
        }
        // The contexts convert reads directive by directive (a `map`'s lines are
        // its entries, not directives).
        let context = matches!(d.name.as_str(), "http" | "server" | "upstream" | "location");
        if let (true, true, Some(b)) = (carried, context, &d.block) {
            unaccounted(b, conv, out);
        }
    }
}
