//! One active check of one server: a TCP connect, an HTTP/1.1 `GET` whose status
//! must be an expected one, or a gRPC health check ([`super::grpc`]). The whole
//! check, connect included, runs under the check's `timeout`.
//!
//! HTTP checks keep their connection open between checks (a [`Session`] per
//! server, as Envoy's `reuse_connection`): a check then costs one request instead
//! of a connect, a TLS handshake for TLS pools, and a close. A kept connection the
//! server closed meanwhile is noticed before use (its task has ended); one it
//! closes while the request goes out is retried once on a new connection, so an
//! idle timeout on the server's side never fails a check.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

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

/// One server's HTTP check connection, kept between checks.
#[derive(Default)]
pub struct Session {
    kept: Option<Kept>,
}

/// An open check connection: the request handle and the task driving it.
struct Kept {
    tx: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most of a check response's body read to keep its connection; a longer body
/// closes the connection instead.
const BODY_LIMIT: usize = 64 * 1024;

/// Read size of check connections.
const READ_BUF: usize = 1024;

/// Checks `server` once.
pub async fn probe(
    check: &HealthCheck,
    dial: &Dial,
    server: SocketAddr,
    session: &mut Session,
) -> Result<(), ProbeError> {
    match tokio::time::timeout(check.timeout, probe_inner(check, dial, server, session)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout),
    }
}

async fn probe_inner(
    check: &HealthCheck,
    dial: &Dial,
    server: SocketAddr,
    session: &mut Session,
) -> Result<(), ProbeError> {
    if check.kind == CheckKind::Http {
        // Taken out: a check cut short by its timeout drops (and closes) it.
        if let Some(mut k) = session.kept.take().filter(|k| !k.tx.is_closed()) {
            match exchange(check, server, &mut k).await {
                Ok((status, keep)) => {
                    session.kept = keep.then_some(k);
                    return verdict(check, status);
                }
                // Closed by the server before it answered: try a new connection.
                Err(ProbeError::Closed) => {}
                Err(e) => return Err(e),
            }
        }
    }
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
    // A check's response is small, and the connection waits idle most of the time:
    // a small fixed read buffer instead of hyper's growing 8 KiB one.
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUF))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Http)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut k = Kept { tx, task };
    let (status, keep) = exchange(check, server, &mut k).await?;
    session.kept = keep.then_some(k);
    verdict(check, status)
}

fn verdict(check: &HealthCheck, status: u16) -> Result<(), ProbeError> {
    if check.expects(status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// One `GET` on `k`: the status, and whether the connection may be kept (its body
/// was read whole, and neither side asked to close).
async fn exchange(
    check: &HealthCheck,
    server: SocketAddr,
    k: &mut Kept,
) -> Result<(u16, bool), ProbeError> {
    let host = match &check.host {
        Some(h) => h.clone(),
        None => server.to_string(),
    };
    let req = Request::get(check.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "fulcrum-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    k.tx.ready().await.map_err(|_| ProbeError::Closed)?;
    let resp = k.tx.send_request(req).await.map_err(|e| {
        if e.is_canceled() || e.is_incomplete_message() {
            ProbeError::Closed
        } else {
            ProbeError::Http(e)
        }
    })?;
    let status = resp.status().as_u16();
    let read = Limited::new(resp.into_body(), BODY_LIMIT).collect().await;
    Ok((status, read.is_ok()))
}
