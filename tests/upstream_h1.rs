//! fulcrum's own upstream HTTP/1.1 client against scripted raw-socket backends:
//! every way a response body can be framed, interim responses, connection reuse and
//! the keep-alive race, early answers to uploads.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config(backend: SocketAddr) -> String {
    proxy_config(&[backend], "", "")
}

/// Reads one request head; returns its target, or `None` at end of stream.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let target = line.split_whitespace().nth(1)?.to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h == "\r\n" {
            return Some(target);
        }
    }
}

/// A backend speaking raw HTTP/1.1 from a script: `answer(target)` gives the bytes
/// to write and whether to close the connection afterwards. Counts connections.
fn scripted(
    answer: impl Fn(&str) -> (&'static [u8], bool) + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let (c2, answer) = (conns.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            c2.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while let Some(target) = read_head(&mut r) {
                    let (bytes, close) = answer(&target);
                    if w.write_all(bytes).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[test]
fn every_body_framing_and_connection_reuse() {
    let (addr, conns) = scripted(|target| {
        match target {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        "/interim" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil close", true),
        "/both" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        ),
        "/empty" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    }
    });
    let f = Fulcrum::start(&config(addr));
    let mut c = Conn::open(f.addr());
    for _ in 0..3 {
        let r = c.get("/chunked");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    }
    let r = c.get("/interim");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = c.get("/empty");
    assert_eq!(r.status, 204);
    // All of that went over one pooled upstream connection.
    assert_eq!(conns.load(Ordering::SeqCst), 1);

    // Close-delimited: complete body, and the connection is not reused.
    let r = c.get("/close");
    assert_eq!((r.status, r.text().as_str()), (200, "until close"));
    assert_eq!(c.get("/chunked").text(), "hello world");
    assert_eq!(conns.load(Ordering::SeqCst), 2);

    // Content-Length and Transfer-Encoding together: decoded as chunked, and the
    // connection is dropped after it (RFC 9112 §6.3).
    let r = c.get("/both");
    assert_eq!((r.status, r.text().as_str()), (200, "abc"));
    assert_eq!(c.get("/chunked").text(), "hello world");
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[test]
fn truncated_body_cuts_the_client_response_short() {
    let (addr, _) = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much",
            true,
        )
    });
    let f = Fulcrum::start(&config(addr));
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    // The connection ends (EOF or reset) instead of hanging, and whatever the client
    // got is visibly short of the 100 bytes announced.
    if let Err(e) = s.read_to_end(&mut got) {
        let hung = matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        assert!(!hung, "the client connection hung: {e}");
    }
    let text = String::from_utf8_lossy(&got);
    if let Some(i) = text.find("\r\n\r\n") {
        assert!(
            text.to_ascii_lowercase().contains("content-length: 100"),
            "{text}"
        );
        assert!(got.len() - (i + 4) < 100, "{text}");
    }
}

#[test]
fn a_pooled_connection_closed_by_the_server_is_replaced_without_error() {
    // Every connection serves one keep-alive response, then the server closes it:
    // fulcrum pools each and finds it dead (or has it die under the next request).
    let (addr, conns) = scripted(|_| (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true));
    let f = Fulcrum::start(&config(addr));
    let mut c = Conn::open(f.addr());
    for i in 0..20 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 20);
    let status: serde_json::Value =
        serde_json::from_str(&get(f.admin.unwrap(), "/status").text()).unwrap();
    assert_eq!(
        status["upstreams"][0]["servers"][0]["failures"], 0,
        "{status}"
    );
}

#[test]
fn an_early_answer_to_an_upload_reaches_the_client() {
    // The server refuses the upload after the head, without reading the body, and
    // keeps the socket open: fulcrum must pass the answer on instead of waiting to
    // finish sending 16 MiB nobody reads.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            if read_head(&mut r).is_some() {
                let _ = w.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
                );
            }
            held.push(r);
        }
    });
    let f = Fulcrum::start(&config(addr).replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\nclient_max_body_size = 0",
    ));
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let len = 16 << 20;
    s.write_all(
        format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let r = read_response(&mut s).expect("response");
    assert_eq!((r.status, r.text().as_str()), (413, "nope"));
    drop(s);
    writer.join().unwrap();
}

#[test]
fn read_timeout_holds_on_a_reused_connection() {
    // One upstream connection carries all three requests; the timer set for the
    // first has long fired by the time the others run.
    let (addr, conns) = scripted(|target| {
        if target == "/slow" {
            std::thread::sleep(Duration::from_secs(3));
        }
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
    });
    let f =
        Fulcrum::start(&config(addr).replace("server = [", "read_timeout = \"500ms\"\nserver = ["));
    let mut c = Conn::open(f.addr());
    assert_eq!(c.get("/").status, 200);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        c.get("/").status,
        200,
        "a quiet connection is not timed out"
    );
    let t0 = std::time::Instant::now();
    assert_eq!(c.get("/slow").status, 504);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "timed out after {took:?}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}
