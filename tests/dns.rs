//! DNS discovery of `resolve` pools against a DNS server on loopback whose zone the
//! tests change: addresses follow the zone without a reload, staying servers keep
//! their state, a dead DNS server keeps the last set, SRV ports and weights, and an
//! empty answer gives 502.

mod common;
#[path = "dns/server.rs"]
mod server;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, get, Fulcrum};
use server::Dns;

/// An HTTP/1.1 backend on one loopback address answering its own name; `/slow`
/// answers after 1.5 s.
struct Back {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Back {
    fn start(ip: Ipv4Addr, port: u16) -> std::io::Result<Back> {
        let l = TcpListener::bind((ip, port))?;
        let addr = l.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(Result::ok) {
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut first = String::new();
                    if r.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    if first.contains("/slow") {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    let body = addr.ip().to_string();
                    let mut s = s;
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Ok(Back { addr, hits })
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Backends on 127.0.0.2, 127.0.0.3, ... sharing one port (what an A record set means).
fn backends(n: u8) -> Vec<Back> {
    'again: loop {
        let first = Back::start(Ipv4Addr::new(127, 0, 0, 2), 0).unwrap();
        let port = first.addr.port();
        let mut v = vec![first];
        for i in 3..2 + n {
            match Back::start(Ipv4Addr::new(127, 0, 0, i), port) {
                Ok(b) => v.push(b),
                Err(_) => continue 'again,
            }
        }
        return v;
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn config(dns: &Dns, servers: &str, extra: &str) -> String {
    format!(
        r#"
[global]
resolver = ["{}"]
resolver_timeout = "300ms"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = [{servers}]
resolve = true
resolve_interval = "500ms"
{extra}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b"
"#,
        dns.addr
    )
}

fn status(f: &Fulcrum) -> serde_json::Value {
    let admin = f.admin.expect("admin address");
    serde_json::from_str(&get(admin, "/status").text()).expect("status json")
}

/// The `/status` entry of server `addr` of pool b.
fn server_status(f: &Fulcrum, addr: &str) -> Option<serde_json::Value> {
    let s = status(f);
    s["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == "b")?["servers"]
        .as_array()?
        .iter()
        .find(|x| x["addr"] == addr)
        .cloned()
}

fn metric(f: &Fulcrum, needle: &str) -> u64 {
    let text = get(f.admin.expect("admin"), "/metrics").text();
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn records_added_and_removed_follow_without_reload() {
    let dns = Dns::start();
    let b = backends(2);
    let port = b[0].addr.port();
    dns.set_a("app.test", &[ip(2)]);
    let f = Fulcrum::start(&config(&dns, &format!("\"app.test:{port}\""), ""));
    let pid = f.pid();
    assert_eq!(get(f.addr(), "/").text(), "127.0.0.2");
    let origin = server_status(&f, &b[0].addr.to_string()).expect("in status");
    assert_eq!(origin["origin"], "app.test");

    dns.set_a("app.test", &[ip(2), ip(3)]);
    let t = std::time::Instant::now();
    assert!(eventually(3, || get(f.addr(), "/").text() == "127.0.0.3"));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(f.pid(), pid);
    assert!(!f.log_text().contains("configuration reloaded"));

    // Removed while a request is in flight on it: that request finishes, no new one starts.
    let slow_target = f.addr();
    let slow = std::thread::spawn(move || {
        (0..2)
            .map(|_| get(slow_target, "/slow").text())
            .collect::<Vec<_>>()
    });
    assert!(eventually(5, || b[0].hits() > 0 && b[1].hits() > 1));
    dns.set_a("app.test", &[ip(3)]);
    assert!(eventually(3, || server_status(&f, &b[0].addr.to_string()).is_none()));
    let before = b[0].hits();
    for _ in 0..10 {
        assert_eq!(get(f.addr(), "/").text(), "127.0.0.3");
    }
    assert_eq!(b[0].hits(), before);
    let slow = slow.join().unwrap();
    assert!(slow.iter().all(|s| s.starts_with("127.0.0.")), "{slow:?}");
}

#[test]
fn staying_address_keeps_its_state_and_counters() {
    let dns = Dns::start();
    let b = backends(2);
    let port = b[0].addr.port();
    // 127.0.0.9 has nothing listening on the port: it fails and is taken out.
    dns.set_a("app.test", &[ip(2), ip(9)]);
    let f = Fulcrum::start(&config(
        &dns,
        &format!("\"app.test:{port} max_fails=1 fail_timeout=30s\""),
        "",
    ));
    let dead = format!("127.0.0.9:{port}");
    let live = b[0].addr.to_string();
    for _ in 0..4 {
        assert_eq!(get(f.addr(), "/").status, 200);
    }
    let st = server_status(&f, &dead).unwrap();
    assert_eq!(st["state"], "failed");
    let requests = server_status(&f, &live).unwrap()["requests"]
        .as_u64()
        .unwrap();
    assert!(requests >= 4);

    dns.set_a("app.test", &[ip(2), ip(9), ip(3)]);
    assert!(eventually(3, || server_status(&f, &b[1].addr.to_string()).is_some()));
    let st = server_status(&f, &dead).unwrap();
    assert_eq!(st["state"], "failed", "{st}");
    assert!(st["failures"].as_u64().unwrap() >= 1);
    let kept = server_status(&f, &live).unwrap()["requests"]
        .as_u64()
        .unwrap();
    assert!(kept >= requests, "{kept} < {requests}");
}

#[test]
fn dns_down_keeps_the_last_set_and_counts_failures() {
    let dns = Dns::start();
    let b = backends(1);
    let port = b[0].addr.port();
    dns.set_a("app.test", &[ip(2)]);
    let f = Fulcrum::start(&config(&dns, &format!("\"app.test:{port}\""), ""));
    let fail = "fulcrum_dns_lookups_total{result=\"failure\",upstream=\"b\"}";
    let ok = "fulcrum_dns_lookups_total{result=\"success\",upstream=\"b\"}";
    assert!(metric(&f, ok) >= 1);
    dns.set_down(true);
    assert!(eventually(5, || metric(&f, fail) >= 2));
    assert_eq!(get(f.addr(), "/").text(), "127.0.0.2");
    assert!(f.wait_log("keeping the last good addresses", 5).is_some());
    // Logged once per change of state, not once per failed lookup.
    let n = f
        .log_text()
        .matches("keeping the last good addresses")
        .count();
    assert_eq!(n, 1);
    dns.set_down(false);
    assert!(f.wait_log("DNS lookups answer again", 5).is_some());
    assert_eq!(get(f.addr(), "/").text(), "127.0.0.2");
}

#[test]
fn srv_records_give_ports_and_weights() {
    let dns = Dns::start();
    let a = Back::start(ip(2), 0).unwrap();
    let c = Back::start(ip(3), 0).unwrap();
    dns.set_a("a.test", &[ip(2)]);
    dns.set_a("c.test", &[ip(3)]);
    dns.set_srv(
        "_http._tcp.app.test",
        &[(3, a.addr.port(), "a.test"), (1, c.addr.port(), "c.test")],
    );
    let f = Fulcrum::start(&config(&dns, "\"app.test service=http\"", ""));
    for _ in 0..40 {
        assert_eq!(get(f.addr(), "/").status, 200);
    }
    assert_eq!((a.hits(), c.hits()), (30, 10));
    let st = server_status(&f, &a.addr.to_string()).unwrap();
    assert_eq!(st["weight"], 3);
    assert_eq!(st["origin"], "_http._tcp.app.test");
}

#[test]
fn empty_answer_leaves_no_servers_and_502() {
    let dns = Dns::start();
    let b = backends(1);
    let port = b[0].addr.port();
    dns.set_a("app.test", &[ip(2)]);
    let f = Fulcrum::start(&config(&dns, &format!("\"app.test:{port}\""), ""));
    assert_eq!(get(f.addr(), "/").status, 200);
    dns.set_a("app.test", &[]);
    assert!(eventually(3, || get(f.addr(), "/").status == 502));
    assert!(f.wait_log("no live upstreams", 5).is_some());
}

#[test]
fn check_rejects_bad_resolve_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    let bad = r#"
[upstream.b]
server = ["app.test:80 service=http"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b"
"#;
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"service=\" needs resolve = true"), "{err}");
    // With resolve, `check` asks no DNS: a name that exists only in the cluster passes.
    let good = bad.replace(
        "server = [\"app.test:80 service=http\"]",
        "server = [\"app.invalid service=http\", \"web.invalid:8080\"]\nresolve = true",
    );
    std::fs::write(&path, good).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reload_keeps_the_resolved_set() {
    let dns = Dns::start();
    let b = backends(2);
    let port = b[0].addr.port();
    dns.set_a("app.test", &[ip(2), ip(3)]);
    let f = Fulcrum::start(&config(&dns, &format!("\"app.test:{port}\""), ""));
    assert!(server_status(&f, &b[1].addr.to_string()).is_some());
    // DNS goes silent: a reload must not fall back to what the file alone says.
    dns.set_down(true);
    f.signal("HUP");
    assert!(f.wait_log("configuration reloaded", 10).is_some());
    assert!(server_status(&f, &b[0].addr.to_string()).is_some());
    assert!(server_status(&f, &b[1].addr.to_string()).is_some());
    let bodies: Vec<String> = (0..4).map(|_| get(f.addr(), "/").text()).collect();
    assert!(bodies.iter().any(|x| x == "127.0.0.3"), "{bodies:?}");
}

/// CPU ticks (user + system) and RSS (KiB) of process `pid`.
fn cpu_and_rss(pid: i32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// docs/discovery.md's figures: one name with 1,000 A records, re-resolved every
/// second for 30 s unchanged, then twice 30 s with one address replaced each second.
/// `cargo test --release --test dns -- --ignored --nocapture thousand`
#[test]
#[ignore]
fn thousand_servers_every_second() {
    let dns = Dns::start();
    let all: Vec<Ipv4Addr> = (0..1000u32)
        .map(|i| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
        .collect();
    dns.set_a("big.test", &all);
    let f = Fulcrum::start(&config(&dns, "\"big.test:8080\"", "").replace("500ms", "1s"));
    assert!(eventually(5, || server_status(&f, "127.1.3.250:8080").is_some()));
    let pid = f.pid();
    let hz = 100.0;
    let (t0, r0) = cpu_and_rss(pid);
    std::thread::sleep(Duration::from_secs(30));
    let (t1, r1) = cpu_and_rss(pid);
    let change = |from: u8| {
        for s in from..from + 30 {
            let mut v = all.clone();
            v[0] = Ipv4Addr::new(127, 2, 0, s + 1);
            dns.set_a("big.test", &v);
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    change(0);
    let (t2, r2) = cpu_and_rss(pid);
    change(30);
    let (t3, r3) = cpu_and_rss(pid);
    let q = dns.zone.lock().unwrap().queries;
    println!(
        "steady: {:.2}% CPU, RSS {r0}->{r1} KiB; changing: {:.2}% CPU, RSS ->{r2} KiB, 30 s later {:.2}% CPU, RSS ->{r3} KiB; {q} queries",
        (t1 - t0) as f64 / hz / 30.0 * 100.0,
        (t2 - t1) as f64 / hz / 30.0 * 100.0,
        (t3 - t2) as f64 / hz / 30.0 * 100.0,
    );
}
