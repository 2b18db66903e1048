//! Upstream HTTP/2 (`protocol = "h2"`, prior knowledge): open connections with
//! hyper's `client::conn::http2`, keep them in the server's
//! [`crate::upstream::h2::H2Pool`], and send each request as one stream on the
//! least busy connection with room under the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! (a new connection when all are full).
//!
//! GOAWAY: hyper lets the streams in flight finish and hands back, unsent, a
//! request that met a connection already going away ([`TrySendError`]); that
//! request goes to another or a fresh connection without counting a try.

use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::client::conn::TrySendError;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::attempt::Attempt;
use super::body::{ProxyBody, UpBody};
use super::client;
use super::error::{ConnectError, ExchangeError, ProxyError};
use super::h2body::H2UpBody;
use super::h2up::{resumed, Upload};
use crate::config;
use crate::upstream::conn::UpstreamIo;
use crate::upstream::h2::{H2Body, H2Conn, H2Sender, H2Shared, StreamSlot};
use crate::upstream::{Pick, Upstream};

/// Per-stream receive window: large enough that one stream of a bulk download
/// is not held to the 64 KiB default's round trips.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Per-connection receive window: room for several busy streams at once.
const CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// An idle connection is pinged this often, and dropped when a ping goes
/// unanswered for [`PING_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The request headers of one stream as they are built.
#[derive(Debug, Default)]
pub struct H2Headers {
    /// Everything but `Host`.
    pub map: HeaderMap,
    /// The `Host` the request would carry in HTTP/1: its `:authority` here.
    pub authority: Option<HeaderValue>,
}

impl H2Headers {
    /// Adds one header (`Host` becomes the authority).
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::HOST {
            self.authority = Some(value.clone());
        } else {
            self.map.append(name.clone(), value.clone());
        }
    }
}

/// What a stream sends.
#[derive(Debug)]
pub struct H2Outgoing<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Origin-form target.
    pub target: &'a Uri,
    /// Longest wait for the response head (already capped by `grpc-timeout`).
    pub read_timeout: Duration,
    /// `client_body_timeout`, for a body handed back unsent.
    pub body_timeout: Duration,
}

/// A response head from an HTTP/2 upstream, with the stream's slot.
pub struct H2Head {
    /// The response; its body streams from the upstream.
    pub response: Response<Incoming>,
    /// Counts the stream on its connection until the body ends.
    pub slot: StreamSlot,
}

/// The client's response for an upstream's answer: its status and headers, the
/// body streamed from the stream (which ends `attempt` when it ends).
pub fn respond(attempt: Attempt, head: H2Head, read_timeout: Duration) -> Response<ProxyBody> {
    let (parts, body) = head.response.into_parts();
    let body = H2UpBody::new(body, attempt, head.slot, read_timeout);
    let mut resp = Response::new(ProxyBody::H2(Box::new(body)));
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = parts.headers;
    resp
}

/// Opens a connection to `addr` (TLS when the pool has it, where the server must
/// choose `h2` by ALPN) and speaks HTTP/2 over it.
pub async fn open(
    addr: SocketAddr,
    name: &str,
    up: &config::Upstream,
) -> Result<H2Conn, ConnectError> {
    let stream = client::open_stream(addr, name, up.tls.as_ref());
    let io = match tokio::time::timeout(up.pass.connect_timeout, stream).await {
        Ok(io) => io?,
        Err(_) => return Err(ConnectError::Timeout),
    };
    if let UpstreamIo::Tls(s) = &io {
        if s.get_ref().1.alpn_protocol() != Some(b"h2") {
            let msg = "the server did not choose h2 by ALPN";
            return Err(ConnectError::Tls(io::Error::other(msg)));
        }
    }
    handshake(io).await
}

/// HTTP/2 over any stream: the handshake, and a task that drives the connection
/// and tells the pool its peer's stream limit and its end.
pub async fn handshake<T>(io: T) -> Result<H2Conn, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true);
    let (sender, mut conn) = b
        .handshake::<_, H2Body>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Io(io::Error::other(e)))?;
    let shared = Arc::new(H2Shared::default());
    let driver = shared.clone();
    tokio::spawn(async move {
        let r = poll_fn(|cx| {
            let r = Pin::new(&mut conn).poll(cx);
            driver.set_max_streams(conn.current_max_send_streams());
            r
        })
        .await;
        driver.close();
        if let Err(e) = r {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(H2Conn { sender, shared })
}

/// A stream on the peer: on a pooled connection with room, else on a new one
/// (one opened at a time per server; the others wait for it and share it).
async fn obtain(up: &Upstream, pick: Pick) -> Result<(H2Sender, StreamSlot, bool), ProxyError> {
    let peer = up.peer(pick);
    let pool = &peer.state.h2;
    if let Some((s, slot)) = pool.take() {
        return Ok((s, slot, false));
    }
    let _gate = pool.connecting.lock().await;
    if let Some((s, slot)) = pool.take() {
        return Ok((s, slot, false));
    }
    match open(peer.conf.addr, &peer.conf.name, &up.conf).await {
        Ok(c) => {
            let (s, slot) = pool.add(c);
            Ok((s, slot, true))
        }
        Err(e) => {
            tracing::debug!(upstream = %up.conf.name, server = %peer.conf.addr, error = %e, "h2 connect failed");
            Err(e.into())
        }
    }
}

/// Sends one request on the picked peer and waits for its response head. The
/// body is taken only once a connection is there, so a failed connect leaves it
/// whole for the next server; one handed back unsent is put back.
pub async fn send(
    up: &Upstream,
    pick: Pick,
    out: &H2Outgoing<'_>,
    headers: &(dyn Fn() -> H2Headers + Sync),
    body: &mut Option<UpBody>,
) -> Result<H2Head, ProxyError> {
    let mut req: Option<Request<H2Body>> = None;
    let mut upload = Upload::default();
    loop {
        let (mut sender, slot, fresh) = match obtain(up, pick).await {
            Ok(got) => got,
            Err(e) => {
                // A request handed back by a connection going away keeps its
                // body whole for the next server.
                if let Some(r) = req.take() {
                    *body = Some(resumed(r, out.body_timeout));
                }
                return Err(e);
            }
        };
        let r = match req.take() {
            Some(r) => r,
            None => build(out, headers(), body.take(), &mut upload)?,
        };
        let sent = tokio::time::timeout(out.read_timeout, sender.try_send_request(r)).await;
        let e = match sent {
            Err(_) => return Err(ExchangeError::ReadTimeout.into()),
            Ok(Ok(response)) => return Ok(H2Head { response, slot }),
            Ok(Err(e)) => e,
        };
        if let Some(client) = upload.client_fault() {
            return Err(client.into());
        }
        match hand_back(e, &slot) {
            // A pooled connection going away: another one takes it.
            Unsent::Request(r) if !fresh => req = Some(*r),
            Unsent::Request(r) => *body = Some(resumed(*r, out.body_timeout)),
            Unsent::Refused(e) => match upload.take_back().await {
                // Built afresh on another connection, the body whole.
                Some(b) => *body = Some(b),
                None => return Err(ExchangeError::Io(io::Error::other(e)).into()),
            },
            Unsent::Failed(e) => return Err(ExchangeError::Io(io::Error::other(e)).into()),
        }
        if fresh && req.is_none() {
            // A new connection refused it: the server's failure; the body is
            // whole for the next one.
            return Err(ExchangeError::Closed { body_sent: false }.into());
        }
    }
}

/// What became of a request whose send failed.
enum Unsent {
    /// hyper handed it back, never sent (the connection was going away).
    Request(Box<Request<H2Body>>),
    /// Sent, or taken by hyper, but never processed by the server: refused
    /// (`REFUSED_STREAM`) or above the last stream id of a GOAWAY, or rejected
    /// on a connection that had just had one (RFC 9113 §8.7: safe to retry).
    Refused(hyper::Error),
    /// It failed otherwise.
    Failed(hyper::Error),
}

/// Sorts a failed send; a connection that cannot take more streams is marked so.
fn hand_back(mut e: TrySendError<Request<H2Body>>, slot: &StreamSlot) -> Unsent {
    if let Some(r) = e.take_message() {
        slot.conn().close();
        return Unsent::Request(Box::new(r));
    }
    let err = e.into_error();
    let h2 = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<h2::Error>());
    // Only a graceful GOAWAY: after one with an error code, h2 gives its error to
    // every stream, processed ones too. (A stream cut by the connection's end is
    // a broken pipe, not this.)
    let refused = h2.is_some_and(|h| match h.reason() {
        Some(h2::Reason::NO_ERROR) => h.is_go_away(),
        Some(h2::Reason::REFUSED_STREAM) => h.is_remote(),
        _ => false,
    });
    if refused || err.is_closed() || err.is_canceled() {
        slot.conn().close();
    }
    if refused {
        Unsent::Refused(err)
    } else {
        tracing::debug!(error = ?err, "upstream h2 stream failed");
        Unsent::Failed(err)
    }
}

/// The request as it goes up: `http://AUTHORITY/target`, the headers, the body.
fn build(
    out: &H2Outgoing<'_>,
    mut headers: H2Headers,
    body: Option<UpBody>,
    upload: &mut Upload,
) -> Result<Request<H2Body>, ProxyError> {
    let authority = headers
        .authority
        .as_ref()
        .and_then(|a| Authority::try_from(a.as_bytes()).ok())
        .unwrap_or_else(|| Authority::from_static("localhost"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = out.target.path_and_query().cloned();
    let uri = match Uri::from_parts(parts) {
        Ok(u) => u,
        // Not expected (every part is valid on its own); the string form says why.
        Err(_) => Uri::try_from(format!("http://localhost{}", out.target))
            .map_err(ProxyError::BadTarget)?,
    };
    let body = upload.wrap(body.unwrap_or(UpBody::Empty));
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = std::mem::take(&mut headers.map);
    Ok(req)
}

/// The `grpc-timeout` of a request (`1-8 digits` and a unit `H M S m u n`).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether the client asked for trailers (`TE: trailers`), which gRPC needs kept.
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(t("123456789m"), None);
        assert_eq!(t("m"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
    }
}
