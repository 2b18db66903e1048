//! The admin listener: liveness, readiness, and (as they land) status and control.

mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::health::admin as health;
use crate::runtime::Shared;

/// Binds the admin listener; serving runs in a spawned task.
/// `token`: when set, mutating endpoints need `Authorization: Bearer TOKEN`.
pub async fn start(
    addr: SocketAddr,
    token: Option<String>,
    shared: Arc<Shared>,
) -> std::io::Result<SocketAddr> {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (shared, token) = (shared.clone(), token.clone());
            let svc = service_fn(move |req| {
                let (shared, token) = (shared.clone(), token.clone());
                async move { Ok::<_, Infallible>(answer(&shared, token.as_deref(), req).await) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http1_only()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// `GET /metrics`: the Prometheus text exposition.
fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    match metrics::render(shared) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => health::status_json(shared),
        (&Method::POST, p) if p.starts_with("/upstream/") => {
            if !health::authorized(token, req.headers()) {
                return health::unauthorized();
            }
            health::server_control(shared, p)
                .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "404 Not Found\n"))
        }
        (&Method::GET, "/metrics") => metrics(shared),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::POST, "/reload") => {
            if !health::authorized(token, req.headers()) {
                return health::unauthorized();
            }
            crate::reload::admin_answer(shared).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 Not Found\n"),
    }
}
