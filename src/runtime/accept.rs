//! One listener's accept loop and what each accepted connection runs: fulcrum's own
//! HTTP/1 server, or hyper-util's protocol-sniffing one on `http2 = true` listeners,
//! under the `client_header_timeout` watch, the drain handle and the
//! `max_connections` permit.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::conn_watch::{watched, ConnEnd, Waits};
use super::drain::{Drain, Ticket};
use super::ListenOpts;
use super::Shared;
use crate::clock::CoarseTimer;
use crate::proxy::conn::ConnMeta;
use crate::proxy::tower_service::Proxy;
use crate::proxy::transport::AnyStream;

/// How a listener serves its connections: fulcrum's own HTTP/1 server
/// ([`crate::proxy::server`]), hyper-util's protocol-sniffing one when the listener
/// also speaks h2c, and on TLS listeners the handshake first, then HTTP/1 or hyper's
/// h2 server as ALPN chose.
#[derive(Clone)]
struct ConnBuilder {
    opts: ListenOpts,
    /// hyper's server on `http2 = true` cleartext listeners: its HTTP/1 side has
    /// its own header timeout, and [`super::conn_watch::Watched`] bounds what its h2 side does not
    /// (handshake, idle).
    auto: Option<Arc<auto::Builder<TokioExecutor>>>,
    /// hyper's h2 server for TLS connections that chose h2.
    h2: Option<Arc<auto::Builder<TokioExecutor>>>,
}

fn conn_builder(opts: ListenOpts) -> ConnBuilder {
    let mut b = ConnBuilder {
        opts,
        auto: None,
        h2: None,
    };
    if opts.tls {
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2().timer(CoarseTimer::default());
        b.h2 = Some(Arc::new(h2));
    } else if opts.http2 {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(CoarseTimer::default())
            .header_read_timeout(opts.header_timeout)
            .max_buf_size(crate::proxy::MAX_HEADER_BYTES)
            .keep_alive(true);
        builder.http2().timer(CoarseTimer::default());
        b.auto = Some(Arc::new(builder));
    }
    b
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
    let tls_metrics = crate::metrics::TlsMetrics::new(key);
    let mut builder = conn_builder(*opts.borrow_and_update());
    let mut errors = AcceptErrors::new(key);
    // A listener bound to one address accepts every connection on it: no
    // `getsockname` per connection (nginx skips it too). A wildcard one asks.
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    while let Some(conn) = next_conn(&listener, &mut errors, limit.as_ref(), &mut stop).await {
        // A reload changed this listener's options: new connections use them.
        if opts.has_changed().unwrap_or(false) {
            builder = conn_builder(*opts.borrow_and_update());
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
        let task = ConnTask {
            local: bound,
            builder: builder.clone(),
            ticket: graceful.ticket(),
            tls_metrics: tls_metrics.clone(),
        };
        tokio::spawn(task.run(conn.stream, end));
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

/// The facts of an accepted connection, for the request path.
fn conn_meta(
    end: &ConnEnd,
    peer: SocketAddr,
    local: SocketAddr,
    multiplexed: bool,
    tls: Option<crate::tls::server::TlsFacts>,
) -> Arc<ConnMeta> {
    let mut meta = ConnMeta::new(
        end.remote,
        local,
        end.key,
        if tls.is_some() { "https" } else { "http" },
    );
    meta.peer = peer;
    // hyper's connections may carry several requests at once (h2).
    meta.streams = multiplexed.then(AtomicUsize::default);
    meta.tls = tls;
    Arc::new(meta)
}

impl ConnBuilder {
    fn waits(&self) -> Waits {
        Waits {
            header: self.opts.header_timeout,
            keepalive: self.opts.keepalive_timeout,
        }
    }
}

/// What an accepted connection's task needs before it is served.
struct ConnTask {
    /// The connection's local address when the listener's says it (not a wildcard).
    local: Option<SocketAddr>,
    builder: ConnBuilder,
    /// Its place among the listener's open connections (a shutdown waits for it).
    ticket: Ticket,
    tls_metrics: crate::metrics::TlsMetrics,
}

impl ConnTask {
    fn local_addr(&self, stream: &TcpStream, end: &ConnEnd) -> SocketAddr {
        match self.local {
            Some(a) => a,
            None => stream.local_addr().unwrap_or(end.key),
        }
    }

    /// Serves one connection as the listener's options say: on a `proxy_protocol`
    /// listener its PROXY header first (the client it names becomes the
    /// connection's `remote`; a connection without a valid one is closed before any
    /// of its bytes is read as HTTP), then the TLS handshake on a TLS listener, then
    /// HTTP.
    async fn run(self, mut stream: TcpStream, mut end: ConnEnd) {
        // fulcrum's HTTP/1 server sets TCP_NODELAY itself before a connection's
        // second write (`proxy::transport`): a connection that closes after one
        // response never needs it, one system call fewer per connection.
        if self.builder.opts.tls || self.builder.opts.http2 {
            let _ = stream.set_nodelay(true);
        }
        let peer = end.remote;
        if self.builder.opts.proxy_protocol {
            let header = super::proxy_header::read(&mut stream, self.builder.opts.header_timeout);
            // Boxed, as TLS below: only connections on such listeners carry it.
            match Box::pin(self.ticket.unless_stopping(header)).await {
                Some(Ok(client)) => end.remote = client.unwrap_or(peer),
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "PROXY header refused: closing");
                    return;
                }
                None => {
                    tracing::debug!(%peer, "shutting down before a PROXY header: closing");
                    return;
                }
            }
        }
        // The task's future is as large as its largest branch, and an idle
        // connection keeps it: TLS (the handshake, hyper's h2 server) and hyper's
        // sniffing server are boxed, so that fulcrum's HTTP/1 connections stay small.
        if self.builder.opts.tls {
            Box::pin(self.tls(stream, end, peer)).await
        } else {
            self.plain(stream, end, peer).await
        }
    }

    /// A cleartext connection: fulcrum's HTTP/1 server, or hyper's sniffing one
    /// (boxed: see [`ConnTask::run`]).
    fn plain(
        self,
        stream: TcpStream,
        end: ConnEnd,
        peer: SocketAddr,
    ) -> Either<impl Future<Output = ()> + Send, Pin<Box<dyn Future<Output = ()> + Send>>> {
        let local = self.local_addr(&stream, &end);
        let meta = conn_meta(&end, peer, local, self.builder.auto.is_some(), None);
        let waits = self.builder.waits();
        let snapshots = end.shared.snapshot.clone();
        let stop = self.ticket.serving();
        match &self.builder.auto {
            None => {
                let conn = crate::proxy::server::serve(stream, snapshots, meta.clone());
                Either::Left(watched(conn, stop, meta, waits, end))
            }
            Some(b) => {
                // hyper hides a request's conflicting framing headers: the stream is
                // watched on its way in (see `proxy::framing`).
                let io = TokioIo::new(crate::proxy::framing::Guarded::new(
                    stream,
                    meta.head_guard.clone(),
                ));
                let svc = TowerToHyperService::new(Proxy::new(snapshots, meta.clone()));
                let conn = b.serve_connection_with_upgrades(io, svc).into_owned();
                Either::Right(Box::pin(watched(conn, stop, meta, waits, end)))
            }
        }
    }

    /// The handshake, within `client_header_timeout`, with the certificate of the
    /// server the SNI names in the snapshot current at the ClientHello; then HTTP/1
    /// or h2 as ALPN chose. A failed handshake closes the connection, counted.
    async fn tls(self, stream: TcpStream, end: ConnEnd, peer: SocketAddr) {
        let local = self.local_addr(&stream, &end);
        let (shared, key) = (end.shared.clone(), end.key);
        let pick = move |sni: Option<&str>| shared.snapshot.load().tls_config(key, sni);
        let hs = tokio::time::timeout(
            self.builder.opts.header_timeout,
            crate::tls::server::accept(stream, pick),
        );
        let (tls, facts) = match self.ticket.unless_stopping(hs).await {
            Some(Ok(Ok(done))) => done,
            Some(Ok(Err(e))) => {
                self.tls_metrics.failure();
                tracing::debug!(listen = %key, remote = %end.remote, error = %e, "TLS handshake failed");
                return;
            }
            Some(Err(_)) => {
                self.tls_metrics.failure();
                tracing::debug!(listen = %key, remote = %end.remote, "TLS handshake timed out");
                return;
            }
            None => return,
        };
        self.tls_metrics.success();
        let h2 = facts.h2;
        let meta = conn_meta(&end, peer, local, h2, Some(facts));
        let waits = self.builder.waits();
        let snapshots = end.shared.snapshot.clone();
        match (&self.builder.h2, h2) {
            (Some(b), true) => {
                let svc = TowerToHyperService::new(Proxy::new(snapshots, meta.clone()));
                let io = TokioIo::new(tls);
                let conn = b.serve_connection_with_upgrades(io, svc).into_owned();
                watched(conn, self.ticket.serving(), meta, waits, end).await;
            }
            _ => {
                let conn = crate::proxy::server::serve(AnyStream(tls), snapshots, meta.clone());
                watched(conn, self.ticket.serving(), meta, waits, end).await;
            }
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
