//! fulcrum's HTTP/1 server over an in-memory stream (`tokio::io::duplex`, through
//! `AnyStream`), in front of a real upstream on 127.0.0.1: what runs over TLS later
//! runs here without a socket on the client side. Keep-alive and pipelining, a
//! chunked body forwarded byte for byte, `Expect: 100-continue`, a malformed head,
//! and a client that leaves while its request waits (seen by reading ahead, as such
//! a stream cannot `peek`).

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use fulcrum::proxy::conn::ConnMeta;
use fulcrum::proxy::server::serve;
use fulcrum::proxy::transport::AnyStream;
use fulcrum::state::Snapshot;
use fulcrum::upstream::Registry;

/// How long any read may wait before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves one in-memory connection for `config`; the client end, and the server's task.
fn connect(config: &str) -> (DuplexStream, tokio::task::JoinHandle<std::io::Result<()>>) {
    let cfg = fulcrum::config::parse(Path::new("duplex.toml"), config).expect("config");
    let snap = Snapshot::build(cfg, &Registry::default()).expect("snapshot");
    let key: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let meta = Arc::new(ConnMeta::new(
        "127.0.0.1:40000".parse().expect("addr"),
        key,
        key,
        "http",
    ));
    let (client, server) = tokio::io::duplex(64 * 1024);
    let conn = serve(
        AnyStream(server),
        Arc::new(ArcSwap::from_pointee(snap)),
        meta,
    );
    (client, tokio::spawn(conn))
}

/// One response off `c` (`buf` keeps what was read past it): the head's text and
/// the body its `Content-Length` delimits.
async fn response(c: &mut DuplexStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(c, buf).await;
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("ascii head");
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().expect("length"));
    while buf.len() < end + len {
        fill(c, buf).await;
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    (head, body)
}

async fn fill(c: &mut DuplexStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, c.read(&mut chunk))
        .await
        .expect("the server answers in time")
        .expect("read");
    assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(buf));
    buf.extend_from_slice(&chunk[..n]);
}

/// The server closes its side: the next read ends.
async fn closed(c: &mut DuplexStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut rest))
        .await
        .expect("the server closes in time")
        .expect("read");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn keep_alive_requests_are_answered_in_order() {
    let (b, _) = echo();
    runtime().block_on(async {
        let (mut c, _task) = connect(&proxy_config(&[b.addr], "", ""));
        let mut buf = Vec::new();
        // Two pipelined in one write, then one more on the same connection.
        c.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        for want in ["GET /one\n", "GET /two\n"] {
            let (head, body) = response(&mut c, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(!head.contains("connection: close"), "{head}");
            assert_eq!(body, want.as_bytes());
        }
        c.write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (_, body) = response(&mut c, &mut buf).await;
        assert_eq!(body, b"GET /three\n");
        assert!(buf.is_empty());
    });
    assert_eq!(b.hits(), 3);
}

#[test]
fn a_chunked_body_reaches_the_upstream_byte_for_byte() {
    let (b, bodies) = echo();
    // Every byte value, CR LF and NUL among them, in chunks of odd sizes.
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    runtime().block_on(async {
        let (mut c, _task) = connect(&proxy_config(&[b.addr], "", ""));
        c.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for piece in data.chunks(1021) {
            c.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await
                .unwrap();
            c.write_all(piece).await.unwrap();
            c.write_all(b"\r\n").await.unwrap();
        }
        c.write_all(b"0\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let (head, body) = response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let mut want = b"POST /up\n".to_vec();
        want.extend_from_slice(&data);
        assert_eq!(body, want);
        // The connection carries on after a body read to its end.
        c.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c, &mut buf).await.1, b"GET /after\n");
    });
    assert_eq!(bodies.lock().unwrap()[0], data);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (b, bodies) = echo();
    runtime().block_on(async {
        let (mut c, _task) = connect(&proxy_config(&[b.addr], "", ""));
        c.write_all(
            b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let (interim, body) = response(&mut c, &mut buf).await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        assert!(body.is_empty() && buf.is_empty(), "{buf:?}");
        assert_eq!(b.hits(), 0);
        c.write_all(b"hello world").await.unwrap();
        let (head, body) = response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, b"POST /expect\nhello world");
        // And again on the same connection: the interim response is per request.
        c.write_all(
            b"POST /again HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let (interim, _) = response(&mut c, &mut buf).await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        c.write_all(b"ok").await.unwrap();
        assert_eq!(response(&mut c, &mut buf).await.1, b"POST /again\nok");
    });
    assert_eq!(bodies.lock().unwrap()[0], b"hello world");
}

#[test]
fn a_malformed_head_is_answered_400_and_not_forwarded() {
    let (b, _) = echo();
    runtime().block_on(async {
        let (mut c, task) = connect(&proxy_config(&[b.addr], "", ""));
        c.write_all(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let (head, _) = response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(buf.is_empty());
        // The lingering close reads until the client is done.
        c.shutdown().await.unwrap();
        closed(&mut c).await;
        let ended = tokio::time::timeout(WAIT, task).await.expect("in time");
        assert!(ended.expect("no panic").is_ok());
    });
    assert_eq!(b.hits(), 0);
}

#[test]
fn a_client_that_leaves_ends_its_request() {
    // An upstream slower than the test: only the client's departure ends the wait.
    let b = Backend::with(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_secs(3));
        Response::new(Full::new(Bytes::from_static(b"late")))
    }));
    runtime().block_on(async {
        let (mut c, task) = connect(&proxy_config(&[b.addr], "", ""));
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The upstream has the request (and sleeps on it).
        assert!(eventually_async(|| b.hits() == 1).await);
        drop(c);
        let ended = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the connection ends before the upstream answers");
        assert!(ended.expect("no panic").is_ok());
    });
}

/// Yields until `f` holds (a little while at most).
async fn eventually_async(f: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
