//! A message body on the wire: decoded from the read buffer and socket by its
//! framing (RFC 9112 §6: length, chunked, or until close), and the chunk-size lines
//! that encode one.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::body_framing::BodyFraming;
use crate::proxy::error::Invalid;

/// Longest chunk-size line or trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

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
    /// Trailer section after the last chunk (checked, skipped; bytes so far).
    Trailers(usize),
    /// Until end of stream.
    Close,
    /// Complete.
    Done,
}

/// Decodes a body (an upstream's response, or a client's request) from the
/// connection's read buffer and socket.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    /// Whose body it is, for the error a cut-short body raises.
    side: Truncated,
}

impl BodyDecoder {
    /// A decoder for an upstream response body framed by `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        Self::for_side(framing, Truncated::Upstream)
    }

    /// A decoder for a client's request body framed by `framing`.
    pub fn client(framing: BodyFraming) -> Self {
        Self::for_side(framing, Truncated::Client)
    }

    fn for_side(framing: BodyFraming, side: Truncated) -> Self {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::Close => State::Close,
        };
        BodyDecoder { state, side }
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
            // The chunk framing states only move the state on; the data states answer.
            let framed = match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        match ready!(poll_fill(io, buf, cx)) {
                            Ok(0) => return Poll::Ready(Some(Err(eof(self.side)))),
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
                    continue;
                }
                State::ChunkSize => self.poll_chunk_size(io, buf, cx),
                State::ChunkEnd => self.poll_chunk_end(io, buf, cx),
                State::Trailers(seen) => self.poll_trailers(seen, io, buf, cx),
            };
            if let Err(e) = ready!(framed) {
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    /// Reads a chunk-size line: the next chunk's data, or the trailers after the last.
    #[inline]
    fn poll_chunk_size<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match parse_chunk_size(buf) {
            Ok(Some((used, size))) => {
                buf.advance(used);
                self.state = if size == 0 {
                    State::Trailers(0)
                } else {
                    State::ChunkData(size)
                };
                Poll::Ready(Ok(()))
            }
            Ok(None) if buf.len() < MAX_CHUNK_LINE => self.fill_more(io, buf, cx),
            _ => Poll::Ready(Err(Invalid::Chunked.into())),
        }
    }

    /// Reads the CRLF that ends a chunk's data.
    #[inline]
    fn poll_chunk_end<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.len() < 2 {
            return self.fill_more(io, buf, cx);
        }
        if &buf[..2] != b"\r\n" {
            return Poll::Ready(Err(Invalid::Chunked.into()));
        }
        buf.advance(2);
        self.state = State::ChunkSize;
        Poll::Ready(Ok(()))
    }

    /// Skips a trailer line (`seen` bytes of trailers so far); an empty one ends the
    /// body.
    #[inline]
    fn poll_trailers<R: AsyncRead + Unpin>(
        &mut self,
        seen: usize,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match memchr::memchr(b'\n', buf) {
            // The limit holds however the trailers arrive, as for chunk-size lines.
            Some(i) if seen + i + 1 > MAX_TRAILERS => Poll::Ready(Err(Invalid::Chunked.into())),
            Some(i) => {
                let empty = &buf[..i] == b"\r";
                if !empty {
                    trailer_line(&buf[..i])?;
                }
                buf.advance(i + 1);
                self.state = if empty {
                    State::Done
                } else {
                    State::Trailers(seen + i + 1)
                };
                Poll::Ready(Ok(()))
            }
            None if seen + buf.len() < MAX_TRAILERS => self.fill_more(io, buf, cx),
            None => Poll::Ready(Err(Invalid::Chunked.into())),
        }
    }

    fn fill_more<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(poll_fill(io, buf, cx)) {
            Ok(0) => Poll::Ready(Err(eof(self.side))),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The largest chunk size taken: what fits a signed 64-bit offset (nginx's limit).
const MAX_CHUNK_SIZE: u64 = i64::MAX as u64;

/// Parses a chunk-size line (RFC 9112 §7.1) at the front of `buf`: hex digits (at
/// most [`MAX_CHUNK_SIZE`]), optional whitespace, extensions after `;` holding no
/// control byte but HTAB, then CRLF. A bare LF or CR anywhere in the line is
/// refused: another parser may end the line there and read the rest as data.
/// `Ok(None)`: the line is not complete yet. The extensions are not interpreted.
/// A line longer than [`MAX_CHUNK_LINE`] (CRLF included) is refused however it
/// arrives: whole in one read or a few bytes at a time (found by fuzzing).
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Invalid> {
    // A line that does not end within the first `MAX_CHUNK_LINE` bytes never will.
    let buf = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let full = buf.len() == MAX_CHUNK_LINE;
    match chunk_size_line(buf)? {
        None if full => Err(Invalid::Chunked),
        line => Ok(line),
    }
}

/// [`parse_chunk_size`] within `buf`, at most the longest line.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Invalid> {
    let mut size = 0u64;
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        if size > MAX_CHUNK_SIZE >> 4 {
            return Err(Invalid::Chunked);
        }
        size = size << 4 | u64::from(d);
        i += 1;
    }
    if i == 0 && !buf.is_empty() {
        return Err(Invalid::Chunked);
    }
    let mut ext = false;
    while let Some(&b) = buf.get(i) {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err(Invalid::Chunked),
                }
            }
            b';' => ext = true,
            b' ' | b'\t' => {}
            // Token and quoted-string bytes (obs-text included), nothing else.
            0x21..=0x7e | 0x80..=0xff if ext => {}
            _ => return Err(Invalid::Chunked),
        }
        i += 1;
    }
    Ok(None)
}

/// Checks one trailer line (up to its LF): a field line (RFC 9112 §7.1.2) — a
/// token, a colon, a value of visible bytes, SP and HTAB — ended by CRLF. A line
/// without a colon, a folded one (starting with whitespace) or a bare LF is bad
/// framing: another parser may end the body elsewhere.
fn trailer_line(line: &[u8]) -> Result<(), Invalid> {
    let line = line.strip_suffix(b"\r").ok_or(Invalid::Chunked)?;
    let colon = memchr::memchr(b':', line).ok_or(Invalid::Chunked)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let text = |&b: &u8| b == b'\t' || (b >= 0x20 && b != 0x7f);
    if name.is_empty() || !name.iter().all(token) || !value.iter().all(text) {
        return Err(Invalid::Chunked);
    }
    Ok(())
}

/// Checks the complete trailer lines at the front of `buf`.
fn check_trailers(mut buf: &[u8]) -> Result<(), Invalid> {
    while let Some(i) = memchr::memchr(b'\n', buf) {
        if &buf[..i] == b"\r" {
            break;
        }
        trailer_line(&buf[..i])?;
        buf = &buf[i + 1..];
    }
    Ok(())
}

/// Checks the chunk framing of the bytes of a body already read with its head
/// (`buf` starts where the body does), without consuming them: the first framing
/// error in them is found before anything is forwarded. Bytes that end mid-line or
/// mid-chunk are fine so far; so are trailer lines not complete yet. Walks the size lines
/// and skips the data: no copy.
pub fn check_chunked(buf: &[u8]) -> Result<(), Invalid> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some((used, size)) = parse_chunk_size(rest)? else {
            return match rest.len() < MAX_CHUNK_LINE {
                true => Ok(()),
                false => Err(Invalid::Chunked),
            };
        };
        if size == 0 {
            return check_trailers(&rest[used..]);
        }
        let end = match usize::try_from(size)
            .ok()
            .and_then(|n| (at + used).checked_add(n))
        {
            Some(end) if end < buf.len() => end,
            _ => return Ok(()),
        };
        let crlf = &buf[end..buf.len().min(end + 2)];
        if crlf != &b"\r\n"[..crlf.len()] {
            return Err(Invalid::Chunked);
        }
        if crlf.len() < 2 {
            return Ok(());
        }
        at = end + 2;
    }
}

/// A body ended before its framing said it would; says whose body it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Truncated {
    /// An upstream response body (nginx's wording).
    #[error("upstream prematurely closed connection while reading upstream")]
    Upstream,
    /// A client request body.
    #[error("client prematurely closed connection while reading client request body")]
    Client,
}

fn eof(side: Truncated) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn chunk_lines() {
        let mut l = ChunkLine::default();
        assert_eq!(l.chunk(0), b"0\r\n");
        assert_eq!(l.chunk(255), b"ff\r\n");
        assert_eq!(l.chunk(4096), b"1000\r\n");
    }

    #[test]
    fn chunk_size_lines() {
        let ok: &[(&[u8], usize, u64)] = &[
            (b"5\r\n", 3, 5),
            (b"00ff\r\nx", 6, 255),
            (b"A;ext=1\r\n", 9, 10),
            (b"5 ; a=\"b c\"\t;d\r\n", 16, 5),
            (b"7fffffffffffffff\r\n", 18, i64::MAX as u64),
            (b"00000000000000000001\r\n", 22, 1),
        ];
        for &(line, used, size) in ok {
            assert_eq!(parse_chunk_size(line), Ok(Some((used, size))), "{line:?}");
            for cut in 0..used {
                assert_eq!(
                    parse_chunk_size(&line[..cut]),
                    Ok(None),
                    "{line:?} at {cut}"
                );
            }
        }
        for bad in BAD_LINES {
            assert_eq!(parse_chunk_size(bad), Err(Invalid::Chunked), "{bad:?}");
        }
    }

    /// Chunk-size lines refused.
    const BAD_LINES: &[&[u8]] = &[
        b"ffffffffffffffff\r\n",
        b"8000000000000000\r\n",
        b"10000000000000000\r\n",
        b"5;a\nb\r\n",
        b"5;a\rb\r\n",
        b"5;\0\r\n",
        b"5;\x7f\r\n",
        b"5\n",
        b"0x5\r\n",
        b" 5\r\n",
        b"-5\r\n",
        b"\r\n",
        b"5 6\r\n",
        b"5\r\r\n",
        b";a\r\n",
    ];

    #[test]
    fn chunked_prefixes() {
        let body = b"5;a=1\r\nhello\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\nGET / HTTP/1.1\r\n";
        for cut in 0..=body.len() {
            assert_eq!(check_chunked(&body[..cut]), Ok(()), "cut {cut}");
        }
        let bodies: [&[u8]; 9] = [
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\nx\r\n",
            b"5\r\nhello\rx",
            // Trailer lines: no colon, a bare LF, folded, no name, a control byte.
            b"0\r\nbad\r\n\r\n",
            b"0\r\nX: v\n\r\n",
            b"0\r\nX: v\r\n w\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nX: a\x01b\r\n\r\n",
        ];
        for &bad in BAD_LINES.iter().chain(&bodies) {
            assert_eq!(check_chunked(bad), Err(Invalid::Chunked), "{bad:?}");
            // Every prefix of a bad body is fine so far or bad; none panics.
            for cut in 0..bad.len() {
                let _ = check_chunked(&bad[..cut]);
            }
        }
        let long = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        assert_eq!(check_chunked(&long), Err(Invalid::Chunked));
    }

    /// An in-memory source that hands out `.1` bytes a read.
    struct Pieces<'a>(&'a [u8], usize);

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// Decodes `body` whole from the buffer (`step` `None`) or from a source `step`
    /// bytes a read: the body's bytes, or `None` when it is refused.
    fn decode_in(body: &[u8], step: Option<usize>) -> Option<Vec<u8>> {
        let (mut buf, mut io) = match step {
            None => (BytesMut::from(body), Pieces(&[], 1)),
            Some(n) => (BytesMut::new(), Pieces(body, n)),
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut d = BodyDecoder::client(BodyFraming::Chunked);
        let mut out = Vec::new();
        loop {
            match d.poll_data(&mut io, &mut buf, &mut cx) {
                Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
                Poll::Ready(Some(Err(_))) => return None,
                Poll::Ready(None) => return Some(out),
                Poll::Pending => panic!("an in-memory source waited"),
            }
        }
    }

    /// Fuzzing found a chunk-size line over the limit taken when it came whole in
    /// one read and refused when it came in pieces; the trailers' limit had the
    /// same gap. Both are refused now however they arrive, and a line of exactly
    /// the limit is taken both ways.
    #[test]
    fn line_limits_hold_however_the_body_arrives() {
        let line = |len: usize| [&vec![b'0'; len - 3][..], b"1\r\n"].concat();
        let at_limit = [line(MAX_CHUNK_LINE), b"x\r\n0\r\n\r\n".to_vec()].concat();
        let over = [line(MAX_CHUNK_LINE + 1), b"x\r\n0\r\n\r\n".to_vec()].concat();
        let trailer = format!("X: {}\r\n", "t".repeat(1000));
        let trailers = format!(
            "0\r\n{}\r\n",
            trailer.repeat(MAX_TRAILERS / trailer.len() + 1)
        );
        for step in [None, Some(1), Some(7), Some(4096)] {
            assert_eq!(decode_in(&at_limit, step), Some(b"x".to_vec()), "{step:?}");
            assert_eq!(decode_in(&over, step), None, "{step:?}");
            assert_eq!(decode_in(trailers.as_bytes(), step), None, "{step:?}");
        }
        assert_eq!(check_chunked(&at_limit), Ok(()));
        assert_eq!(check_chunked(&over), Err(Invalid::Chunked));
        assert_eq!(parse_chunk_size(&over), Err(Invalid::Chunked));
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

    /// A body cut short says whose it was: the upstream's or the client's.
    #[tokio::test]
    async fn truncated_body_names_its_side() {
        for (decoder, says) in [
            (
                BodyDecoder::new(BodyFraming::Length(10)),
                "upstream prematurely closed connection while reading upstream",
            ),
            (
                BodyDecoder::client(BodyFraming::Chunked),
                "client prematurely closed connection while reading client request body",
            ),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(b"3\r\nabc").await.unwrap();
            });
            let mut io = TcpStream::connect(addr).await.unwrap();
            let mut buf = BytesMut::new();
            let mut d = decoder;
            let mut err = None;
            while let Some(r) = std::future::poll_fn(|cx| d.poll_data(&mut io, &mut buf, cx)).await
            {
                if let Err(e) = r {
                    err = Some(e);
                    break;
                }
            }
            writer.await.unwrap();
            let e = err.expect("a truncated body fails");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(e.to_string(), says);
        }
    }
}
