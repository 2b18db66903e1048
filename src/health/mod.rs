//! Active health checks, and the admin view and control of servers.
//!
//! A supervisor task follows the routing snapshot: whenever it changes (a reload,
//! seen by polling the `ArcSwap` pointer or through [`Checker::notify`]) it
//! reconciles one check task per server, keyed by (upstream, address): new servers
//! get a task, removed ones lose theirs, unchanged ones keep it and its counters.
//! Check results go to [`PeerState::unhealthy`], which lives outside snapshots in
//! the registry, so a reload keeps the verdict of servers that stay.
//!
//! Each task starts after a random offset within its interval, so a thousand
//! servers are probed spread over the interval instead of in one burst.

pub mod admin;
pub mod counter;
pub mod error;
pub mod grpc;
pub mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::HealthCheck;
use crate::runtime::Shared;
use crate::state::Snapshot;
use crate::upstream::PeerState;
use counter::Counter;

/// How often the supervisor looks for a new snapshot when nobody notifies it.
const POLL: Duration = Duration::from_secs(1);

/// Handle of the running health checker; dropping it stops every check.
pub struct Checker {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Checker {
    /// Asks the supervisor to pick up a new snapshot now (e.g. right after a reload).
    pub fn notify(&self) {
        self.notify.notify_one();
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the health checker for the snapshots of `shared`.
pub fn spawn(shared: Arc<Shared>) -> Checker {
    let notify = Arc::new(Notify::new());
    let task = tokio::spawn(supervise(shared, notify.clone()));
    Checker { notify, task }
}

/// Logs one state change of a server: the one log line per transition.
pub fn log_change(upstream: &str, server: SocketAddr, old: &str, new: &str, reason: &str) {
    if new == "up" {
        tracing::info!(upstream, server = %server, old, new, reason, "server state changed");
    } else {
        tracing::warn!(upstream, server = %server, old, new, reason, "server state changed");
    }
}

type Key = (String, SocketAddr);

/// A running check task.
struct Running {
    check: HealthCheck,
    dial: probe::Dial,
    state: Weak<PeerState>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(shared: Arc<Shared>, notify: Arc<Notify>) {
    let mut tasks: HashMap<Key, Running> = HashMap::new();
    // A weak reference keeps the old allocation alive, so a new snapshot can never
    // reuse its address and go unnoticed.
    let mut seen: Weak<Snapshot> = Weak::new();
    loop {
        let snap = shared.snapshot.load_full();
        if !std::ptr::eq(seen.as_ptr(), Arc::as_ptr(&snap)) {
            reconcile(&snap, &mut tasks).await;
            seen = Arc::downgrade(&snap);
        }
        drop(snap);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// What the snapshot wants checked: (key) → (check, how to reach it, state).
fn wanted(snap: &Snapshot) -> HashMap<Key, (HealthCheck, probe::Dial, Arc<PeerState>)> {
    let mut want = HashMap::new();
    for up in &snap.upstreams {
        let Some(check) = &up.conf.health_check else {
            continue;
        };
        for p in up.peers().filter(|p| !p.conf.down) {
            want.entry((up.conf.name.clone(), p.conf.addr))
                .or_insert_with(|| {
                    let dial = probe::Dial {
                        name: p.conf.name.clone(),
                        tls: up.conf.tls.clone(),
                    };
                    (check.clone(), dial, p.state.clone())
                });
        }
    }
    want
}

async fn reconcile(snap: &Snapshot, tasks: &mut HashMap<Key, Running>) {
    let mut want = wanted(snap);
    let stale: Vec<Key> = tasks
        .iter()
        .filter(|(key, run)| {
            !want.get(*key).is_some_and(|(check, dial, state)| {
                *check == run.check
                    && *dial == run.dial
                    && std::ptr::eq(run.state.as_ptr(), Arc::as_ptr(state))
            })
        })
        .map(|(key, _)| key.clone())
        .collect();
    let mut stopped = Vec::new();
    for key in &stale {
        if let Some(mut run) = tasks.remove(key) {
            run.task.abort();
            // Take the handle out so it can be awaited; the placeholder is already done.
            stopped.push(std::mem::replace(&mut run.task, tokio::spawn(async {})));
        }
    }
    want.retain(|key, _| !tasks.contains_key(key));
    let kept = tasks.len();
    let stopped_n = stopped.len();
    // Wait for aborted tasks so none writes a verdict after this point.
    for t in stopped {
        let _ = t.await;
    }
    // Servers no longer checked must not stay out on an old verdict.
    for up in &snap.upstreams {
        for p in up.peers() {
            let checked = tasks.contains_key(&(up.conf.name.clone(), p.conf.addr))
                || want.contains_key(&(up.conf.name.clone(), p.conf.addr));
            if !checked && p.state.set_unhealthy(false) {
                log_change(
                    &up.conf.name,
                    p.conf.addr,
                    "unhealthy",
                    "up",
                    "health check removed",
                );
            }
        }
    }
    let started = want.len();
    for ((upstream, addr), (check, dial, state)) in want {
        let weak = Arc::downgrade(&state);
        let task = tokio::spawn(run_checks(
            upstream.clone(),
            addr,
            (check.clone(), dial.clone()),
            weak.clone(),
        ));
        tasks.insert(
            (upstream, addr),
            Running {
                check,
                dial,
                state: weak,
                task,
            },
        );
    }
    tracing::debug!(
        started,
        stopped = stopped_n,
        kept,
        "health checks reconciled"
    );
}

/// Checks one server every `interval` until the task is aborted or the server's
/// state is gone.
async fn run_checks(
    upstream: String,
    addr: SocketAddr,
    (check, dial): (HealthCheck, probe::Dial),
    state: Weak<PeerState>,
) {
    let mut counter = match state.upgrade() {
        Some(s) if s.unhealthy.load(Ordering::Relaxed) && check.mandatory => {
            Counter::pending(check.rise, check.fall)
        }
        Some(s) => Counter::new(!s.unhealthy.load(Ordering::Relaxed), check.rise, check.fall),
        None => return,
    };
    let metrics = crate::metrics::HealthMetrics::new(&upstream, addr);
    let offset = rand::thread_rng().gen_range(Duration::ZERO..check.interval);
    let mut tick = tokio::time::interval_at(Instant::now() + offset, check.interval);
    // A slow check pushes the next one back rather than firing a burst after it.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut session = probe::Session::default();
    loop {
        tick.tick().await;
        let result = probe::probe(&check, &dial, addr, &mut session).await;
        let Some(st) = state.upgrade() else { return };
        metrics.record(result.is_ok());
        if let Err(e) = &result {
            tracing::debug!(upstream, server = %addr, error = %e, "health check failed");
        }
        let was_pending = counter.is_pending();
        let Some(healthy) = counter.record(result.is_ok()) else {
            continue;
        };
        st.set_unhealthy(!healthy);
        let reason = match &result {
            Ok(()) if was_pending => "first health check passed".to_string(),
            Ok(()) => format!("health check passed {} times in a row", check.rise),
            Err(e) => format!("health check failed {} times in a row: {e}", check.fall),
        };
        let (old, new) = if healthy {
            ("unhealthy", "up")
        } else {
            ("up", "unhealthy")
        };
        log_change(&upstream, addr, old, new, &reason);
    }
}
