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
//! - A client that goes away while its request waits for the upstream is noticed at
//!   once (the request ends, logged as 499): the socket's readiness is watched with a
//!   one-byte `peek`, which costs no system call until the socket becomes readable.
//! - Keep-alive per RFC 9112 §9.3 (HTTP/1.0 only with `Connection: keep-alive`);
//!   pipelined requests are answered in order.
//! - A head over 64 KiB is answered 431, a malformed one 400, both counted and
//!   logged for the listener and never forwarded; a head with both `Content-Length`
//!   and `Transfer-Encoding` reaches the request path flagged, which answers 400.
//! - `Expect: 100-continue` is answered when the body is first read, as hyper and
//!   nginx do; a body left unread ends the connection after the response (after
//!   a short lingering read, so that the client sees the response and not a reset).
//! - `Upgrade`: after a 101 the socket, and any bytes already read past the head,
//!   go to the tunnel.
//! - Graceful shutdown: an idle connection closes at once, a busy one after its
//!   response (sent with `Connection: close`).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::body::ReqBody;
use super::conn::ConnMeta;
use super::error::body_for;
use super::exchange::{rejected, Tracked};
use super::h1::{
    poll_fill, BodyDecoder, BodyFraming, ChunkLine, FramingHeaders, Hop, NameCache, PassHeaders,
};
use super::reader::{lock, H1Body, Home, Reader, CONTINUE};
use super::service::handle;
use super::upgrade::{PendingUpgrade, Upgraded};
use super::MAX_HEADER_BYTES;
use crate::state::Snapshot;

/// Most header lines in a request head (hyper's limit, which fulcrum had before).
const MAX_HEADERS: usize = 100;
/// First size of a connection's read buffer; it grows for longer heads.
const READ_BUF: usize = 4096;
/// Data up to this size is copied behind the head (one `write` for both); larger
/// pieces are written from where they are.
const COPY_MAX: usize = 4096;
/// Buffered response bytes written out before more are gathered.
const FLUSH_AT: usize = 64 * 1024;
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
pub fn serve(
    stream: TcpStream,
    snapshots: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
) -> Connection<impl Future<Output = io::Result<()>> + Send> {
    Connection {
        fut: Box::pin(run(stream, snapshots, meta.clone())),
        meta,
    }
}

/// A parsed request head and what its headers say about the connection.
struct ReqHead {
    req: Request<()>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    /// Both `Content-Length` and `Transfer-Encoding`.
    conflict: bool,
}

/// Parses a request head off the front of `buf`. `Ok(None)`: more bytes needed;
/// `Err`: the status to answer before closing.
fn parse_head(buf: &mut BytesMut, names: &mut NameCache) -> Result<Option<ReqHead>, StatusCode> {
    // Uninitialised slots: httparse fills what it uses.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    if len > MAX_HEADER_BYTES {
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = req.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
    // Offsets first: the target and the values then share the head's one allocation.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u32, (start + s.len()) as u32)
    };
    let path = span(req.path.unwrap_or_default().as_bytes());
    // Inline and uninitialised up to 32: no 1.6 KiB array zeroed per request.
    // Filled in place: collecting would move the 512-byte array.
    let mut spans = smallvec::SmallVec::<[((u32, u32), (u32, u32)); 32]>::new();
    for h in req.headers.iter() {
        spans.push((span(h.name.as_bytes()), span(h.value)));
    }
    let n = spans.len();
    let head = buf.split_to(len).freeze();
    let slice = |(s, e): (u32, u32)| head.slice(s as usize..e as usize);
    let uri = Uri::from_maybe_shared(slice(path)).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut headers = HeaderMap::with_capacity(n);
    let mut f = Framer::default();
    for (i, &(name, value)) in spans.iter().enumerate() {
        let name = names
            .get(i, &head[name.0 as usize..name.1 as usize])
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        // httparse has already refused the bytes a header value may not hold.
        let value =
            HeaderValue::from_maybe_shared(slice(value)).map_err(|_| StatusCode::BAD_REQUEST)?;
        f.header(&name, &value)?;
        headers.append(name, value);
    }
    let framing = f.framing()?;
    let keep_alive = !f.f.close && (version == Version::HTTP_11 || f.f.keep_alive);
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    Ok(Some(ReqHead {
        req: r,
        framing,
        keep_alive,
        expect_continue: f.expect_continue && version == Version::HTTP_11,
        upgrade: f.upgrade && version == Version::HTTP_11,
        conflict: f.f.length.is_some() && f.f.te.is_some(),
    }))
}

/// What a request's framing and connection headers say.
#[derive(Default)]
struct Framer {
    f: FramingHeaders,
    upgrade: bool,
    expect_continue: bool,
}

impl Framer {
    fn header(&mut self, name: &header::HeaderName, v: &HeaderValue) -> Result<(), StatusCode> {
        if name == header::CONTENT_LENGTH {
            self.f
                .content_length(v.as_bytes())
                .map_err(|_| StatusCode::BAD_REQUEST)?;
        } else if name == header::TRANSFER_ENCODING {
            self.f.transfer_encoding(v.as_bytes());
        } else if name == header::CONNECTION {
            // Names it lists stay with the request: `forward` drops them on the way up.
            self.f.connection(v.as_bytes());
        } else if name == header::UPGRADE {
            self.upgrade = true;
        } else if name == header::EXPECT {
            self.expect_continue = v.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// RFC 9112 §6.3 for requests: chunked if `Transfer-Encoding` ends in it (any
    /// other coding cannot be delimited: 400), else `Content-Length`, else none.
    fn framing(&self) -> Result<BodyFraming, StatusCode> {
        Ok(match (self.f.te, self.f.length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => return Err(StatusCode::BAD_REQUEST),
            (None, Some(0) | None) => BodyFraming::Empty,
            (None, Some(n)) => BodyFraming::Length(n),
        })
    }
}

/// The connection loop.
async fn run(
    stream: TcpStream,
    snapshots: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut reader = Some(Reader {
        io: rd,
        buf: BytesMut::with_capacity(READ_BUF),
    });
    let mut home: Option<Home> = None;
    let mut names = NameCache::default();
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    loop {
        let Some(rdr) = reader.as_mut() else {
            return Ok(());
        };
        let head = match read_head(rdr, &mut names, &meta).await? {
            Next::Head(h) => h,
            Next::Closed => return Ok(()),
            Next::Bad(status) => {
                let snap = snapshots.load();
                rejected(&snap, meta.listen_key, meta.remote, status.as_u16());
                drop(snap);
                error_head(&mut out, status);
                wr.write_all(&out).await?;
                return linger(wr, reader, true).await;
            }
        };
        let ReqHead {
            req,
            framing,
            mut keep_alive,
            expect_continue,
            upgrade,
            conflict,
        } = head;
        if conflict {
            meta.head_guard.conflict.store(true, Relaxed);
        }
        let is_head = req.method() == Method::HEAD;
        let version = req.version();
        let body = match framing {
            BodyFraming::Empty => ReqBody::Empty,
            f => ReqBody::H1(Box::new(H1Body {
                reader: reader.take(),
                decoder: BodyDecoder::new(f),
                home: home.get_or_insert_with(Home::default).clone(),
                cont: if expect_continue { 0 } else { CONTINUE.len() },
            })),
        };
        let mut req = req.map(|()| body);
        let mut upgrade_tx = None;
        if upgrade {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(PendingUpgrade(Arc::new(Mutex::new(Some(rx)))));
            upgrade_tx = Some(tx);
        }

        // Pinned here: moving the request's future into `watched` would copy it.
        let request = std::pin::pin!(handle(&snapshots, meta.clone(), req));
        let resp = watched(request, &mut reader, home.as_ref()).await;
        // The client left: the exchange was dropped with the request (status 499).
        let Some(resp) = resp else {
            return Ok(());
        };
        let mut unread = false;
        if reader.is_none() {
            match home.as_ref().and_then(|h| lock(h).take()) {
                Some((r, complete)) => {
                    unread = !complete;
                    reader = Some(r);
                }
                None => unread = true,
            }
        }
        keep_alive &= !unread && !meta.closing.load(Relaxed);

        let (parts, body) = resp.into_parts();
        let status = parts.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(tx), Some(r)) = (upgrade_tx, reader.take()) {
                encode_head(
                    &mut out,
                    &parts,
                    body.pass_headers(),
                    version,
                    None,
                    false,
                    true,
                );
                wr.write_all(&out).await?;
                drop(body);
                let _ = tx.send(Upgraded {
                    rd: r.io,
                    buf: r.buf,
                    wr,
                });
                return Ok(());
            }
        }
        let mut body = body;
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
                return linger(wr, reader, pending).await;
            }
            // The body broke off: the client must see the response cut short.
            Written::Broken => return Ok(()),
        }
        if out.capacity() > FLUSH_AT * 2 {
            out = Vec::with_capacity(2048);
        }
    }
}

/// How writing a response ended.
enum Written {
    /// The connection can take the next request.
    KeepAlive,
    /// The connection closes now.
    Close,
    /// The body failed midway: the connection must close without more.
    Broken,
}

/// Writes a response (by reference: moving the parts and the body into this
/// future would copy them).
async fn write_response(
    wr: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &mut Tracked,
    is_head: bool,
    version: Version,
    mut keep_alive: bool,
) -> io::Result<Written> {
    let status = parts.status;
    let no_body = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    let chunked = !no_body && length.is_none() && version == Version::HTTP_11;
    if !no_body && length.is_none() && !chunked {
        // HTTP/1.0 without a length: the close delimits the body.
        keep_alive = false;
    }
    if keep_alive && says_close(&parts.headers) {
        keep_alive = false;
    }
    // No length where none may be sent, nor for an upstream's empty answer to HEAD
    // (its own Content-Length, if any, is among the headers).
    let declared = if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
        || (is_head && length == Some(0))
    {
        None
    } else {
        length
    };
    let pass = body.pass_headers();
    encode_head(out, parts, pass, version, declared, chunked, keep_alive);
    let sent = if no_body {
        wr.write_all(out).await.map(|()| true)
    } else {
        send_body(wr, out, body, chunked).await
    };
    out.clear();
    Ok(match sent? {
        false => Written::Broken,
        true if keep_alive => Written::KeepAlive,
        true => Written::Close,
    })
}

/// Runs the request while watching the client socket: `None` if the client left
/// first (the request is dropped, and its exchange logs 499, as nginx does).
/// Pipelined bytes stop the watch; so does a reader that is away with the request
/// body, until the body, read to its end, hands it back.
async fn watched(
    mut request: Pin<
        &mut impl Future<Output = Result<Response<Tracked>, std::convert::Infallible>>,
    >,
    reader: &mut Option<Reader>,
    home: Option<&Home>,
) -> Option<Response<Tracked>> {
    let mut watch = reader.as_ref().map_or(true, |r| r.buf.is_empty());
    poll_fn(|cx| {
        if let Poll::Ready(Ok(r)) = request.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if let (true, None, Some(h)) = (watch, reader.as_ref(), home) {
            let mut slot = lock(h);
            if matches!(*slot, Some((_, true))) {
                *reader = slot.take().map(|(r, _)| r);
                watch = reader.as_ref().is_some_and(|r| r.buf.is_empty());
            }
        }
        if let (true, Some(r)) = (watch, reader.as_mut()) {
            // No system call while the socket is quiet: readiness is cached.
            let mut one = [MaybeUninit::uninit()];
            let mut b = ReadBuf::uninit(&mut one);
            match r.io.poll_peek(cx, &mut b) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                // A pipelined request: it is read after this one.
                Poll::Ready(Ok(_)) => watch = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// What reading the next head gave.
// Returned once per request and matched at once: boxing the head would cost an
// allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(ReqHead),
    /// The client closed (or the connection is closing) between requests.
    Closed,
    Bad(StatusCode),
}

async fn read_head(rdr: &mut Reader, names: &mut NameCache, meta: &ConnMeta) -> io::Result<Next> {
    loop {
        if !rdr.buf.is_empty() {
            match parse_head(&mut rdr.buf, names) {
                Ok(Some(h)) => return Ok(Next::Head(h)),
                Ok(None) => {}
                Err(status) => return Ok(Next::Bad(status)),
            }
        }
        let n = poll_fn(|cx| {
            // Shutting down: only a head already begun is still served.
            if rdr.buf.is_empty() && meta.closing.load(Relaxed) {
                return Poll::Ready(Ok(0));
            }
            poll_fill(&mut rdr.io, &mut rdr.buf, cx)
        })
        .await;
        match n {
            Ok(0) => return Ok(Next::Closed),
            Ok(_) => {}
            // A reset between requests is a client that left, not an error.
            Err(e) if rdr.buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(Next::Closed)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the response's own `Connection` header closes the connection.
fn says_close(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Writes a response head into `out` (cleared first): the status line, the headers
/// of `parts`, an upstream's header lines as it sent them (`pass`), then what the
/// framing and connection need. `length`: the body's length, written as
/// `Content-Length` unless the headers carry one.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    pass: Option<&PassHeaders>,
    version: Version,
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
) {
    out.clear();
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut seen = Seen::default();
    for (name, value) in &parts.headers {
        if seen.header(name.as_str().as_bytes()) {
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in pass.into_iter().flat_map(PassHeaders::iter) {
        if seen.header(name) {
            line(out, name, value);
        }
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if let (false, Some(n)) = (seen.length, length) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !seen.connection {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !seen.date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The headers of a response head that the server would otherwise add.
#[derive(Default)]
struct Seen {
    length: bool,
    date: bool,
    connection: bool,
}

impl Seen {
    /// Notes `name`; false if the header is not to be written (the framing is this
    /// server's to choose).
    fn header(&mut self, name: &[u8]) -> bool {
        match Hop::of(name) {
            Hop::ContentLength => self.length = true,
            Hop::Connection => self.connection = true,
            Hop::TransferEncoding => return false,
            _ if name.eq_ignore_ascii_case(b"date") => self.date = true,
            _ => {}
        }
        true
    }
}

/// The head and body of an error this server answers itself (then it closes).
fn error_head(out: &mut Vec<u8>, status: StatusCode) {
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let body = body_for(status);
    encode_head(
        out,
        &parts,
        None,
        Version::HTTP_11,
        Some(body.len() as u64),
        false,
        false,
    );
    out.extend_from_slice(body.as_bytes());
}

/// Appends the current time as an IMF-fixdate, formatted once per second.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = crate::clock::coarse_wall();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
            if s.len() == 29 {
                c.1.copy_from_slice(s.as_bytes());
                c.0 = secs;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&c.1);
    });
}

/// Writes the head in `out` and the body after it; `Ok(false)` if the body broke
/// off. Small data is gathered behind the head so that a small response leaves in
/// one `write`; what is gathered goes out whenever the body has nothing ready.
async fn send_body(
    wr: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    body: &mut Tracked,
    chunked: bool,
) -> io::Result<bool> {
    let mut line = ChunkLine::default();
    loop {
        let next = match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).now_or_never() {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    wr.write_all(out).await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match next {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body broke off");
                if !out.is_empty() {
                    wr.write_all(out).await?;
                }
                return Ok(false);
            }
        };
        let prefix = if chunked { line.chunk(data.len()) } else { &[] };
        if data.len() <= COPY_MAX {
            out.extend_from_slice(prefix);
            out.extend_from_slice(&data);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= FLUSH_AT {
                wr.write_all(out).await?;
                out.clear();
            }
        } else {
            out.extend_from_slice(prefix);
            let tail: &[u8] = if chunked { b"\r\n" } else { b"" };
            write_all_vectored(wr, &[out.as_slice(), &data, tail]).await?;
            out.clear();
        }
        if body.is_end_stream() {
            break;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        wr.write_all(out).await?;
    }
    Ok(true)
}

/// Writes every byte of `parts` with as few `writev`s as the socket allows.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, parts: &[&[u8]]) -> io::Result<()> {
    let mut skip = 0usize;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    while skip < total {
        let mut slices = [IoSlice::new(&[]); 3];
        let mut k = 0;
        let mut off = skip;
        for p in parts {
            if off >= p.len() {
                off -= p.len();
                continue;
            }
            slices[k] = IoSlice::new(&p[off..]);
            off = 0;
            k += 1;
        }
        let n = wr.write_vectored(&slices[..k]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        skip += n;
    }
    Ok(())
}

/// Closes the connection: the write side first, then, when the client may still be
/// sending (`pending`: a body nobody read, or bytes past the last request), reads
/// and drops what arrives for a short while, so that the client reads the response
/// before the socket closes. (Closing a socket with unread data sends a reset,
/// which can destroy the response in the client's receive buffer.)
async fn linger(mut wr: OwnedWriteHalf, reader: Option<Reader>, pending: bool) -> io::Result<()> {
    let _ = wr.shutdown().await;
    let (Some(mut r), true) = (reader, pending) else {
        return Ok(());
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<ReqHead>, StatusCode> {
        let mut buf = BytesMut::from(s.as_bytes());
        parse_head(&mut buf, &mut NameCache::default())
    }

    #[test]
    fn heads_and_their_framing() {
        let h = parse("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.req.uri(), "/a?b");
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive);
        let h = parse("POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(!h.keep_alive);
        let h = parse(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(!h.keep_alive);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn bad_heads_get_their_status() {
        for bad in [
            "GET / HTTP/1.1 x\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert_eq!(parse(bad).err(), Some(StatusCode::BAD_REQUEST), "{bad:?}");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEADER_BYTES));
        assert_eq!(
            parse(&long).err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn heads_split_anywhere_parse_the_same() {
        let two = b"GET /one HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n\
            POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..two.len() {
            let mut names = NameCache::default();
            let mut buf = BytesMut::from(&two[..cut]);
            let mut heads = Vec::new();
            let mut fed = cut;
            loop {
                match parse_head(&mut buf, &mut names) {
                    Ok(Some(h)) => heads.push(h),
                    Ok(None) if fed < two.len() => {
                        buf.extend_from_slice(&two[fed..]);
                        fed = two.len();
                    }
                    Ok(None) => break,
                    Err(e) => panic!("cut {cut}: {e}"),
                }
                if heads.len() == 2 {
                    break;
                }
            }
            assert_eq!(heads.len(), 2, "cut {cut}");
            buf.extend_from_slice(&two[fed..]);
            assert_eq!(heads[0].req.uri(), "/one");
            assert_eq!(heads[0].req.headers()["x-long"], "0123456789");
            assert_eq!(heads[1].req.method(), Method::POST);
            assert_eq!(heads[1].framing, BodyFraming::Length(3));
            assert_eq!(&buf[..], b"abc", "cut {cut}: the body stays in the buffer");
        }
    }

    #[test]
    fn both_framings_are_flagged_for_the_request_path() {
        let h = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.conflict);
    }

    #[test]
    fn response_heads() {
        let mut out = Vec::new();
        let mut parts = Response::new(()).into_parts().0;
        parts
            .headers
            .insert(header::SERVER, HeaderValue::from_static("x"));
        encode_head(
            &mut out,
            &parts,
            None,
            Version::HTTP_10,
            Some(3),
            false,
            true,
        );
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.starts_with(
            "HTTP/1.1 200 OK\r\nserver: x\r\ncontent-length: 3\r\nconnection: keep-alive\r\ndate: "
        ));
        assert!(s.ends_with(" GMT\r\n\r\n"));
        encode_head(&mut out, &parts, None, Version::HTTP_11, None, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("transfer-encoding: chunked\r\nconnection: close\r\n"));
    }
}
