//! `protocol = "h2"` upstreams (SPEC §3) with a plain hyper HTTP/2 backend: requests
//! arrive as HTTP/2, multiplexed over fewer connections than requests, from HTTP/1.1
//! and h2c clients alike; bodies stream both ways and trailers pass to h2 clients.

mod common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the h2 backend saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    versions: Mutex<Vec<http::Version>>,
    te: Mutex<Vec<Option<String>>>,
}

/// A hyper HTTP/2 (prior knowledge) backend: answers every request with its
/// method, path and body length, and an `x-trailer: done` trailer.
fn h2_backend() -> (SocketAddr, Arc<Seen>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(Seen::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = seen.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        s.versions.lock().unwrap().push(req.version());
                        let te = req
                            .headers()
                            .get("te")
                            .map(|v| v.to_str().unwrap().to_string());
                        s.te.lock().unwrap().push(te);
                        let line = format!("{} {}", req.method(), req.uri().path());
                        let n = req.into_body().collect().await.map(|b| b.to_bytes().len());
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("x-trailer", http::HeaderValue::from_static("done"));
                        let body = Full::new(Bytes::from(format!("{line} {}", n.unwrap_or(0))))
                            .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen, rt)
}

fn h2_config(backends: &[SocketAddr], extra_server: &str) -> String {
    proxy_config(backends, "protocol = \"h2\"", extra_server)
}

/// HTTP/1.1 clients on new connections each: the backend gets HTTP/2, all of them
/// on one connection.
#[test]
fn http1_clients_reach_an_h2_backend_over_one_connection() {
    let (backend, seen, _rt) = h2_backend();
    let f = Fulcrum::start(&h2_config(&[backend], ""));
    for i in 0..20 {
        let r = get(f.addr(), &format!("/n{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("GET /n{i} 0"));
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    assert!(seen
        .versions
        .lock()
        .unwrap()
        .iter()
        .all(|v| *v == http::Version::HTTP_2));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

/// Concurrent requests share few connections (streams multiplexed), and a
/// request body streams up.
#[test]
fn concurrent_requests_multiplex_and_bodies_stream_up() {
    let (backend, seen, _rt) = h2_backend();
    let f = Fulcrum::start(&h2_config(&[backend], ""));
    let addr = f.addr();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for i in 0..10 {
                    let body = vec![b'x'; 1000 * (t + 1) + i];
                    let mut req = format!(
                        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    req.extend_from_slice(&body);
                    let r = c.send(&req);
                    assert_eq!(r.status, 200);
                    assert_eq!(r.text(), format!("POST /up {}", body.len()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 80);
    let conns = seen.connections.load(Ordering::SeqCst);
    assert!(
        (1..80).contains(&conns),
        "{conns} connections for 80 requests"
    );
}

/// An h2c client gets the upstream's trailers; `te: trailers` reaches the backend.
#[test]
fn trailers_pass_to_an_h2c_client() {
    let (backend, seen, _rt) = h2_backend();
    let f = Fulcrum::start(&h2_config(&[backend], "http2 = true"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = f.addr();
    let (trailers, body) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = Request::post(format!("http://{addr}/t"))
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"hello")))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        (trailers, collected.to_bytes())
    });
    assert_eq!(&body[..], b"POST /t 5");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["x-trailer"], "done");
    assert_eq!(
        seen.te.lock().unwrap().as_slice(),
        [Some("trailers".to_string())]
    );
}

/// No backend listening: 502 as for HTTP/1 upstreams.
#[test]
fn a_dead_h2_server_is_a_bad_gateway() {
    let f = Fulcrum::start(&h2_config(&[dead_addr()], ""));
    assert_eq!(get(f.addr(), "/").status, 502);
}
