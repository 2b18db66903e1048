//! What the proxy knows about one downstream connection, shared by the server that
//! reads it, the request path and the listener's watch on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use super::framing::HeadGuard;
pub use crate::tls::server::TlsFacts;

/// What the proxy knows about the downstream connection.
#[derive(Debug)]
pub struct ConnMeta {
    /// Client address: the socket's peer, or on a `proxy_protocol` listener the
    /// client its PROXY header names.
    pub remote: SocketAddr,
    /// The socket's peer (differs from `remote` only after a PROXY header); what
    /// `real_ip_header = "proxy_protocol"` checks against `real_ip_from`.
    pub peer: SocketAddr,
    /// Local address the connection arrived on.
    pub local: SocketAddr,
    /// The configured listen address (the routing key; may have port 0 in tests).
    pub listen_key: SocketAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// What [`super::framing::Guarded`] saw: a head with both `Content-Length`
    /// and `Transfer-Encoding`, or one over 64 KiB.
    pub head_guard: Arc<HeadGuard>,
    /// Coarse time ([`crate::clock::coarse_nanos`]) since which the connection has
    /// waited for a request head, or [`IN_FLIGHT`] while a request is being served:
    /// what the HTTP/1 `client_header_timeout` watch reads.
    pub waiting_since: AtomicU64,
    /// Keep-alive idle: a response was sent and nothing of the next request has
    /// arrived yet. The listener's watch then closes after `keepalive_timeout`
    /// instead of `client_header_timeout` (nginx's split between the two).
    pub idle: AtomicBool,
    /// Set by a graceful shutdown: finish the request in flight, take no more.
    pub closing: AtomicBool,
    /// The requests in flight, counted (from the start of a request to the end of its
    /// response) only on a connection that can carry several at once: hyper's, on
    /// `http2 = true` listeners, where one request's end does not make the connection
    /// idle. `None` elsewhere (one request at a time: [`IN_FLIGHT`] says it).
    pub streams: Option<AtomicUsize>,
    /// What the TLS handshake settled (`$ssl_*`, the access log); `None` on cleartext.
    pub tls: Option<TlsFacts>,
}

impl ConnMeta {
    /// The facts of a connection that a program embedding fulcrum accepted itself
    /// (see [`super::tower_service::Proxy`]): `listen_key` is the configured `listen`
    /// address whose virtual servers route its requests; `scheme` is "http" or
    /// "https" (`$scheme`).
    pub fn new(
        remote: SocketAddr,
        local: SocketAddr,
        listen_key: SocketAddr,
        scheme: &'static str,
    ) -> ConnMeta {
        ConnMeta {
            remote,
            peer: remote,
            local,
            listen_key,
            scheme,
            head_guard: Arc::default(),
            waiting_since: AtomicU64::new(crate::clock::coarse_nanos()),
            idle: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            streams: None,
            tls: None,
        }
    }

    /// Whether a request is being served: what the listener's idle watch asks.
    pub fn busy(&self) -> bool {
        self.waiting_since
            .load(std::sync::atomic::Ordering::Relaxed)
            == IN_FLIGHT
            || self
                .streams
                .as_ref()
                .is_some_and(|n| n.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }
}

/// [`ConnMeta::waiting_since`] while a request is being served.
pub const IN_FLIGHT: u64 = u64::MAX;
