//! fulcrum embedded in another hyper program (as `examples/embed.rs` does): its tower
//! `Service` under a layer of the embedding program's, served by hyper, proxying to a
//! real backend. The layer's header and a body of a type fulcrum does not know reach
//! the backend; the backend's status, headers and body reach the client.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tower::{ServiceBuilder, ServiceExt as _};

use fulcrum::proxy::conn::ConnMeta;
use fulcrum::proxy::tower_service::Proxy;
use fulcrum::state::Snapshot;

const KEY: &str = "127.0.0.1:8080";

fn snapshots(backend: SocketAddr) -> Arc<ArcSwap<Snapshot>> {
    let toml = format!(
        r#"
[admin]
listen = "off"
[upstream.app]
server = ["{backend}"]
[[server]]
listen = ["{KEY}"]
[[server.location]]
path = "/"
proxy_pass = "http://app"
"#
    );
    let config = fulcrum::config::parse(Path::new("embed.toml"), &toml).expect("valid config");
    let snap = Snapshot::build(config, &fulcrum::upstream::Registry::default()).expect("builds");
    Arc::new(ArcSwap::from_pointee(snap))
}

/// A backend answering 201 with `got: BODY`, its own header, and the request's
/// `x-layer` echoed back.
fn backend() -> Backend {
    Backend::with(Arc::new(|parts, body| {
        let mut r = Response::new(Full::new(Bytes::from(format!(
            "got: {}",
            String::from_utf8_lossy(body)
        ))));
        *r.status_mut() = StatusCode::CREATED;
        r.headers_mut()
            .insert("x-backend", HeaderValue::from_static("yes"));
        if let Some(v) = parts.headers.get("x-layer") {
            r.headers_mut().insert("x-layer-seen", v.clone());
        }
        r
    }))
}

/// Serves `snapshots` on 127.0.0.1:0 through a layer that adds `x-layer` and boxes
/// the request body (so fulcrum gets a body type it does not know).
async fn embedding_server(snapshots: Arc<ArcSwap<Snapshot>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, remote)) = listener.accept().await {
            let key = KEY.parse().expect("an address");
            let meta = Arc::new(ConnMeta::new(remote, addr, key, "http"));
            let svc = ServiceBuilder::new()
                .map_request(|req: Request<hyper::body::Incoming>| {
                    let mut req = req.map(UnsyncBoxBody::new);
                    req.headers_mut()
                        .insert("x-layer", HeaderValue::from_static("added"));
                    req
                })
                .service(Proxy::new(snapshots.clone(), meta));
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(svc),
                    )
                    .into_owned(),
            );
        }
    });
    addr
}

/// Runs `f` on a runtime of its own (a [`Backend`] runs one too, and must be made and
/// dropped outside any).
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn layer_and_proxying_both_happen() {
    let b = backend();
    let resp = run(async {
        let (status, headers, body) = through_embedding_server(snapshots(b.addr)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers["x-backend"], "yes");
        assert_eq!(headers["x-layer-seen"], "added");
        body
    });
    assert_eq!(&resp[..], b"got: payload");
    assert_eq!(b.hits(), 1);
    let seen = b.last.lock().expect("lock").take().expect("a request");
    assert_eq!(seen.headers["x-layer"], "added");
    assert_eq!(seen.uri.path(), "/things");
}

/// One `POST /things` through [`embedding_server`].
async fn through_embedding_server(
    snapshots: Arc<ArcSwap<Snapshot>>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let addr = embedding_server(snapshots).await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post("/things")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// The Service alone, called with `oneshot` (no server): a `Full` body is proxied and
/// the upstream's headers are in the response's `HeaderMap`.
#[test]
fn service_called_directly() {
    let b = backend();
    let key: SocketAddr = KEY.parse().expect("an address");
    let meta = Arc::new(ConnMeta::new(
        "127.0.0.1:5555".parse().expect("an address"),
        key,
        key,
        "http",
    ));
    let req = Request::put("/direct")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"abc")))
        .expect("request");
    let svc = Proxy::new(snapshots(b.addr), meta);
    run(async {
        let resp = svc.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["x-backend"], "yes");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"got: abc");
    });
}

/// A connection whose listen address has no virtual servers is answered 421, not
/// dropped.
#[test]
fn unknown_listen_key_is_misdirected() {
    let b = backend();
    let other: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let meta = Arc::new(ConnMeta::new(other, other, other, "http"));
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let svc = Proxy::new(snapshots(b.addr), meta);
    let status = run(async { svc.oneshot(req).await.expect("infallible").status() });
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(b.hits(), 0);
}
