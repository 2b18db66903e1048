//! Upstream HTTP/1.1 connections: connect with a timeout, hand-shake with hyper,
//! and keep idle connections per server for reuse.
//!
//! hyper-util's legacy client pools per authority behind one lock for the whole
//! client and hides whether a failure happened before the request left; the proxy
//! needs both the per-server pool (its state outlives config snapshots) and that
//! distinction (a request whose body was never sent can go to the next server).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::UpBody;

/// A ready-to-use upstream HTTP/1.1 connection.
pub type Sender = http1::SendRequest<UpBody>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `connect_timeout` passed.
    #[error("upstream timed out while connecting")]
    Timeout,
    /// Refused, unreachable, reset.
    #[error("connect() failed: {0}")]
    Io(#[from] io::Error),
    /// The HTTP handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Idle keep-alive connections to one server, most recently used first out.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdlePool")
    }
}

impl IdlePool {
    /// Takes an idle connection not older than `max_idle`. The caller still awaits
    /// `ready()`: the previous exchange may be a moment from finishing in hyper's task.
    pub fn take(&self, max_idle: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((s, since)) = idle.pop() {
            if !s.is_closed() && since.elapsed() < max_idle {
                return Some(s);
            }
        }
        None
    }

    /// Returns a connection for reuse, keeping at most `cap`.
    pub fn put(&self, s: Sender, cap: usize) {
        if cap == 0 || s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= cap {
            // Drop the oldest: it is the likeliest to have been closed by the server.
            idle.remove(0);
        }
        idle.push((s, Instant::now()));
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Number of idle connections.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens a new connection to `addr`.
pub async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    send_timeout: Duration,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(s) => s?,
        Err(_) => return Err(ConnectError::Timeout),
    };
    // Small requests and responses must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteTimeout::new(stream, send_timeout));
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(64 * 1024 + 1024)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A stream whose writes fail with `TimedOut` once one stays blocked for longer
/// than the timeout (nginx `proxy_send_timeout`: between two successive writes).
/// The timer is only armed while a write is pending, so writes that complete at
/// once cost nothing.
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            sleep: None,
        }
    }

    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream timed out while sending",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
