//! Request-smuggling guard for HTTP/1 on listeners that hyper serves (those with
//! `http2 = true`, which sniff for h2c); fulcrum's own HTTP/1 server
//! ([`super::server`]) sees both headers itself and sets the same flag.
//!
//! hyper follows RFC 9112 §6.1 for a request carrying both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the body as chunked and closes
//! the connection afterwards — and hides that the length was there. nginx, Envoy
//! and SPEC §6 answer 400 and forward nothing, so the stream is watched on its way
//! into hyper: a small parser follows message boundaries (heads, then bodies by
//! their framing) and flags a head that carries both headers. The request
//! handler checks the flag. Parsing stops (flag untouched) on anything in a head it
//! does not understand; hyper rejects such input itself.
//!
//! The same parser flags what hyper would let through or hide: a second
//! `Content-Length` line (hyper keeps one of equal ones), and chunk framing that
//! breaks (hyper takes a NUL in a chunk extension and any trailer line, and waits
//! forever on a chunk size of 2^64-1). Chunks are followed as strictly as
//! `h1::body_coding` reads them (`framing/chunks.rs`). A break that arrives in the same read
//! as its head is flagged (the request is refused before it goes up); a later one
//! fails the read, so hyper's body read fails and the upstream request is aborted.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// The longest head allowed (SPEC §6: a header block over 64 KiB gets 431). hyper's
// own buffer limit only catches a head that is still incomplete when the buffer
// fills, which depends on how reads happen to split; the count here is exact.
use super::MAX_HEADER_BYTES;

mod chunks;
use chunks::{chunk_byte, Step};

/// What [`HeadScan`] saw in a client's stream.
#[derive(Debug, Default)]
pub struct HeadGuard {
    /// A head carried both `Content-Length` and `Transfer-Encoding`.
    pub conflict: AtomicBool,
    /// A head went over 64 KiB.
    pub too_large: AtomicBool,
    /// The chunk framing of a body that came in the same read as its head broke:
    /// the request is refused before anything goes up.
    pub bad_body: AtomicBool,
    /// A head had two `Content-Length` lines (hyper keeps one of equal ones and
    /// hides the other; nginx and the own server answer 400).
    pub two_lengths: AtomicBool,
}

/// The outcome of feeding bytes to [`HeadScan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong seen.
    Fine,
    /// A head with both `Content-Length` and `Transfer-Encoding` went by.
    Conflict,
    /// A head went over [`MAX_HEADER_BYTES`] (64 KiB).
    TooLarge,
    /// A head has a second `Content-Length` line.
    TwoLengths,
    /// A chunked body's framing broke (RFC 9112 §7.1, as strictly as
    /// `h1::body_coding` reads it on HTTP/1 listeners). `with_head`: its head ended
    /// in the same feed, so the request has not been handed on yet.
    BadBody { with_head: bool },
}

#[derive(Debug)]
enum State {
    /// Reading a head: bytes so far, framing headers seen so far.
    Head {
        total: usize,
        cl: Option<u64>,
        te: bool,
    },
    /// Skipping a fixed-length body.
    Body(u64),
    /// Chunked body: reading a size line (`len` bytes so far; past the digits;
    /// in an extension; after its CR).
    ChunkSize {
        size: u64,
        len: usize,
        digits_done: bool,
        ext: bool,
        cr: bool,
    },
    /// Chunked body: skipping chunk data.
    ChunkData(u64),
    /// Chunked body: the CRLF after data.
    ChunkEnd(u8),
    /// Trailers after the last chunk: a line of `len` bytes so far (past its colon,
    /// after its CR), `total` bytes of trailers so far.
    Trailer {
        len: usize,
        colon: bool,
        cr: bool,
        total: usize,
    },
    /// Not tracking any more.
    Off,
}

const NEW_HEAD: State = State::Head {
    total: 0,
    cl: None,
    te: false,
};

const CHUNK_SIZE: State = State::ChunkSize {
    size: 0,
    len: 0,
    digits_done: false,
    ext: false,
    cr: false,
};

const TRAILERS: State = State::Trailer {
    len: 0,
    colon: false,
    cr: false,
    total: 0,
};

/// Follows HTTP/1 message boundaries on the bytes read from a client.
#[derive(Debug)]
pub struct HeadScan {
    state: State,
    /// The next head line is a request line.
    first: bool,
    /// A head line split across reads (complete lines are inspected in place).
    partial: Vec<u8>,
    /// A head ended in the current feed.
    head_now: bool,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            state: NEW_HEAD,
            first: true,
            partial: Vec::new(),
            head_now: false,
        }
    }
}

/// Whether a head line is a `Content-Length` one.
fn is_length(line: &[u8]) -> bool {
    line.get(..15)
        .is_some_and(|n| n.eq_ignore_ascii_case(b"content-length:"))
}

fn head_line(line: &[u8], cl: &mut Option<u64>, te: &mut bool) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return true;
    };
    let name = &line[..colon];
    let value = line[colon + 1..].trim_ascii();
    if name.eq_ignore_ascii_case(b"content-length") {
        match std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(n) => *cl = Some(n),
            None => return false,
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        *te = true;
    }
    true
}

impl HeadScan {
    /// Feeds bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) -> Verdict {
        self.head_now = false;
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return Verdict::Fine,
                State::Head { total, cl, te } => {
                    let line = match take_line(&mut self.partial, total, data) {
                        Line::Complete { line, rest } => {
                            data = rest;
                            line
                        }
                        Line::Partial => return Verdict::Fine,
                        Line::TooLarge => {
                            self.state = State::Off;
                            return Verdict::TooLarge;
                        }
                    };
                    let next = after_line(&mut self.first, line, cl, te);
                    self.partial.clear();
                    match next {
                        AfterLine::Same => {}
                        AfterLine::To(state) => {
                            self.head_now = true;
                            self.state = state;
                        }
                        // Nothing after such a head can be trusted to be framed.
                        AfterLine::Conflict => {
                            self.state = State::Off;
                            return Verdict::Conflict;
                        }
                        AfterLine::TwoLengths => {
                            self.state = State::Off;
                            return Verdict::TwoLengths;
                        }
                    }
                }
                State::Body(left) => {
                    if skip(left, &mut data) {
                        self.state = NEW_HEAD;
                    }
                }
                State::ChunkSize { .. } | State::ChunkEnd(_) | State::Trailer { .. } => {
                    let b = data[0];
                    data = &data[1..];
                    match chunk_byte(&mut self.state, b) {
                        Step::Same => {}
                        Step::To(state) => self.state = state,
                        Step::Break => {
                            self.state = State::Off;
                            return Verdict::BadBody {
                                with_head: self.head_now,
                            };
                        }
                    }
                }
                State::ChunkData(left) => {
                    if skip(left, &mut data) {
                        self.state = State::ChunkEnd(0);
                    }
                }
            }
        }
        Verdict::Fine
    }
}

/// Where [`take_line`] left a head line.
enum Line<'p, 'd> {
    /// A whole line, without its line end, and the bytes after it.
    Complete { line: &'p [u8], rest: &'d [u8] },
    /// No line end yet: the bytes wait in the partial line.
    Partial,
    /// The head went over [`MAX_HEADER_BYTES`].
    TooLarge,
}

/// The next head line of `data`, joined to the `partial` one left by earlier reads;
/// counts its bytes into the head's `total`.
#[inline]
fn take_line<'p, 'd: 'p>(
    partial: &'p mut Vec<u8>,
    total: &mut usize,
    data: &'d [u8],
) -> Line<'p, 'd> {
    let Some(nl) = memchr::memchr(b'\n', data) else {
        partial.extend_from_slice(data);
        *total += data.len();
        if *total > MAX_HEADER_BYTES {
            return Line::TooLarge;
        }
        return Line::Partial;
    };
    *total += nl + 1;
    if *total > MAX_HEADER_BYTES {
        return Line::TooLarge;
    }
    let mut line: &[u8] = if partial.is_empty() {
        &data[..nl]
    } else {
        partial.extend_from_slice(&data[..nl]);
        partial
    };
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    Line::Complete {
        line,
        rest: &data[nl + 1..],
    }
}

/// What a complete head line does to the scan.
enum AfterLine {
    /// Still in the head.
    Same,
    /// Moves to another state: the body, the next head, or off.
    To(State),
    /// The head ended with both `Content-Length` and `Transfer-Encoding`.
    Conflict,
    /// A second `Content-Length` line.
    TwoLengths,
}

/// Reads one head line (`first`: it is the request line) into the framing headers
/// seen so far.
#[inline]
fn after_line(first: &mut bool, line: &[u8], cl: &mut Option<u64>, te: &mut bool) -> AfterLine {
    if *first {
        *first = false;
        if line.starts_with(b"PRI * HTTP/2.0") {
            return AfterLine::To(State::Off);
        }
    } else if line.is_empty() {
        // End of head.
        if cl.is_some() && *te {
            return AfterLine::Conflict;
        }
        *first = true;
        return AfterLine::To(if *te {
            CHUNK_SIZE
        } else {
            match *cl {
                Some(n) if n > 0 => State::Body(n),
                _ => NEW_HEAD,
            }
        });
    } else {
        let had_length = cl.is_some();
        if !head_line(line, cl, te) {
            return AfterLine::To(State::Off);
        }
        if had_length && cl.is_some() && is_length(line) {
            return AfterLine::TwoLengths;
        }
    }
    AfterLine::Same
}

/// Skips up to `left` bytes of `data`; whether that was all of them.
#[inline]
fn skip(left: &mut u64, data: &mut &[u8]) -> bool {
    let n = (*left).min(data.len() as u64);
    *left -= n;
    *data = &data[n as usize..];
    *left == 0
}

/// A client stream whose incoming bytes go through [`HeadScan`]; what it finds is
/// set in the [`HeadGuard`] the request handler reads.
pub struct Guarded<S> {
    inner: S,
    scan: HeadScan,
    guard: Arc<HeadGuard>,
}

impl<S> Guarded<S> {
    /// Wraps `inner`, reporting through `guard`.
    pub fn new(inner: S, guard: Arc<HeadGuard>) -> Self {
        Guarded {
            inner,
            scan: HeadScan::default(),
            guard,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            match this.scan.feed(&buf.filled()[before..]) {
                Verdict::Fine => {}
                Verdict::Conflict => this.guard.conflict.store(true, Ordering::Relaxed),
                Verdict::TooLarge => this.guard.too_large.store(true, Ordering::Relaxed),
                Verdict::TwoLengths => this.guard.two_lengths.store(true, Ordering::Relaxed),
                Verdict::BadBody { with_head: true } => {
                    this.guard.bad_body.store(true, Ordering::Relaxed)
                }
                // The request is being served: its body read fails, which aborts
                // the upstream request (its connection closes, never reused).
                Verdict::BadBody { with_head: false } => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "invalid chunked body",
                    )))
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> bool {
        let mut f = HeadScan::default();
        chunks.iter().any(|c| f.feed(c) == Verdict::Conflict)
    }

    #[test]
    fn plain_requests_pass() {
        assert!(!run(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        ]));
        assert!(!run(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\n\r\n"
        ]));
    }

    #[test]
    fn conflict_in_first_and_later_requests() {
        assert!(run(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // After a chunked body whose data mentions both headers, the next head is the one checked.
        let body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            24\r\nContent-Length: 1\r\nTransfer-Enc: x\r\n\r\n0\r\n\r\n";
        assert!(!run(&[body]));
        assert!(run(&[
            body,
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"
        ]));
    }

    #[test]
    fn split_reads() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunks: Vec<&[u8]> = req.chunks(7).collect();
        assert!(run(&chunks));
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let chunks: Vec<&[u8]> = ok.chunks(5).collect();
        assert!(!run(&chunks));
    }

    #[test]
    fn head_over_64k_is_too_large_however_reads_split() {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..70 {
            head.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        for step in [1, 7, 4096, head.len()] {
            let mut f = HeadScan::default();
            let verdicts: Vec<Verdict> = head.chunks(step).map(|c| f.feed(c)).collect();
            assert!(verdicts.contains(&Verdict::TooLarge), "step {step}");
        }
        // Exactly 64 KiB is still fine.
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        let pad = MAX_HEADER_BYTES - head.len() - "X: \r\n\r\n".len();
        head.extend_from_slice(format!("X: {}\r\n\r\n", "v".repeat(pad)).as_bytes());
        assert_eq!(head.len(), MAX_HEADER_BYTES);
        assert_eq!(HeadScan::default().feed(&head), Verdict::Fine);
    }

    fn verdicts(chunks: &[&[u8]]) -> Vec<Verdict> {
        let mut f = HeadScan::default();
        chunks.iter().map(|c| f.feed(c)).collect()
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn chunk_framing_is_strict() {
        let good: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b c\"\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
            b"005 ;x\r\nhello\r\n000\r\n\r\n",
        ];
        for body in good {
            let all = [CHUNKED, body, b"GET / HTTP/1.1\r\n\r\n"].concat();
            for step in [1, 3, all.len()] {
                let v = verdicts(&all.chunks(step).collect::<Vec<_>>());
                assert!(
                    v.iter().all(|&v| v == Verdict::Fine),
                    "{body:?} by {step}: {v:?}"
                );
            }
        }
        let bad: &[&[u8]] = &[
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;\0\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"+5\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nbad\r\n\r\n",
            b"0\r\nX: v\n\r\n",
            b"0\r\nX: v\r\n w\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
        ];
        for body in bad {
            // With its head: refused before the request is handed on.
            let v = verdicts(&[&[CHUNKED, body].concat()]);
            assert_eq!(v, [Verdict::BadBody { with_head: true }], "{body:?}");
            // After it: the body read fails.
            let v = verdicts(&[CHUNKED, body]);
            assert_eq!(v[1], Verdict::BadBody { with_head: false }, "{body:?}");
        }
    }

    #[test]
    fn a_second_content_length_line_is_flagged() {
        let v =
            verdicts(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello"]);
        assert_eq!(v, [Verdict::TwoLengths]);
        assert_eq!(
            verdicts(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"]),
            [Verdict::Fine]
        );
    }

    #[test]
    fn h2_preface_stops_tracking() {
        assert!(!run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]));
    }
}
