//! Why one active check failed.

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within `timeout`.
    #[error("timed out")]
    Timeout,
    /// Connect refused, reset, unreachable.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The request could not be built (path or host invalid at run time).
    #[error("invalid check request: {0}")]
    Request(#[source] http::Error),
    /// The HTTP exchange failed.
    #[error("http error: {0}")]
    Http(#[source] hyper::Error),
    /// The connection closed before a response head.
    #[error("connection closed before the response")]
    Closed,
    /// An unexpected status.
    #[error("status {0}")]
    Status(u16),
    /// The gRPC call failed with this `grpc-status`.
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    /// The gRPC health service answered a status other than SERVING (1).
    #[error("not serving (status {0})")]
    NotServing(u64),
    /// The gRPC answer was not a health check response.
    #[error("invalid gRPC answer: {0}")]
    Grpc(&'static str),
}
