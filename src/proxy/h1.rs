//! The upstream half of HTTP/1.1, written for the proxy.
//!
//! hyper's client runs each connection in a task of its own and hands requests,
//! responses and body chunks across channels: per request two task switches and
//! several wake-ups, which profiles put at a third of fulcrum's user CPU. Here the
//! request head is encoded straight from the parts the proxy already holds, the
//! response head is parsed with `httparse` in the request's own task, and the body
//! is decoded from the socket as the client takes it (RFC 9112 §6: length,
//! chunked, or until close). The downstream side stays hyper's.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use tokio::net::TcpStream;

/// Longest response head accepted (as the downstream limit).
pub const MAX_HEAD: usize = 64 * 1024;
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
    /// Head longer than [`MAX_HEAD`] or more than 128 headers.
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

/// Writes the request head: request line, `headers` in order, then the framing
/// header when the body is streamed chunked.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    chunked: bool,
) {
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
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Headers as received (hop-by-hop ones still in).
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this exchange.
    pub keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
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
/// bytes needed. Interim 1xx responses other than 101 are skipped, as a client must.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Invalid> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_HEAD {
                    Err(Invalid::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Invalid::TooLarge),
            Err(_) => return Err(Invalid::Head),
        };
        if len > MAX_HEAD {
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
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let n = resp.headers.len();
        for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
            let ns = h.name.as_ptr() as usize - base;
            let vs = h.value.as_ptr() as usize - base;
            *span = (
                ns as u32,
                (ns + h.name.len()) as u32,
                vs as u32,
                (vs + h.value.len()) as u32,
            );
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(n);
        for &(ns, ne, vs, ve) in &spans[..n] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| Invalid::Head)?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| Invalid::Head)?;
            headers.append(name, value);
        }
        let (framing, mut keep_alive) = framing_of(status, method, &headers)?;
        if matches!(framing, Framing::Chunked | Framing::Close) {
            // A length next to Transfer-Encoding is wrong by definition and must not
            // reach the client (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
        }
        keep_alive &= persistent(version, &headers);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 §6.3; the second value is false when the framing itself forbids reuse.
fn framing_of(
    status: StatusCode,
    method: &Method,
    h: &HeaderMap,
) -> Result<(Framing, bool), Invalid> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length; a message carrying both may be
        // an attack, so the connection is not reused (RFC 9112 §6.3 item 3).
        let both = h.contains_key(header::CONTENT_LENGTH);
        let chunked_last = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            (Framing::Chunked, !both)
        } else {
            (Framing::Close, false)
        });
    }
    let mut len: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        let s = v.to_str().map_err(|_| Invalid::ContentLength)?;
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Invalid::ContentLength);
            }
            let n: u64 = part.parse().map_err(|_| Invalid::ContentLength)?;
            if len.is_some_and(|l| l != n) {
                return Err(Invalid::ContentLength);
            }
            len = Some(n);
        }
    }
    Ok(match len {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// HTTP/1.1 stays open unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
fn persistent(version: Version, h: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in h.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for t in s.split(',') {
                let t = t.trim();
                close |= t.eq_ignore_ascii_case("close");
                keep |= t.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// Reads more bytes from `io` into `buf`; `Ok(0)` is end of stream.
pub fn poll_fill(
    io: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    loop {
        ready!(io.poll_read_ready(cx))?;
        match io.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
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
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
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
    pub fn poll_data(
        &mut self,
        io: &TcpStream,
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
                State::Trailers(seen) => match buf.iter().position(|&b| b == b'\n') {
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

    fn fill_more(
        &self,
        io: &TcpStream,
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

    fn head(s: &str) -> Result<Option<ResponseHead>, Invalid> {
        parse_head(&mut BytesMut::from(s), &Method::GET)
    }

    #[test]
    fn encodes_request_head() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("b"));
        h.append("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        let uri: Uri = "/p?q=1".parse().unwrap();
        encode_head(&mut out, &Method::POST, &uri, &h, true);
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nhost: b\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn parses_heads_and_framing() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, false));
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap_err(),
            Invalid::ContentLength
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n").unwrap_err(),
            Invalid::ContentLength
        );
        assert_eq!(head("garbage\r\n\r\n").unwrap_err(), Invalid::Head);
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 10));
        assert_eq!(head(&long).unwrap_err(), Invalid::TooLarge);
        let h = parse_head(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
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
        let io = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut body = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| d.poll_data(&io, &mut buf, cx)).await {
            body.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(body, b"hello world");
        assert!(d.is_done() && buf.is_empty());
        drop(writer.await.unwrap());
    }
}
