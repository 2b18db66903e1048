//! Why a proxied request failed, and the one place that maps that to a status:
//! every way fulcrum answers a request itself instead of the upstream is a
//! [`ProxyError`], and [`rescue`] says what the edge does with it.

use std::io;

use http::StatusCode;

use crate::metrics::Reason;
use crate::route::server_name::InvalidHost;
use crate::route::uri::BadPath;

/// Boxed error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream's answer broke HTTP/1.1 (nginx: "upstream sent invalid header").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Unparsable status line or header.
    #[error("invalid response head")]
    Head,
    /// Head longer than [`super::MAX_HEADER_BYTES`] or more than 128 headers.
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

/// The client's body went over `client_max_body_size` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("client intended to send too large body")]
pub struct BodyTooLarge;

/// The client's body stalled: no data for `client_body_timeout` while the upstream
/// side waited for it (nginx: between two successive reads).
#[derive(Debug, thiserror::Error)]
#[error("client timed out while sending the request body")]
pub struct ClientBodyTimeout;

/// The upstream stopped sending for longer than `read_timeout` mid-body.
#[derive(Debug, thiserror::Error)]
#[error("upstream timed out while reading the response body")]
pub struct BodyReadTimeout;

/// Why a connection to an upstream server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `connect_timeout` passed.
    #[error("upstream timed out while connecting")]
    Timeout,
    /// Refused, unreachable, reset.
    #[error("connect() failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake failed (an untrusted certificate, a name mismatch, no
    /// shared version, no `h2` by ALPN for an HTTP/2 pool).
    #[error("upstream SSL handshake failed: {0}")]
    Tls(#[source] io::Error),
}

/// Why an exchange on an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection was found closed before any of the answer arrived; on a
    /// reused connection that is the keep-alive race, not a server failure.
    #[error("upstream closed the connection before answering")]
    Closed {
        /// Whether the request body was (partly) consumed.
        body_sent: bool,
    },
    /// Reading or writing failed.
    #[error("upstream connection failed: {0}")]
    Io(#[source] io::Error),
    /// `read_timeout` passed before the response head arrived.
    #[error("upstream timed out while reading response header")]
    ReadTimeout,
    /// `send_timeout` passed on a stalled write.
    #[error("upstream timed out while sending")]
    SendTimeout,
    /// The answer was not valid HTTP/1.1.
    #[error("upstream sent an invalid response: {0}")]
    Invalid(#[from] Invalid),
    /// The client's body broke `client_max_body_size`.
    #[error("{0}")]
    TooLarge(#[from] BodyTooLarge),
    /// The client's body stalled past `client_body_timeout`.
    #[error("{0}")]
    BodyTimeout(#[from] ClientBodyTimeout),
    /// The client's body could not be read.
    #[error("client body read failed")]
    Client(#[source] BoxError),
}

/// How an upstream attempt failed, as nginx's `proxy_next_upstream` classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connect refused/failed, or the connection broke before a response header.
    Connect,
    /// Connection broke after the request started going out.
    Reset,
    /// connect or read timeout.
    Timeout,
    /// The upstream sent an invalid response header.
    InvalidHeader,
}

/// A failure of one upstream attempt, with its cause. Only the upstream's side of
/// an [`ExchangeError`] becomes one ([`ProxyError::from`] sorts the client's out).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The exchange on the connection failed.
    #[error(transparent)]
    Exchange(ExchangeError),
}

impl AttemptError {
    /// The `proxy_next_upstream` class of the failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            AttemptError::Connect(ConnectError::Timeout) => FailureKind::Timeout,
            AttemptError::Connect(ConnectError::Io(_) | ConnectError::Tls(_)) => {
                FailureKind::Connect
            }
            AttemptError::Exchange(e) => match e {
                ExchangeError::SendTimeout | ExchangeError::ReadTimeout => FailureKind::Timeout,
                ExchangeError::Invalid(_) => FailureKind::InvalidHeader,
                // The client's failures are never attempt errors (see `ProxyError::from`).
                ExchangeError::Closed { .. }
                | ExchangeError::Io(_)
                | ExchangeError::TooLarge(_)
                | ExchangeError::BodyTimeout(_)
                | ExchangeError::Client(_) => FailureKind::Reset,
            },
        }
    }

    /// Whether the request (partly) left, which keeps a non-idempotent one from
    /// being retried.
    pub fn sent(&self) -> bool {
        match self {
            AttemptError::Connect(_) => false,
            AttemptError::Exchange(ExchangeError::Closed { body_sent }) => *body_sent,
            AttemptError::Exchange(_) => true,
        }
    }
}

/// Every way fulcrum answers a request itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The HTTP/1 request head does not parse (fulcrum's server refuses it before
    /// any routing).
    #[error("client sent invalid request")]
    MalformedHead,
    /// HTTP/1 request with both `Transfer-Encoding` and `Content-Length`.
    #[error("request has both Transfer-Encoding and Content-Length")]
    ConflictingFraming,
    /// HTTP/1.0 request with `Transfer-Encoding` (RFC 9112 §6.1: faulty framing).
    #[error("client sent \"Transfer-Encoding\" header in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// The chunked body bytes that came with the head break the chunk framing
    /// (found before anything is forwarded).
    #[error("client sent invalid chunked body")]
    InvalidChunkedBody,
    /// A header a request may carry once (`Host`, `Content-Length`) came twice, or
    /// with a list of values (`Content-Length: 5, 5`), which a backend may read differently (nginx: 400).
    #[error("client sent duplicate header line: \"{0}\"")]
    DuplicateHeader(&'static str),
    /// The request head is over [`super::MAX_HEADER_BYTES`].
    #[error("request header too large")]
    HeadTooLarge,
    /// The `Host` header is not visible ASCII.
    #[error("client sent invalid host header")]
    HostNotText(#[source] http::header::ToStrError),
    /// HTTP/1.1 request without a `Host`.
    #[error("client sent HTTP/1.1 request without \"Host\" header")]
    MissingHost,
    /// The `Host` is not a valid host name.
    #[error("client sent invalid host header")]
    InvalidHost(#[source] InvalidHost),
    /// The listener was removed by a reload while this connection stayed open.
    #[error("listener removed by a reload")]
    ListenerRemoved,
    /// The request path cannot be normalized.
    #[error("client sent invalid request path")]
    BadPath(#[source] BadPath),
    /// The `proxy_pass` target built for the request is not a valid URI.
    #[error("invalid upstream request target")]
    BadTarget(#[source] http::uri::InvalidUri),
    /// No location matches the path.
    #[error("no location matches the request path")]
    NoLocation,
    /// The declared `Content-Length` is over `client_max_body_size`.
    #[error("client intended to send too large body: {declared} bytes")]
    DeclaredTooLarge {
        /// The declared length.
        declared: u64,
    },
    /// The streamed body went over `client_max_body_size`.
    #[error("client request body too large")]
    BodyTooLarge(#[source] BodyTooLarge),
    /// The client's body stalled past `client_body_timeout`.
    #[error("client request body timed out")]
    BodyTimeout(#[source] ClientBodyTimeout),
    /// The client's body could not be read.
    #[error("client request body read failed")]
    ClientBody(#[source] BoxError),
    /// Every server of the upstream is down or busy.
    #[error("no live upstreams while connecting to upstream \"{upstream}\"")]
    NoLiveUpstreams {
        /// The upstream's name.
        upstream: String,
    },
    /// The last upstream attempt failed and no retry follows.
    #[error("upstream attempt failed")]
    Upstream(#[source] AttemptError),
}

impl From<ExchangeError> for ProxyError {
    /// The client's failures are the client's; the rest are the attempt's.
    fn from(e: ExchangeError) -> ProxyError {
        match e {
            ExchangeError::TooLarge(b) => ProxyError::BodyTooLarge(b),
            ExchangeError::BodyTimeout(t) => ProxyError::BodyTimeout(t),
            ExchangeError::Client(e) => ProxyError::ClientBody(e),
            e => ProxyError::Upstream(AttemptError::Exchange(e)),
        }
    }
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> ProxyError {
        ProxyError::Upstream(AttemptError::Connect(e))
    }
}

/// The level of a log line the edge writes for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `error`.
    Error,
    /// `warn`.
    Warn,
}

/// Everything the edge does with a [`ProxyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rescue {
    /// The status answered.
    pub status: StatusCode,
    /// Answer with `Connection: close` and close the connection: the rest of the
    /// stream cannot be trusted.
    pub close: bool,
    /// The `reason` label of `fulcrum_upstream_failures_total`, for an upstream
    /// failure.
    pub reason: Option<Reason>,
    /// The log line written where the failure happens, if any.
    pub log: Option<(Level, &'static str)>,
    /// The `grpc-status` a gRPC request gets instead (in an HTTP 200 trailers-only
    /// answer): 14 UNAVAILABLE or 4 DEADLINE_EXCEEDED for upstream failures (SPEC
    /// §6), else Envoy's map of the HTTP status.
    pub grpc_status: u8,
}

/// gRPC's UNAVAILABLE: the call may be retried (client libraries do).
pub const GRPC_UNAVAILABLE: u8 = 14;
/// gRPC's DEADLINE_EXCEEDED.
pub const GRPC_DEADLINE_EXCEEDED: u8 = 4;

/// The gRPC status for an HTTP status fulcrum answers itself, as Envoy maps its
/// local replies (`Grpc::Utility::httpToGrpcStatus`).
fn grpc_for_http(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13, // INTERNAL
        401 => 16, // UNAUTHENTICATED
        403 => 7,  // PERMISSION_DENIED
        404 => 12, // UNIMPLEMENTED
        // Not in Envoy's map: what a gRPC server answers for a message over its
        // limit.
        413 => 8, // RESOURCE_EXHAUSTED
        429 | 502 | 503 | 504 => GRPC_UNAVAILABLE,
        _ => 2, // UNKNOWN
    }
}

/// The `grpc-message` for a failure: the error's text with the attempt's cause
/// ("upstream attempt failed: connect() failed: Connection refused (os error 111)").
pub fn grpc_message(e: &ProxyError) -> String {
    match e {
        ProxyError::Upstream(a) => format!("{e}: {a}"),
        e => e.to_string(),
    }
}

/// The one map from an error to its status, connection close, metric and log text.
pub fn rescue(e: &ProxyError) -> Rescue {
    let (status, close) = match e {
        ProxyError::MalformedHead
        | ProxyError::ConflictingFraming
        | ProxyError::TransferEncodingHttp10
        | ProxyError::DuplicateHeader(_)
        | ProxyError::InvalidChunkedBody
        | ProxyError::HostNotText(_)
        | ProxyError::MissingHost
        | ProxyError::InvalidHost(_)
        | ProxyError::BadPath(_)
        | ProxyError::BadTarget(_)
        | ProxyError::ClientBody(_) => (StatusCode::BAD_REQUEST, true),
        ProxyError::HeadTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, true),
        ProxyError::ListenerRemoved => (StatusCode::MISDIRECTED_REQUEST, true),
        // The rest of the body may still come: the stream cannot carry on.
        ProxyError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, true),
        ProxyError::NoLocation => (StatusCode::NOT_FOUND, false),
        ProxyError::DeclaredTooLarge { .. } | ProxyError::BodyTooLarge(_) => {
            (StatusCode::PAYLOAD_TOO_LARGE, true)
        }
        ProxyError::NoLiveUpstreams { .. } => (StatusCode::BAD_GATEWAY, false),
        // nginx: timeout 504, else 502.
        ProxyError::Upstream(a) => match a.kind() {
            FailureKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, false),
            _ => (StatusCode::BAD_GATEWAY, false),
        },
    };
    let (reason, log) = match e {
        ProxyError::NoLiveUpstreams { .. } => (
            None,
            Some((
                Level::Error,
                "no live upstreams while connecting to upstream",
            )),
        ),
        ProxyError::Upstream(a) => (
            Some(match a.kind() {
                FailureKind::Connect => Reason::Connect,
                FailureKind::Reset | FailureKind::InvalidHeader => Reason::Reset,
                FailureKind::Timeout => Reason::Timeout,
            }),
            Some((Level::Warn, "upstream attempt failed")),
        ),
        _ => (None, None),
    };
    let grpc_status = match e {
        ProxyError::NoLiveUpstreams { .. } => GRPC_UNAVAILABLE,
        ProxyError::Upstream(a) if a.kind() == FailureKind::Timeout => GRPC_DEADLINE_EXCEEDED,
        ProxyError::Upstream(_) => GRPC_UNAVAILABLE,
        _ => grpc_for_http(status),
    };
    Rescue {
        status,
        close,
        reason,
        log,
        grpc_status,
    }
}

/// Short plain-text body for a status fulcrum itself answers with.
pub fn body_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400 Bad Request\n",
        404 => "404 Not Found\n",
        408 => "408 Request Time-out\n",
        413 => "413 Request Entity Too Large\n",
        421 => "421 Misdirected Request\n",
        431 => "431 Request Header Fields Too Large\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Unavailable\n",
        504 => "504 Gateway Timeout\n",
        _ => "error\n",
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn io() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionRefused, "refused")
    }

    /// An error and its status, close, reason and log line.
    type Case = (
        ProxyError,
        u16,
        bool,
        Option<Reason>,
        Option<(Level, &'static str)>,
    );

    fn exchange(e: ExchangeError) -> ProxyError {
        ProxyError::from(e)
    }

    /// The request's own errors: 4xx, closing the connection unless only the
    /// location was not found; no metric reason, no log line.
    #[test]
    fn request_errors_map_to_client_statuses() {
        let not_text = http::HeaderValue::from_bytes(b"\xff")
            .unwrap()
            .to_str()
            .unwrap_err();
        let bad_uri = http::Uri::try_from("a b").unwrap_err();
        let client = ExchangeError::Client(Box::new(io()));
        check(vec![
            (ProxyError::MalformedHead, 400, true, None, None),
            (ProxyError::ConflictingFraming, 400, true, None, None),
            (ProxyError::TransferEncodingHttp10, 400, true, None, None),
            (
                ProxyError::DuplicateHeader("Content-Length"),
                400,
                true,
                None,
                None,
            ),
            (ProxyError::DuplicateHeader("Host"), 400, true, None, None),
            (ProxyError::InvalidChunkedBody, 400, true, None, None),
            (ProxyError::HeadTooLarge, 431, true, None, None),
            (ProxyError::HostNotText(not_text), 400, true, None, None),
            (ProxyError::MissingHost, 400, true, None, None),
            (ProxyError::InvalidHost(InvalidHost), 400, true, None, None),
            (ProxyError::ListenerRemoved, 421, true, None, None),
            (
                ProxyError::BadPath(BadPath::NotAbsolute),
                400,
                true,
                None,
                None,
            ),
            (ProxyError::BadTarget(bad_uri), 400, true, None, None),
            (ProxyError::NoLocation, 404, false, None, None),
            (
                ProxyError::DeclaredTooLarge { declared: 9 },
                413,
                true,
                None,
                None,
            ),
            (exchange(BodyTooLarge.into()), 413, true, None, None),
            (exchange(client), 400, true, None, None),
            (exchange(ClientBodyTimeout.into()), 408, true, None, None),
        ]);
    }

    /// Upstream failures: 502, or 504 on a timeout; counted by reason and logged.
    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        let no_live = Some((
            Level::Error,
            "no live upstreams while connecting to upstream",
        ));
        let w = Some((Level::Warn, "upstream attempt failed"));
        let (connect, reset, timeout) = (
            Some(Reason::Connect),
            Some(Reason::Reset),
            Some(Reason::Timeout),
        );
        let upstream = "app".to_string();
        let closed = ExchangeError::Closed { body_sent: false };
        check(vec![
            (
                ProxyError::NoLiveUpstreams { upstream },
                502,
                false,
                None,
                no_live,
            ),
            (ConnectError::Io(io()).into(), 502, false, connect, w),
            (ConnectError::Timeout.into(), 504, false, timeout, w),
            (exchange(closed), 502, false, reset, w),
            (exchange(ExchangeError::Io(io())), 502, false, reset, w),
            (exchange(ExchangeError::ReadTimeout), 504, false, timeout, w),
            (exchange(ExchangeError::SendTimeout), 504, false, timeout, w),
            (exchange(Invalid::Head.into()), 502, false, reset, w),
        ]);
    }

    fn check(cases: Vec<Case>) {
        for (e, status, close, reason, log) in cases {
            let r = rescue(&e);
            assert_eq!(r.status.as_u16(), status, "{e:?}");
            assert_eq!(r.close, close, "{e:?}");
            assert_eq!(r.reason, reason, "{e:?}");
            assert_eq!(r.log, log, "{e:?}");
            assert_ne!(body_for(r.status), "error\n", "{e:?}");
            // A gRPC client sees UNAVAILABLE or DEADLINE_EXCEEDED for every
            // upstream failure; fulcrum's other answers as Envoy maps them.
            let grpc = match status {
                502 => GRPC_UNAVAILABLE,
                504 => GRPC_DEADLINE_EXCEEDED,
                400 => 13,
                404 => 12,
                413 => 8,
                _ => 2,
            };
            assert_eq!(r.grpc_status, grpc, "{e:?}");
        }
    }

    /// The gRPC message names the failure and its cause.
    #[test]
    fn grpc_messages_carry_the_cause() {
        let e = ProxyError::from(ConnectError::Io(io()));
        assert_eq!(
            grpc_message(&e),
            "upstream attempt failed: connect() failed: refused"
        );
        let e = ProxyError::NoLiveUpstreams {
            upstream: "app".into(),
        };
        assert_eq!(
            grpc_message(&e),
            "no live upstreams while connecting to upstream \"app\""
        );
        let e = ProxyError::from(ExchangeError::ReadTimeout);
        assert_eq!(
            grpc_message(&e),
            "upstream attempt failed: upstream timed out while reading response header"
        );
    }

    /// The classes `proxy_next_upstream` sees, and whether the request had left.
    #[test]
    fn attempt_failures_keep_their_class_and_cause() {
        let kinds = [
            (
                AttemptError::from(ConnectError::Io(io())),
                FailureKind::Connect,
                false,
            ),
            (ConnectError::Timeout.into(), FailureKind::Timeout, false),
            (
                AttemptError::Exchange(ExchangeError::Closed { body_sent: false }),
                FailureKind::Reset,
                false,
            ),
            (
                AttemptError::Exchange(ExchangeError::Closed { body_sent: true }),
                FailureKind::Reset,
                true,
            ),
            (
                AttemptError::Exchange(ExchangeError::Io(io())),
                FailureKind::Reset,
                true,
            ),
            (
                AttemptError::Exchange(ExchangeError::ReadTimeout),
                FailureKind::Timeout,
                true,
            ),
            (
                AttemptError::Exchange(ExchangeError::SendTimeout),
                FailureKind::Timeout,
                true,
            ),
            (
                AttemptError::Exchange(Invalid::ContentLength.into()),
                FailureKind::InvalidHeader,
                true,
            ),
        ];
        for (e, kind, sent) in kinds {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(e.sent(), sent, "{e:?}");
        }
        // The io error of a failed connect stays reachable from the answer's error.
        let e = ProxyError::from(ConnectError::Io(io()));
        let cause = e.source().and_then(|s| s.source()).expect("connect cause");
        assert_eq!(cause.to_string(), "refused");
        // The client's side of an exchange is never an upstream failure.
        assert!(matches!(
            ProxyError::from(ExchangeError::Client(Box::new(io()))),
            ProxyError::ClientBody(_)
        ));
        assert!(matches!(
            ProxyError::from(ExchangeError::TooLarge(BodyTooLarge)),
            ProxyError::BodyTooLarge(_)
        ));
        assert!(matches!(
            ProxyError::from(ExchangeError::BodyTimeout(ClientBodyTimeout)),
            ProxyError::BodyTimeout(_)
        ));
    }
}
