//! A served connection under its listener's watch, as one future: the drain (a
//! shutdown asks it to finish), the `client_header_timeout`/`keepalive_timeout`
//! timer, and what is done when it ends (counted, its permit released).
//!
//! One struct rather than nested `async fn`s: each `async` layer keeps its own
//! copy of what it was given beside the future it awaits, and the task's future,
//! which an idle connection keeps, was 2.2 KiB for fulcrum's HTTP/1 connections.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::drain::{GracefulConn, Stop};
use super::Shared;
use crate::proxy::conn::ConnMeta;

/// The two waits [`Watched`] bounds.
#[derive(Clone, Copy)]
pub(super) struct Waits {
    /// `client_header_timeout`: for a head that has begun, and the first one.
    pub(super) header: Duration,
    /// `keepalive_timeout`: idle between two requests.
    pub(super) keepalive: Duration,
}

/// What a connection's task does when the connection ends.
pub(super) struct ConnEnd {
    pub(super) shared: Arc<Shared>,
    pub(super) key: SocketAddr,
    pub(super) remote: SocketAddr,
    /// `fulcrum_downstream_connections_active` of its listener.
    pub(super) active: prometheus::IntGauge,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ConnEnd {
    fn drop(&mut self) {
        self.active.dec();
    }
}

pin_project_lite::pin_project! {
    /// Serves a connection, closing it once it has waited too long for a request:
    /// nginx's `client_header_timeout` for the first head and for one that has
    /// begun, `keepalive_timeout` while a keep-alive connection is idle between
    /// requests ([`ConnMeta::idle`]). The request path only stores a time stamp in
    /// [`ConnMeta::waiting_since`] (and, on connections that multiplex, counts
    /// [`ConnMeta::streams`]); the one timer per connection is re-armed when it
    /// fires, not per request. A request being served is never cut off. On h2
    /// connections this is also the h2 handshake and idle timeout: a client that
    /// sent the preface, or part of it, and then nothing, or whose streams have
    /// all ended, is closed. A connection that multiplexes is told first (hyper's
    /// graceful shutdown: GOAWAY(NO_ERROR), RFC 9113 §6.8, as nginx does), then
    /// dropped once it has closed or after [`GOAWAY_GRACE`]; one still sniffing its
    /// protocol (no whole preface yet) has nothing to be told and closes at once,
    /// as do fulcrum's own HTTP/1 connections.
    pub(super) struct Watched<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        stop: Stop,
        meta: Arc<ConnMeta>,
        waits: Waits,
        end: ConnEnd,
        // GOAWAY has been sent (graceful shutdown begun) for being idle.
        closing: bool,
    }
}

/// How long an idle h2 connection told GOAWAY has to finish closing before it is
/// dropped: hyper's graceful close waits for the client's PING acknowledgement,
/// which a silent client never sends.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// `conn` under the watch; `end` is dropped with it.
pub(super) fn watched<C>(
    conn: C,
    stop: Stop,
    meta: Arc<ConnMeta>,
    waits: Waits,
    end: ConnEnd,
) -> Watched<C> {
    let timer = tokio::time::sleep(waits.tick());
    Watched {
        conn,
        timer,
        stop,
        meta,
        waits,
        end,
        closing: false,
    }
}

impl<C, E> Future for Watched<C>
where
    C: Future<Output = Result<(), E>> + GracefulConn,
    E: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.stop.poll_stop(cx) {
            this.conn.as_mut().begin_shutdown();
        }
        if let Poll::Ready(r) = this.conn.as_mut().poll(cx) {
            if let Err(e) = r {
                ended_with(e, this.end);
            }
            return Poll::Ready(());
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let wait = match (*this.closing, left(this.meta, *this.waits)) {
                (false, Some(wait)) => wait,
                // Told GOAWAY and still open: a request after all, or a silent client.
                (true, _) if this.meta.busy() => this.waits.tick(),
                (true, _) => return Poll::Ready(()),
                (false, None) if this.meta.streams.is_none() => return Poll::Ready(()),
                (false, None) => {
                    *this.closing = true;
                    this.conn.as_mut().begin_shutdown();
                    if let Poll::Ready(r) = this.conn.as_mut().poll(cx) {
                        if let Err(e) = r {
                            ended_with(e, this.end);
                        }
                        return Poll::Ready(());
                    }
                    GOAWAY_GRACE
                }
            };
            let now = tokio::time::Instant::now();
            // A timeout of centuries would overflow the clock: a year is as good.
            let at = now
                .checked_add(wait)
                .unwrap_or(now + Duration::from_secs(365 * 86_400));
            this.timer.as_mut().reset(at);
        }
        Poll::Pending
    }
}

/// A connection that ended with an error: logged, and a head hyper rejected itself
/// (400/431) is still a request to count and log.
fn ended_with<E>(e: E, end: &ConnEnd)
where
    E: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tracing::debug!(error = %e, "connection ended with error");
    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
    let snap = end.shared.snapshot.load();
    crate::proxy::exchange::parser_rejected(&snap, end.key, end.remote, &*e);
}

impl Waits {
    /// The timer fires at the shorter of the two waits; each firing re-checks.
    fn tick(&self) -> Duration {
        self.header.min(self.keepalive)
    }
}

/// How long until `meta`'s connection has waited too long, `None` if it has.
fn left(meta: &ConnMeta, waits: Waits) -> Option<Duration> {
    if meta.busy() {
        return Some(waits.tick());
    }
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let since = meta.waiting_since.load(Ordering::Relaxed);
    let now = crate::clock::coarse_nanos();
    let idle = meta.idle.load(Ordering::Relaxed);
    let limit = if idle { waits.keepalive } else { waits.header };
    let due = since.saturating_add(nanos(limit));
    if now >= due {
        tracing::debug!(remote = %meta.remote, idle, "client_header_timeout/keepalive_timeout: closing");
        return None;
    }
    // Past a tick of the coarse clock, so the next check sees it due.
    Some(Duration::from_nanos(due - now) + Duration::from_millis(10))
}
