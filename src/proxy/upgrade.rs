//! WebSocket and other `Upgrade` tunnels: after both sides switched protocols, bytes
//! are copied both ways until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::Attempt;

/// Joins the client's and the upstream's upgraded connections. The attempt stays
/// open (counted in flight, as nginx counts it) until the tunnel closes.
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, attempt: Attempt) {
    let (c, u) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(c);
    let mut u = TokioIo::new(u);
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
    drop(attempt);
}
