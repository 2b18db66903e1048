//! WebSocket and other `Upgrade` tunnels: after both sides switched protocols, bytes
//! are copied both ways until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::Attempt;
use super::client::Conn;

/// Joins the client's upgraded connection with the upstream connection that answered
/// 101. The attempt stays open (counted in flight, as nginx counts it) until the
/// tunnel closes.
pub async fn tunnel(client: OnUpgrade, mut upstream: Conn, attempt: Attempt) {
    let c = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(c);
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
