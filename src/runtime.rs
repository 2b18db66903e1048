//! Process life cycle: bind listeners, serve, reload, shut down gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{self, Config};
use crate::proxy::service::{handle, ConnMeta};
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success_unix.store(now, Ordering::Relaxed);
    }
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
#[derive(Clone, Copy)]
struct ListenOpts {
    http2: bool,
    header_timeout: Duration,
}

fn listen_opts(snap: &Snapshot) -> HashMap<SocketAddr, ListenOpts> {
    snap.listeners
        .iter()
        .map(|(addr, r)| {
            let first = &snap.servers[r.servers[0]].conf;
            let http2 = r.servers.iter().any(|&i| snap.servers[i].conf.http2);
            (
                *addr,
                ListenOpts {
                    http2,
                    header_timeout: first.client_header_timeout,
                },
            )
        })
        .collect()
}

/// A running instance.
pub struct Instance {
    /// Shared state.
    pub shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    bound: Vec<(SocketAddr, SocketAddr)>,
    listeners: Vec<(
        SocketAddr,
        Arc<GracefulShutdown>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Instance {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: Config) -> Result<Instance, StartError> {
        let path = config.path.clone();
        let registry = Registry::default();
        let max_conns = config.global.max_connections;
        let snap = Snapshot::build(config, &registry).map_err(StartError::Snapshot)?;
        let opts = listen_opts(&snap);
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
        });
        shared.reloads.last_success_unix.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Ordering::Relaxed,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let limit = (max_conns > 0).then(|| Arc::new(Semaphore::new(max_conns)));
        let mut bound = Vec::new();
        let mut addrs: Vec<_> = opts.keys().copied().collect();
        addrs.sort();
        for addr in addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            bound.push((addr, l));
        }
        let mut listeners = Vec::new();
        let mut bound_addrs = Vec::new();
        for (key, l) in bound {
            let local = l.local_addr().unwrap_or(key);
            bound_addrs.push((local, key));
            tracing::info!(listen = %key, addr = %local, "listening");
            let graceful = Arc::new(GracefulShutdown::new());
            let task = tokio::spawn(accept_loop(
                l,
                key,
                opts[&key],
                shared.clone(),
                graceful.clone(),
                stop_rx.clone(),
                limit.clone(),
            ));
            listeners.push((key, graceful, task));
        }
        Ok(Instance {
            shared,
            stop_tx,
            listeners,
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
        let _ = self.stop_tx.send(true);
        let mut drains = Vec::new();
        for (addr, graceful, task) in self.listeners {
            let _ = task.await;
            // The accept task held the only other reference.
            match Arc::try_unwrap(graceful) {
                Ok(g) => drains.push(g.shutdown()),
                Err(_) => tracing::warn!(listen = %addr, "listener still referenced at shutdown"),
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

    /// Re-reads the config file and swaps the routing snapshot. Listener changes are
    /// refused for now: they need a restart.
    pub fn reload(&self) -> Result<(), String> {
        let r = self.try_reload();
        if r.is_err() {
            self.shared.reloads.failure.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn try_reload(&self) -> Result<(), String> {
        let cfg = config::load(&self.shared.config_path).map_err(|e| e.to_string())?;
        let snap = Snapshot::build(cfg, &self.shared.registry)?;
        let old = self.shared.snapshot.load();
        let mut a: Vec<_> = old.listen_addrs();
        let mut b: Vec<_> = snap.listen_addrs();
        a.sort();
        b.sort();
        if a != b {
            return Err("listen addresses changed: restart fulcrum to apply".into());
        }
        self.shared.snapshot.store(Arc::new(snap));
        self.shared.registry.prune();
        self.shared.reloads.succeeded();
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    key: SocketAddr,
    opts: ListenOpts,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    limit: Option<Arc<Semaphore>>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !opts.http2 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        let permit = match &limit {
            Some(s) => match s.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
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
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let meta = Arc::new(ConnMeta {
            remote,
            local: stream.local_addr().unwrap_or(key),
            listen_key: key,
            scheme: "http",
            framing_conflict: flag.clone(),
        });
        let stream = crate::proxy::framing::Guarded::new(stream, flag);
        let shared = shared.clone();
        let svc = service_fn(move |req| handle(shared.clone(), meta.clone(), req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with error");
            }
            drop(permit);
        });
    }
}
