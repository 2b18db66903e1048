//! The access log against real backends and real files: `combined` and `json` lines
//! parse and carry the right fields (tries with their addresses, statuses and
//! times, body bytes, headers), a client that leaves early is logged as 499, and a
//! reload switches format and file.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

const BIG: usize = 100 * 1024;

/// `/big` answers 100 KiB, anything else "hello".
fn backend() -> Backend {
    Backend::with(Arc::new(|parts, _| {
        let body = if parts.uri.path().ends_with("/big") {
            Bytes::from(vec![b'x'; BIG])
        } else {
            Bytes::from_static(b"hello")
        };
        http::Response::new(Full::new(body))
    }))
}

fn config(log: &Path, format: &str, ok: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
[global]
access_log = "{}"
access_log_format = "{format}"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
server = ["{dead}", "{ok}"]
[upstream.broken]
server = ["{dead}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/app/"
proxy_pass = "http://app"
[[server.location]]
path = "/broken/"
proxy_pass = "http://broken"
"#,
        log.display()
    )
}

/// Waits until `path` holds at least `n` complete lines, and returns them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let ok = eventually(10, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        got = text.lines().map(str::to_string).collect();
        text.ends_with('\n') && got.len() >= n
    });
    assert!(ok, "expected {n} lines in {}, got {got:?}", path.display());
    got
}

/// The three lines of [`traffic`] in the order it sent them. Lines of requests served
/// by different worker threads may be written out of order (docs/logging.md).
fn in_traffic_order(mut got: Vec<String>) -> Vec<String> {
    let rank = |l: &String| {
        ["/app/big", "/nothing", "/broken/"]
            .iter()
            .position(|p| l.contains(p))
            .unwrap_or(usize::MAX)
    };
    got.sort_by_key(rank);
    got
}

/// Sends the same known traffic in every format test; returns the body length of
/// the first answer.
fn traffic(addr: SocketAddr) -> usize {
    let r = raw(
        addr,
        b"GET /app/big?x=1 HTTP/1.1\r\nHost: log.test\r\nUser-Agent: probe/1.0 \"q\"\r\n\
          Referer: http://ref.example/\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\
          Connection: close\r\n\r\n",
    )
    .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(get(addr, "/nothing").status, 404);
    assert_eq!(get(addr, "/broken/").status, 502);
    r.body.len()
}

fn recent(t: chrono::DateTime<chrono::FixedOffset>) {
    let age = chrono::Utc::now().signed_duration_since(t);
    assert!(
        age >= chrono::TimeDelta::seconds(-2) && age <= chrono::TimeDelta::seconds(120),
        "time {t} is not now"
    );
}

#[test]
fn combined_lines_carry_nginx_fields_and_upstream_tries() {
    let ok = backend();
    let dead = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Fulcrum::start(&config(&log, "combined", ok.addr, dead));
    let body_len = traffic(f.addr());
    assert_eq!(body_len, BIG);
    let re = regex::Regex::new(
        r#"^(\S+) - (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" (\d+\.\d{3}) "([^"]*)"$"#,
    )
    .unwrap();
    let got = in_traffic_order(lines(&log, 3));
    assert_eq!(got.len(), 3, "{got:?}");
    let caps: Vec<regex::Captures> = got
        .iter()
        .map(|l| {
            re.captures(l)
                .unwrap_or_else(|| panic!("not combined: {l}"))
        })
        .collect();
    let field = |i: usize, j: usize| caps[i].get(j).unwrap().as_str();
    for i in 0..3 {
        assert_eq!(field(i, 1), "127.0.0.1");
        let t = chrono::DateTime::parse_from_str(field(i, 3), "%d/%b/%Y:%H:%M:%S %z")
            .unwrap_or_else(|e| panic!("time {}: {e}", field(i, 3)));
        recent(t);
        let rt: f64 = field(i, 11).parse().unwrap();
        assert!((0.0..30.0).contains(&rt));
    }
    // The retried request: the refused server first, then the one that answered.
    assert_eq!(field(0, 2), "alice");
    assert_eq!(field(0, 4), "GET /app/big?x=1 HTTP/1.1");
    assert_eq!(field(0, 5), "200");
    assert_eq!(field(0, 6), BIG.to_string());
    assert_eq!(field(0, 7), "http://ref.example/");
    assert_eq!(field(0, 8), r#"probe/1.0 \x22q\x22"#);
    assert_eq!(field(0, 9), format!("{dead}, {}", ok.addr));
    assert_eq!(field(0, 10), "502, 200");
    let times: Vec<f64> = field(0, 12)
        .split(", ")
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 2);
    // No upstream for the 404.
    assert_eq!(field(1, 2), "-");
    assert_eq!(field(1, 4), "GET /nothing HTTP/1.1");
    assert_eq!(field(1, 5), "404");
    assert_eq!(field(1, 6), "14"); // "404 Not Found\n"
    assert_eq!((field(1, 9), field(1, 10), field(1, 12)), ("-", "-", "-"));
    // A single refused server: fulcrum's 502, and the try's own 502.
    assert_eq!(field(2, 5), "502");
    assert_eq!(field(2, 9), dead.to_string());
    assert_eq!(field(2, 10), "502");
}

#[test]
fn json_lines_parse_with_the_same_fields() {
    let ok = backend();
    let dead = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let f = Fulcrum::start(&config(&log, "json", ok.addr, dead));
    traffic(f.addr());
    let got = in_traffic_order(lines(&log, 3));
    let v: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect();
    for e in &v {
        assert_eq!(e["remote_addr"], "127.0.0.1");
        let t = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
        recent(t);
        assert!(e["request_time"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(v[0]["request"], "GET /app/big?x=1 HTTP/1.1");
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["uri"], "/app/big?x=1");
    assert_eq!(v[0]["protocol"], "HTTP/1.1");
    assert_eq!(v[0]["host"], "log.test");
    assert_eq!(v[0]["remote_user"], "alice");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["body_bytes_sent"], BIG);
    assert_eq!(v[0]["http_referer"], "http://ref.example/");
    assert_eq!(v[0]["http_user_agent"], "probe/1.0 \"q\"");
    assert_eq!(v[0]["upstream_addr"], format!("{dead}, {}", ok.addr));
    assert_eq!(v[0]["upstream_status"], "502, 200");
    assert_eq!(
        v[0]["upstream_response_time"]
            .as_str()
            .unwrap()
            .split(", ")
            .count(),
        2
    );
    assert_eq!(v[1]["status"], 404);
    assert_eq!(v[1]["upstream_addr"], serde_json::Value::Null);
    assert_eq!(v[1]["http_user_agent"], serde_json::Value::Null);
    assert_eq!(v[2]["status"], 502);
    assert_eq!(v[2]["upstream_status"], "502");
}

#[test]
fn client_gone_before_the_response_is_logged_as_499() {
    let slow = Backend::with(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(800));
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    }));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Fulcrum::start(&config(&log, "json", dead_addr(), slow.addr));
    // Without a body, and with one (read to its end before the client leaves).
    let requests: [&[u8]; 2] = [
        b"GET /broken/gone HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /broken/gone HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for (i, req) in requests.into_iter().enumerate() {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(f.addr()).unwrap();
        s.write_all(req).unwrap();
        // Wait until the request reached the backend, then hang up.
        assert!(eventually(10, || slow.hits() == i + 1));
        drop(s);
        let got = lines(&log, i + 1);
        let e: serde_json::Value = serde_json::from_str(&got[i]).unwrap();
        assert_eq!(e["status"], 499, "{e}");
        assert_eq!(e["body_bytes_sent"], 0);
        assert_eq!(e["upstream_addr"], slow.addr.to_string());
    }
}

#[test]
fn reload_switches_format_and_file() {
    let ok = backend();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let f = Fulcrum::start(&config(&first, "combined", ok.addr, dead_addr()));
    assert_eq!(get(f.addr(), "/app/one").status, 200);
    assert!(lines(&first, 1)[0].contains("\"GET /app/one HTTP/1.1\" 200 5 "));
    std::fs::write(&f.config, config(&second, "json", ok.addr, dead_addr())).unwrap();
    let r = raw(
        f.admin.unwrap(),
        b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(f.addr(), "/app/two").status, 200);
    let e: serde_json::Value = serde_json::from_str(&lines(&second, 1)[0]).unwrap();
    assert_eq!(e["uri"], "/app/two");
    assert_eq!(e["status"], 200);
    // The first file got nothing more.
    assert_eq!(lines(&first, 1).len(), 1);
}

#[test]
fn unwritable_log_path_fails_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("missing-dir").join("access.log");
    let cfg = config(
        &log,
        "combined",
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:10".parse().unwrap(),
    );
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open access_log"), "{err}");
}

#[test]
fn rejected_heads_are_logged_and_counted() {
    let ok = backend();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Fulcrum::start(&config(&log, "combined", ok.addr, dead_addr()));
    let r = raw(f.addr(), b"NOT A REQUEST\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = raw(f.addr(), huge.as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    let got = lines(&log, 2);
    // (request field, status) of each line, in any order.
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|l| {
            let (_, rest) = l.split_once("] \"").unwrap();
            let (request, rest) = rest.split_once("\" ").unwrap();
            (
                request.to_string(),
                rest.split(' ').next().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    // hyper could not parse the first head: no request line to show.
    assert_eq!(seen[0], ("-".to_string(), "400".to_string()), "{got:?}");
    // The oversized head is answered by fulcrum (or by hyper, then with "-").
    assert_eq!(seen[1].1, "431", "{got:?}");
    assert!(seen[1].0 == "GET / HTTP/1.1" || seen[1].0 == "-", "{got:?}");
    // Counted for the listener's default server (labelled by its listen address).
    let m = get(f.admin.unwrap(), "/metrics").text();
    assert!(
        m.contains(
            "fulcrum_http_requests_total{code=\"4xx\",server=\"127.0.0.1:0\",upstream=\"\"} 2\n"
        ),
        "{m}"
    );
}
