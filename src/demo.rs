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
