//! How a message body is delimited (RFC 9112 §6.3), and the headers that say so.

use http::{Method, StatusCode};

use crate::proxy::error::Invalid;

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

/// What the framing headers of a message said (responses here, requests in
/// [`crate::proxy::server`]).
#[derive(Debug, Default)]
pub(crate) struct FramingHeaders {
    /// `Content-Length`, when present and consistent.
    pub length: Option<u64>,
    /// `Transfer-Encoding` present; whether its last coding is chunked (and the
    /// only chunked one).
    pub te: Option<bool>,
    /// A `chunked` coding was seen (in any line).
    chunked_seen: bool,
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

    /// Reads `Transfer-Encoding` (each line in turn): the framing is chunked when
    /// the last coding is `chunked` and no other one is — chunked applied twice
    /// (`chunked, chunked`, or two lines) has no length a recipient can agree on
    /// (RFC 9112 §6.1: a sender must not; nginx refuses it).
    pub fn transfer_encoding(&mut self, v: &[u8]) {
        for coding in v.split(|&b| b == b',') {
            let chunked = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
            self.te = Some(chunked && !self.chunked_seen);
            self.chunked_seen |= chunked;
        }
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
    pub(super) fn framing(&self, status: StatusCode, method: &Method) -> BodyFraming {
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
