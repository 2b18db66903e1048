//! The accepting listeners of an instance, by configured address, so a reload can
//! start and stop them one by one; stopping one hands back the drain handle of its
//! open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use super::accept::accept_loop;
use super::drain::Drain;
use super::{ListenOpts, Shared};

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
    /// No listeners yet; `max_connections` (0: no limit) bounds the connections of
    /// all of them together.
    pub fn new(max_connections: usize) -> Listeners {
        Listeners {
            running: HashMap::new(),
            limit: (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections))),
        }
    }

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
