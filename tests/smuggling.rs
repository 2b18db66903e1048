//! The request-smuggling catalogue (SPEC §6, the "Hardening" issue): raw bytes sent to
//! a real fulcrum on an HTTP/1 listener, the status it must answer, and what a
//! recording backend behind it saw — nothing, one whole request, or a head whose
//! body was cut off when the framing broke (the upstream connection then closed).
//! Every refused case must also close the client connection.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the backend saw of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing reached it.
    Nothing,
    /// One whole, well-framed request.
    Whole,
    /// A request head and part of its body, then the connection closed (the head
    /// went up before the client's chunk framing broke).
    Cut,
}

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
}

/// One catalogue entry: name, raw bytes, fulcrum's status, what the backend saw.
type Case = (&'static str, &'static [u8], u16, Seen);

/// Requests that must pass, unchanged by the guards.
const VALID: &[Case] = &[
    (
        "plain GET",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        200,
        Seen::Whole,
    ),
    (
        "Content-Length body",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        200,
        Seen::Whole,
    ),
    (
        "chunked body with an extension",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
        200,
        Seen::Whole,
    ),
    (
        "TE: tab before the value (OWS)",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        200,
        Seen::Whole,
    ),
    (
        "TE: gzip, chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        200,
        Seen::Whole,
    ),
];

/// Heads refused before anything is forwarded.
const REFUSED_HEADS: &[Case] = &[
    (
        "CL.TE",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
        Seen::Nothing,
    ),
    (
        "TE.CL",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: chunked, identity",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: chunked, then a second TE line",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: space before the colon",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: xchunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: tab before the colon",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: vertical tab in the value",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: obs-fold line",
        b"POST / HTTP/1.1\r\nHost: x\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "TE.TE: chunked with CL 0 (0.CL)",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "HTTP/1.0 with TE: chunked",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "HTTP/1.0 keep-alive with TE: chunked and a smuggled request",
        b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "CL: two different values",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab",
        400,
        Seen::Nothing,
    ),
    (
        "CL: equal values in one line",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        400,
        Seen::Nothing,
    ),
    (
        "CL: two equal lines",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
        Seen::Nothing,
    ),
    (
        "CL: a second line of 0 (CL.CL)",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
        400,
        Seen::Nothing,
    ),
    (
        "two Host lines",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: internal\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "two equal Host lines, apart",
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nhost: x\r\n\r\n",
        400,
        Seen::Nothing,
    ),
    (
        "CL: plus sign",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        400,
        Seen::Nothing,
    ),
];

/// A chunked request head: the bodies of [`BODY_BREAKS`] follow it.
const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Chunked bodies whose framing breaks: each is answered 400 and closed. Sent with
/// the head, the break is found before anything is forwarded ([`Seen::Nothing`]).
/// Sent after the head went up, the upstream connection that carried it is closed
/// (the backend sees the head and a cut-off body, [`Seen::Cut`], never a complete
/// request) and never reused.
const BODY_BREAKS: &[(&str, &[u8])] = &[
    (
        "chunk extension with a bare LF",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    ),
    ("chunk extension with a NUL", b"5;\0\r\nhello\r\n0\r\n\r\n"),
    ("chunk size 2^64-1", b"ffffffffffffffff\r\nabc"),
    (
        "chunk size overflowing 64 bits",
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    ),
    ("chunk size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
    (
        "chunk size with leading garbage",
        b"+5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk size with trailing garbage",
        b"5 x\r\nhello\r\n0\r\n\r\n",
    ),
    ("bare LF after the chunk size", b"5\nhello\r\n0\r\n\r\n"),
    ("bare LF after chunk data", b"5\r\nhello\n0\r\n\r\n"),
    (
        "chunk data longer than its size",
        b"3\r\nhello\r\n0\r\n\r\n",
    ),
];

/// How a case's bytes are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    /// In one write.
    Whole,
    /// The head, then (once fulcrum has had time to forward it) the rest.
    HeadFirst,
}

/// The status line's code of `raw`'s answer, and (when `close` is to be checked)
/// whether fulcrum closed the connection after it.
fn send(addr: SocketAddr, raw: &[u8], how: Send, close: bool) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    if !close {
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
        more => panic!("the backend saw more than one request: {more:?}"),
    }
}

fn run<B: AsRef<[u8]>>(cases: &[(&str, B, u16, Seen)], how: Send) {
    let rec = Recorder::start();
    let f = Fulcrum::start(&proxy_config(&[rec.addr], "", ""));
    let mut wrong = Vec::new();
    for (name, raw, status, expect) in cases {
        let (raw, status, expect) = (raw.as_ref(), *status, *expect);
        let before = rec.events().len();
        let must_close = status >= 400;
        let (got, closed) = send(f.addr(), raw, how, must_close);
        let saw = seen(&rec, before);
        if got != status || saw != expect || (must_close && !closed) {
            wrong.push(format!(
                "{name}: got {got} (closed {closed}), backend saw {saw:?}; \
                 want {status}{}, {expect:?}",
                if must_close { " and close" } else { "" }
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn valid_requests_pass_whole() {
    run(VALID, Send::Whole);
    run(VALID, Send::HeadFirst);
}

#[test]
fn refused_heads_reach_nothing() {
    run(REFUSED_HEADS, Send::Whole);
}

/// An `Upgrade` other than WebSocket is no upgrade (nginx passes `Upgrade` only
/// when configured to): `h2c` and its `HTTP2-Settings` are stripped and the request
/// goes up as a plain one, so a backend that would switch never sees the offer and
/// no tunnel bypasses routing.
#[test]
fn h2c_upgrade_is_forwarded_as_a_plain_request() {
    let rec = Recorder::start();
    let f = Fulcrum::start(&proxy_config(&[rec.addr], "", ""));
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
        let before = rec.events().len();
        let (status, _) = send(f.addr(), raw, Send::Whole, false);
        assert_eq!(status, 200, "case {i}");
        assert_eq!(seen(&rec, before), Seen::Whole, "case {i}");
        let Event::Request(up) = &rec.events()[before] else {
            unreachable!()
        };
        let up = String::from_utf8_lossy(up).to_ascii_lowercase();
        for gone in ["upgrade", "http2-settings"] {
            assert!(!up.contains(gone), "case {i}: {gone} went up:\n{up}");
        }
    }
    // A WebSocket handshake still goes up as one.
    let before = rec.events().len();
    let ws = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
    let _ = send(f.addr(), ws, Send::Whole, false);
    assert_eq!(seen(&rec, before), Seen::Whole);
    let events = rec.events();
    let Event::Request(up) = &events[before] else {
        unreachable!()
    };
    let up = String::from_utf8_lossy(up).to_ascii_lowercase();
    assert!(up.contains("upgrade: websocket"), "{up}");
    if let Some(Event::Cut(rest)) = events.get(before + 1) {
        panic!("unexpected bytes: {rest:?}");
    }
}

/// Sent with its head, a broken body is refused before anything goes up.
#[test]
fn broken_chunk_framing_with_the_head_is_400_and_never_forwarded() {
    let cases: Vec<_> = BODY_BREAKS
        .iter()
        .map(|&(name, body)| (name, [CHUNKED, body].concat(), 400, Seen::Nothing))
        .collect();
    run(&cases, Send::Whole);
}

/// Sent after its head went up, a broken body is 400 to the client and cuts the
/// upstream connection. Each break follows a good request, so the upstream
/// connection it finds is a pooled one: that connection must close, not go back to
/// the pool.
#[test]
fn broken_chunk_framing_after_the_head_is_400_and_cuts_the_upstream_connection() {
    let good = |(name, raw, status, seen): Case| (name, raw.to_vec(), status, seen);
    let mut cases = Vec::new();
    for &(name, body) in BODY_BREAKS {
        cases.push(good(VALID[1]));
        cases.push((name, [CHUNKED, body].concat(), 400, Seen::Cut));
    }
    cases.push(good(VALID[2]));
    run(&cases, Send::HeadFirst);
}

/// On `http2 = true` listeners HTTP/1 is hyper's: a second `Host` line is refused
/// there too, before anything is forwarded; equal `Content-Length` lines are
/// normalised to one (hyper keeps one), which the backend cannot read two ways.
#[test]
fn duplicates_on_an_h2c_listener() {
    let rec = Recorder::start();
    let f = Fulcrum::start(&proxy_config(&[rec.addr], "", "http2 = true"));
    for name in ["two Host lines", "two equal Host lines, apart"] {
        let Some(&(_, raw, status, seen_want)) = REFUSED_HEADS.iter().find(|c| c.0 == name) else {
            panic!("{name} is in the catalogue");
        };
        let before = rec.events().len();
        let (got, closed) = send(f.addr(), raw, Send::Whole, true);
        assert_eq!((got, closed), (status, true), "{name}");
        assert_eq!(seen(&rec, before), seen_want, "{name}");
    }
    let before = rec.events().len();
    let two = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(send(f.addr(), two, Send::Whole, false).0, 200);
    assert_eq!(seen(&rec, before), Seen::Whole);
    let Event::Request(up) = &rec.events()[before] else {
        unreachable!()
    };
    let up = String::from_utf8_lossy(up).to_ascii_lowercase();
    assert_eq!(up.matches("content-length").count(), 1, "{up}");
}
