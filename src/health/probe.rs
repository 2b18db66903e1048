//! One active check of one server: a TCP connect, an HTTP/1.1 `GET` on a fresh
//! connection whose status must be an expected one, or a gRPC health check
//! ([`super::grpc`]). The whole check, connect included, runs under the check's
//! `timeout`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{CheckKind, HealthCheck, UpstreamTls};
use crate::proxy::client::{open_stream, ConnectError};

pub use super::error::ProbeError;

/// The address a check of `server` connects to (`port` overrides its port).
pub fn target(check: &HealthCheck, server: SocketAddr) -> SocketAddr {
    match check.port {
        Some(p) => SocketAddr::new(server.ip(), p),
        None => server,
    }
}

/// How a check reaches its server: as traffic does, TLS for a TLS pool (the server
/// verified as the name it was written with).
#[derive(Debug, Clone)]
pub struct Dial {
    /// The server as written (`host[:port]`).
    pub name: String,
    /// The pool's TLS.
    pub tls: Option<UpstreamTls>,
}

impl PartialEq for Dial {
    /// The same name and the same TLS client (a reload builds a new one).
    fn eq(&self, other: &Dial) -> bool {
        self.name == other.name
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(&a.client, &b.client),
                _ => false,
            }
    }
}

/// Checks `server` once.
pub async fn probe(check: &HealthCheck, dial: &Dial, server: SocketAddr) -> Result<(), ProbeError> {
    match tokio::time::timeout(check.timeout, probe_inner(check, dial, server)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout),
    }
}

async fn probe_inner(
    check: &HealthCheck,
    dial: &Dial,
    server: SocketAddr,
) -> Result<(), ProbeError> {
    let stream = open_stream(target(check, server), &dial.name, dial.tls.as_ref())
        .await
        .map_err(|e| match e {
            ConnectError::Io(e) | ConnectError::Tls(e) => ProbeError::Connect(e),
            ConnectError::Timeout => ProbeError::Timeout,
        })?;
    match check.kind {
        CheckKind::Tcp => return Ok(()),
        CheckKind::Grpc => return super::grpc::check(check, server, stream).await,
        CheckKind::Http => {}
    }
    let host = match &check.host {
        Some(h) => h.clone(),
        None => server.to_string(),
    };
    let req = Request::get(check.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "fulcrum-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Http)?;
    // Drive the connection here rather than in a spawned task: one task per check.
    let send = tx.send_request(req);
    tokio::pin!(conn, send);
    let resp = tokio::select! {
        biased;
        r = &mut send => r,
        // With `Connection: close` the connection may end right after delivering
        // the response: the answer is then waiting in `send`.
        r = &mut conn => match r {
            Ok(()) => send.await,
            Err(e) => return Err(ProbeError::Http(e)),
        },
    }
    .map_err(|e| {
        if e.is_canceled() {
            ProbeError::Closed
        } else {
            ProbeError::Http(e)
        }
    })?;
    let status = resp.status().as_u16();
    // The body is not read: the connection closes when `conn` drops.
    if check.expects(status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}
