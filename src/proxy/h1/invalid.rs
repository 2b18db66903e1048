//! What can be wrong with an upstream's answer: one error type, whose kinds the
//! caller turns into nginx's 502 and its log messages.

use std::io;

/// The upstream's answer broke HTTP/1.1 (nginx: "upstream sent invalid header").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Unparsable status line or header.
    #[error("invalid response head")]
    Head,
    /// Head longer than [`MAX_HEADER_BYTES`](crate::proxy::MAX_HEADER_BYTES) or more than
    /// 128 headers.
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
