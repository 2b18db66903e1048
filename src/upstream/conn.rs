//! An upstream connection as a server's live state keeps it: the socket, its read
//! buffer and per-connection timer, and the idle pool that holds connections between
//! exchanges (per server, so it outlives config snapshots). The HTTP/1.1 exchange
//! over it is the proxy's (`proxy::client`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::client::TlsStream;

use crate::clock;

/// An upstream connection's stream: a TCP socket, or TLS over one.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large and plain connections are the common case).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// An upstream HTTP/1.1 connection between exchanges.
#[derive(Debug)]
pub struct Conn {
    /// The stream.
    pub io: UpstreamIo,
    /// Bytes read and not yet consumed (the head, then body data).
    pub buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    pub head: Vec<u8>,
    /// `proxy_send_timeout`.
    pub send_timeout: Duration,
    /// Bounds the wait for a response head (`read_timeout`).
    pub timer: LazyTimer,
}

/// One long-lived timer per connection for `read_timeout`, instead of a timer
/// registered and removed for every request: each exchange only notes its deadline
/// (from the coarse clock), and the timer is moved when it fires early, which
/// happens about once per `read_timeout` on a busy connection.
#[derive(Debug, Default)]
pub struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// Coarse deadline the sleep is set to.
    armed: u64,
}

impl LazyTimer {
    /// Ready once `deadline` (coarse nanoseconds) has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: u64) -> Poll<()> {
        let at = || tokio::time::Instant::from_std(clock::instant_at(deadline));
        let sleep = match &mut self.sleep {
            Some(s) => {
                // A reload may have shortened read_timeout: never wait past the deadline.
                if self.armed > deadline {
                    s.as_mut().reset(at());
                    self.armed = deadline;
                }
                s
            }
            None => {
                self.armed = deadline;
                self.sleep.insert(Box::pin(tokio::time::sleep_until(at())))
            }
        };
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            // Set for an earlier exchange: move it to this one's deadline.
            if tokio::time::Instant::now() >= at() {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(at());
            self.armed = deadline;
        }
    }
}

impl Conn {
    /// A connection over a freshly opened stream.
    pub fn new(io: UpstreamIo, send_timeout: Duration) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            send_timeout,
            timer: LazyTimer::default(),
        }
    }

    /// Whether an idle connection is still usable: nothing arrived on it while it
    /// sat in the pool (no close, no stray bytes). Uses the reactor's cached
    /// readiness, so a quiet connection costs no system call.
    pub fn still_idle(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match &self.io {
            UpstreamIo::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // Peeked, not read: the bytes would belong to the TLS session (a
            // close_notify, most likely, which makes the connection unusable too).
            UpstreamIo::Tls(s) => {
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                let mut buf = ReadBuf::new(&mut probe);
                s.get_ref().0.poll_peek(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

/// Idle keep-alive connections to one server, most recently used first out.
#[derive(Default)]
pub struct IdlePool {
    /// With the coarse time each was put back.
    idle: Mutex<Vec<(Conn, u64)>>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdlePool")
    }
}

impl IdlePool {
    /// Takes an idle connection not older than `max_idle` that the server has not
    /// closed meanwhile.
    pub fn take(&self, max_idle: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = clock::coarse_nanos();
        let max_idle = max_idle.as_nanos() as u64;
        while let Some((mut c, since)) = idle.pop() {
            if now.saturating_sub(since) < max_idle && c.still_idle() {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection for reuse, keeping at most `cap`.
    pub fn put(&self, c: Conn, cap: usize) {
        if cap == 0 || !c.buf.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= cap {
            // Drop the oldest: it is the likeliest to have been closed by the server.
            idle.remove(0);
        }
        idle.push((c, clock::coarse_nanos()));
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
