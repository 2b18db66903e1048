//! One listener's accept loop and what each accepted connection runs: fulcrum's own
//! HTTP/1 server, or hyper-util's protocol-sniffing one on `http2 = true` listeners,
//! under the `client_header_timeout` watch, the drain handle and the
//! `max_connections` permit.

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::drain::{Drain, Ticket};
use super::{ListenOpts, Shared};
use crate::clock::CoarseTimer;
use crate::proxy::conn::ConnMeta;
use crate::proxy::tower_service::Proxy;

/// How a listener serves its connections: fulcrum's own HTTP/1 server
/// ([`crate::proxy::server`]), or hyper-util's protocol-sniffing one when the
/// listener also speaks h2c.
enum ConnBuilder {
    /// With its `client_header_timeout`, which [`watch_head`] enforces.
    Http1(Duration),
    /// With its `client_header_timeout` too: hyper's HTTP/1 side has its own, and
    /// [`watch_head`] bounds what hyper's h2 side does not (handshake, idle).
    Auto(Box<auto::Builder<TokioExecutor>>, Duration),
}

/// What a listener does with the connections it accepts.
struct Serving {
    builder: Arc<ConnBuilder>,
    /// Read a PROXY header first, within `client_header_timeout`.
    proxy_header: Option<Duration>,
}

fn serving(opts: ListenOpts) -> Serving {
    Serving {
        builder: Arc::new(conn_builder(opts)),
        proxy_header: opts.proxy_protocol.then_some(opts.header_timeout),
    }
}

fn conn_builder(opts: ListenOpts) -> ConnBuilder {
    if !opts.http2 {
        return ConnBuilder::Http1(opts.header_timeout);
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(CoarseTimer::default())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(crate::proxy::MAX_HEADER_BYTES)
        .keep_alive(true);
    builder.http2().timer(CoarseTimer::default());
    ConnBuilder::Auto(Box::new(builder), opts.header_timeout)
}

/// Serves a connection, closing it once it has waited `timeout` for a request:
/// nginx's `client_header_timeout`, which (as with hyper's timer it replaces) also
/// bounds an idle keep-alive connection. The request path only stores a time stamp in
/// [`ConnMeta::waiting_since`] (and, on connections that multiplex, counts
/// [`ConnMeta::streams`]); the one timer per connection is re-armed when it fires, not
/// per request. A request being served is never cut off. On `http2 = true` listeners
/// this is also the h2 handshake and idle timeout: a client that sent the preface, or
/// part of it, and then nothing, or whose streams have all ended, is closed.
async fn watch_head<E>(
    conn: impl std::future::Future<Output = Result<(), E>>,
    meta: Arc<ConnMeta>,
    timeout: Duration,
) -> Result<(), E> {
    let mut conn = std::pin::pin!(conn);
    let mut timer = std::pin::pin!(tokio::time::sleep(timeout));
    let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        while timer.as_mut().poll(cx).is_ready() {
            let since = meta.waiting_since.load(Ordering::Relaxed);
            let now = crate::clock::coarse_nanos();
            let wait = if meta.busy() {
                timeout
            } else {
                let due = since.saturating_add(timeout_ns);
                if now >= due {
                    tracing::debug!(remote = %meta.remote, "client_header_timeout: closing");
                    return Poll::Ready(Ok(()));
                }
                // Past a tick of the coarse clock, so the next check sees it due.
                Duration::from_nanos(due - now) + Duration::from_millis(10)
            };
            let now = tokio::time::Instant::now();
            // A timeout of centuries would overflow the clock: a year is as good.
            let at = now
                .checked_add(wait)
                .unwrap_or(now + Duration::from_secs(365 * 86_400));
            timer.as_mut().reset(at);
        }
        Poll::Pending
    })
    .await
}

/// Runs one downstream connection; the permit (`max_connections`) is held until it ends.
/// What a connection's task does when the connection ends.
struct ConnEnd {
    shared: Arc<Shared>,
    key: SocketAddr,
    remote: SocketAddr,
    /// `fulcrum_downstream_connections_active` of its listener.
    active: prometheus::IntGauge,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ConnEnd {
    fn drop(&mut self) {
        self.active.dec();
    }
}

async fn run_conn<E>(conn: impl std::future::Future<Output = Result<(), E>>, end: ConnEnd)
where
    E: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with error");
        // A head hyper rejected itself (400/431) is still a request to count and log.
        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
        let snap = end.shared.snapshot.load();
        crate::proxy::exchange::parser_rejected(&snap, end.key, end.remote, &*e);
    }
    drop(end);
}

/// Accepts until `stop` fires, then hands back the drain handle of its connections.
pub(super) async fn accept_loop(
    listener: TcpListener,
    key: SocketAddr,
    mut opts: watch::Receiver<ListenOpts>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    limit: Option<Arc<Semaphore>>,
) -> Drain {
    let graceful = Drain::new();
    let metrics = crate::metrics::ListenerMetrics::new(key);
    let mut serve = serving(*opts.borrow_and_update());
    let mut errors = AcceptErrors::new(key);
    while let Some(conn) = next_conn(&listener, &mut errors, limit.as_ref(), &mut stop).await {
        // A reload changed this listener's options: new connections use them.
        if opts.has_changed().unwrap_or(false) {
            serve = serving(*opts.borrow_and_update());
        }
        metrics.total.inc();
        metrics.active.inc();
        let end = ConnEnd {
            shared: shared.clone(),
            key,
            remote: conn.remote,
            active: metrics.active.clone(),
            _permit: conn.permit,
        };
        serve_conn(&serve, graceful.ticket(), &shared, key, conn.stream, end);
    }
    graceful
}

/// An accepted connection and its `max_connections` permit.
struct Accepted {
    stream: TcpStream,
    remote: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
}

/// One listener's accept failures, logged at most once a second: while descriptors
/// are exhausted every try fails (about 20 a second with the back-off), and a line
/// for each would flood the log. A line counts the failures not logged before it;
/// those after the last line are told once the listener accepts again.
struct AcceptErrors {
    key: SocketAddr,
    /// Coarse time of the last line, `None` before the first.
    last_line: Option<u64>,
    /// Failures since then that wrote no line.
    suppressed: u64,
}

impl AcceptErrors {
    /// At most one line per this many nanoseconds.
    const EVERY_NS: u64 = 1_000_000_000;

    fn new(key: SocketAddr) -> AcceptErrors {
        AcceptErrors {
            key,
            last_line: None,
            suppressed: 0,
        }
    }

    /// Counts a failure at `now` (coarse nanoseconds): `Some(n)` if it is to be
    /// logged, `n` being the failures before it that were not.
    fn failed(&mut self, now: u64) -> Option<u64> {
        match self.last_line {
            Some(t) if now.saturating_sub(t) < Self::EVERY_NS => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// A connection was accepted: the failures not logged yet, if there are any.
    #[inline]
    fn recovered(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }

    fn log_failure(&mut self, e: &std::io::Error) {
        if let Some(suppressed) = self.failed(crate::clock::coarse_nanos()) {
            tracing::warn!(listen = %self.key, error = %e, suppressed, "accept failed");
        }
    }

    fn log_recovery(&mut self) {
        if let Some(suppressed) = self.recovered() {
            tracing::warn!(listen = %self.key, suppressed, "accepting again after failures");
        }
    }
}

/// Waits for a permit (if connections are limited), then for a connection; `None`
/// once `stop` fires.
async fn next_conn(
    listener: &TcpListener,
    errors: &mut AcceptErrors,
    limit: Option<&Arc<Semaphore>>,
    stop: &mut oneshot::Receiver<()>,
) -> Option<Accepted> {
    let permit = match limit {
        Some(s) => tokio::select! {
            p = s.clone().acquire_owned() => Some(p.ok()?),
            _ = &mut *stop => return None,
        },
        None => None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    errors.log_recovery();
                    return Some(Accepted { stream, remote, permit });
                }
                Err(e) => {
                    errors.log_failure(&e);
                    // Out of descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut *stop => return None,
        }
    }
}

/// Starts the task that serves one connection as the listener's options say: on a
/// `proxy_protocol` listener its PROXY header first (the client it names becomes
/// the connection's `remote`); a connection without a valid one is closed before
/// any of its bytes is read as HTTP.
fn serve_conn(
    serve: &Serving,
    ticket: Ticket,
    shared: &Arc<Shared>,
    key: SocketAddr,
    mut stream: TcpStream,
    mut end: ConnEnd,
) {
    let _ = stream.set_nodelay(true);
    let builder = serve.builder.clone();
    let shared = shared.clone();
    let Some(timeout) = serve.proxy_header else {
        let peer = end.remote;
        tokio::spawn(
            async move { serve_http(&builder, ticket, &shared, key, stream, end, peer).await },
        );
        return;
    };
    tokio::spawn(async move {
        let peer = end.remote;
        let header = super::proxy_header::read(&mut stream, timeout);
        match ticket.unless_stopping(header).await {
            Some(Ok(client)) => {
                end.remote = client.unwrap_or(peer);
                serve_http(&builder, ticket, &shared, key, stream, end, peer).await
            }
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "PROXY header refused: closing"),
            None => tracing::debug!(%peer, "shutting down before a PROXY header: closing"),
        }
    });
}

/// Serves HTTP on an accepted connection whose client is `end.remote` (`peer`
/// being the socket's).
async fn serve_http(
    builder: &ConnBuilder,
    ticket: Ticket,
    shared: &Arc<Shared>,
    key: SocketAddr,
    stream: TcpStream,
    end: ConnEnd,
    peer: SocketAddr,
) {
    let guard = Arc::new(crate::proxy::framing::HeadGuard::default());
    let meta = Arc::new(ConnMeta {
        remote: end.remote,
        peer,
        local: stream.local_addr().unwrap_or(key),
        listen_key: key,
        scheme: "http",
        head_guard: guard.clone(),
        waiting_since: AtomicU64::new(crate::clock::coarse_nanos()),
        closing: AtomicBool::new(false),
        // hyper's connections may carry several requests at once (h2).
        streams: matches!(builder, ConnBuilder::Auto(..)).then(AtomicUsize::default),
    });
    match builder {
        ConnBuilder::Http1(header_timeout) => {
            let conn = crate::proxy::server::serve(stream, shared.snapshot.clone(), meta.clone());
            run_conn(watch_head(ticket.serve(conn), meta, *header_timeout), end).await
        }
        ConnBuilder::Auto(b, header_timeout) => {
            // hyper hides a request's conflicting framing headers: the stream is
            // watched on its way in (see `proxy::framing`).
            let io = TokioIo::new(crate::proxy::framing::Guarded::new(stream, guard));
            let svc = TowerToHyperService::new(Proxy::new(shared.snapshot.clone(), meta.clone()));
            let conn = ticket.serve(b.serve_connection_with_upgrades(io, svc).into_owned());
            run_conn(watch_head(conn, meta, *header_timeout), end).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second of failures every 10 ms writes one line; the next line, a second
    /// later, counts the 99 that wrote none; a success after more failures tells
    /// those once.
    #[test]
    fn accept_failures_are_logged_once_a_second_with_a_count() {
        let mut e = AcceptErrors::new("127.0.0.1:80".parse().expect("addr"));
        let ms = 1_000_000;
        assert_eq!(e.recovered(), None);
        assert_eq!(e.failed(5_000 * ms), Some(0));
        for i in 1..100 {
            assert_eq!(e.failed((5_000 + 10 * i) * ms), None, "{i}");
        }
        assert_eq!(e.failed(6_000 * ms), Some(99));
        assert_eq!(e.failed(6_010 * ms), None);
        assert_eq!(e.failed(6_020 * ms), None);
        assert_eq!(e.recovered(), Some(2));
        assert_eq!(e.recovered(), None);
        // Still within the second of the last line: counted, not logged.
        assert_eq!(e.failed(6_500 * ms), None);
        assert_eq!(e.failed(7_000 * ms), Some(1));
    }
}
