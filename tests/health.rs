//! Active health checks against real backends whose health endpoint flips:
//! rise/fall timing, mandatory, expect_status, TCP checks, hanging checks,
//! backups, and checks following a reload.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

/// A backend with a switchable `/health` status, a switchable "broken" mode (every
/// other path answers 503) and a count of non-health requests.
struct Flip {
    b: Backend,
    health: Arc<AtomicU16>,
    broken: Arc<AtomicBool>,
    traffic: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
}

impl Flip {
    fn new(name: &str, health: u16) -> Flip {
        let (h, br, t, c) = (
            Arc::new(AtomicU16::new(health)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (h2, br2, t2, c2) = (h.clone(), br.clone(), t.clone(), c.clone());
        let name = name.to_string();
        let b = Backend::with(Arc::new(move |parts, _| {
            let mut r = http::Response::new(Full::new(Bytes::from(name.clone())));
            if parts.uri.path() == "/health" {
                c2.fetch_add(1, Ordering::SeqCst);
                *r.status_mut() = http::StatusCode::from_u16(h2.load(Ordering::SeqCst)).unwrap();
            } else {
                t2.fetch_add(1, Ordering::SeqCst);
                if br2.load(Ordering::SeqCst) {
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                }
            }
            r
        }));
        Flip {
            b,
            health: h,
            broken: br,
            traffic: t,
            checks: c,
        }
    }
    fn addr(&self) -> SocketAddr {
        self.b.addr
    }
    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }
    fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }
}

fn config(upstreams: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{upstreams}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    )
}

fn status(f: &Fulcrum) -> serde_json::Value {
    let r = get(f.admin.expect("admin"), "/status");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("status json")
}

/// `state` of server `addr` in pool `upstream` per `/status`.
fn state(f: &Fulcrum, upstream: &str, addr: SocketAddr) -> String {
    let s = status(f);
    let up = s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .unwrap_or_else(|| panic!("no upstream {upstream} in {s}"));
    let srv = up["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["addr"] == addr.to_string())
        .unwrap_or_else(|| panic!("no server {addr} in {up}"));
    srv["state"].as_str().unwrap().to_string()
}

const FAST: &str = r#"path = "/health"
interval = "200ms"
timeout = "1s"
rise = 2
fall = 2"#;

#[test]
fn failing_check_stops_traffic_within_1s_without_client_errors_then_recovers() {
    let (a, b) = (Flip::new("a", 200), Flip::new("b", 200));
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{} max_fails=0", "{} max_fails=0"]
next_upstream = ["error", "timeout", "http_503"]
[upstream.backend.health_check]
{FAST}"#,
        a.addr(),
        b.addr()
    )));
    let mut conn = Conn::open(f.addr());
    for _ in 0..4 {
        assert_eq!(conn.get("/").status, 200);
    }
    assert!(a.traffic() > 0 && b.traffic() > 0);

    // a breaks: its health check and its traffic both answer 503. Passive
    // accounting is off (max_fails=0), so only the active check takes it out;
    // retries on http_503 keep every client request whole meanwhile.
    a.set_health(503);
    a.broken.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    loop {
        let r = conn.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
        if state(&f, "backend", a.addr()) == "unhealthy" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a never turned unhealthy"
        );
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "unhealthy after {took:?}");
    let before = a.traffic();
    for _ in 0..30 {
        assert_eq!(conn.get("/").text(), "b");
    }
    assert_eq!(a.traffic(), before, "an unhealthy server got traffic");
    let line = f
        .wait_log("server state changed", 5)
        .expect("state change log");
    assert!(
        line.contains("old=\"up\"") || line.contains("old=up"),
        "{line}"
    );
    assert!(
        line.contains("unhealthy") && line.contains("status 503"),
        "{line}"
    );
    assert!(line.contains("upstream=\"backend\""), "{line}");
    assert!(line.contains(&a.addr().to_string()), "{line}");

    // a recovers: traffic returns within 1 s.
    a.broken.store(false, Ordering::SeqCst);
    a.set_health(200);
    let t1 = Instant::now();
    while a.traffic() == before {
        assert_eq!(conn.get("/").status, 200);
        assert!(t1.elapsed() < Duration::from_secs(5), "a never came back");
    }
    let took = t1.elapsed();
    assert!(took < Duration::from_secs(1), "traffic back after {took:?}");
    assert_eq!(state(&f, "backend", a.addr()), "up");
}

#[test]
fn mandatory_servers_get_nothing_until_their_first_pass() {
    let (a, b) = (Flip::new("a", 503), Flip::new("b", 200));
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{}", "{}"]
[upstream.backend.health_check]
{FAST}
mandatory = true"#,
        a.addr(),
        b.addr()
    )));
    // Before any check ran, no mandatory server may serve: 502 or b, never a.
    let r = get(f.addr(), "/");
    assert!(
        r.status == 502 || r.text() == "b",
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(state(&f, "backend", a.addr()), "unhealthy");
    assert!(eventually(5, || state(&f, "backend", b.addr()) == "up"));
    for _ in 0..20 {
        assert_eq!(get(f.addr(), "/").text(), "b");
    }
    // Checked and failing: still nothing.
    assert!(eventually(5, || a.checks.load(Ordering::SeqCst) >= 2));
    for _ in 0..5 {
        assert_eq!(get(f.addr(), "/").text(), "b");
    }
    assert_eq!(a.traffic(), 0);
    // One pass is enough for a mandatory server that never passed (rise = 2).
    a.set_health(200);
    assert!(eventually(5, || get(f.addr(), "/").text() == "a"));
    let a_addr = a.addr().to_string();
    assert!(eventually(5, || f.log_text().lines().any(|l| l
        .contains("first health check passed")
        && l.contains(&a_addr))));
}

#[test]
fn expect_status_accepts_codes_and_ranges() {
    let a = Flip::new("a", 302);
    let hc = |expect: &str| {
        format!(
            "path = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\nexpect_status = {expect}"
        )
    };
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{a}"]
[upstream.backend.health_check]
{}
[upstream.ranges]
server = ["{a}"]
[upstream.ranges.health_check]
{}
[upstream.single]
server = ["{a}"]
[upstream.single.health_check]
{}"#,
        hc("\"200-299\""),
        hc("[204, \"300-304\"]"),
        hc("302"),
        a = a.addr()
    )));
    assert!(eventually(5, || state(&f, "backend", a.addr()) == "unhealthy"));
    // The others have been checked as often by now; give them a few more rounds.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&f, "ranges", a.addr()), "up");
    assert_eq!(state(&f, "single", a.addr()), "up");
    // A 204 passes "ranges" but fails "single".
    a.set_health(204);
    assert!(eventually(5, || state(&f, "single", a.addr()) == "unhealthy"));
    assert_eq!(state(&f, "ranges", a.addr()), "up");
    assert!(eventually(5, || state(&f, "backend", a.addr()) == "up"));
}

#[test]
fn tcp_checks_and_port_override() {
    let a = Flip::new("a", 500);
    let dead = dead_addr();
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{a}"]
[upstream.backend.health_check]
type = "tcp"
interval = "100ms"
fall = 1
rise = 1
[upstream.dead]
server = ["{dead}"]
[upstream.dead.health_check]
type = "tcp"
interval = "100ms"
fall = 1
[upstream.other_port]
server = ["{a}"]
[upstream.other_port.health_check]
interval = "100ms"
fall = 1
port = {dead_port}"#,
        a = a.addr(),
        dead_port = dead.port()
    )));
    assert!(eventually(5, || state(&f, "dead", dead) == "unhealthy"));
    assert!(eventually(5, || state(&f, "other_port", a.addr()) == "unhealthy"));
    // A TCP check ignores the 500 of /health: a connect is all it does.
    assert_eq!(state(&f, "backend", a.addr()), "up");
    assert_eq!(a.checks.load(Ordering::SeqCst), 0);
    assert_eq!(get(f.addr(), "/").text(), "a");
}

#[test]
fn hanging_check_counts_as_failure_after_timeout() {
    let a = Flip::new("a", 200);
    // Connects complete in the kernel backlog, but nothing ever answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{}"]
[upstream.backend.health_check]
interval = "200ms"
timeout = "300ms"
fall = 1
port = {}"#,
        a.addr(),
        hang.local_addr().unwrap().port()
    )));
    let t0 = Instant::now();
    let line = f
        .wait_log("server state changed", 10)
        .expect("state change");
    assert!(line.contains("timed out"), "{line}");
    // Not before the timeout could have passed.
    assert!(t0.elapsed() >= Duration::from_millis(300) || line.contains("timed out"));
    assert_eq!(state(&f, "backend", a.addr()), "unhealthy");
    assert_eq!(get(f.addr(), "/").status, 502);
    // The log line reaches the harness through a pipe: wait for it, do not race it.
    assert!(
        f.wait_log("no live upstreams", 5).is_some(),
        "{}",
        f.log_text()
    );
}

#[test]
fn backup_serves_only_while_every_primary_is_unhealthy() {
    let (p1, p2, bk) = (
        Flip::new("p1", 200),
        Flip::new("p2", 200),
        Flip::new("backup", 200),
    );
    let f = Fulcrum::start(&config(&format!(
        r#"[upstream.backend]
server = ["{}", "{}", "{} backup"]
[upstream.backend.health_check]
path = "/health"
interval = "100ms"
fall = 1
rise = 1"#,
        p1.addr(),
        p2.addr(),
        bk.addr()
    )));
    for _ in 0..6 {
        assert_ne!(get(f.addr(), "/").text(), "backup");
    }
    p1.set_health(503);
    assert!(eventually(5, || state(&f, "backend", p1.addr()) == "unhealthy"));
    // One primary left: still no backup traffic.
    for _ in 0..6 {
        assert_eq!(get(f.addr(), "/").text(), "p2");
    }
    assert_eq!(bk.traffic(), 0);
    p2.set_health(503);
    assert!(eventually(5, || state(&f, "backend", p2.addr()) == "unhealthy"));
    for _ in 0..6 {
        assert_eq!(get(f.addr(), "/").text(), "backup");
    }
    p1.set_health(200);
    assert!(eventually(5, || state(&f, "backend", p1.addr()) == "up"));
    let before = bk.traffic();
    for _ in 0..6 {
        assert_eq!(get(f.addr(), "/").text(), "p1");
    }
    assert_eq!(bk.traffic(), before);
}

#[test]
fn reload_keeps_health_state_and_checks_follow_the_new_pool() {
    let (a, b, c) = (
        Flip::new("a", 503),
        Flip::new("b", 200),
        Flip::new("c", 503),
    );
    let hc = "[upstream.backend.health_check]\npath = \"/health\"\ninterval = \"100ms\"\nfall = 1\nrise = 3";
    let f = Fulcrum::start(&config(&format!(
        "[upstream.backend]\nserver = [\"{}\", \"{}\"]\n{hc}",
        a.addr(),
        b.addr()
    )));
    assert!(eventually(5, || state(&f, "backend", a.addr()) == "unhealthy"));
    // Reload: a stays, b leaves, c joins.
    std::fs::write(
        &f.config,
        config(&format!(
            "[upstream.backend]\nserver = [\"{}\", \"{}\"]\n{hc}",
            a.addr(),
            c.addr()
        )),
    )
    .unwrap();
    f.signal("HUP");
    f.wait_log("configuration reloaded", 10).expect("reloaded");
    // a kept its verdict (a fresh state would be "up" until fall).
    assert_eq!(state(&f, "backend", a.addr()), "unhealthy");
    assert!(eventually(5, || state(&f, "backend", c.addr()) == "unhealthy"));
    // b's checks stopped.
    let n = b.checks.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.checks.load(Ordering::SeqCst) <= n + 1, "b still checked");
    assert_eq!(a.traffic() + c.traffic(), 0);
}

#[test]
fn check_rejects_bad_health_check_keys_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[upstream.backend]
server = ["127.0.0.1:1"]
[upstream.backend.health_check]
type = "udp"
rise = 0
expect_status = ["399-200"]
port = 70000
interval = "soon"
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let p = path.display().to_string();
    for (line, what) in [
        (4, "invalid health_check type"),
        (5, "rise must be at least 1"),
        (6, "empty status range"),
        (7, "invalid port 70000"),
        (8, ""),
    ] {
        let prefix = format!("{p}:{line}:");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no {what:?} at line {line}:\n{err}"
        );
    }
}

/// A raw HTTP/1.1 backend counting the connections and requests it gets; with
/// `close_after` it closes each connection after answering (without saying so, as
/// a server whose keep-alive timeout is tiny).
struct Counting {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    reqs: Arc<AtomicUsize>,
}

impl Counting {
    fn start(close_after: bool) -> Counting {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c2, r2) = (conns.clone(), reqs.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                c2.fetch_add(1, Ordering::SeqCst);
                let r3 = r2.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut chunk) {
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            r3.fetch_add(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(ok).is_err() || close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Counting { addr, conns, reqs }
    }
}

fn one_checked(addr: SocketAddr) -> String {
    config(&format!(
        r#"[upstream.backend]
server = ["{addr}"]
[upstream.backend.health_check]
interval = "50ms"
fall = 1
rise = 1"#
    ))
}

#[test]
fn http_checks_keep_their_connection_between_checks() {
    let b = Counting::start(false);
    let f = Fulcrum::start(&one_checked(b.addr));
    assert!(eventually(10, || b.reqs.load(Ordering::SeqCst) >= 8));
    // Every check after the first went over the first one's connection.
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
    assert_eq!(state(&f, "backend", b.addr), "up");
}

#[test]
fn a_server_closing_idle_check_connections_never_fails_a_check() {
    let b = Counting::start(true);
    let f = Fulcrum::start(&one_checked(b.addr));
    assert!(eventually(10, || b.reqs.load(Ordering::SeqCst) >= 8));
    let m = get(f.admin.expect("admin"), "/metrics").text().to_string();
    let fails: f64 = m
        .lines()
        .filter(|l| l.starts_with("fulcrum_health_checks_total{") && l.contains("result=\"fail\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(fails, 0.0, "{m}\n{}", f.log_text());
    assert!(b.conns.load(Ordering::SeqCst) >= 8);
    assert_eq!(state(&f, "backend", b.addr), "up");
}
