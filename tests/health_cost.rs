//! Cost of the check scheduler (run by hand, it takes over a minute):
//! `FULCRUM_BIN=target/release/fulcrum cargo test --test health_cost -- --ignored --nocapture`.
//! 1,000 servers on distinct ports of one in-test backend, checked every second;
//! fulcrum's CPU time is read from /proc/PID/stat over 30 s, and its RSS, once with
//! HTTP checks, once with TCP checks, once without checks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVERS: usize = 1000;
const WINDOW: Duration = Duration::from_secs(30);

/// A backend runtime listening on `n` ports, answering 200 to everything.
fn backend(n: usize) -> (tokio::runtime::Runtime, Vec<std::net::SocketAddr>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut addrs = Vec::new();
    for _ in 0..n {
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        addrs.push(l.local_addr().unwrap());
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                // Keep-alive, as real servers: each read is taken as one request
                // (checks send one small request at a time).
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(1..) = s.read(&mut buf).await {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    (rt, addrs)
}

fn ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" of comm: utime and stime are the 12th and 13th.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn measure(label: &str, addrs: &[std::net::SocketAddr], check: &str) {
    let servers: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let cfg = format!(
        r#"[global]
worker_threads = 2
[admin]
listen = "off"
[upstream.backend]
server = [{}]
{check}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#,
        servers.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, cfg).unwrap();
    let bin = std::env::var("FULCRUM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fulcrum").into());
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("fulcrum ready");
        if l.contains("fulcrum ready") {
            break;
        }
    }
    // Let the first (jittered) round spread out, then measure a steady window.
    std::thread::sleep(Duration::from_secs(3));
    let (t0, c0) = (Instant::now(), ticks(pid));
    std::thread::sleep(WINDOW);
    let (secs, c1) = (t0.elapsed().as_secs_f64(), ticks(pid));
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (c1 - c0) as f64 / hz;
    let changes = rx
        .try_iter()
        .filter(|l| l.contains("server state changed"))
        .count();
    println!(
        "{label}: {SERVERS} servers, cpu {cpu:.2} s over {secs:.1} s = {:.1}% of one core, rss {} KiB, state changes {changes}",
        100.0 * cpu / secs,
        rss_kib(pid)
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(changes, 0, "{label}: healthy servers changed state");
}

#[test]
#[ignore]
fn scheduler_cost_1000_servers_every_second() {
    let (_rt, addrs) = backend(SERVERS);
    measure("no checks", &addrs, "");
    measure(
        "tcp checks",
        &addrs,
        "[upstream.backend.health_check]\ntype = \"tcp\"\ninterval = \"1s\"",
    );
    measure(
        "http checks",
        &addrs,
        "[upstream.backend.health_check]\npath = \"/health\"\ninterval = \"1s\"",
    );
}
