//! Why a proxied request failed, and the one place that maps that to a status.

use http::StatusCode;

use crate::metrics::Reason;

/// Boxed error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of one upstream attempt, classified as nginx's `proxy_next_upstream` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// Connect refused/failed, or the connection broke before a response header.
    Connect,
    /// Connection broke after the request started going out.
    Reset,
    /// connect or read timeout.
    Timeout,
    /// The upstream sent an invalid response header.
    InvalidHeader,
}

impl AttemptError {
    /// Status the client gets when no retry follows (nginx: timeout 504, else 502).
    pub fn status(self) -> StatusCode {
        match self {
            AttemptError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `reason` label of `fulcrum_upstream_failures_total`.
    pub fn reason(self) -> Reason {
        match self {
            AttemptError::Connect => Reason::Connect,
            AttemptError::Reset | AttemptError::InvalidHeader => Reason::Reset,
            AttemptError::Timeout => Reason::Timeout,
        }
    }
}

/// Short plain-text body for a status fulcrum itself answers with.
pub fn body_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400 Bad Request\n",
        404 => "404 Not Found\n",
        413 => "413 Request Entity Too Large\n",
        421 => "421 Misdirected Request\n",
        431 => "431 Request Header Fields Too Large\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Unavailable\n",
        504 => "504 Gateway Timeout\n",
        _ => "error\n",
    }
}
