//! Demo backends: tiny HTTP servers fulcrum starts itself (`[demo] backends`), so the
//! shipped config shows balancing with nothing else running.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Starts one demo backend per address. Each answers every request with
/// `hello from demo backend ADDR: METHOD URI` and an `X-Demo-Backend` header.
pub async fn start(addrs: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        out.push(local);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!(
                            "hello from demo backend {local}: {} {}\n",
                            req.method(),
                            req.uri()
                        );
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        if let Ok(v) = http::HeaderValue::from_str(&local.to_string()) {
                            r.headers_mut().insert("x-demo-backend", v);
                        }
                        Ok::<_, Infallible>(r)
                    },
                );
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    Ok(out)
}

/// Sends `n` requests through fulcrum's own listener at `addr` and logs which demo
/// backend answered each: the shipped config shows its balancing at start.
pub async fn show(addr: SocketAddr, n: u32) {
    for i in 1..=n {
        match one_request(addr).await {
            Ok(who) => tracing::info!("demo request {i}/{n}: GET / answered by {who}"),
            Err(e) => tracing::warn!("demo request {i}/{n} failed: {e}"),
        }
    }
}

async fn one_request(addr: SocketAddr) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let who = resp
        .headers()
        .get("x-demo-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    Ok(format!("{who} ({status})"))
}
