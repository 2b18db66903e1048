//! The response head parser: `httparse` in the request's own task, the status and
//! framing read, hop-by-hop lines dropped, the rest kept as offsets into the head.

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode, Version};

use super::body_framing::{BodyFraming, FramingHeaders};
use super::headers::{connection_tokens, Hop, PassHeaders, Span};
use crate::proxy::error::Invalid;
use crate::proxy::MAX_HEADER_BYTES;

/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;

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
        let Some(len) = head_len(parsed, buf.len())? else {
            return Ok(None);
        };
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
        // Inline and uninitialised up to 32: no 2 KiB array zeroed per response.
        let mut spans = smallvec::SmallVec::<[Span; 32]>::new();
        record_spans(&mut spans, resp.headers, buf.as_ptr() as usize);
        let head = buf.split_to(len).freeze();
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !upgrade {
            return Err(Invalid::UnexpectedUpgrade);
        }
        let mut f = FramingHeaders::default();
        let mut lines = pass_lines(&head, &spans, switching, &mut f)?;
        let framing = f.framing(status, method);
        if matches!(framing, BodyFraming::Chunked | BodyFraming::Close) && f.length.is_some() {
            // A length next to Transfer-Encoding is wrong by definition and must not
            // reach the client (RFC 9112 §6.3).
            lines.retain(|&(ns, ne, ..)| {
                Hop::of(&head[ns as usize..ne as usize]) != Hop::ContentLength
            });
        }
        let keep_alive = keep_alive(framing, &f, version);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers: PassHeaders { head, lines },
            framing,
            keep_alive,
        }));
    }
}

/// The length of a complete head from what httparse said of `buffered` bytes;
/// `None` while it is incomplete and may still fit.
#[inline]
fn head_len(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    buffered: usize,
) -> Result<Option<usize>, Invalid> {
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buffered > MAX_HEADER_BYTES {
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
    Ok(Some(len))
}

/// The offsets of each parsed header line into the head that starts at `base`, so
/// that the values then share the head's one allocation. Filled in place:
/// returning the `SmallVec` could move its 512-byte array.
#[inline]
fn record_spans(
    spans: &mut smallvec::SmallVec<[Span; 32]>,
    headers: &[httparse::Header<'_>],
    base: usize,
) {
    for h in headers {
        let ns = h.name.as_ptr() as usize - base;
        let vs = h.value.as_ptr() as usize - base;
        spans.push((
            ns as u32,
            (ns + h.name.len()) as u32,
            vs as u32,
            (vs + h.value.len()) as u32,
        ));
    }
}

/// The header lines to pass on, reading the framing ones into `f` on the way.
#[inline]
fn pass_lines(
    head: &[u8],
    spans: &[Span],
    switching: bool,
    f: &mut FramingHeaders,
) -> Result<Vec<Span>, Invalid> {
    let mut lines = Vec::with_capacity(spans.len());
    // `Connection` values, whose other tokens name more hop-by-hop headers.
    let mut listing = smallvec::SmallVec::<[Span; 2]>::new();
    for &span in spans {
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
    Ok(lines)
}

/// Whether the connection may be reused after this response: its body must end
/// where it is known to, and neither side asked to close.
#[inline]
fn keep_alive(framing: BodyFraming, f: &FramingHeaders, version: Version) -> bool {
    let framing_reusable = match framing {
        BodyFraming::Close => false,
        BodyFraming::Chunked => f.length.is_none(),
        BodyFraming::Empty | BodyFraming::Length(_) => true,
    };
    framing_reusable && !f.close && (version == Version::HTTP_11 || f.keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<ResponseHead>, Invalid> {
        parse_head(&mut BytesMut::from(s), &Method::GET, true)
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
}
