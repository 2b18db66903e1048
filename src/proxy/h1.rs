//! The upstream half of HTTP/1.1, written for the proxy.
//!
//! hyper's client runs each connection in a task of its own and hands requests,
//! responses and body chunks across channels: per request two task switches and
//! several wake-ups, which profiles put at a third of fulcrum's user CPU. Here the
//! request head is encoded straight from the parts the proxy already holds, the
//! response head is parsed with `httparse` in the request's own task, and the body
//! is decoded from the socket as the client takes it (RFC 9112 §6: length,
//! chunked, or until close). The downstream side is [`super::server`]; it shares
//! the body decoder and the header-name cache.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use tokio::io::AsyncRead;

use super::MAX_HEADER_BYTES;

/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line or trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// The upstream's answer broke HTTP/1.1 (nginx: "upstream sent invalid header").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Unparsable status line or header.
    #[error("invalid response head")]
    Head,
    /// Head longer than [`MAX_HEADER_BYTES`] or more than 128 headers.
    #[error("response head too large")]
    TooLarge,
    /// Bad or conflicting `Content-Length`.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A 101 nobody asked for.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// Bad chunked framing in the body.
    #[error("invalid chunked body")]
    Chunked,
}

impl From<Invalid> for io::Error {
    fn from(e: Invalid) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Writes a request head: the request line, the headers the caller emits through
/// [`HeadWriter::header`], and `Transfer-Encoding: chunked` when the body streams
/// without a `Content-Length`. Returns whether the body must be chunk-encoded.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &Uri,
    streamed_body: bool,
    headers: impl FnOnce(&mut HeadWriter<'_>),
) -> bool {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match target.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        // CONNECT's authority form.
        None => match target.authority() {
            Some(a) => out.extend_from_slice(a.as_str().as_bytes()),
            None => out.push(b'/'),
        },
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut w = HeadWriter {
        out,
        has_length: false,
    };
    headers(&mut w);
    let chunked = streamed_body && !w.has_length;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Appends header lines to a request head.
pub struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
    has_length: bool,
}

impl HeadWriter<'_> {
    /// Appends `name: value`.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.has_length |= name == header::CONTENT_LENGTH;
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers to pass on: as received, minus hop-by-hop ones.
    pub headers: PassHeaders,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this exchange.
    pub keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// Parses one response head from the front of `buf`, consuming it. `Ok(None)`: more
/// bytes needed. Interim 1xx responses other than 101 are skipped, as a client must;
/// a 101 is accepted only when the request asked to `upgrade`.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Option<ResponseHead>, Invalid> {
    loop {
        // Uninitialised slots: httparse fills what it uses, so the 4 KiB array is not
        // zeroed for every response.
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_HEADER_BYTES {
                    Err(Invalid::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Invalid::TooLarge),
            Err(_) => return Err(Invalid::Head),
        };
        if len > MAX_HEADER_BYTES {
            return Err(Invalid::TooLarge);
        }
        let code = resp.code.unwrap_or(0);
        let version = if resp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let status = StatusCode::from_u16(code).map_err(|_| Invalid::Head)?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        // Offsets first: the values then share the head's one allocation.
        let base = buf.as_ptr() as usize;
        // Inline and uninitialised up to 32: no 2 KiB array zeroed per response.
        // Filled in place: collecting would move the 512-byte array.
        let mut spans = smallvec::SmallVec::<[Span; 32]>::new();
        for h in resp.headers.iter() {
            let ns = h.name.as_ptr() as usize - base;
            let vs = h.value.as_ptr() as usize - base;
            spans.push((
                ns as u32,
                (ns + h.name.len()) as u32,
                vs as u32,
                (vs + h.value.len()) as u32,
            ));
        }
        let head = buf.split_to(len).freeze();
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !upgrade {
            return Err(Invalid::UnexpectedUpgrade);
        }
        let mut lines = Vec::with_capacity(spans.len());
        let mut f = FramingHeaders::default();
        // `Connection` values, whose other tokens name more hop-by-hop headers.
        let mut listing = smallvec::SmallVec::<[Span; 2]>::new();
        for &span in &spans {
            let (ns, ne, vs, ve) = span;
            let value = &head[vs as usize..ve as usize];
            // Hop-by-hop headers are read here and never reach the client; a 101
            // keeps its Upgrade and Connection for the client's handshake.
            match Hop::of(&head[ns as usize..ne as usize]) {
                Hop::Connection => {
                    f.connection(value);
                    if connection_tokens(value).next().is_some() {
                        listing.push(span);
                    }
                    if !switching {
                        continue;
                    }
                }
                Hop::TransferEncoding => {
                    f.transfer_encoding(value);
                    continue;
                }
                Hop::ContentLength => f.content_length(value)?,
                Hop::Upgrade if switching => {}
                Hop::Upgrade | Hop::Other => continue,
                Hop::No => {}
            }
            lines.push(span);
        }
        if !listing.is_empty() {
            lines.retain(|&(ns, ne, ..)| {
                let name = &head[ns as usize..ne as usize];
                !listing.iter().any(|&(_, _, vs, ve)| {
                    connection_tokens(&head[vs as usize..ve as usize])
                        .any(|t| t.eq_ignore_ascii_case(name))
                })
            });
        }
        let framing = f.framing(status, method);
        if matches!(framing, BodyFraming::Chunked | BodyFraming::Close) && f.length.is_some() {
            // A length next to Transfer-Encoding is wrong by definition and must not
            // reach the client (RFC 9112 §6.3).
            lines.retain(|&(ns, ne, ..)| {
                Hop::of(&head[ns as usize..ne as usize]) != Hop::ContentLength
            });
        }
        let framing_reusable = match framing {
            BodyFraming::Close => false,
            BodyFraming::Chunked => f.length.is_none(),
            BodyFraming::Empty | BodyFraming::Length(_) => true,
        };
        let keep_alive =
            framing_reusable && !f.close && (version == Version::HTTP_11 || f.keep_alive);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers: PassHeaders { head, lines },
            framing,
            keep_alive,
        }));
    }
}

/// Offsets of a header line in a head: name start and end, value start and end.
type Span = (u32, u32, u32, u32);

/// The response headers passed on to the client: the upstream's header lines as it
/// sent them (names in its case, as nginx passes them), minus hop-by-hop ones, kept
/// as offsets into the head's bytes. fulcrum's HTTP/1 server writes them straight
/// out; only hyper's server (h2c listeners) needs them as a `HeaderMap`.
#[derive(Debug, Clone, Default)]
pub struct PassHeaders {
    head: Bytes,
    lines: Vec<Span>,
}

impl PassHeaders {
    /// Name and value of each header, in the upstream's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.lines.iter().map(|&(ns, ne, vs, ve)| {
            (
                &self.head[ns as usize..ne as usize],
                &self.head[vs as usize..ve as usize],
            )
        })
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The headers as a map (values share the head's bytes).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        for &(ns, ne, vs, ve) in &self.lines {
            // httparse only lets tokens through as names and allowed bytes as values.
            let name = HeaderName::from_bytes(&self.head[ns as usize..ne as usize]);
            let value = HeaderValue::from_maybe_shared(self.head.slice(vs as usize..ve as usize));
            if let (Ok(n), Ok(v)) = (name, value) {
                map.append(n, v);
            }
        }
        map
    }
}

/// What a response header name is to the proxy: RFC 9110 §7.6.1's hop-by-hop set
/// (as [`super::forward::is_hop_by_hop`] has it, compared on the raw bytes), with the ones
/// that carry framing told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    Connection,
    TransferEncoding,
    ContentLength,
    Upgrade,
    /// Another hop-by-hop header: dropped.
    Other,
    /// End to end: passed on.
    No,
}

impl Hop {
    /// The kind of header `name` is (ASCII case-insensitive).
    pub(crate) fn of(name: &[u8]) -> Hop {
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if is(b"te") => Hop::Other,
            7 if is(b"trailer") => Hop::Other,
            7 if is(b"upgrade") => Hop::Upgrade,
            10 if is(b"connection") => Hop::Connection,
            10 if is(b"keep-alive") => Hop::Other,
            14 if is(b"content-length") => Hop::ContentLength,
            16 if is(b"proxy-connection") => Hop::Other,
            17 if is(b"transfer-encoding") => Hop::TransferEncoding,
            _ => Hop::No,
        }
    }
}

/// The tokens of a `Connection` value that name other headers.
fn connection_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| {
        !t.is_empty()
            && !t.eq_ignore_ascii_case(b"close")
            && !t.eq_ignore_ascii_case(b"keep-alive")
            && !t.eq_ignore_ascii_case(b"upgrade")
    })
}

/// The header names of the previous response on a connection, by position: an
/// upstream repeats the same header set, so a name is usually recognised with one
/// comparison instead of being parsed again.
#[derive(Debug, Default)]
pub struct NameCache(Vec<(Box<[u8]>, HeaderName)>);

impl NameCache {
    /// Positions remembered.
    const MAX: usize = 32;

    /// The name at position `i` of a head, parsed only if it differs from the one
    /// remembered there.
    pub fn get(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, Invalid> {
        if let Some((r, n)) = self.0.get(i) {
            if **r == *raw {
                return Ok(n.clone());
            }
        }
        let n = HeaderName::from_bytes(raw).map_err(|_| Invalid::Head)?;
        if let Some(slot) = self.0.get_mut(i) {
            *slot = (raw.into(), n.clone());
        } else if i == self.0.len() && i < Self::MAX {
            self.0.push((raw.into(), n.clone()));
        }
        Ok(n)
    }
}

/// What the framing headers of a message said (responses here, requests in
/// [`super::server`]).
#[derive(Debug, Default)]
pub(crate) struct FramingHeaders {
    /// `Content-Length`, when present and consistent.
    pub length: Option<u64>,
    /// `Transfer-Encoding` present; whether its last coding is chunked.
    pub te: Option<bool>,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl FramingHeaders {
    /// Reads `Connection`'s `close` and `keep-alive` tokens.
    pub fn connection(&mut self, v: &[u8]) {
        for t in v.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }

    /// Reads `Transfer-Encoding`: only its last coding matters for framing.
    pub fn transfer_encoding(&mut self, v: &[u8]) {
        let last = v.rsplit(|&b| b == b',').next().unwrap_or_default();
        self.te = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }

    /// Several values (or lines) must all agree (RFC 9110 §8.6).
    pub fn content_length(&mut self, v: &[u8]) -> Result<(), Invalid> {
        for part in v.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(Invalid::ContentLength);
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if self.length.is_some_and(|l| l != n) {
                return Err(Invalid::ContentLength);
            }
            self.length = Some(n);
        }
        Ok(())
    }

    /// RFC 9112 §6.3.
    fn framing(&self, status: StatusCode, method: &Method) -> BodyFraming {
        if method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return BodyFraming::Empty;
        }
        match (self.te, self.length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) | (None, None) => BodyFraming::Close,
            (None, Some(0)) => BodyFraming::Empty,
            (None, Some(n)) => BodyFraming::Length(n),
        }
    }
}

/// Reads more bytes from `io` into `buf`; `Ok(0)` is end of stream. Goes through
/// `AsyncRead` so that a short read clears the socket's readiness (as nginx does
/// with `rev->ready`): the next read waits for epoll instead of costing a system
/// call that answers EAGAIN.
pub fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// A reusable chunk-size line (`{:x}\r\n`), written without formatting machinery.
#[derive(Debug, Default)]
pub struct ChunkLine([u8; 18]);

impl ChunkLine {
    /// The chunk-size line for `n` bytes.
    pub fn chunk(&mut self, mut n: usize) -> &[u8] {
        let mut i = 16;
        loop {
            i -= 1;
            self.0[i] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.0[16] = b'\r';
        self.0[17] = b'\n';
        &self.0[i..]
    }
}

/// Where a body decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk.
    ChunkEnd,
    /// Trailer section after the last chunk (skipped; bytes so far).
    Trailers(usize),
    /// Until end of stream.
    Close,
    /// Complete.
    Done,
}

/// Decodes a response body from the connection's read buffer and socket.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    /// A decoder for `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::Close => State::Close,
        };
        BodyDecoder { state }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of body data; `None` at the end. Data is split off `buf`
    /// without copying.
    pub fn poll_data<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        match ready!(poll_fill(io, buf, cx)) {
                            Ok(0) => return Poll::Ready(Some(Err(eof()))),
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                    let take = n.min(buf.len() as u64);
                    let left = n - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Poll::Ready(Some(Ok(buf.split_to(take as usize).freeze())));
                }
                State::Close => {
                    if !buf.is_empty() {
                        return Poll::Ready(Some(Ok(buf.split().freeze())));
                    }
                    match ready!(poll_fill(io, buf, cx)) {
                        Ok(0) => self.state = State::Done,
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                        if let Err(e) = ready!(self.fill_more(io, buf, cx)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    _ => return Poll::Ready(Some(Err(Invalid::Chunked.into()))),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        if let Err(e) = ready!(self.fill_more(io, buf, cx)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        continue;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(Invalid::Chunked.into())));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        let empty = i == 0 || (i == 1 && buf[0] == b'\r');
                        buf.advance(i + 1);
                        self.state = if empty {
                            State::Done
                        } else {
                            State::Trailers(seen + i + 1)
                        };
                    }
                    None if seen + buf.len() < MAX_TRAILERS => {
                        if let Err(e) = ready!(self.fill_more(io, buf, cx)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    None => return Poll::Ready(Some(Err(Invalid::Chunked.into()))),
                },
            }
        }
    }

    fn fill_more<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(poll_fill(io, buf, cx)) {
            Ok(0) => Poll::Ready(Err(eof())),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream prematurely closed connection while reading upstream",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    fn head(s: &str) -> Result<Option<ResponseHead>, Invalid> {
        parse_head(&mut BytesMut::from(s), &Method::GET, true)
    }

    #[test]
    fn chunk_lines() {
        let mut l = ChunkLine::default();
        assert_eq!(l.chunk(0), b"0\r\n");
        assert_eq!(l.chunk(255), b"ff\r\n");
        assert_eq!(l.chunk(4096), b"1000\r\n");
    }

    #[test]
    fn encodes_request_head() {
        let mut out = Vec::new();
        let uri: Uri = "/p?q=1".parse().unwrap();
        let chunked = encode_head(&mut out, &Method::POST, &uri, true, |w| {
            w.header(&header::HOST, &HeaderValue::from_static("b"));
            w.header(
                &HeaderName::from_static("x-a"),
                &HeaderValue::from_static("1"),
            );
        });
        assert!(chunked);
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nhost: b\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let chunked = encode_head(&mut out, &Method::PUT, &uri, true, |w| {
            w.header(&header::CONTENT_LENGTH, &HeaderValue::from_static("3"));
        });
        assert!(!chunked);
        assert_eq!(out, b"PUT /p?q=1 HTTP/1.1\r\ncontent-length: 3\r\n\r\n");
    }

    #[test]
    fn name_cache_follows_the_header_set() {
        let mut c = NameCache::default();
        assert_eq!(c.get(0, b"X-A").unwrap(), "x-a");
        assert_eq!(c.get(1, b"Server").unwrap(), "server");
        // The same bytes at a position come from the cache; others are parsed afresh.
        assert_eq!(c.get(0, b"X-A").unwrap(), "x-a");
        assert_eq!(c.get(1, b"X-B").unwrap(), "x-b");
        assert_eq!(c.get(1, b"X-B").unwrap(), "x-b");
        assert!(c.get(2, b"bad name").is_err());
    }

    #[test]
    fn raw_hop_by_hop_names_match_the_header_name_set() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "content-length",
            "server",
            "x-te",
            "tea",
        ] {
            let hop = Hop::of(name.to_ascii_uppercase().as_bytes());
            let n = HeaderName::from_static(name);
            assert_eq!(
                !matches!(hop, Hop::No | Hop::ContentLength),
                super::super::forward::is_hop_by_hop(&n),
                "{name}"
            );
        }
    }

    #[test]
    fn parses_heads_and_framing() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers.get("x-a"), Some(&b"b"[..]));
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Close, false));
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Chunked, false));
        let h = head("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Empty, false));
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap_err(),
            Invalid::ContentLength
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n").unwrap_err(),
            Invalid::ContentLength
        );
        assert_eq!(head("garbage\r\n\r\n").unwrap_err(), Invalid::Head);
        // Hop-by-hop headers, and those Connection names, never reach the client.
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n\
             Proxy-Connection: k\r\nUpgrade: h2c\r\nTrailer: x\r\nTransfer-Encoding: chunked\r\nX-Keep: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        // Passed on as the upstream wrote it.
        let names: Vec<&[u8]> = h.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"X-Keep"[..]]);
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Chunked, false));
        // A 101 keeps the upgrade pair.
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.headers.get("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(h.headers.get("connection"), Some(&b"Upgrade"[..]));
        assert_eq!(h.headers.to_map()["upgrade"], "websocket");
        // ...and only when the request asked for it.
        let mut b = BytesMut::from("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        assert_eq!(
            parse_head(&mut b, &Method::GET, false).unwrap_err(),
            Invalid::UnexpectedUpgrade
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\nX: {}",
            "a".repeat(MAX_HEADER_BYTES + 10)
        );
        assert_eq!(head(&long).unwrap_err(), Invalid::TooLarge);
        let h = parse_head(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            &Method::HEAD,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Empty);
    }

    /// Decodes a chunked body fed over a real socket in awkward pieces.
    #[tokio::test]
    async fn decodes_chunked_over_a_socket() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            for piece in [
                "5\r\nhel",
                "lo\r\n",
                "6;ext=1\r\n wor",
                "ld\r\n0\r\nX-T: 1\r\n",
                "\r\n",
            ] {
                s.write_all(piece.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            s
        });
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        let mut d = BodyDecoder::new(BodyFraming::Chunked);
        let mut body = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| d.poll_data(&mut io, &mut buf, cx)).await
        {
            body.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(body, b"hello world");
        assert!(d.is_done() && buf.is_empty());
        drop(writer.await.unwrap());
    }
}
