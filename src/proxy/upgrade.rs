//! WebSocket and other `Upgrade` tunnels: after both sides switched protocols, bytes
//! are copied both ways until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::Attempt;
use super::server::PendingUpgrade;
use crate::upstream::conn::Conn;

/// The client side of an upgrade, as the server that read the request hands it over.
pub enum ClientUpgrade {
    /// hyper's server (h2c listeners).
    Hyper(OnUpgrade),
    /// fulcrum's HTTP/1 server.
    Own(PendingUpgrade),
}

impl ClientUpgrade {
    /// Takes the upgrade handle out of a request's extensions, if it has one.
    pub fn take(ext: &mut http::Extensions) -> Option<ClientUpgrade> {
        if let Some(u) = ext.remove::<PendingUpgrade>() {
            return Some(ClientUpgrade::Own(u));
        }
        ext.remove::<OnUpgrade>().map(ClientUpgrade::Hyper)
    }
}

/// Joins the client's upgraded connection with the upstream connection that answered
/// 101. The attempt stays open (counted in flight, as nginx counts it) until the
/// tunnel closes.
pub async fn tunnel(client: ClientUpgrade, upstream: Conn, attempt: Attempt) {
    match client {
        ClientUpgrade::Hyper(on) => match on.await {
            Ok(c) => join(TokioIo::new(c), upstream, attempt).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        },
        ClientUpgrade::Own(pending) => match pending.upgraded().await {
            Some(c) => join(c, upstream, attempt).await,
            None => tracing::debug!("upgrade failed: the client connection ended"),
        },
    }
}

async fn join<C: AsyncRead + AsyncWrite + Unpin>(mut c: C, mut upstream: Conn, attempt: Attempt) {
    // Bytes the upstream sent right after its 101 head belong to the new protocol.
    if !upstream.buf.is_empty() {
        if let Err(e) = c.write_all(&upstream.buf).await {
            tracing::debug!(error = %e, "upgraded connection ended");
            return;
        }
        upstream.buf.clear();
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut upstream.io).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
    drop(attempt);
}
