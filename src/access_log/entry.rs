//! What one log line is made of: the [`Entry`] a request collects as it runs.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};
use smallvec::SmallVec;

/// One try on an upstream server, as `$upstream_addr`, `$upstream_status` and
/// `$upstream_response_time` list them.
#[derive(Debug, Clone, Copy)]
pub struct Try {
    /// The server.
    pub addr: SocketAddr,
    /// Its status, or the one fulcrum answered for a failed try (502/504); 0: none.
    pub status: u16,
    /// How long the try took (to the end of the response body for the last one).
    pub time: Duration,
}

/// `$request` apart from its target (which is in [`RequestText`]).
#[derive(Debug, Clone)]
pub struct RequestLine {
    /// Method.
    pub method: Method,
    /// Protocol version.
    pub version: Version,
}

/// A text field of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The target as received (for HTTP/2, the path: nginx shows that).
    Target = 0,
    /// `Host`.
    Host = 1,
    /// `Referer`.
    Referer = 2,
    /// `User-Agent`.
    UserAgent = 3,
}

/// The request's text fields, copied out of the connection's buffers into one
/// allocation. Holding the buffers themselves (refcounted `Bytes`) until the writer
/// thread formats the line would keep hyper from reusing its read buffer.
#[derive(Debug, Clone, Default)]
pub struct RequestText {
    /// One exact-size allocation: an inline array would make every entry a few
    /// hundred bytes to zero and move.
    pub(super) buf: Vec<u8>,
    /// End offset of each field in `buf`; `u32::MAX` marks an absent field.
    ends: [u32; 4],
}

impl RequestText {
    /// Copies the target (given in pieces, concatenated) and three headers.
    pub fn new(
        target: &[&[u8]],
        host: Option<&[u8]>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
    ) -> RequestText {
        let headers = [host, referer, user_agent];
        let target_len = target.iter().map(|p| p.len()).sum::<usize>();
        let len = target_len + headers.iter().flatten().map(|h| h.len()).sum::<usize>();
        let mut buf = Vec::with_capacity(len);
        for p in target {
            buf.extend_from_slice(p);
        }
        let mut ends = [u32::MAX; 4];
        ends[0] = target_len as u32;
        for (i, h) in headers.iter().enumerate() {
            if let Some(h) = h {
                buf.extend_from_slice(h);
                ends[i + 1] = buf.len() as u32;
            }
        }
        RequestText { buf, ends }
    }

    /// A field's bytes, `None` if absent.
    pub fn get(&self, f: Field) -> Option<&[u8]> {
        let i = f as usize;
        let end = self.ends[i];
        if end == u32::MAX {
            return None;
        }
        // It starts where the closest present field before it ends.
        let start = self.ends[..i]
            .iter()
            .rev()
            .find(|&&e| e != u32::MAX)
            .copied()
            .unwrap_or(0);
        self.buf.get(start as usize..end as usize)
    }
}

/// What one log line says, collected by the request and formatted by the writer.
#[derive(Debug)]
pub struct Entry {
    /// When the response ended; `None`: now.
    pub time: Option<SystemTime>,
    /// Client address.
    pub remote: SocketAddr,
    /// The Basic-auth user name, if the client sent one.
    pub remote_user: Option<String>,
    /// The request line; `None` when the head could not be parsed (logged as "-").
    pub request: Option<RequestLine>,
    /// Target, `Host`, `Referer`, `User-Agent`.
    pub text: RequestText,
    /// Status sent (499: the client went away before the response head).
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    /// From reading the request head to the end of the response.
    pub request_time: Duration,
    /// Upstream tries, in order (two fit without an allocation).
    pub tries: SmallVec<[Try; 2]>,
    /// `$ssl_protocol` ("TLSv1.3"); "" on cleartext (json: `null`).
    pub ssl_protocol: &'static str,
    /// `$ssl_server_name`, the SNI name; "" without one (json: `null`).
    pub ssl_server_name: String,
}

/// `$remote_user`: the user name of a Basic `Authorization` header.
pub fn basic_user(v: &HeaderValue) -> Option<String> {
    use base64::Engine as _;
    let s = v.as_bytes();
    if !s.get(..6)?.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(s[6..].trim_ascii())
        .ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    Some(String::from_utf8_lossy(user).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_text_fields_with_gaps() {
        let t = RequestText::new(&[b"http://", b"h", b"/p"], None, Some(b"r"), None);
        assert_eq!(t.get(Field::Target), Some(&b"http://h/p"[..]));
        assert_eq!(t.get(Field::Host), None);
        assert_eq!(t.get(Field::Referer), Some(&b"r"[..]));
        assert_eq!(t.get(Field::UserAgent), None);
        let empty = RequestText::new(&[b"/"], Some(b""), None, Some(b"ua"));
        assert_eq!(empty.get(Field::Host), Some(&b""[..]));
        assert_eq!(empty.get(Field::UserAgent), Some(&b"ua"[..]));
    }

    #[test]
    fn basic_auth_user() {
        // "alice:secret"
        let v = HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0");
        assert_eq!(basic_user(&v).as_deref(), Some("alice"));
        assert_eq!(basic_user(&HeaderValue::from_static("Bearer x")), None);
    }
}
