//! HTTP/1 targets: the downstream request head parser, the chunked body decoder
//! with `check_chunked`, and the upstream response head parser with the body its
//! framing says follows.
//!
//! Bodies are decoded from an in-memory peer that hands its bytes out a few at a
//! time and is always ready, so one poll of the decoder never waits: the same body
//! split differently must decode to the same bytes and the same verdict.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use fulcrum::proxy::error::rescue;
use fulcrum::proxy::h1::{check_chunked, parse_head, BodyDecoder, BodyFraming, ChunkLine};
use fulcrum::proxy::server::parse_head_bytes;
use fulcrum::proxy::MAX_HEADER_BYTES;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, ReadBuf};

/// Pieces of HTTP/1 for the mutation loop.
pub const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b" HTTP/1.1\r\n",
    b"Host: a\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"0\r\n\r\n",
    b";ext=\"v\"",
    b"7fffffffffffffff",
    b"ffffffffffffffff",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
];

/// An in-memory peer: hands out `step` bytes a read, then end of stream.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// What decoding a body gave.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The body's bytes, as far as it went.
    pub data: Vec<u8>,
    /// `Some(bytes left after the body)` when it ended as its framing says; `None`
    /// when it failed (bad framing, or the peer closed early).
    pub left: Option<usize>,
}

/// Decodes a body framed by `framing`: `buffered` came with the head, `rest` comes
/// from the peer `step` bytes at a time.
pub fn decode(framing: BodyFraming, buffered: &[u8], rest: &[u8], step: usize) -> Decoded {
    let mut cx = Context::from_waker(Waker::noop());
    let mut io = Pieces { data: rest, step };
    let mut buf = BytesMut::from(buffered);
    let mut d = BodyDecoder::client(framing);
    let mut data = Vec::new();
    // Every turn takes at least one byte or ends: more turns than bytes is a loop.
    for _ in 0..=(buffered.len() + rest.len() + 2) * 2 {
        match d.poll_data(&mut io, &mut buf, &mut cx) {
            Poll::Ready(Some(Ok(b))) => data.extend_from_slice(&b),
            Poll::Ready(Some(Err(_))) => return Decoded { data, left: None },
            Poll::Ready(None) => {
                assert!(d.is_done(), "the body ended but the decoder is not done");
                let left = Some(buf.len() + io.data.len());
                return Decoded { data, left };
            }
            Poll::Pending => panic!("the decoder waited on a peer that is always ready"),
        }
    }
    panic!(
        "the decoder neither ends nor fails on {} bytes",
        buffered.len() + rest.len()
    );
}

/// The first byte picks how the body arrives; the rest is a chunked body (and what
/// follows it on the connection).
pub fn chunked(input: &[u8]) {
    let Some((&how, body)) = input.split_first() else {
        return;
    };
    let step = usize::from(how & 0x0f) * 7 + 1;
    let (buffered, rest) = body.split_at(body.len().min(usize::from(how >> 4) * 11));
    let whole = decode(BodyFraming::Chunked, body, &[], 1);
    let split = decode(BodyFraming::Chunked, buffered, rest, step);
    assert_eq!(
        whole,
        split,
        "the same body split at {}, {step} a read",
        buffered.len()
    );
    assert!(
        whole.data.len() <= body.len(),
        "more bytes decoded than read"
    );
    let checked = check_chunked(body);
    if whole.left.is_some() {
        assert_eq!(
            checked,
            Ok(()),
            "the decoder took a body check_chunked refuses"
        );
        // Every prefix of a body the decoder takes is fine so far.
        assert_eq!(
            check_chunked(buffered),
            Ok(()),
            "a good body's prefix refused"
        );
    }
    if let Some(left) = whole.left {
        assert_eq!(
            reencoded(&whole.data, step),
            whole.data,
            "the body re-chunked"
        );
        assert!(left <= body.len());
    }
}

/// `data` written as a chunked body of `size`-byte chunks, then decoded again.
fn reencoded(data: &[u8], size: usize) -> Vec<u8> {
    let mut line = ChunkLine::default();
    let mut wire = Vec::with_capacity(data.len() + data.len() / size * 8 + 8);
    for piece in data.chunks(size) {
        wire.extend_from_slice(line.chunk(piece.len()));
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let again = decode(BodyFraming::Chunked, &wire, &[], 1);
    assert_eq!(
        again.left,
        Some(0),
        "a chunked body fulcrum wrote is refused"
    );
    again.data
}

/// A request head off the front of the input, as the server reads one.
pub fn request_head(input: &[u8]) {
    let parsed = match parse_head_bytes(input) {
        Ok(Some(h)) => h,
        Ok(None) => {
            assert!(
                input.len() <= MAX_HEADER_BYTES,
                "an overlong head waits for more"
            );
            return;
        }
        Err(e) => {
            let r = rescue(&e);
            assert!(r.status.is_client_error(), "{e}: answered {}", r.status);
            assert!(r.close, "{e}: the connection stays open after a bad head");
            return;
        }
    };
    let len = parsed.len;
    assert!(
        len <= input.len() && len <= MAX_HEADER_BYTES,
        "head of {len} bytes"
    );
    assert!(
        input[..len].ends_with(b"\n"),
        "a head ends with its blank line"
    );
    assert!(parsed.headers <= 100);
    let body = &input[len..];
    if parsed.framing == BodyFraming::Chunked {
        assert_eq!(check_chunked(body), Ok(()));
    }
    // Cut inside the head: not yet complete; cut inside the body: the same head.
    let at = |n: usize| usize::from(input.first().copied().unwrap_or(0)) * n / 256;
    let early = parse_head_bytes(&input[..at(len)]);
    assert!(matches!(early, Ok(None)), "a head's prefix: {early:?}");
    let later = parse_head_bytes(&input[..len + at(body.len())]);
    let later = later
        .ok()
        .flatten()
        .map(|h| (h.len, h.framing, h.keep_alive, h.conflict));
    assert_eq!(
        later,
        Some((len, parsed.framing, parsed.keep_alive, parsed.conflict)),
        "the head read with less of its body"
    );
}

/// The first byte picks the request's method (GET or HEAD) and whether it asked to
/// upgrade; the rest is what the upstream answered.
pub fn response(input: &[u8]) {
    let Some((&how, wire)) = input.split_first() else {
        return;
    };
    let method = if how & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let upgrade = how & 2 != 0;
    let mut buf = BytesMut::from(wire);
    let Ok(Some(head)) = parse_head(&mut buf, &method, upgrade) else {
        return;
    };
    assert!(buf.len() < wire.len(), "a head took no bytes");
    let status = head.status;
    assert!(!status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        status != StatusCode::SWITCHING_PROTOCOLS || upgrade,
        "101 not asked for"
    );
    if method == Method::HEAD {
        assert_eq!(head.framing, BodyFraming::Empty, "a body after HEAD");
    }
    let delimited = !matches!(head.framing, BodyFraming::Chunked | BodyFraming::Close);
    for (name, value) in head.headers.iter() {
        assert!(!name.is_empty());
        assert!(
            !value.contains(&b'\n') && !value.contains(&b'\r'),
            "a CR or LF passed"
        );
        let length = name.eq_ignore_ascii_case(b"content-length");
        assert!(
            delimited || !length,
            "Content-Length passed with {:?}",
            head.framing
        );
        assert!(!name.eq_ignore_ascii_case(b"transfer-encoding") || !delimited);
    }
    let step = usize::from(how >> 2) + 1;
    let whole = decode(head.framing, &buf, &[], 1);
    let split = decode(head.framing, &[], &buf, step);
    assert_eq!(whole, split, "the same response body, {step} bytes a read");
    assert!(whole.data.len() <= buf.len(), "more body than bytes");
    if let (BodyFraming::Length(n), Some(_)) = (head.framing, whole.left) {
        assert_eq!(whole.data.len() as u64, n, "a whole body of another length");
    }
}
