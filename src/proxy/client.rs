//! Upstream HTTP/1.1 connections: connect with a timeout, run one exchange at a
//! time on the request's own task (see [`super::h1`]), and keep idle connections per
//! server for reuse.
//!
//! hyper-util's legacy client pools per authority behind one lock for the whole
//! client and hides whether a failure happened before the request left; the proxy
//! needs both the per-server pool (its state outlives config snapshots) and that
//! distinction (a request whose body was never sent can go to the next server).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Uri};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::body::{BodyTooLarge, ClientBodyTimeout, UpBody};
use super::h1::{self, HeadWriter, ResponseHead};
use crate::clock;
use crate::config::{PassOpts, UpstreamTls};
use crate::upstream::conn::{Conn, UpstreamIo};
use crate::upstream::{Pick, Upstream};

pub use super::error::{ConnectError, ExchangeError};

// The connection's state lives with its server (`upstream::conn`, kept in the idle
// pool across snapshots); speaking HTTP/1.1 over it is the proxy's.
impl Conn {
    /// Sends one request and reads the response head; the response body is left to
    /// [`h1::BodyDecoder`] on `self`. `body` is taken once the head is out: a failure
    /// before that leaves it whole for a fresh connection. `fresh`: a new
    /// connection, where a close before any answer is an error rather than the
    /// keep-alive race.
    pub async fn exchange(
        &mut self,
        req: &Outgoing<'_>,
        headers: impl FnOnce(&mut HeadWriter<'_>),
        body: &mut Option<UpBody>,
        fresh: bool,
    ) -> Result<ResponseHead, ExchangeError> {
        let deadline = clock::coarse_nanos().saturating_add(req.read_timeout.as_nanos() as u64);
        let streamed = matches!(body, Some(UpBody::Stream { .. }));
        // The client's own Content-Length passes through; without one the body is
        // re-framed chunked.
        let chunked = h1::encode_head(&mut self.head, req.method, req.target, streamed, headers);
        let Conn {
            io,
            buf,
            head,
            send_timeout,
            timer,
        } = self;
        let parts = IoParts {
            io,
            buf,
            head,
            send_timeout: *send_timeout,
        };
        let work = exchange_io(parts, req, fresh, body, chunked);
        let mut work = std::pin::pin!(work);
        poll_fn(|cx| {
            if let Poll::Ready(r) = work.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            timer
                .poll_expired(cx, deadline)
                .map(|()| Err(ExchangeError::ReadTimeout))
        })
        .await
    }
}

/// What an exchange sends.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request target.
    pub target: &'a Uri,
    /// The request asked to switch protocols (a 101 is invalid otherwise).
    pub upgrade: bool,
    /// Longest wait for the response head.
    pub read_timeout: Duration,
}

/// The parts of a [`Conn`] an exchange works on.
struct IoParts<'a> {
    io: &'a mut UpstreamIo,
    buf: &'a mut BytesMut,
    head: &'a [u8],
    send_timeout: Duration,
}

/// The exchange itself, over the connection's two directions at once: a TCP
/// socket splits for free; a TLS stream through tokio's lock (one allocation per
/// exchange, TLS only).
async fn exchange_io(
    p: IoParts<'_>,
    req: &Outgoing<'_>,
    fresh: bool,
    body: &mut Option<UpBody>,
    chunked: bool,
) -> Result<ResponseHead, ExchangeError> {
    let IoParts {
        io,
        buf,
        head,
        send_timeout,
    } = p;
    let wr_parts = (head, send_timeout);
    match io {
        UpstreamIo::Plain(tcp) => {
            let (rd, wr) = tcp.split();
            exchange_halves(rd, wr, buf, wr_parts, req, fresh, body, chunked).await
        }
        UpstreamIo::Tls(tls) => {
            let (rd, wr) = tokio::io::split(&mut **tls);
            exchange_halves(rd, wr, buf, wr_parts, req, fresh, body, chunked).await
        }
    }
}

/// Head out, body up (watching for an early answer), head in.
#[allow(clippy::too_many_arguments)]
async fn exchange_halves<R, W>(
    mut rd: R,
    wr: W,
    buf: &mut BytesMut,
    (head, send_timeout): (&[u8], Duration),
    req: &Outgoing<'_>,
    fresh: bool,
    body: &mut Option<UpBody>,
    chunked: bool,
) -> Result<ResponseHead, ExchangeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (method, upgrade) = (req.method, req.upgrade);
    let streamed = matches!(body, Some(UpBody::Stream { .. }));
    {
        let mut wr = WriteTimeout::new(wr, send_timeout);
        if let Err(e) = wr.write_all(head).await {
            return Err(write_error(e, fresh, false));
        }
        if !streamed {
            return read_head(&mut rd, buf, method, upgrade, fresh, false).await;
        }
        let Some(mut up) = body.take() else {
            return Err(ExchangeError::Closed { body_sent: true });
        };
        // Upload and watch for the answer at once: a server may answer (413, 401)
        // before taking the whole body.
        let answer = {
            let upload = upload(&mut wr, &mut up, chunked);
            let early = read_head(&mut rd, buf, method, upgrade, fresh, true);
            tokio::pin!(upload, early);
            tokio::select! {
                biased;
                // Part of the body is still unsent: the connection cannot carry
                // another request.
                r = &mut early => r.map(|mut head| {
                    head.keep_alive = false;
                    head
                }),
                r = &mut upload => match r {
                    Ok(()) => early.await,
                    Err(e) => Err(e),
                },
            }
        };
        answer
    }
}

fn write_error(e: io::Error, fresh: bool, body_sent: bool) -> ExchangeError {
    if e.kind() == io::ErrorKind::TimedOut {
        ExchangeError::SendTimeout
    } else if !fresh {
        ExchangeError::Closed { body_sent }
    } else {
        ExchangeError::Io(e)
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
    fresh: bool,
    body_sent: bool,
) -> Result<ResponseHead, ExchangeError> {
    let mut got_any = !buf.is_empty();
    loop {
        if !buf.is_empty() {
            if let Some(h) = h1::parse_head(buf, method, upgrade)? {
                return Ok(h);
            }
        }
        match poll_fn(|cx| h1::poll_fill(rd, buf, cx)).await {
            Ok(0) if !got_any && !fresh => return Err(ExchangeError::Closed { body_sent }),
            Ok(0) => {
                return Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream prematurely closed connection while reading response header",
                )))
            }
            Ok(_) => got_any = true,
            Err(e) if !got_any && !fresh && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ExchangeError::Closed { body_sent })
            }
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

/// Streams the client's body up, chunk-encoding it when `chunked`.
async fn upload<W: AsyncWrite + Unpin>(
    wr: &mut W,
    body: &mut UpBody,
    chunked: bool,
) -> Result<(), ExchangeError> {
    let mut line = h1::ChunkLine::default();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.is::<BodyTooLarge>() => return Err(BodyTooLarge.into()),
            Err(e) if e.is::<ClientBodyTimeout>() => return Err(ClientBodyTimeout.into()),
            Err(e) => return Err(ExchangeError::Client(e)),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        let res = if chunked {
            let line = line.chunk(data.len());
            async {
                wr.write_all(line).await?;
                wr.write_all(&data).await?;
                wr.write_all(b"\r\n").await
            }
            .await
        } else {
            wr.write_all(&data).await
        };
        res.map_err(|e| write_error(e, true, true))?;
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n")
            .await
            .map_err(|e| write_error(e, true, true))?;
    }
    Ok(())
}

/// Gets a connection to the picked server: a pooled one if any is still open, else
/// a new one. The flag says whether it is new.
pub async fn obtain(
    up: &Upstream,
    pick: Pick,
    opts: &PassOpts,
) -> Result<(Conn, bool), ConnectError> {
    let peer = up.peer(pick);
    if let Some(c) = peer.state.idle.take(up.conf.keepalive_timeout) {
        return Ok((c, false));
    }
    let (addr, tls) = (peer.conf.addr, up.conf.tls.as_ref());
    let (connect_timeout, send_timeout) = (opts.connect_timeout, opts.send_timeout);
    let conn = connect(addr, &peer.conf.name, tls, connect_timeout, send_timeout).await?;
    Ok((conn, true))
}

/// Opens a new connection to `addr`: TCP, then TLS when the pool has it (the
/// server verified as `name`, the host it was written with), all within
/// `connect_timeout` (nginx's `proxy_connect_timeout` covers the handshake too).
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
    send_timeout: Duration,
) -> Result<Conn, ConnectError> {
    match tokio::time::timeout(connect_timeout, open_stream(addr, name, tls)).await {
        Ok(io) => Ok(Conn::new(io?, send_timeout)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// The stream of a new connection (no timeout of its own).
pub async fn open_stream(
    addr: SocketAddr,
    name: &str,
    tls: Option<&UpstreamTls>,
) -> Result<UpstreamIo, ConnectError> {
    let tcp = TcpStream::connect(addr).await?;
    // Small requests and responses must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(UpstreamIo::Plain(tcp));
    };
    let server_name = crate::tls::client::server_name(tls.server_name.as_deref(), name)
        .ok_or_else(|| {
            let msg = format!("\"{name}\" is not a name a certificate can be verified for");
            ConnectError::Tls(io::Error::other(msg))
        })?;
    let stream = tokio_rustls::TlsConnector::from(tls.client.clone())
        .connect(server_name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    Ok(UpstreamIo::Tls(Box::new(stream)))
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
