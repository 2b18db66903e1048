//! WebSocket and other `Upgrade` tunnels: after both sides switched protocols, bytes
//! are copied both ways until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::ReadBuf;
use tokio::sync::oneshot;

use super::attempt::Attempt;
use super::transport::{ReadSide, WriteSide};
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

/// In a request's extensions when it asked to upgrade: gives the client's connection
/// once the 101 response head has been written. (Extensions must be `Clone`; the
/// first to take the receiver has it.)
#[derive(Clone)]
pub struct PendingUpgrade(pub(super) Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl PendingUpgrade {
    /// The client's connection, once switched; `None` if the connection ended first.
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

/// A client connection after `101 Switching Protocols`: the bytes already read past
/// the request head come first.
pub struct Upgraded {
    pub(super) rd: ReadSide,
    pub(super) buf: BytesMut,
    pub(super) wr: WriteSide,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(out.remaining());
            out.put_slice(&self.buf[..n]);
            self.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.rd).poll_read(cx, out)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.wr).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.wr).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.wr).poll_shutdown(cx)
    }
}
