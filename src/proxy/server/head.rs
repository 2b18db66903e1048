//! Request heads: parsing one off the front of the connection's buffer with
//! `httparse` (the target and header values are slices of the one head buffer), and
//! what its headers say about framing and the connection.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::proxy::error::ProxyError;
use crate::proxy::forward;
use crate::proxy::h1::{check_chunked, BodyFraming, FramingHeaders, NameCache};
use crate::proxy::MAX_HEADER_BYTES;

/// Most header lines in a request head (hyper's limit, which fulcrum had before).
const MAX_HEADERS: usize = 100;

/// A parsed request head and what its headers say about the connection.
pub(super) struct ReqHead {
    pub(super) req: Request<()>,
    pub(super) framing: BodyFraming,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    pub(super) upgrade: bool,
    /// Both `Content-Length` and `Transfer-Encoding`.
    pub(super) conflict: bool,
}

/// Parses a request head off the front of `buf`. `Ok(None)`: more bytes needed;
/// `Err`: the status to answer before closing.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    names: &mut NameCache,
) -> Result<Option<ReqHead>, ProxyError> {
    // Uninitialised slots: httparse fills what it uses.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return Err(ProxyError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeadTooLarge),
        Err(_) => return Err(ProxyError::MalformedHead),
    };
    if len > MAX_HEADER_BYTES {
        return Err(ProxyError::HeadTooLarge);
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = req.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| ProxyError::MalformedHead)?;
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
    let uri = Uri::from_maybe_shared(slice(path)).map_err(|_| ProxyError::MalformedHead)?;
    let mut headers = HeaderMap::with_capacity(n);
    let mut f = Framer::default();
    for (i, &(name, value)) in spans.iter().enumerate() {
        let name = names
            .get(i, &head[name.0 as usize..name.1 as usize])
            .map_err(|_| ProxyError::MalformedHead)?;
        // httparse has already refused the bytes a header value may not hold.
        let value =
            HeaderValue::from_maybe_shared(slice(value)).map_err(|_| ProxyError::MalformedHead)?;
        f.header(&name, &value)?;
        headers.append(name, value);
    }
    // RFC 9112 §6.1: an HTTP/1.0 peer cannot mean chunked; its framing is faulty.
    if version == Version::HTTP_10 && f.f.te.is_some() {
        return Err(ProxyError::TransferEncodingHttp10);
    }
    let framing = f.framing()?;
    // What of a chunked body came with the head is checked before the head goes up.
    if framing == BodyFraming::Chunked {
        check_chunked(buf).map_err(|_| ProxyError::InvalidChunkedBody)?;
    }
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

/// What the fuzz harness (`fuzz/`) checks of a request head [`parse_head`] took:
/// not an API, the entry point exists for the harness only.
#[doc(hidden)]
#[derive(Debug)]
pub struct HeadSummary {
    /// Bytes the head took off the front of the input.
    pub len: usize,
    /// How its body is delimited.
    pub framing: BodyFraming,
    /// Header lines kept.
    pub headers: usize,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// Both `Content-Length` and `Transfer-Encoding`.
    pub conflict: bool,
}

/// [`parse_head`] on a copy of `input`, as the server reads a request head off
/// the front of its buffer: for the fuzz harness.
#[doc(hidden)]
pub fn parse_head_bytes(input: &[u8]) -> Result<Option<HeadSummary>, ProxyError> {
    let mut buf = BytesMut::from(input);
    let Some(h) = parse_head(&mut buf, &mut NameCache::default())? else {
        return Ok(None);
    };
    Ok(Some(HeadSummary {
        len: input.len() - buf.len(),
        framing: h.framing,
        headers: h.req.headers().len(),
        keep_alive: h.keep_alive,
        conflict: h.conflict,
    }))
}

/// What a request's framing and connection headers say.
#[derive(Default)]
struct Framer {
    f: FramingHeaders,
    upgrade: bool,
    expect_continue: bool,
    /// A `Host` line was seen.
    host: bool,
}

impl Framer {
    fn header(&mut self, name: &header::HeaderName, v: &HeaderValue) -> Result<(), ProxyError> {
        if name == header::HOST {
            // RFC 9110 §7.2: one `Host` (nginx: 400); which one routes is ambiguous.
            if self.host {
                return Err(ProxyError::DuplicateHeader("Host"));
            }
            self.host = true;
        } else if name == header::CONTENT_LENGTH {
            // One value only: equal duplicates are refused too (nginx), not merged.
            if self.f.length.is_some() || v.as_bytes().contains(&b',') {
                return Err(ProxyError::DuplicateHeader("Content-Length"));
            }
            self.f
                .content_length(v.as_bytes())
                .map_err(|_| ProxyError::MalformedHead)?;
        } else if name == header::TRANSFER_ENCODING {
            self.f.transfer_encoding(v.as_bytes());
        } else if name == header::CONNECTION {
            // Names it lists stay with the request: `forward` drops them on the way up.
            self.f.connection(v.as_bytes());
        } else if name == header::UPGRADE {
            // Only WebSocket is passed on (`forward::is_upgrade` decides the same).
            self.upgrade = forward::is_websocket(v.as_bytes());
        } else if name == header::EXPECT {
            self.expect_continue = v.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// RFC 9112 §6.3 for requests: chunked if `Transfer-Encoding` ends in it (any
    /// other coding cannot be delimited: 400), else `Content-Length`, else none.
    fn framing(&self) -> Result<BodyFraming, ProxyError> {
        Ok(match (self.f.te, self.f.length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => return Err(ProxyError::MalformedHead),
            (None, Some(0) | None) => BodyFraming::Empty,
            (None, Some(n)) => BodyFraming::Length(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proxy::error::rescue;

    /// The status a refused head is answered with (the one error map's).
    fn status_of(r: Result<Option<ReqHead>, ProxyError>) -> Option<u16> {
        r.err().map(|e| rescue(&e).status.as_u16())
    }

    fn parse(s: &str) -> Result<Option<ReqHead>, ProxyError> {
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
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive\r\n\r\n",
        ] {
            assert_eq!(status_of(parse(bad)), Some(400), "{bad:?}");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status_of(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n"))),
            Some(431)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEADER_BYTES));
        assert_eq!(status_of(parse(&long)), Some(431));
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
}
