//! Process life cycle: bind listeners, serve, shut down gracefully. Listeners are
//! kept in a [`Listeners`] set keyed by their configured address so a reload
//! (see [`crate::reload`]) can add and remove them one by one.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::task::AtomicWaker;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::clock::CoarseTimer;
use crate::config::Config;
use crate::proxy::service::{handle, ConnMeta, IN_FLIGHT};
use crate::reload::Control;
use crate::state::Snapshot;
use crate::upstream::Registry;

/// Header block limit (SPEC §6: over 64 KiB → 431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// State shared by every connection and the admin API.
pub struct Shared {
    /// The routing snapshot; swapped whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Live per-server state, kept across reloads.
    pub registry: Registry,
    /// `$hostname`.
    pub hostname: String,
    /// `/readyz`: config loaded and listeners bound, not shutting down.
    pub ready: AtomicBool,
    /// The config file.
    pub config_path: PathBuf,
    /// Reload outcomes, read by the metrics endpoint.
    pub reloads: ReloadStats,
    /// The running listeners and the watched files; reloads lock it, one at a time.
    pub control: Control,
}

/// Counts of config reloads (`fulcrum_config_reloads_total`, SPEC §5).
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Successful reloads.
    pub success: std::sync::atomic::AtomicU64,
    /// Rejected reloads (the old config kept serving).
    pub failure: std::sync::atomic::AtomicU64,
    /// Unix time of the last successful load (start counts), in seconds.
    pub last_success_unix: std::sync::atomic::AtomicU64,
}

impl ReloadStats {
    /// Records a successful load now.
    pub fn succeeded(&self) {
        self.success.fetch_add(1, Ordering::Relaxed);
        self.last_success_unix.store(unix_now(), Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Failures that stop fulcrum from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("bind() to {addr} failed: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot could not be built.
    #[error("{0}")]
    Snapshot(String),
}

/// Settings of one listener, taken from its default (first) server as nginx does
/// before the Host is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOpts {
    /// Serve h2c (prior knowledge) besides HTTP/1.
    pub http2: bool,
    /// Time to receive a request head.
    pub header_timeout: Duration,
}

/// The options of every listen address of a snapshot.
pub fn listen_opts(snap: &Snapshot) -> HashMap<SocketAddr, ListenOpts> {
    snap.listeners
        .iter()
        .map(|(addr, r)| {
            let header_timeout = r.servers.first().map_or(Duration::from_secs(60), |&i| {
                snap.servers[i].conf.client_header_timeout
            });
            let http2 = r.servers.iter().any(|&i| snap.servers[i].conf.http2);
            (
                *addr,
                ListenOpts {
                    http2,
                    header_timeout,
                },
            )
        })
        .collect()
}

/// Binds `addrs` (sorted), all or nothing: on the first failure the ones already
/// bound are closed again.
pub async fn bind_all(
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<(SocketAddr, TcpListener)>, StartError> {
    let mut addrs: Vec<_> = addrs.into_iter().collect();
    addrs.sort();
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        bound.push((addr, l));
    }
    Ok(bound)
}

/// One accepting listener.
struct Running {
    opts: watch::Sender<ListenOpts>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Drain>,
}

/// The accepting listeners, by configured address (the routing key: "127.0.0.1:0"
/// stays the same key across reloads, so it keeps its socket).
#[derive(Default)]
pub struct Listeners {
    running: HashMap<SocketAddr, Running>,
    limit: Option<Arc<Semaphore>>,
}

impl Listeners {
    /// Configured addresses currently accepting.
    pub fn keys(&self) -> impl Iterator<Item = &SocketAddr> {
        self.running.keys()
    }

    /// Whether `key` is accepting.
    pub fn contains(&self, key: &SocketAddr) -> bool {
        self.running.contains_key(key)
    }

    /// Starts accepting on a bound socket.
    pub fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        key: SocketAddr,
        listener: TcpListener,
        opts: ListenOpts,
    ) {
        let local = listener.local_addr().unwrap_or(key);
        tracing::info!(listen = %key, addr = %local, "listening");
        let (opts_tx, opts_rx) = watch::channel(opts);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            key,
            opts_rx,
            shared.clone(),
            stop_rx,
            self.limit.clone(),
        ));
        self.running.insert(
            key,
            Running {
                opts: opts_tx,
                stop: stop_tx,
                task,
            },
        );
    }

    /// Applies new options to a running listener (next connections use them);
    /// true if they changed.
    pub fn update(&self, key: &SocketAddr, opts: ListenOpts) -> bool {
        match self.running.get(key) {
            Some(r) => r.opts.send_if_modified(|o| {
                let changed = *o != opts;
                *o = opts;
                changed
            }),
            None => false,
        }
    }

    /// Stops accepting on `key` (its socket closes) and returns the drain handle of
    /// its open connections.
    pub async fn stop(&mut self, key: &SocketAddr) -> Option<Drain> {
        let r = self.running.remove(key)?;
        let _ = r.stop.send(());
        crate::metrics::ListenerMetrics::forget(*key);
        match r.task.await {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!(listen = %key, error = %e, "accept task failed");
                None
            }
        }
    }
}

/// Waits for the connections of a stopped listener to finish, up to `grace`.
pub async fn drain(key: SocketAddr, graceful: Drain, grace: Duration) {
    let open = graceful.count();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listen = %key, ?grace, "drain timed out; closing remaining connections");
    } else {
        tracing::info!(listen = %key, connections = open, "listener drained");
    }
}

/// A running instance.
pub struct Instance {
    /// Shared state.
    pub shared: Arc<Shared>,
    bound: Vec<(SocketAddr, SocketAddr)>,
}

impl Instance {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: Config) -> Result<Instance, StartError> {
        let path = config.path.clone();
        let watch = crate::reload::watch_paths(&config);
        let registry = Registry::default();
        let max_conns = config.global.max_connections;
        let snap = Snapshot::build(config, &registry).map_err(StartError::Snapshot)?;
        let opts = listen_opts(&snap);
        let bound = bind_all(opts.keys().copied()).await?;
        let listeners = Listeners {
            running: HashMap::new(),
            limit: (max_conns > 0).then(|| Arc::new(Semaphore::new(max_conns))),
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            registry,
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            ready: AtomicBool::new(false),
            config_path: path,
            reloads: ReloadStats::default(),
            control: Control::new(listeners, watch),
        });
        shared
            .reloads
            .last_success_unix
            .store(unix_now(), Ordering::Relaxed);
        let mut bound_addrs: Vec<(SocketAddr, SocketAddr)> = bound
            .iter()
            .map(|(key, l)| (l.local_addr().unwrap_or(*key), *key))
            .collect();
        bound_addrs.sort_by_key(|(_, key)| *key);
        {
            let mut set = shared.control.listeners.lock().await;
            for (key, l) in bound {
                set.spawn(&shared, key, l, opts[&key]);
            }
        }
        Ok(Instance {
            shared,
            bound: bound_addrs,
        })
    }

    /// Bound addresses of the listeners (actual, configured), sorted by configured address.
    pub fn local_addrs(&self) -> &[(SocketAddr, SocketAddr)] {
        &self.bound
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then returns.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.ready.store(false, Ordering::SeqCst);
        let mut set = self.shared.control.listeners.lock().await;
        let keys: Vec<SocketAddr> = set.keys().copied().collect();
        let mut drains = Vec::new();
        for key in keys {
            if let Some(g) = set.stop(&key).await {
                drains.push(g.shutdown());
            }
        }
        let all = futures_util::future::join_all(drains);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown_timeout passed; closing remaining connections"
            );
        }
    }
}

/// How a listener serves its connections: fulcrum's own HTTP/1 server
/// ([`crate::proxy::server`]), or hyper-util's protocol-sniffing one when the
/// listener also speaks h2c.
enum ConnBuilder {
    /// With its `client_header_timeout`, which [`watch_head`] enforces.
    Http1(Duration),
    Auto(Box<auto::Builder<TokioExecutor>>),
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
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder.http2().timer(CoarseTimer::default());
    ConnBuilder::Auto(Box::new(builder))
}

/// The drain handle of one listener's connections: signals them to finish their
/// in-flight requests and close, and waits until they have. (hyper-util's
/// `GracefulShutdown` cannot watch hyper's own HTTP/1 connection type, and its
/// per-poll `Notify` check costs a lock on every wake-up of every connection; here a
/// connection checks one flag and re-registers its waker without locking.)
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
    fn new() -> Drain {
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

    /// Serves `conn` until it ends or a shutdown asks it to finish.
    fn serve<C, E>(&self, conn: C) -> impl std::future::Future<Output = Result<(), E>>
    where
        C: std::future::Future<Output = Result<(), E>> + GracefulConn,
    {
        let counted = self.count.subscribe();
        let slot = Arc::new(AtomicWaker::new());
        {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() >= 64 && slots.len().is_power_of_two() {
                slots.retain(|w| w.strong_count() > 0);
            }
            slots.push(Arc::downgrade(&slot));
        }
        let inner = self.inner.clone();
        async move {
            let _counted = counted;
            let mut conn = std::pin::pin!(conn);
            let mut draining = false;
            std::future::poll_fn(|cx| {
                if !draining {
                    slot.register(cx.waker());
                    if inner.stopping.load(Ordering::SeqCst) {
                        conn.as_mut().begin_shutdown();
                        draining = true;
                    }
                }
                conn.as_mut().poll(cx)
            })
            .await
        }
    }
}

/// Serves an HTTP/1 connection, closing it once it has waited `timeout` for a request
/// head: nginx's `client_header_timeout`, which (as with hyper's timer it replaces)
/// also bounds an idle keep-alive connection. The request path only stores a time
/// stamp in [`ConnMeta::waiting_since`]; the one timer per connection is re-armed
/// when it fires, not per request. A request being served is never cut off.
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
            let wait = if since == IN_FLIGHT {
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
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for ConnEnd {
    fn drop(&mut self) {
        self.active.dec();
    }
}

fn spawn_conn<E>(
    conn: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    end: ConnEnd,
) where
    E: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with error");
            // A head hyper rejected itself (400/431) is still a request to count and log.
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            let snap = end.shared.snapshot.load();
            crate::proxy::exchange::parser_rejected(&snap, end.key, end.remote, &*e);
        }
        drop(end);
    });
}

/// A connection that can stop taking new requests and finish the ones in flight.
trait GracefulConn {
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

/// Accepts until `stop` fires, then hands back the drain handle of its connections.
async fn accept_loop(
    listener: TcpListener,
    key: SocketAddr,
    mut opts: watch::Receiver<ListenOpts>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    limit: Option<Arc<Semaphore>>,
) -> Drain {
    let graceful = Drain::new();
    let metrics = crate::metrics::ListenerMetrics::new(key);
    let mut builder = conn_builder(*opts.borrow_and_update());
    loop {
        let permit = match &limit {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return graceful,
                },
                _ = &mut stop => return graceful,
            },
            None => None,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listen = %key, error = %e, "accept failed");
                    // Out of descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return graceful,
        };
        // A reload changed this listener's options: new connections use them.
        if opts.has_changed().unwrap_or(false) {
            builder = conn_builder(*opts.borrow_and_update());
        }
        let _ = stream.set_nodelay(true);
        let guard = Arc::new(crate::proxy::framing::HeadGuard::default());
        let meta = Arc::new(ConnMeta {
            remote,
            local: stream.local_addr().unwrap_or(key),
            listen_key: key,
            scheme: "http",
            head_guard: guard.clone(),
            waiting_since: AtomicU64::new(crate::clock::coarse_nanos()),
            closing: AtomicBool::new(false),
        });
        metrics.total.inc();
        metrics.active.inc();
        let end = ConnEnd {
            shared: shared.clone(),
            key,
            remote,
            active: metrics.active.clone(),
            _permit: permit,
        };
        match &builder {
            ConnBuilder::Http1(header_timeout) => spawn_conn(
                watch_head(
                    graceful.serve(crate::proxy::server::serve(
                        stream,
                        shared.clone(),
                        meta.clone(),
                    )),
                    meta,
                    *header_timeout,
                ),
                end,
            ),
            ConnBuilder::Auto(b) => {
                // hyper hides a request's conflicting framing headers: the stream is
                // watched on its way in (see `proxy::framing`).
                let io = TokioIo::new(crate::proxy::framing::Guarded::new(stream, guard));
                let conn_shared = shared.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (shared, meta) = (conn_shared.clone(), meta.clone());
                    async move {
                        let req = req.map(crate::proxy::body::ReqBody::Hyper);
                        let mut resp = handle(&shared, meta, req).await?;
                        // hyper writes a response from its `HeaderMap` only; an
                        // upstream's headers come as its raw lines.
                        if let Some(h) = resp.body().pass_headers() {
                            let map = h.to_map();
                            resp.headers_mut().extend(map);
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                spawn_conn(
                    graceful.serve(b.serve_connection_with_upgrades(io, svc).into_owned()),
                    end,
                )
            }
        }
    }
}
