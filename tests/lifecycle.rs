//! The process: `fulcrum check`, bad configs at start, graceful SIGTERM.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

fn check(config: &str) -> (i32, String, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    )
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/fulcrum.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configuration ok"
    );
}

#[test]
fn check_reports_every_error_with_position() {
    let cfg = r#"[global]
shutdown_timeout = "5 parsecs"

[upstream.app]
server = ["127.0.0.1:8080 weight=0", "127.0.0.1:8081 bogus"]
read_timeout = "soon"

[[server]]
listen = ["127.0.0.1:99999"]
[[server.location]]
path = "/"
proxy_pass = "http://nowhere"
[[server.location]]
path = "~ ([a-z"
return = { status = 200 }
[[server.location]]
path = "/x"
proxy_pass = "http://app"
proxy_set_header = { X-A = "$nosuchvar" }
"#;
    let (code, out, err, path, _d) = check(cfg);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let p = path.display().to_string();
    let expect = [
        (2, 20, "invalid duration"),
        (5, 11, "weight"),
        (5, 38, "invalid parameter \"bogus\""),
        (6, 16, "invalid duration"),
        (9, 11, "invalid listen address"),
        (12, 14, "nowhere"),
        (14, 8, "regex"),
        (19, 29, "unknown \"nosuchvar\" variable"),
    ];
    let lines: Vec<&str> = err.lines().collect();
    for (line, col, msg) in expect {
        let prefix = format!("{p}:{line}:{col}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(msg)),
            "missing {prefix}... {msg} in:\n{err}"
        );
    }
}

/// The server timeouts take a duration above zero (zero would close or refuse at
/// once); a bad one is reported at its position.
#[test]
fn check_reports_a_bad_server_timeout_with_position() {
    for key in [
        "client_body_timeout",
        "client_header_timeout",
        "keepalive_timeout",
    ] {
        let server = |v: &str| {
            format!(
                "[[server]]\nlisten = [\"127.0.0.1:0\"]\n{key} = {v}\n[[server.location]]\npath = \"/\"\nreturn = {{ status = 200 }}\n"
            )
        };
        let (code, out, err, _, _d) = check(&server("\"90s\""));
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        let col = key.len() + 4;
        for (value, msg) in [
            ("\"soon\"", "invalid duration \"soon\"".to_string()),
            ("\"0s\"", format!("{key} must be above zero")),
        ] {
            let (code, _, err, p, _d) = check(&server(value));
            assert_eq!(code, 1, "{value}: {err}");
            let expect = format!("{}:3:{col}: {msg}", p.display());
            assert!(err.starts_with(&expect), "{key} {value}: {err}");
        }
    }
}

#[test]
fn check_reports_unknown_keys_wrong_types_and_duplicates() {
    let (code, _, err, p, _d) = check("[global]\nworker_thread = 2\n");
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "{}:2:1: unknown field `worker_thread`",
            p.display()
        )),
        "{err}"
    );
    let (code, _, err, p, _d) =
        check("[upstream.a]\nserver = [\"127.0.0.1:1\"]\nkeepalive = \"many\"\n");
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("{}:3:13: invalid type", p.display())),
        "{err}"
    );
    let (code, _, err, p, _d) = check(
        "[upstream.a]\nserver = [\"127.0.0.1:1\"]\n[upstream.a]\nserver = [\"127.0.0.1:2\"]\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("{}:3:", p.display())) && err.contains("duplicate"),
        "{err}"
    );
    let (code, _, err, _, _d) = check(
        "[upstream.a]\nserver = [\"127.0.0.1:1\"]\nhealth_check = { interval = \"1s\" }\n[[server]]\nlisten=[\"127.0.0.1:0\"]\n[[server.location]]\npath=\"/\"\nproxy_pass=\"http://a\"\n[[server.location]]\npath=\"/\"\nproxy_pass=\"http://a\"\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("duplicate location"), "{err}");
}

#[test]
fn bad_config_at_start_exits_1_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "[[server]]\nlisten = [\"127.0.0.1:0\"]\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://missing\"\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:5:14: ", path.display())),
        "{err}"
    );
}

#[test]
fn sigterm_lets_in_flight_request_finish_then_exits_0() {
    let slow = Backend::with(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(3000));
        Response::new(Full::new(Bytes::from("finished")))
    }));
    let mut f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.s]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://s"
[[server.location]]
path = "= /fast"
return = {{ status = 200, body = "fast" }}
"#,
        slow.addr
    ));
    let addr = f.addr();
    // A keep-alive connection that is idle when the signal comes.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut idle).unwrap();
    assert_eq!((r.status, r.header("connection")), (200, None));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The request is in flight once the backend has it (`last` is only set when the
    // backend answers).
    assert!(eventually(10, || slow.hits() == 1));
    f.signal("TERM");
    // Not ready any more, no new connections accepted...
    assert!(f.wait_log("shutting down", 10).is_some());
    // ...the idle connection is closed without waiting for the busy one...
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0);
    assert!(
        slow.last.lock().unwrap().is_none(),
        "the idle connection waited for the in-flight request"
    );
    // ...and the in-flight request completes, telling the client the connection ends.
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(f.wait_exit(20), Some(0));
    assert!(TcpStream::connect(addr).is_err());
}
