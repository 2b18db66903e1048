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
