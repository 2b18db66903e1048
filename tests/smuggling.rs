//! The request-smuggling catalogue (SPEC §6, the "Hardening" issue): raw bytes sent to
//! a real fulcrum on an HTTP/1 listener and on an `http2 = true` one (where hyper
//! parses HTTP/1), and to a real nginx in front of the same kind of backend; the
//! status each must answer, and what a recording backend behind it saw — nothing,
//! one whole request, or a head whose body was cut off when the framing broke (the
//! upstream connection then closed). Every case fulcrum refuses must also close the
//! client connection. The cases and where nginx differs are in `smuggling/cases.rs`;
//! docs/smuggling.md has the table (`SMUGGLING_TABLE=DIR` writes it).
//!
//! Without nginx on PATH (or in /usr/sbin) the nginx column is skipped with a note,
//! unless FULCRUM_REQUIRE_NGINX=1 (CI), where the tests fail.

mod common;
use common::*;
#[path = "smuggling/cases.rs"]
mod cases;
#[path = "common/nginx.rs"]
mod nginx;

use cases::{Case, Seen, Want, CHUNKED, OK};
use nginx::Nginx;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the recording backend logged.
#[derive(Debug, Clone)]
enum Event {
    /// A whole request (head and body), answered 200 (101 to an h2c upgrade).
    Request(Vec<u8>),
    /// Bytes of an unfinished request when its connection closed.
    Cut(Vec<u8>),
}

/// A raw backend that logs every request it gets, whole or cut off.
struct Recorder {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Event>>>,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The length of the first complete request in `buf` (fulcrum frames what it sends
/// with `Content-Length` or plain chunks), if it is all there.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if value("transfer-encoding:").is_some() {
        return find(&buf[head..], b"0\r\n\r\n").map(|i| head + i + 5);
    }
    let n: usize = value("content-length:").map_or(Some(0), |v| v.parse().ok())?;
    (buf.len() >= head + n).then_some(head + n)
}

impl Recorder {
    fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let log = log2.clone();
                std::thread::spawn(move || Recorder::conn(s, &log));
            }
        });
        Recorder { addr, log }
    }

    fn conn(mut s: TcpStream, log: &Mutex<Vec<Event>>) {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 8192];
        loop {
            while let Some(n) = request_len(&buf) {
                let req: Vec<u8> = buf.drain(..n).collect();
                let h2c = String::from_utf8_lossy(&req)
                    .to_ascii_lowercase()
                    .contains("upgrade: h2c");
                log.lock().unwrap().push(Event::Request(req));
                let answer: &[u8] = if h2c {
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                if s.write_all(answer).is_err() {
                    return;
                }
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        if !buf.is_empty() {
            log.lock().unwrap().push(Event::Cut(buf));
        }
    }

    fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    /// Event `i`, a whole request, in lower case.
    fn request(&self, i: usize) -> String {
        match &self.events()[i] {
            Event::Request(up) => String::from_utf8_lossy(up).to_ascii_lowercase(),
            cut => panic!("not a whole request: {cut:?}"),
        }
    }
}

/// How a case's bytes are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    /// In one write.
    Whole,
    /// The head, then (once fulcrum has had time to forward it) the rest.
    HeadFirst,
}

/// The status line's code of `raw`'s answer, and (when `close` is to be checked and
/// the answer is a refusal) whether the proxy closed the connection after it.
fn send(addr: SocketAddr, raw: &[u8], how: Send, close: bool) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let cut = match how {
        Send::HeadFirst => find(raw, b"\r\n\r\n").map_or(0, |i| i + 4),
        Send::Whole => 0,
    };
    s.write_all(&raw[..cut]).expect("write");
    if cut > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    s.write_all(&raw[cut..]).expect("write");
    // No answer at all is status 0, reported with the rest of the table.
    let Ok(status) = read_response(&mut s).map(|r| r.status) else {
        return (0, false);
    };
    if !close || status < 400 {
        return (status, false);
    }
    let mut tmp = [0u8; 64];
    let closed = match s.read(&mut tmp) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(_) => false,
    };
    (status, closed)
}

/// What the backend saw since `before` events, once it has settled.
fn seen(rec: &Recorder, before: usize) -> Seen {
    // A cut-off request is logged when fulcrum closes that connection.
    std::thread::sleep(Duration::from_millis(50));
    let events = rec.events();
    match &events[before..] {
        [] => Seen::Nothing,
        [Event::Request(_)] => Seen::Whole,
        [Event::Cut(_)] => Seen::Cut,
        _ => Seen::More,
    }
}

/// A proxy under test, in front of its own recording backend.
struct Target {
    addr: SocketAddr,
    rec: Recorder,
    _proxy: Box<dyn std::any::Any>,
}

impl Target {
    /// fulcrum; `extra_server` goes into its server table (`http2 = true`).
    fn fulcrum(extra_server: &str) -> Target {
        let rec = Recorder::start();
        let f = Fulcrum::start(&proxy_config(&[rec.addr], "", extra_server));
        Target {
            addr: f.addr(),
            rec,
            _proxy: Box::new(f),
        }
    }

    /// nginx with upstream keep-alive, as fulcrum pools its connections.
    fn nginx(bin: &PathBuf) -> Target {
        let rec = Recorder::start();
        let n = Nginx::start(bin, &format!("server {};\nkeepalive 8;", rec.addr));
        Target {
            addr: n.addr,
            rec,
            _proxy: Box::new(n),
        }
    }

    /// Sends one case: its status, whether the connection closed after a refusal,
    /// and what the backend saw.
    fn outcome(&self, raw: &[u8], how: Send) -> Got {
        let before = self.rec.events().len();
        let (status, closed) = send(self.addr, raw, how, true);
        Got {
            status,
            closed,
            seen: seen(&self.rec, before),
        }
    }

    /// Every case's outcome. `pooled`: each case follows a good request (which must
    /// pass), so the upstream connection it finds is a pooled one.
    fn column(&self, cases: &[Case], how: Send, pooled: bool) -> Vec<Got> {
        let good = &cases::valid()[1];
        cases
            .iter()
            .map(|c| {
                if pooled {
                    let g = self.outcome(&good.raw, how);
                    assert_eq!((g.status, g.seen), OK, "{} before {}", good.name, c.name);
                }
                self.outcome(&c.raw, how)
            })
            .collect()
    }
}

/// What one case got from one proxy.
#[derive(Debug, Clone, Copy)]
struct Got {
    status: u16,
    /// The connection closed after the answer.
    closed: bool,
    seen: Seen,
}

impl Got {
    /// Whether this is `want` (a fulcrum refusal must also close).
    fn is(&self, want: Want, fulcrum: bool) -> bool {
        (self.status, self.seen) == want && !(fulcrum && want.0 >= 400 && !self.closed)
    }
}

fn cell(g: &Got) -> String {
    let seen = format!("{:?}", g.seen).to_ascii_lowercase();
    match g.status {
        0 => format!("no answer, {seen}"),
        s => format!("{s}, {seen}"),
    }
}

/// Runs `cases` against fulcrum (HTTP/1 and h2c listeners) and nginx at once, and
/// checks every answer; writes the table to `$SMUGGLING_TABLE/<name>.md` when set.
fn differential(name: &str, cases: &[Case], how: Send, pooled: bool) {
    let nginx = nginx_bin();
    let (h1, h2c, ngx) = std::thread::scope(|s| {
        let h1 = s.spawn(|| Target::fulcrum("").column(cases, how, pooled));
        let h2c = s.spawn(|| Target::fulcrum("http2 = true").column(cases, how, pooled));
        let ngx = nginx
            .as_ref()
            .map(|bin| Target::nginx(bin).column(cases, how, pooled));
        (h1.join().unwrap(), h2c.join().unwrap(), ngx)
    });
    let mut wrong = Vec::new();
    let mut table = String::from(
        "| case | fulcrum | fulcrum h2c listener | nginx 1.22 | why fulcrum differs |\n|---|---|---|---|---|\n",
    );
    for (i, c) in cases.iter().enumerate() {
        let n = ngx.as_ref().map(|n| n[i]);
        let checks = [
            ("fulcrum", Some(h1[i]), c.h1, true),
            ("fulcrum h2c", Some(h2c[i]), c.h2c, true),
            ("nginx", n, c.nginx, false),
        ];
        for (who, got, want, fulcrum) in checks {
            if let Some(g) = got.filter(|g| !g.is(want, fulcrum)) {
                wrong.push(format!("{}: {who} got {g:?}, want {want:?}", c.name));
            }
        }
        let n = n.map_or_else(|| "(no nginx)".to_string(), |n| cell(&n));
        let row = [
            c.name.to_string(),
            cell(&h1[i]),
            cell(&h2c[i]),
            n,
            c.why.into(),
        ];
        table += &format!("| {} |\n", row.join(" | "));
    }
    if let Some(dir) = std::env::var_os("SMUGGLING_TABLE") {
        std::fs::write(PathBuf::from(dir).join(format!("{name}.md")), &table).unwrap();
    }
    assert!(wrong.is_empty(), "\n{}\n\n{table}", wrong.join("\n"));
}

/// The whole catalogue, each case in one write with its head.
#[test]
fn catalogue_fulcrum_and_nginx() {
    differential("catalogue", &cases::catalogue(), Send::Whole, false);
}

/// The valid requests still pass when their head goes up before the body.
#[test]
fn valid_requests_pass_whole_sent_head_first() {
    differential("valid_head_first", &cases::valid(), Send::HeadFirst, false);
}

/// Sent after its head went up, a broken body is 400 to the client and cuts the
/// upstream connection. Each break follows a good request, so the upstream
/// connection it finds is a pooled one: that connection must close, not go back to
/// the pool (the good request after it must pass).
#[test]
fn broken_chunk_framing_after_the_head_cuts_the_upstream_connection() {
    differential(
        "after_the_head",
        &cases::breaks_after_the_head(),
        Send::HeadFirst,
        true,
    );
}

/// An `Upgrade` other than WebSocket is no upgrade (nginx passes `Upgrade` only
/// when configured to): `h2c` and its `HTTP2-Settings` are stripped and the request
/// goes up as a plain one, so a backend that would switch never sees the offer and
/// no tunnel bypasses routing.
#[test]
fn h2c_upgrade_is_forwarded_as_a_plain_request() {
    let t = Target::fulcrum("");
    for (i, raw) in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
           Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: H2C\r\n\
           HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let before = t.rec.events().len();
        let (status, _) = send(t.addr, raw, Send::Whole, false);
        assert_eq!(status, 200, "case {i}");
        assert_eq!(seen(&t.rec, before), Seen::Whole, "case {i}");
        let up = t.rec.request(before);
        for gone in ["upgrade", "http2-settings"] {
            assert!(!up.contains(gone), "case {i}: {gone} went up:\n{up}");
        }
    }
    // A WebSocket handshake still goes up as one.
    let before = t.rec.events().len();
    let ws = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
    let _ = send(t.addr, ws, Send::Whole, false);
    assert_eq!(seen(&t.rec, before), Seen::Whole);
    let up = t.rec.request(before);
    assert!(up.contains("upgrade: websocket"), "{up}");
    if let Some(Event::Cut(rest)) = t.rec.events().get(before + 1) {
        panic!("unexpected bytes: {rest:?}");
    }
}

/// What went up, where the catalogue only says "whole": request trailers are
/// dropped on both listener kinds, as nginx drops them (the body is re-framed with
/// an empty trailer section).
#[test]
fn request_trailers_are_dropped() {
    for extra in ["", "http2 = true"] {
        let t = Target::fulcrum(extra);
        let trailers = [CHUNKED, b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"].concat();
        let before = t.rec.events().len();
        assert_eq!(
            send(t.addr, &trailers, Send::Whole, false).0,
            200,
            "{extra}"
        );
        assert_eq!(seen(&t.rec, before), Seen::Whole, "{extra}");
        let up = t.rec.request(before);
        assert!(up.contains("hello"), "{extra}: {up}");
        assert!(
            !up.contains("x-t"),
            "{extra}: a request trailer went up:\n{up}"
        );
    }
}
