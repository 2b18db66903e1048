//! The downstream half of HTTP/1.x: fulcrum's own server for client connections.
//!
//! hyper's server was about 45% of the user-space instructions of a proxied request:
//! a dispatcher state machine polled on every wake-up, a body channel, a date cache
//! read twice per request, and a read mid-request (to notice a client that left)
//! that reallocated its buffer every time because the request's head still shared
//! it. Here one task runs a plain loop per connection: read and parse a head with
//! `httparse` (header values are slices of the one head buffer), run the request,
//! write the response head and its first data in one `write`, repeat. The same
//! upstream pieces do the body work: [`BodyDecoder`] decodes a request body from the
//! client socket as the upstream side pulls it.
//!
//! What nginx users expect of the server, and how it is kept:
//! - It runs over any [`Transport`]: a `TcpStream`, split into its owned halves, or
//!   any other byte stream (TLS, an in-memory pipe) through
//!   [`super::transport::AnyStream`].
//! - A client that goes away while its request waits for the upstream is noticed at
//!   once (the request ends, logged as 499): over TCP the socket's readiness is
//!   watched with a one-byte `peek`, which costs no system call until the socket
//!   becomes readable; over another stream, which cannot peek, the watch reads ahead
//!   into the connection's buffer (what arrives is the next pipelined request, parsed
//!   after this one).
//! - Keep-alive per RFC 9112 §9.3 (HTTP/1.0 only with `Connection: keep-alive`);
//!   pipelined requests are answered in order.
//! - A head over 64 KiB is answered 431, a malformed one 400, both counted and
//!   logged for the listener and never forwarded; a head with both `Content-Length`
//!   and `Transfer-Encoding` reaches the request path flagged, which answers 400.
//! - `Expect: 100-continue` is answered when the body is first read, as hyper and
//!   nginx do: the body asks, and the connection writes it on its write side while
//!   it runs the request (the only time a body is read). A body left unread ends
//!   the connection after the response (after a short lingering read, so that the
//!   client sees the response and not a reset).
//! - `Upgrade`: after a 101 the socket, and any bytes already read past the head,
//!   go to the tunnel.
//! - Graceful shutdown: an idle connection closes at once, a busy one after its
//!   response (sent with `Connection: close`).
//! - Memory while idle, as nginx: a keep-alive connection that has waited a second
//!   for its next request frees its buffers and loop state and waits for the
//!   client holding only its socket (a few hundred bytes; `park` says why a
//!   second and not at once).
//!
//! Files: this one is the connection loop; `head` parses request heads, `park`
//! holds an idle connection, `watch` runs a request while watching the client,
//! `respond` writes responses.

mod head;
mod park;
mod respond;
mod watch;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use self::head::{parse_head, ReqHead};
#[doc(hidden)]
pub use self::head::{parse_head_bytes, HeadSummary};
use self::park::{park, poll_release, RELEASE_AFTER};
use self::respond::{encode_head, error_head, write_response, Written, FLUSH_AT};
use self::watch::watched;
use super::answer::NoResponse;
use super::body::ReqBody;
use super::conn::ConnMeta;
use super::error::{rescue, ProxyError};
use super::exchange::{rejected, Tracked};
use super::h1::{poll_fill, BodyDecoder, BodyFraming, NameCache};
use super::reader::{lock, H1Body, Home, Reader, CONTINUE};
use super::service::handle;
use super::transport::{ReadSide, Transport, WriteSide};
use super::upgrade::{PendingUpgrade, Upgraded};
use crate::state::Snapshot;

/// First size of a connection's read buffer; it grows for longer heads.
const READ_BUF: usize = 4096;
/// How long, and how much, a closing connection still reads of a body it did not
/// want, so the client sees the response instead of a reset (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// A client connection served by [`serve`]; [`Connection::graceful_shutdown`] asks
/// it to finish the request in flight and close.
pub struct Connection<F> {
    fut: Pin<Box<F>>,
    meta: Arc<ConnMeta>,
}

impl<F: Future> Future for Connection<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl<F> Connection<F> {
    /// Stop taking requests: an idle connection closes when next polled, a busy one
    /// after its response.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        self.meta.closing.store(true, Relaxed);
    }
}

/// Serves HTTP/1.x on `stream` until the client closes, an error, or a shutdown.
pub fn serve<S: Transport>(
    stream: S,
    snapshots: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
) -> Connection<impl Future<Output = io::Result<()>> + Send> {
    // Split here: one connection loop serves every kind of stream.
    let (rd, wr) = stream.split();
    Connection {
        fut: Box::pin(run(rd, wr, snapshots, meta.clone())),
        meta,
    }
}

/// The connection: parked (holding its socket and nothing else, see `park`)
/// while idle, served by [`busy`] while requests come.
async fn run(
    mut rd: ReadSide,
    mut wr: WriteSide,
    snapshots: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
) -> io::Result<()> {
    loop {
        let Some(buf) = park(&mut rd, &meta, READ_BUF).await? else {
            return Ok(());
        };
        let reader = Reader { io: rd, buf };
        // Boxed: the busy state (the request's future, buffers) is freed while the
        // connection is parked.
        match Box::pin(busy(reader, wr, &snapshots, &meta)).await? {
            Some((r, w)) => (rd, wr) = (r, w),
            None => return Ok(()),
        }
    }
}

/// The connection loop: serves requests until the connection ends (`None`) or has
/// waited [`RELEASE_AFTER`] for the next one (its socket halves, to park).
async fn busy(
    reader: Reader,
    mut wr: WriteSide,
    snapshots: &Arc<ArcSwap<Snapshot>>,
    meta: &Arc<ConnMeta>,
) -> io::Result<Option<(ReadSide, WriteSide)>> {
    let mut reader = Some(reader);
    let mut home: Option<Home> = None;
    let mut names = NameCache::default();
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    // One lazy timer for the whole busy period (re-armed when it fires).
    let mut grace = std::pin::pin!(tokio::time::sleep(RELEASE_AFTER));
    loop {
        let Some(rdr) = reader.as_mut() else {
            return Ok(None);
        };
        let head = match read_head(rdr, &mut names, meta, &mut grace).await? {
            Next::Head(h) => h,
            Next::Closed => return Ok(None),
            Next::Quiet => return Ok(reader.map(|r| (r.io, wr))),
            Next::Bad(e) => {
                let status = rescue(&e).status;
                let snap = snapshots.load();
                rejected(&snap, meta.listen_key, meta.remote, status.as_u16());
                drop(snap);
                return refuse(wr, &mut out, reader, status).await.map(|()| None);
            }
        };
        let is_head = head.req.method() == Method::HEAD;
        let version = head.req.version();
        let (req, mut s) = start(head, &mut reader, &mut home, meta);

        // Pinned here: moving the request's future into `watched` would copy it.
        let request = std::pin::pin!(handle(snapshots, meta.clone(), req));
        let resp = watched(request, &mut reader, home.as_ref(), &mut wr, &mut s.cont).await;
        // The client left: the exchange was dropped with the request (status 499).
        let Some(resp) = resp else {
            return Ok(None);
        };
        if let Some(n @ 1..) = s.cont.filter(|&n| n < CONTINUE.len()) {
            // Begun and then not wanted: the interim response is finished first.
            wr.write_all(&CONTINUE[n..]).await?;
        }
        let unread = take_back(&mut reader, home.as_ref());
        let keep_alive = s.keep_alive && !unread && !meta.closing.load(Relaxed);

        let (parts, mut body) = resp.into_parts();
        if parts.extensions.get::<NoResponse>().is_some() {
            // nginx `return 444`: no response, the connection just closes.
            return Ok(None);
        }
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(tx), Some(r)) = (s.upgrade, reader.take()) {
                return switch(wr, &mut out, &parts, body, version, tx, r)
                    .await
                    .map(|()| None);
            }
        }
        let written = write_response(
            &mut wr, &mut out, &parts, &mut body, is_head, version, keep_alive,
        )
        .await;
        drop(parts);
        // The exchange ends here: counted and logged, the connection waits again.
        drop(body);
        match written? {
            Written::KeepAlive => {}
            Written::Close => {
                let pending = unread || reader.as_ref().is_some_and(|r| !r.buf.is_empty());
                return linger(wr, reader, pending).await.map(|()| None);
            }
            // The body broke off: the client must see the response cut short.
            Written::Broken => return Ok(None),
        }
        if out.capacity() > FLUSH_AT * 2 {
            out = Vec::with_capacity(2048);
        }
    }
}

/// Answers a head this server refuses, then closes.
async fn refuse(
    mut wr: WriteSide,
    out: &mut Vec<u8>,
    reader: Option<Reader>,
    status: StatusCode,
) -> io::Result<()> {
    error_head(out, status);
    wr.write_all(out).await?;
    linger(wr, reader, true).await
}

/// After a 101: the head goes out, then the connection (with the bytes read past
/// the request head) to the tunnel.
async fn switch(
    mut wr: WriteSide,
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: Tracked,
    version: Version,
    tx: oneshot::Sender<Upgraded>,
    r: Reader,
) -> io::Result<()> {
    encode_head(out, parts, body.pass_headers(), version, None, false, true);
    wr.write_all(out).await?;
    wr.flush().await?;
    drop(body);
    let _ = tx.send(Upgraded {
        rd: r.io,
        buf: r.buf,
        wr,
    });
    Ok(())
}

/// What the connection keeps of a request while it runs.
struct Started {
    keep_alive: bool,
    /// Bytes of `100 Continue` written, while the body may still ask for it.
    cont: Option<usize>,
    /// Where the connection goes after a 101, if the request asked to upgrade.
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// The request as the request path takes it: its body reads from the connection
/// (the reader goes with it), and an upgrade handle if it asked for one.
fn start(
    head: ReqHead,
    reader: &mut Option<Reader>,
    home: &mut Option<Home>,
    meta: &ConnMeta,
) -> (Request<ReqBody>, Started) {
    let ReqHead {
        req,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        conflict,
    } = head;
    if conflict {
        meta.head_guard.conflict.store(true, Relaxed);
    }
    let mut s = Started {
        keep_alive,
        cont: None,
        upgrade: None,
    };
    let body = match framing {
        BodyFraming::Empty => ReqBody::Empty,
        f => {
            s.cont = expect_continue.then_some(0);
            ReqBody::H1(Box::new(H1Body {
                reader: reader.take(),
                decoder: BodyDecoder::client(f),
                home: home.get_or_insert_with(Home::default).clone(),
                cont: expect_continue,
            }))
        }
    };
    let mut req = req.map(|()| body);
    if upgrade {
        let (tx, rx) = oneshot::channel();
        req.extensions_mut()
            .insert(PendingUpgrade(Arc::new(Mutex::new(Some(rx)))));
        s.upgrade = Some(tx);
    }
    (req, s)
}

/// Takes the reader back from a request body that had it; true if the body was not
/// read to its end (then the connection cannot take another request).
fn take_back(reader: &mut Option<Reader>, home: Option<&Home>) -> bool {
    if reader.is_some() {
        return false;
    }
    match home.and_then(|h| lock(h).back.take()) {
        Some((r, complete)) => {
            *reader = Some(r);
            !complete
        }
        None => true,
    }
}

/// What reading the next head gave.
// Returned once per request and matched at once: boxing the head would cost an
// allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(ReqHead),
    /// The client closed (or the connection is closing) between requests.
    Closed,
    /// A head refused before routing (400, 431), answered by [`refuse`].
    Bad(ProxyError),
    /// Nothing came for [`RELEASE_AFTER`]: the connection parks.
    Quiet,
}

async fn read_head(
    rdr: &mut Reader,
    names: &mut NameCache,
    meta: &ConnMeta,
    grace: &mut Pin<&mut Sleep>,
) -> io::Result<Next> {
    loop {
        if !rdr.buf.is_empty() {
            match parse_head(&mut rdr.buf, names) {
                Ok(Some(h)) => return Ok(Next::Head(h)),
                Ok(None) => {}
                Err(e) => return Ok(Next::Bad(e)),
            }
        }
        let n = poll_fn(|cx| {
            // Shutting down: only a head already begun is still served.
            if rdr.buf.is_empty() && meta.closing.load(Relaxed) {
                return Poll::Ready(Some(Ok(0)));
            }
            match poll_fill(&mut rdr.io, &mut rdr.buf, cx) {
                Poll::Ready(n) => Poll::Ready(Some(n)),
                Poll::Pending if rdr.buf.is_empty() && poll_release(grace, meta, cx) => {
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(n) = n else {
            return Ok(Next::Quiet);
        };
        match n {
            Ok(0) => return Ok(Next::Closed),
            Ok(_) => {
                // The first bytes of a head: `client_header_timeout` runs from now.
                if meta.idle.swap(false, Relaxed) {
                    meta.waiting_since
                        .store(crate::clock::coarse_nanos(), Relaxed);
                }
            }
            // A reset between requests is a client that left, not an error.
            Err(e) if rdr.buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(Next::Closed)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Closes the connection: the write side first, then, when the client may still be
/// sending (`pending`: a body nobody read, or bytes past the last request), reads
/// and drops what arrives for a short while, so that the client reads the response
/// before the socket closes. (Closing a socket with unread data sends a reset,
/// which can destroy the response in the client's receive buffer.)
async fn linger(mut wr: WriteSide, reader: Option<Reader>, pending: bool) -> io::Result<()> {
    let Some(mut r) = reader else {
        // The read side is elsewhere (a request body): the FIN goes now.
        let _ = wr.shutdown().await;
        return Ok(());
    };
    if !pending {
        // Nothing more to read: the socket just closes, with `r`.
        if let Some(mut wr) = wr.close_tcp() {
            let _ = wr.shutdown().await;
        }
        return Ok(());
    }
    let _ = wr.shutdown().await;
    let drain = async {
        let mut seen = 0usize;
        loop {
            r.buf.clear();
            match poll_fn(|cx| poll_fill(&mut r.io, &mut r.buf, cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
            if seen > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    Ok(())
}
