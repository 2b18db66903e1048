//! fulcrum's request handling as a [`tower::Service`]: what the h2c listeners serve
//! through, and the way to embed fulcrum's routing and balancing in another hyper or
//! axum program.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};

use super::answer::{is_no_response, NoResponse};
use super::body::ReqBody;
use super::conn::ConnMeta;
use super::error::BoxError;
use super::exchange::Tracked;
use super::service::handle;
use crate::state::Snapshot;

/// fulcrum's request path (route by server name and location, pick a server,
/// forward, retry as nginx's `proxy_next_upstream`, stream the answer back, count
/// and log it) as a [`tower::Service`] for one downstream connection.
///
/// Build it from the snapshot cell (the `Arc<ArcSwap<Snapshot>>` a running
/// [`crate::runtime::Instance`] reads and a reload swaps; or one made from a
/// [`crate::config::Config`] with [`Snapshot::build`]) and the connection's facts
/// ([`ConnMeta::new`]: client and local address, the configured `listen` address
/// that selects the virtual servers, the scheme). It is cheap to clone (two `Arc`s),
/// always ready, and fails only for nginx's `return 444` ([`NoResponse`]: the
/// connection or stream is to close without a response); every other error becomes
/// a response.
///
/// Any request body with [`Bytes`] data is accepted: hyper's
/// [`hyper::body::Incoming`] is taken as it is, any other body is boxed once. The
/// response's headers include the upstream's, so the response can be written by
/// hyper (or wrapped by any tower layer) as it is.
///
/// Each call boxes the request's future (its type cannot be named); fulcrum's own
/// HTTP/1 server calls [`handle`] directly instead (see `docs/performance.md`).
///
/// ```no_run
/// # async fn demo(snapshots: std::sync::Arc<arc_swap::ArcSwap<fulcrum::state::Snapshot>>,
/// #     stream: tokio::net::TcpStream) -> std::io::Result<()> {
/// use fulcrum::proxy::conn::ConnMeta;
/// use fulcrum::proxy::tower_service::Proxy;
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use hyper_util::service::TowerToHyperService;
///
/// let (remote, local) = (stream.peer_addr()?, stream.local_addr()?);
/// let listen_key = "127.0.0.1:8080".parse().expect("an address");
/// let meta = std::sync::Arc::new(ConnMeta::new(remote, local, listen_key, "http"));
/// let svc = tower::ServiceBuilder::new()
///     .map_request(|mut req: http::Request<hyper::body::Incoming>| {
///         req.headers_mut().insert("x-via", http::HeaderValue::from_static("embedder"));
///         req
///     })
///     .service(Proxy::new(snapshots, meta));
/// hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
///     .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
///     .await
///     .ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    snapshots: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("meta", &self.meta).finish()
    }
}

impl Proxy {
    /// The service for one connection: requests are served against the snapshot
    /// `snapshots` holds at each request's start.
    pub fn new(snapshots: Arc<ArcSwap<Snapshot>>, meta: Arc<ConnMeta>) -> Proxy {
        Proxy { snapshots, meta }
    }

    /// The connection's facts.
    pub fn meta(&self) -> &Arc<ConnMeta> {
        &self.meta
    }
}

/// The future of [`Proxy`]'s `call`.
pub type ProxyFuture = Pin<Box<dyn Future<Output = Result<Response<Tracked>, NoResponse>> + Send>>;

impl<B> tower::Service<Request<B>> for Proxy
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Tracked>;
    type Error = NoResponse;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), NoResponse>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ProxyFuture {
        let (snapshots, meta) = (self.snapshots.clone(), self.meta.clone());
        let req = req.map(ReqBody::from_body);
        Box::pin(async move {
            let Ok(mut resp) = handle(&snapshots, meta, req).await;
            if is_no_response(&resp) {
                // Dropped here: the exchange is logged with its 444.
                return Err(NoResponse);
            }
            with_upstream_headers(&mut resp);
            Ok(resp)
        })
    }
}

/// Moves an upstream's raw header lines into the response's `HeaderMap`: fulcrum's
/// HTTP/1 server writes them as they are, but hyper (and any tower layer) only sees
/// the `HeaderMap`.
pub fn with_upstream_headers(resp: &mut Response<Tracked>) {
    if let Some(map) = resp.body().pass_headers().map(|h| h.to_map()) {
        // Appended, not replacing: `add_header` may have set the same name.
        let headers = resp.headers_mut();
        let mut last = None;
        for (name, value) in map {
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                headers.append(n.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::{BodyExt as _, Full};

    #[tokio::test]
    async fn any_body_becomes_a_req_body() {
        let b = ReqBody::from_body(Full::new(Bytes::from_static(b"abc")));
        assert!(matches!(b, ReqBody::Boxed(_)));
        assert_eq!(b.size_hint().exact(), Some(3));
        let got = b.collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok(), Some(Bytes::from_static(b"abc")));
        // A ReqBody passes through as it is, not boxed again.
        assert!(matches!(ReqBody::from_body(ReqBody::Empty), ReqBody::Empty));
    }
}
