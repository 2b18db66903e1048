//! Writing a response: its head (status line, headers, the framing and connection
//! headers this server chooses, a cached `Date`) and its body, gathered so that a
//! small response leaves in one `write`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;

use crate::proxy::error::body_for;
use crate::proxy::exchange::Tracked;
use crate::proxy::h1::{ChunkLine, Hop, PassHeaders};
use crate::proxy::transport::WriteSide;

/// Data up to this size is copied behind the head (one `write` for both); larger
/// pieces are written from where they are.
const COPY_MAX: usize = 4096;
/// Buffered response bytes written out before more are gathered.
pub(super) const FLUSH_AT: usize = 64 * 1024;

/// How writing a response ended.
pub(super) enum Written {
    /// The connection can take the next request.
    KeepAlive,
    /// The connection closes now.
    Close,
    /// The body failed midway: the connection must close without more.
    Broken,
}

/// Writes a response (by reference: moving the parts and the body into this
/// future would copy them).
pub(super) async fn write_response(
    wr: &mut WriteSide,
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
    let sent = sent?;
    wr.flush().await?;
    Ok(match sent {
        false => Written::Broken,
        true if keep_alive => Written::KeepAlive,
        true => Written::Close,
    })
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
pub(super) fn encode_head(
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
pub(super) fn error_head(out: &mut Vec<u8>, status: StatusCode) {
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
    wr: &mut WriteSide,
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
                    wr.flush().await?;
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
async fn write_all_vectored(wr: &mut WriteSide, parts: &[&[u8]]) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
