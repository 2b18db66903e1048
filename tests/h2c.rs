//! Listeners with `http2 = true` (SPEC §2 `[[server]]`): h2c with prior knowledge and
//! HTTP/1.1 on the same port, both served by hyper-util's protocol-sniffing server,
//! end to end over real sockets.

mod common;
use common::*;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One upstream `b` of `backends`, one `http2 = true` server proxying `/` to it, with
/// optional extra lines for the location.
fn h2c_config(backends: &[SocketAddr], location_extra: &str) -> String {
    proxy_config(backends, "", "http2 = true") + location_extra
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Opens one h2 prior-knowledge connection to `addr`; the connection task runs on the
/// caller's runtime.
async fn h2_connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Sends one request on `send` and collects the answer.
async fn h2_send(
    send: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    send.ready().await.expect("h2 connection ready");
    let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("h2 body").to_bytes();
    (parts, body)
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[test]
fn h2_prior_knowledge_get_and_multiplexed_round_robin() {
    let b1 = Backend::with(Arc::new(|_, _| {
        Response::builder()
            .status(201)
            .body(Full::new(Bytes::from_static(b"b1")))
            .unwrap()
    }));
    let b2 = Backend::with(Arc::new(|_, _| {
        Response::builder()
            .status(201)
            .body(Full::new(Bytes::from_static(b"b2")))
            .unwrap()
    }));
    let f = Fulcrum::start(&h2c_config(&[b1.addr, b2.addr], ""));
    let addr = f.addr();
    let rt = runtime();
    rt.block_on(async move {
        let mut send = h2_connect(addr).await;
        // One request first: status and body come from a backend.
        let (parts, body) = h2_send(&mut send, get_req(addr, "/one")).await;
        assert_eq!(parts.status, StatusCode::CREATED);
        assert!(body == "b1" || body == "b2", "unexpected body {body:?}");

        // Then several at once, all on this one connection (clones of one SendRequest
        // share the h2 connection).
        const N: usize = 8;
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let mut s = send.clone();
                tokio::spawn(async move { h2_send(&mut s, get_req(addr, &format!("/m{i}"))).await })
            })
            .collect();
        let mut bodies = Vec::new();
        for t in tasks {
            let (parts, body) = t.await.expect("request task");
            assert_eq!(parts.status, StatusCode::CREATED);
            bodies.push(body);
        }
        let n1 = bodies.iter().filter(|b| *b == "b1").count();
        let n2 = bodies.iter().filter(|b| *b == "b2").count();
        assert_eq!(n1 + n2, N, "unexpected bodies: {bodies:?}");
    });
    // Round robin over the 1 + N requests: both backends served, none lost.
    assert_eq!(b1.hits() + b2.hits(), 9);
    assert!(
        b1.hits() >= 4 && b2.hits() >= 4,
        "b1={} b2={}",
        b1.hits(),
        b2.hits()
    );
}

#[test]
fn h2_post_body_arrives_byte_exact() {
    // Echoes length and a checksum of the body it received.
    let b = Backend::with(Arc::new(|parts, body| {
        let sum = crc32fast::hash(body);
        Response::new(Full::new(Bytes::from(format!(
            "{} {} len={} crc={sum:08x}",
            parts.method,
            parts.uri.path(),
            body.len()
        ))))
    }));
    let f = Fulcrum::start(&h2c_config(&[b.addr], ""));
    let addr = f.addr();
    // 100 KiB, not a repeating byte: reordering or truncation changes the checksum.
    let payload: Vec<u8> = (0..100 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expect = format!(
        "POST /upload len={} crc={:08x}",
        payload.len(),
        crc32fast::hash(&payload)
    );
    let rt = runtime();
    let got = rt.block_on(async move {
        let mut send = h2_connect(addr).await;
        let req = Request::post(format!("http://{addr}/upload"))
            .body(Full::new(Bytes::from(payload)))
            .unwrap();
        let (parts, body) = h2_send(&mut send, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        body
    });
    assert_eq!(got, expect);
    assert_eq!(b.hits(), 1);
}

#[test]
fn http1_on_h2c_listener_with_keepalive() {
    let b = Backend::with(Arc::new(|parts, _| {
        Response::new(Full::new(Bytes::from(format!("path={}", parts.uri.path()))))
    }));
    let f = Fulcrum::start(&h2c_config(&[b.addr], ""));
    // A single request, Connection: close.
    let r = raw(
        f.addr(),
        b"GET /solo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "path=/solo");
    // Two requests in a row on one kept-alive connection (a close after the first
    // fails the second read).
    let mut c = Conn::open(f.addr());
    let r1 = c.get("/first");
    assert_eq!(r1.status, 200);
    assert_eq!(r1.text(), "path=/first");
    assert_ne!(r1.header("connection"), Some("close"));
    let r2 = c.get("/second");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.text(), "path=/second");
    assert_eq!(b.hits(), 3);
}

#[test]
fn http1_conflicting_framing_on_h2c_listener_is_400_and_never_forwarded() {
    let b = Backend::named("b");
    let f = Fulcrum::start(&h2c_config(&[b.addr], ""));
    let r = raw(f.addr(), SMUGGLING).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    // The same conflict as the second request on a kept-alive connection: the first
    // is served, the second refused.
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let ok = read_response(&mut s).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "b");
    assert_eq!(b.hits(), 1);
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let refused = read_response(&mut s).unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(
        b.hits(),
        1,
        "a request with conflicting framing reached the backend"
    );
}

#[test]
fn h2_proxy_set_header_and_response_headers() {
    let b = Backend::with(Arc::new(|parts, _| {
        let seen = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let body = format!(
            "x-via={} x-real-ip={} x-uri={} x-empty={}",
            seen("x-via"),
            seen("x-real-ip"),
            seen("x-uri"),
            seen("x-empty")
        );
        Response::builder()
            .header("x-backend", "b1")
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }));
    let f = Fulcrum::start(&h2c_config(
        &[b.addr],
        r#"proxy_set_header = { X-Via = "fulcrum", X-Real-IP = "$remote_addr", X-Uri = "$uri?$args", X-Empty = "" }"#,
    ));
    let addr = f.addr();
    let rt = runtime();
    let (parts, body) = rt.block_on(async move {
        let mut send = h2_connect(addr).await;
        let req = Request::get(format!("http://{addr}/p/q?a=1"))
            .header("x-empty", "from-client")
            .body(Full::new(Bytes::new()))
            .unwrap();
        h2_send(&mut send, req).await
    });
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        body,
        "x-via=fulcrum x-real-ip=127.0.0.1 x-uri=/p/q?a=1 x-empty=-"
    );
    assert_eq!(
        parts.headers.get("x-backend").map(|v| v.as_bytes()),
        Some(&b"b1"[..])
    );
    assert_eq!(
        parts.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    // The request really was forwarded as a request (not answered by fulcrum).
    let last = b
        .last
        .lock()
        .unwrap()
        .take()
        .expect("backend saw a request");
    assert_eq!(last.uri.path(), "/p/q");
    assert_eq!(b.hits(), 1);
}

/// `client_body_timeout` on h2c: a request body that stops after its first byte
/// gets 408 on its stream once it has waited the timeout, and the upstream attempt
/// is aborted before the backend got the whole body.
#[test]
fn h2_body_stalled_past_client_body_timeout_is_408() {
    use http_body_util::combinators::BoxBody;
    use http_body_util::StreamBody;

    let (backend, got) = recording_backend();
    let f = Fulcrum::start(&proxy_config(
        &[backend],
        "",
        "http2 = true\nclient_body_timeout = \"1s\"",
    ));
    let addr = f.addr();
    let rt = runtime();
    let status = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http2::handshake::<
            _,
            _,
            BoxBody<Bytes, std::convert::Infallible>,
        >(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        // One byte, then nothing (the stream stays open).
        let frames = futures_util::stream::unfold(false, |sent| async move {
            if sent {
                std::future::pending::<()>().await;
            }
            Some((Ok(hyper::body::Frame::data(Bytes::from_static(b"x"))), true))
        });
        let req = Request::post(format!("http://{addr}/up"))
            .header("content-length", "10")
            .body(BoxBody::new(StreamBody::new(frames)))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("an answer in time")
            .expect("h2 response");
        resp.status()
    });
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_cut_short(&got, "POST /up HTTP/1.1\r\n", 10);
}

/// Sends `bytes` on a new connection to `addr` and waits, up to `secs`, for the server
/// to close it; true if it did (EOF or reset), false if it was still open.
fn closed_after(addr: SocketAddr, bytes: &[u8], secs: u64) -> bool {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            // The server's SETTINGS frame, and whatever else it says before closing.
            Ok(1..) => continue,
            Ok(0) => return true,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// An h2c client that sends the preface (or part of it) and then nothing is closed
/// after `client_header_timeout`, as nginx closes it; one whose requests have all
/// ended after `keepalive_timeout` (nginx ≥ 1.19.7 for HTTP/2). A request still in
/// flight keeps the connection open, also while another stream on it has ended.
#[test]
fn h2c_connection_without_requests_is_closed_after_client_header_timeout() {
    let b = Backend::with(Arc::new(|parts, _| {
        if parts.uri.path() == "/slow" {
            std::thread::sleep(Duration::from_millis(2500));
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }));
    let f = Fulcrum::start(&proxy_config(
        &[b.addr],
        "",
        "http2 = true\nclient_header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"",
    ));
    let addr = f.addr();
    assert!(closed_after(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 10));
    assert!(closed_after(addr, b"PRI * HTTP/2.0\r\n", 10));
    let rt = runtime();
    rt.block_on(async move {
        let mut send = h2_connect(addr).await;
        let mut fast = send.clone();
        let slow = tokio::spawn(async move { h2_send(&mut send, get_req(addr, "/slow")).await });
        // This stream ends at once; the slow one, 2.5 s past the 1 s timeout, lives on.
        let (parts, _) = h2_send(&mut fast, get_req(addr, "/fast")).await;
        assert_eq!(parts.status, StatusCode::OK);
        let (parts, body) = slow.await.expect("slow request");
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, "ok");
        // Idle now: the connection closes after about a second.
        let idle = tokio::time::timeout(Duration::from_secs(10), async {
            while fast.ready().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(idle.await.is_ok(), "the idle h2c connection stayed open");
    });
}

/// One h2 frame as read off the wire: type, flags, stream id, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads h2 frames from `s` until the server closes it (EOF or reset), within `secs`.
fn frames_until_close(s: &mut TcpStream, secs: u64) -> Vec<Frame> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return frames;
            }
            Err(e) => panic!("still open after {secs} s ({e}); frames: {frames:?}"),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("frame payload");
        frames.push((head[3], head[4], stream, payload));
    }
}

/// The GOAWAY frames among `frames`: (last stream id, error code).
fn goaways(frames: &[Frame]) -> Vec<(u32, u32)> {
    let word = |p: &[u8], i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    frames
        .iter()
        .filter(|f| f.0 == 0x7)
        .map(|(_, _, _, p)| (word(p, 0) & 0x7fff_ffff, word(p, 4)))
        .collect()
}

/// An idle h2c connection is told GOAWAY(NO_ERROR) before it is closed (RFC 9113
/// §6.8, as nginx does): one that sent the preface and its SETTINGS and then
/// nothing (`client_header_timeout`), and one whose request has ended
/// (`keepalive_timeout`). The client here never answers the server's PING, so the
/// close comes after the grace, not at once. Frames are written and read raw.
#[test]
fn idle_h2c_connection_gets_goaway_before_close() {
    let b = Backend::named("b");
    let f = Fulcrum::start(&proxy_config(
        &[b.addr],
        "",
        "http2 = true\nclient_header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"",
    ));
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    // GET http://x/ on stream 1 (HPACK: :method GET, :scheme http, :path /,
    // :authority x), END_STREAM | END_HEADERS.
    let get: &[u8] = b"\x00\x00\x06\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x01x";
    for (what, request) in [("no request", &[][..]), ("one request", get)] {
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.write_all(&[preface, request].concat()).unwrap();
        let frames = frames_until_close(&mut s, 15);
        let away = goaways(&frames);
        assert!(
            !away.is_empty(),
            "{what}: closed without GOAWAY: {frames:?}"
        );
        assert!(away.iter().all(|&(_, code)| code == 0), "{what}: {away:?}");
        if !request.is_empty() {
            let data_end = frames
                .iter()
                .position(|f| f.0 == 0x0 && f.1 & 1 == 1 && f.2 == 1);
            let first_away = frames.iter().position(|f| f.0 == 0x7);
            assert!(
                data_end < first_away,
                "{what}: GOAWAY before the response ended: {frames:?}"
            );
        }
    }
}
