//! The client-facing HTTP/1.x server, byte by byte over real sockets: pipelining,
//! persistence and closing (1.0 and 1.1), request bodies however they arrive,
//! `Expect: 100-continue`, responses that carry no body, chunked and close-delimited
//! streaming, duplicate headers, bad input, request-target forms, methods, `Date`,
//! and what the proxy answers itself. This is the contract a replacement server has
//! to keep; it reads every byte the server writes, so a stray body byte or a missing
//! chunk terminator shows up as a garbled next response.

mod common;
use common::*;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

/// How long any single read may block before the test fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener proxying `/` to `backend`, plus a `return` location and a prefix
/// that matches nothing else (so `/elsewhere` is fulcrum's own 404).
fn config(backend: SocketAddr) -> String {
    proxy_config(&[backend], "", "")
        + r#"
[[server.location]]
path = "= /own"
return = { status = 200, body = "fulcrum says hi" }
"#
}

/// The same with only `/app/` proxied: anything else has no location (404).
fn config_app_only(backend: SocketAddr) -> String {
    config(backend).replace("path = \"/\"", "path = \"/app/\"")
}

/// A raw-socket backend: for each request head (requests carry no body) it writes
/// the pieces `answer(method, target)` gives, one write each, 20 ms apart (pacing
/// only, so a response visibly streams). Keeps the connection unless a piece is
/// empty, which means "close now".
fn scripted(answer: impl Fn(&str, &str) -> Vec<Vec<u8>> + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut words = line.split_whitespace();
                    let method = words.next().unwrap_or("").to_string();
                    let target = words.next().unwrap_or("").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    for (i, piece) in answer(&method, &target).into_iter().enumerate() {
                        if piece.is_empty() {
                            return;
                        }
                        if i > 0 {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if w.write_all(&piece).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A response head as it came over the wire.
#[derive(Debug)]
struct Head {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    line: String,
    status: u16,
    /// Every header line in order, name lowercased, value trimmed.
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        let mut all = self.all(name).into_iter();
        let first = all.next();
        assert!(all.next().is_none(), "{name} appears twice: {self:?}");
        first
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Whether the `Connection` header lists `token`.
    fn connection_has(&self, token: &str) -> bool {
        self.all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Debug)]
struct Reply {
    head: Head,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A strict raw client: everything the server writes goes through `buf`, and every
/// response must start exactly where the previous one ended.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// Reads more bytes into `buf`; returns how many (0 at end of stream).
    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16 * 1024];
        match self.s.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no answer within {READ_TIMEOUT:?}; got so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            }
            Err(e) => panic!(
                "read failed: {e}; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads a response head, which must begin right at the current position.
    fn head(&mut self) -> Head {
        let end = loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(7);
                assert_eq!(
                    &self.buf[..n],
                    &b"HTTP/1."[..n],
                    "bytes where a response should start: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                panic!(
                    "closed before a complete response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8(raw).expect("head is not UTF-8");
        let mut lines = text.trim_end_matches("\r\n").split("\r\n");
        let line = lines.next().unwrap().to_string();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let headers = lines
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                assert_eq!(k, k.trim(), "whitespace around a header name: {l:?}");
                (k.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Head {
            line,
            status,
            headers,
        }
    }

    /// Exactly `n` body bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill() == 0 {
                panic!(
                    "closed after {} of {n} body bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// One CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> String {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if self.fill() == 0 {
                panic!(
                    "closed inside a chunked body: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let l: Vec<u8> = self.buf.drain(..end + 2).collect();
        String::from_utf8(l[..end].to_vec()).expect("chunk line is not UTF-8")
    }

    /// A chunked body, strictly framed, decoded; trailers are read and dropped.
    fn chunked(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let size_line = self.line();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                while !self.line().is_empty() {}
                return out;
            }
            out.extend_from_slice(&self.take(size));
            assert_eq!(self.take(2), b"\r\n", "chunk data not followed by CRLF");
        }
    }

    /// Everything up to the end of the stream.
    fn rest(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// One complete response to a request with method `method`.
    fn reply_to(&mut self, method: &str) -> Reply {
        let head = self.head();
        let body = if method == "HEAD" || matches!(head.status, 100..=199 | 204 | 304) {
            Vec::new()
        } else if head
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            self.chunked()
        } else if let Some(n) = head.get("content-length") {
            self.take(n.parse().expect("content-length"))
        } else {
            self.rest()
        };
        Reply { head, body }
    }

    fn reply(&mut self) -> Reply {
        self.reply_to("GET")
    }

    /// Sends a keep-alive HTTP/1.1 GET and reads its response.
    fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        self.reply()
    }

    /// The server closed the connection cleanly and wrote nothing more.
    fn assert_closed(&mut self) {
        assert_eq!(
            self.fill(),
            0,
            "connection still open; unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert!(
            self.buf.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A 200 whose body is the echo of `method target` (and `body`).
#[track_caller]
fn assert_echo(r: &Reply, method: &str, target: &str, body: &[u8]) {
    assert_eq!(r.head.status, 200, "{r:?}");
    assert!(r.head.line.starts_with("HTTP/1.1 "), "{r:?}");
    let mut want = format!("{method} {target}\n").into_bytes();
    want.extend_from_slice(body);
    assert_eq!(r.text(), String::from_utf8_lossy(&want), "{r:?}");
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), checking its
/// exact shape and that the day name fits the date; `None` if malformed.
fn imf_fixdate(s: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &s[3..5] != ", " || &s[25..] != " GMT" {
        return None;
    }
    let [sp1, sp2, sp3, c1, c2] = [b[7], b[11], b[16], b[19], b[22]];
    if [sp1, sp2, sp3] != [b' '; 3] || [c1, c2] != [b':'; 2] {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (day, year) = (num(5..7)?, num(12..16)?);
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as i64 + 1;
    let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    if DAYS[days.rem_euclid(7) as usize] != &s[..3] {
        return None;
    }
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

/// Two and three GETs in one write come back in order, each complete; so do a GET,
/// a POST with a body and a GET (the body must not be taken for the next request).
#[test]
fn pipelined_requests_are_answered_in_order() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two?x=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_echo(&c.reply(), "GET", "/one", b"");
    assert_echo(&c.reply(), "GET", "/two?x=2", b"");

    c.send(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /bb HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /ccc HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    for path in ["/a", "/bb", "/ccc"] {
        assert_echo(&c.reply(), "GET", path, b"");
    }

    c.send(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n\
          GET /not-a-request HTTP/1.1\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_echo(&c.reply(), "GET", "/1", b"");
    assert_echo(
        &c.reply(),
        "POST",
        "/2",
        b"GET /not-a-request HTTP/1.1\r\n\r\n",
    );
    assert_echo(&c.reply(), "GET", "/3", b"");
    assert_eq!(b.hits(), 8);
    // Still open and in sync.
    assert_echo(&c.get("/after"), "GET", "/after", b"");
}

/// An HTTP/1.1 client's `Connection: close` is answered with `Connection: close`,
/// after which the server closes; earlier keep-alive requests left it open.
#[test]
fn connection_close_from_an_http11_client_closes_after_the_response() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    let r = c.get("/first");
    assert_echo(&r, "GET", "/first", b"");
    assert!(!r.head.connection_has("close"), "{r:?}");
    c.send(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.reply();
    assert_echo(&r, "GET", "/last", b"");
    assert!(r.head.connection_has("close"), "{r:?}");
    c.assert_closed();
}

/// HTTP/1.0 without keep-alive: one response, then the server closes. HTTP/1.0 with
/// `Connection: keep-alive`: the response says `connection: keep-alive` and the
/// connection carries the next request.
#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));

    let mut c = Client::connect(f.addr());
    c.send(b"GET /ten HTTP/1.0\r\nHost: x\r\n\r\n");
    let r = c.reply();
    assert_eq!(r.head.status, 200, "{r:?}");
    assert_eq!(r.text(), "GET /ten\n");
    assert!(!r.head.connection_has("keep-alive"), "{r:?}");
    c.assert_closed();

    let mut c = Client::connect(f.addr());
    for path in ["/ka1", "/ka2"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        );
        let r = c.reply();
        assert_eq!(r.head.status, 200, "{r:?}");
        assert_eq!(r.text(), format!("GET {path}\n"));
        assert!(r.head.connection_has("keep-alive"), "{r:?}");
        // A 1.0 client cannot read chunked: the body is length-delimited.
        assert!(r.head.get("content-length").is_some(), "{r:?}");
        assert!(r.head.get("transfer-encoding").is_none(), "{r:?}");
    }
    // A last 1.0 request without keep-alive ends it.
    c.send(b"GET /end HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_eq!(c.reply().text(), "GET /end\n");
    c.assert_closed();
}

/// A chunked request body sent in several writes (with a chunk extension and an
/// empty trailer section) reaches the backend decoded, byte for byte, and the
/// connection then carries the next request.
#[test]
fn chunked_request_body_is_decoded_exactly() {
    let (b, bodies) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let pieces: [&[u8]; 5] = [
        b"5\r\nhello\r\n",
        b"1;name=value\r\n \r\n",
        b"0A\r\n0123456789\r\n",
        b"3\r\n\r\n\0\r\n",
        b"0\r\n\r\n",
    ];
    for p in pieces {
        c.send(p);
        std::thread::sleep(Duration::from_millis(20));
    }
    let want = b"hello 0123456789\r\n\0";
    assert_echo(&c.reply(), "POST", "/upload", want);
    assert_eq!(bodies.lock().unwrap()[0], want);

    // A chunk size split across writes, and a second chunked request right after.
    c.send(b"POST /again HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"0\r\n");
    c.send(&[b'z'; 16]);
    c.send(b"\r\n0\r\n\r\n");
    assert_echo(&c.reply(), "POST", "/again", &[b'z'; 16]);
    assert_echo(&c.get("/next"), "GET", "/next", b"");
}

/// A Content-Length body trickling in over many writes arrives whole.
#[test]
fn content_length_body_in_small_writes_arrives_whole() {
    let (b, bodies) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    c.send(
        format!(
            "PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for piece in body.chunks(100) {
        std::thread::sleep(Duration::from_millis(15));
        c.send(piece);
    }
    let r = c.reply();
    assert_eq!(r.head.status, 200, "{r:?}");
    assert_eq!(&r.body[..10], b"PUT /slow\n");
    assert_eq!(&r.body[10..], &body[..]);
    assert_eq!(bodies.lock().unwrap()[0], body);
    assert_echo(&c.get("/next"), "GET", "/next", b"");
}

/// `Expect: 100-continue`: the server asks for the body with `100 Continue` before
/// the client sends it, then gives the final answer.
#[test]
fn expect_100_continue_gets_an_interim_response_first() {
    let (b, bodies) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(
        b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.head();
    assert_eq!(interim.line, "HTTP/1.1 100 Continue", "{interim:?}");
    assert!(c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
    assert_eq!(b.hits(), 0);
    c.send(b"hello world");
    assert_echo(&c.reply(), "POST", "/expect", b"hello world");
    assert_eq!(bodies.lock().unwrap()[0], b"hello world");
    assert_echo(&c.get("/next"), "GET", "/next", b"");
}

/// A HEAD response carries the backend's Content-Length and no body; the GET right
/// after it on the same connection is read cleanly (a stray body would garble it).
#[test]
fn head_response_has_length_but_no_body() {
    let backend = scripted(|method, target| match (method, target) {
        ("HEAD", "/file") => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec()],
        _ => {
            let body = format!("{method} ok");
            vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        }
    });
    let f = Fulcrum::start(&config(backend));
    let mut c = Client::connect(f.addr());
    c.send(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.reply_to("HEAD");
    assert_eq!(r.head.status, 200, "{r:?}");
    assert_eq!(r.head.get("content-length"), Some("1234"), "{r:?}");
    let r = c.get("/next");
    assert_eq!((r.head.status, r.text().as_str()), (200, "GET ok"), "{r:?}");
    // Also pipelined: HEAD then GET in one write.
    c.send(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.reply_to("HEAD").head.get("content-length"), Some("1234"));
    assert_eq!(c.reply().text(), "GET ok");
    // HEAD to a `return` location: its length, no body.
    c.send(b"HEAD /own HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.reply_to("HEAD");
    assert_eq!(r.head.status, 200, "{r:?}");
    assert_eq!(r.head.get("content-length"), Some("15"), "{r:?}");
    assert_eq!(c.get("/next").text(), "GET ok");
}

/// 204 and 304 from the backend reach the client without body bytes (even when the
/// 304 carries the representation's Content-Length), and the connection stays usable.
#[test]
fn no_content_and_not_modified_have_no_body() {
    let backend = scripted(|_, target| match target {
        "/204" => vec![b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n".to_vec()],
        "/304" => vec![
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 42\r\n\r\n".to_vec(),
        ],
        _ => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext".to_vec()],
    });
    let f = Fulcrum::start(&config(backend));
    let mut c = Client::connect(f.addr());
    for _ in 0..2 {
        let r = c.get("/204");
        assert_eq!(r.head.status, 204, "{r:?}");
        assert_eq!(r.head.get("x-kind"), Some("empty"));
        assert!(r.head.get("transfer-encoding").is_none(), "{r:?}");
        assert_eq!(c.get("/n").text(), "next");

        c.send(b"GET /304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n");
        let r = c.reply();
        assert_eq!(r.head.status, 304, "{r:?}");
        assert_eq!(r.head.get("etag"), Some("\"v1\""));
        assert!(r.head.get("transfer-encoding").is_none(), "{r:?}");
        assert_eq!(c.get("/n").text(), "next");
    }
}

/// A backend response of unknown length (chunked, streamed in pieces): an HTTP/1.1
/// client gets it chunked and decodes the exact bytes; an HTTP/1.0 client gets the
/// bare bytes, delimited by the server closing the connection.
#[test]
fn unknown_length_response_is_chunked_for_11_and_close_delimited_for_10() {
    let backend = scripted(|_, _| {
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"6\r\nfirst \r\n".to_vec(),
            b"7\r\nsecond \r\n".to_vec(),
            b"5\r\nthird\r\n".to_vec(),
            b"0\r\n\r\n".to_vec(),
        ]
    });
    let f = Fulcrum::start(&config(backend));
    let mut c = Client::connect(f.addr());
    for _ in 0..2 {
        let r = c.get("/stream");
        assert_eq!(r.head.status, 200, "{r:?}");
        assert_eq!(r.head.get("transfer-encoding"), Some("chunked"), "{r:?}");
        assert!(r.head.get("content-length").is_none(), "{r:?}");
        assert_eq!(r.text(), "first second third");
    }

    let mut c = Client::connect(f.addr());
    c.send(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.get("transfer-encoding").is_none(), "{head:?}");
    assert!(head.get("content-length").is_none(), "{head:?}");
    assert!(!head.connection_has("keep-alive"), "{head:?}");
    assert_eq!(c.rest(), b"first second third");
}

/// An HTTP/1.0 client asking for keep-alive cannot keep the connection when the
/// response has no length: the body is close-delimited, so the response must not
/// promise `Connection: keep-alive` (nginx sends `Connection: close` here).
#[test]
fn http10_keep_alive_with_unknown_length_does_not_promise_keep_alive() {
    let backend = scripted(|_, _| {
        vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()]
    });
    let f = Fulcrum::start(&config(backend));
    let mut c = Client::connect(f.addr());
    c.send(b"GET /stream HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.get("transfer-encoding").is_none(), "{head:?}");
    assert!(head.get("content-length").is_none(), "{head:?}");
    assert!(!head.connection_has("keep-alive"), "{head:?}");
    assert!(head.connection_has("close"), "{head:?}");
    assert_eq!(c.rest(), b"abc");
}

/// Repeated response headers stay separate lines, in the backend's order.
#[test]
fn duplicate_response_headers_stay_separate_lines() {
    let b = Backend::with(Arc::new(|_, _| {
        Response::builder()
            .header("set-cookie", "a=1")
            .header("x-other", "o")
            .header("set-cookie", "b=2; Path=/")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap()
    }));
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    let r = c.get("/");
    assert_eq!(r.head.status, 200);
    assert_eq!(r.head.all("set-cookie"), ["a=1", "b=2; Path=/"], "{r:?}");
    assert_eq!(r.head.get("x-other"), Some("o"));
    assert_eq!(r.text(), "ok");
}

/// A request head arriving one byte per write is parsed and answered.
#[test]
fn request_head_one_byte_per_write() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    let mut head = b"GET /byte/by/byte?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: trickle\r\n".to_vec();
    while head.len() < 190 {
        head.extend_from_slice(format!("X-Pad-{}: {}\r\n", head.len(), "p".repeat(20)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    for byte in &head {
        c.send(std::slice::from_ref(byte));
    }
    assert_echo(&c.reply(), "GET", "/byte/by/byte?q=1", b"");
    assert_echo(&c.get("/next"), "GET", "/next", b"");
}

/// Malformed request lines and header lines get 400, the connection closes, and
/// nothing reaches the backend.
#[test]
fn malformed_requests_get_400_and_close() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let bad: [&[u8]; 5] = [
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTQ/1.1\r\nHost: x\r\n\r\n",
    ];
    for req in bad {
        let mut c = Client::connect(f.addr());
        c.send(req);
        let r = c.reply();
        let what = String::from_utf8_lossy(req);
        assert_eq!(r.head.status, 400, "{what:?}: {r:?}");
        assert!(r.head.connection_has("close"), "{what:?}: {r:?}");
        c.assert_closed();
    }
    // The same after a good request on a keep-alive connection.
    let mut c = Client::connect(f.addr());
    assert_echo(&c.get("/ok"), "GET", "/ok", b"");
    c.send(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.reply().head.status, 400);
    c.assert_closed();
    assert_eq!(b.hits(), 1, "a malformed request reached the backend");
}

/// An absolute-form target reaches the backend as origin-form.
#[test]
fn absolute_form_target_is_forwarded_as_a_path() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(b"GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_echo(&c.reply(), "GET", "/p?q=1", b"");
    let last = b.last.lock().unwrap().clone().unwrap();
    assert_eq!(last.uri, "/p?q=1");
}

/// A method the server does not know is forwarded as is.
#[test]
fn unknown_methods_are_forwarded() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(b"PURGE /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_echo(&c.reply(), "PURGE", "/x", b"");
    c.send(b"MKCALENDAR /cal HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_echo(&c.reply(), "MKCALENDAR", "/cal", b"abc");
    assert_eq!(
        b.last.lock().unwrap().as_ref().unwrap().method,
        "MKCALENDAR"
    );
}

/// Every response carries one `Date` header, a well-formed IMF-fixdate close to now:
/// proxied ones, `return` ones, fulcrum's own errors.
#[test]
fn every_response_has_a_date() {
    let backend = scripted(|_, _| vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()]);
    let f = Fulcrum::start(&config_app_only(backend));
    let mut c = Client::connect(f.addr());
    for (path, status) in [("/app/x", 200), ("/own", 200), ("/nowhere", 404)] {
        let r = c.get(path);
        assert_eq!(r.head.status, status, "{path}: {r:?}");
        let date = r
            .head
            .get("date")
            .unwrap_or_else(|| panic!("{path}: no Date: {r:?}"));
        let t = imf_fixdate(date).unwrap_or_else(|| panic!("{path}: bad Date {date:?}"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (t - now).abs() < 60,
            "{path}: Date {date:?} is far from now"
        );
    }
    let mut c = Client::connect(f.addr());
    c.send(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.reply();
    assert_eq!(r.head.status, 400);
    assert!(imf_fixdate(r.head.get("date").unwrap()).is_some(), "{r:?}");
}

/// fulcrum's own answers (no matching location → 404, a `return` location) keep a
/// keep-alive connection usable, with proxied requests in between.
#[test]
fn own_responses_keep_the_connection() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config_app_only(b.addr));
    let mut c = Client::connect(f.addr());
    for _ in 0..2 {
        let r = c.get("/elsewhere");
        assert_eq!(r.head.status, 404, "{r:?}");
        assert!(!r.head.connection_has("close"), "{r:?}");
        let r = c.get("/own");
        assert_eq!((r.head.status, r.text().as_str()), (200, "fulcrum says hi"));
        assert!(!r.head.connection_has("close"), "{r:?}");
        assert_echo(&c.get("/app/p"), "GET", "/app/p", b"");
    }
    // Pipelined, too.
    c.send(
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\nGET /own HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /app/q HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(c.reply().head.status, 404);
    assert_eq!(c.reply().text(), "fulcrum says hi");
    assert_echo(&c.reply(), "GET", "/app/q", b"");
}

/// A client that sends a request and shuts down its write side while the request
/// is at the backend gets no answer: the server takes the EOF as the client going
/// away, closes, and drops the request in flight. nginx does the same (with
/// `proxy_ignore_client_abort off`, its default: "client prematurely closed
/// connection", 499). hyper: `half_close(false)`, its default.
#[test]
fn half_close_while_proxying_drops_the_request() {
    let (arrived_tx, arrived) = std::sync::mpsc::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let b = Backend::with(Arc::new(move |_, _| {
        arrived_tx.lock().unwrap().send(()).unwrap();
        // Answers once released, or after 5 s: well within the client's read timeout,
        // so a server that did wait for the answer would deliver it.
        let _ = release_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(5));
        Response::new(Full::new(Bytes::from_static(b"late")))
    }));
    let f = Fulcrum::start(&config(b.addr));
    let mut c = Client::connect(f.addr());
    c.send(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived
        .recv_timeout(READ_TIMEOUT)
        .expect("request reached the backend");
    c.s.shutdown(Shutdown::Write).unwrap();
    c.assert_closed();
    release.send(()).unwrap();
}

/// Mangled input never takes the server down or makes it write anything but whole
/// HTTP/1.1 responses: 400 random mutations (bytes flipped to delimiters, digits,
/// control bytes; bytes dropped; runs repeated) of a stream of four pipelined
/// requests with every kind of framing. Each connection is half-closed after the
/// bytes, so a request left incomplete ends at EOF rather than waiting for more.
#[test]
fn mangled_request_streams_never_break_the_server() {
    let (b, _) = echo();
    let f = Fulcrum::start(&config(b.addr));
    let valid: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
        POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
        GET /own HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let interesting = b"\r\n: ,;0971afAF\x00\x7f\xff\t-";
    let allowed = ["200", "400", "404", "413", "431", "501", "502"];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..400 {
        let mut req = valid.to_vec();
        for _ in 0..rng.usize(1..=3) {
            let i = rng.usize(..req.len());
            match rng.u8(..3) {
                0 => req[i] = interesting[rng.usize(..interesting.len())],
                1 => {
                    req.remove(i);
                }
                _ => {
                    let end = (i + rng.usize(1..8)).min(req.len());
                    let run = req[i..end].to_vec();
                    req.splice(i..i, run);
                }
            }
        }
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.write_all(&req).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        if let Err(e) = s.read_to_end(&mut got) {
            let hung = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
            assert!(
                !hung,
                "case {case}: hung on {:?}",
                String::from_utf8_lossy(&req)
            );
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 "),
            "case {case}: {text:?} for {:?}",
            String::from_utf8_lossy(&req)
        );
        for status in text
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| &r[..3.min(r.len())])
        {
            assert!(
                allowed.contains(&status),
                "case {case}: status {status} in {text:?} for {:?}",
                String::from_utf8_lossy(&req)
            );
            *seen.entry(status.to_string()).or_default() += 1;
        }
    }
    // The mutations reach both the good and the bad paths.
    eprintln!("statuses: {seen:?}");
    assert!(seen.get("200").is_some_and(|&n| n > 200), "{seen:?}");
    assert!(seen.get("400").is_some_and(|&n| n > 50), "{seen:?}");
    // Still serving.
    let mut c = Client::connect(f.addr());
    assert_echo(&c.get("/after"), "GET", "/after", b"");
}
