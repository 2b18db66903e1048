//! Graceful drain of one listener's connections: each connection checks one flag on
//! its wake-ups; a shutdown sets it, wakes them all and waits until none is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::watch;

/// The drain handle of one listener's connections: signals them to finish their
/// in-flight requests and close, and waits until they have. (hyper-util's
/// `GracefulShutdown` cannot watch hyper's own HTTP/1 connection type, and its
/// per-poll `Notify` check costs a lock on every wake-up of every connection; here a
/// connection checks one flag and re-registers its waker without locking.)
/// A clone is the same handle (a TLS handshake task holds one until its
/// connection is served).
#[derive(Clone)]
pub struct Drain {
    inner: Arc<DrainInner>,
    /// Each open connection holds a receiver: `closed()` resolves when none is left.
    count: watch::Sender<()>,
}

struct DrainInner {
    stopping: AtomicBool,
    /// Wakers of the connections (dead ones are pruned as the list grows).
    slots: std::sync::Mutex<Vec<std::sync::Weak<AtomicWaker>>>,
}

impl Drain {
    pub(super) fn new() -> Drain {
        Drain {
            inner: Arc::new(DrainInner {
                stopping: AtomicBool::new(false),
                slots: std::sync::Mutex::new(Vec::new()),
            }),
            count: watch::channel(()).0,
        }
    }

    /// Open connections.
    pub fn count(&self) -> usize {
        self.count.receiver_count()
    }

    /// Asks every connection to close after its in-flight requests, then waits
    /// until they all have.
    pub async fn shutdown(self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let slots =
            std::mem::take(&mut *self.inner.slots.lock().unwrap_or_else(|e| e.into_inner()));
        for w in slots.iter().filter_map(std::sync::Weak::upgrade) {
            w.wake();
        }
        self.count.closed().await;
    }

    /// A connection's place among the open ones, taken when it is accepted: it
    /// counts as open (a shutdown waits for it) from then on, also while a PROXY
    /// header is read before its HTTP starts.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            inner: self.inner.clone(),
            counted: self.count.subscribe(),
        }
    }
}

/// An accepted connection's place in its listener's [`Drain`].
pub(super) struct Ticket {
    inner: Arc<DrainInner>,
    counted: watch::Receiver<()>,
}

impl Ticket {
    /// A waker slot that a shutdown wakes.
    fn slot(&self) -> Arc<AtomicWaker> {
        let slot = Arc::new(AtomicWaker::new());
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= 64 && slots.len().is_power_of_two() {
            slots.retain(|w| w.strong_count() > 0);
        }
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Runs `f` — what a connection does before its HTTP starts (its PROXY
    /// header) — unless a shutdown starts first: then `None` at once, so that a
    /// connection that sent nothing does not hold the shutdown up.
    pub(super) async fn unless_stopping<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        let slot = self.slot();
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            slot.register(cx.waker());
            if self.inner.stopping.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(None);
            }
            f.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// What a served connection keeps of its ticket (see [`Stop`]).
    pub(super) fn serving(self) -> Stop {
        Stop {
            slot: self.slot(),
            inner: self.inner,
            _counted: self.counted,
            asked: false,
        }
    }
}

/// A served connection's place in its listener's [`Drain`]: on each wake-up,
/// [`Stop::poll_stop`] checks the one flag (and says once that a shutdown began).
pub(super) struct Stop {
    slot: Arc<AtomicWaker>,
    inner: Arc<DrainInner>,
    _counted: watch::Receiver<()>,
    asked: bool,
}

impl Stop {
    /// True once, at the first poll after a shutdown began: the connection is to
    /// finish what it is doing and close.
    pub(super) fn poll_stop(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if self.asked {
            return false;
        }
        self.slot.register(cx.waker());
        self.asked = self.inner.stopping.load(Ordering::SeqCst);
        self.asked
    }
}

/// A connection that can stop taking new requests and finish the ones in flight.
pub(super) trait GracefulConn {
    fn begin_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<F: std::future::Future> GracefulConn for crate::proxy::server::Connection<F> {
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> GracefulConn for auto::UpgradeableConnection<'static, I, S, TokioExecutor>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
