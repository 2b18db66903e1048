//! Process life cycle: bind listeners, serve, shut down gracefully. Listeners are
//! kept in a [`Listeners`] set keyed by their configured address so a reload
//! (see [`crate::reload`]) can add and remove them one by one.

mod accept;
mod conn_watch;
mod drain;
mod listeners;
pub mod proxy_header;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use drain::Drain;
pub use listeners::{drain, Listeners};

use crate::config::Config;
use crate::state::Snapshot;
use crate::upstream::Registry;

/// State shared by every connection and the admin API.
pub struct Shared {
    /// The routing snapshot; swapped whole on reload. Shared with the request path
    /// (which knows nothing of the runtime) as it is.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Live per-server state, kept across reloads.
    pub registry: Registry,
    /// `/readyz`: config loaded and listeners bound, not shutting down.
    pub ready: AtomicBool,
    /// The config file.
    pub config_path: PathBuf,
    /// Reload outcomes, read by the metrics endpoint.
    pub reloads: ReloadStats,
    /// The running listeners and the watched files; reloads lock it, one at a time.
    pub control: Control,
}

/// The reload side of [`Shared`] (used by `crate::reload`): the running listeners and the files to watch.
pub struct Control {
    /// Running listeners; held for the whole of a reload, so reloads never overlap.
    pub listeners: tokio::sync::Mutex<Listeners>,
    /// Files whose change triggers a reload (the config file, then every cert and key
    /// it names), updated by each successful reload.
    pub paths: tokio::sync::watch::Sender<Vec<PathBuf>>,
    /// A digest of the watched files as the last reload (by any trigger) read them,
    /// so that the watcher does not reload again what a `POST /reload` or `SIGHUP`
    /// has already applied.
    pub read: std::sync::Mutex<Option<u64>>,
}

impl Control {
    /// Control over `listeners`, watching `paths`.
    pub fn new(listeners: Listeners, paths: Vec<PathBuf>) -> Control {
        Control {
            listeners: tokio::sync::Mutex::new(listeners),
            paths: tokio::sync::watch::Sender::new(paths),
            read: std::sync::Mutex::new(None),
        }
    }
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
    #[error(transparent)]
    Snapshot(#[from] crate::state::BuildError),
}

/// Settings of one listener, taken from its default (first) server as nginx does
/// before the Host is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOpts {
    /// Serve h2c (prior knowledge) besides HTTP/1.
    pub http2: bool,
    /// Time to receive a request head; also the TLS handshake's.
    pub header_timeout: Duration,
    /// Longest idle wait between two requests of a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Connections start with a TLS handshake (the certificates come from the
    /// snapshot at the time of each handshake, so a reload swaps them).
    pub tls: bool,
    /// Connections start with a PROXY protocol header (every server on the
    /// address says the same: the config is checked for it).
    pub proxy_protocol: bool,
}

/// The options of every listen address of a snapshot.
pub fn listen_opts(snap: &Snapshot) -> HashMap<SocketAddr, ListenOpts> {
    snap.listeners
        .iter()
        .map(|(addr, r)| {
            let first = r.servers.first().map(|&i| &snap.servers[i].conf);
            let http2 = r.servers.iter().any(|&i| snap.servers[i].conf.http2);
            let proxy_protocol = r
                .servers
                .iter()
                .any(|&i| snap.servers[i].conf.proxy_protocol);
            (
                *addr,
                ListenOpts {
                    http2,
                    header_timeout: first
                        .map_or(Duration::from_secs(60), |c| c.client_header_timeout),
                    keepalive_timeout: first
                        .map_or(Duration::from_secs(75), |c| c.keepalive_timeout),
                    tls: first.is_some_and(|c| c.tls.is_some()),
                    proxy_protocol,
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
        let watch = config.watch_paths();
        let registry = Registry::default();
        let max_conns = config.global.max_connections;
        let snap = Snapshot::build(config, &registry)?;
        let opts = listen_opts(&snap);
        let bound = bind_all(opts.keys().copied()).await?;
        let listeners = Listeners::new(max_conns);
        let shared = Arc::new(Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(snap)),
            registry,
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
