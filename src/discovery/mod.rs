//! DNS discovery for `resolve = true` pools: each entry is looked up every
//! `resolve_interval` (sooner when the TTL is shorter, jittered), and when a pool's
//! addresses change the pool is rebuilt and swapped in with one snapshot store, as
//! a reload does. Answers are kept in [`crate::upstream::Registry`]'s
//! `discovered`, so a config reload expands the pool to the same addresses (no
//! flap back to what the file says); servers that stay keep their live state from
//! the registry, and requests on removed ones finish on the snapshot they hold.

pub mod lookup;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Lookup;
use crate::metrics::DnsMetrics;
use crate::runtime::Shared;
use crate::state::Snapshot;
use crate::upstream::Upstream;
use lookup::Dns;

/// The schedule of one (pool, lookup).
struct Entry {
    due: Instant,
    interval: Duration,
    failing: bool,
    metrics: DnsMetrics,
}

/// The running discovery task; dropping it stops the task.
pub struct Discovery {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks for reloads (new entries, a new resolver) at least this often.
const TICK: Duration = Duration::from_secs(1);

/// Resolves every `resolve` pool once (so the first requests find servers), then
/// keeps following them in a task.
pub async fn start(shared: Arc<Shared>) -> Discovery {
    let mut d = Discoverer {
        shared,
        dns: None,
        entries: HashMap::new(),
    };
    d.round().await;
    Discovery {
        task: tokio::spawn(async move {
            loop {
                let next = d.next_due().min(Instant::now() + TICK);
                tokio::time::sleep_until(next).await;
                d.round().await;
            }
        }),
    }
}

struct Discoverer {
    shared: Arc<Shared>,
    dns: Option<(Vec<std::net::SocketAddr>, Duration, Arc<Dns>)>,
    entries: HashMap<(String, Lookup), Entry>,
}

impl Discoverer {
    fn next_due(&self) -> Instant {
        let far = Instant::now() + TICK;
        self.entries.values().map(|e| e.due).min().unwrap_or(far)
    }

    /// The resolver for the running `[global]`, rebuilt when a reload changed it.
    fn dns(&mut self, snap: &Snapshot) -> Option<Arc<Dns>> {
        let g = &snap.global;
        if let Some((s, t, d)) = &self.dns {
            if *s == g.resolver && *t == g.resolver_timeout {
                return Some(d.clone());
            }
        }
        match Dns::new(&g.resolver, g.resolver_timeout) {
            Ok(d) => {
                let d = Arc::new(d);
                self.dns = Some((g.resolver.clone(), g.resolver_timeout, d.clone()));
                Some(d)
            }
            Err(e) => {
                if self.dns.is_some() || self.entries.is_empty() {
                    tracing::error!("DNS discovery: {e}");
                }
                None
            }
        }
    }

    /// Follows the running snapshot's entries, asks the due ones, applies changes.
    async fn round(&mut self) {
        let snap = self.shared.snapshot.load_full();
        let now = Instant::now();
        let mut wanted = HashMap::new();
        for u in &snap.upstreams {
            if let Some(r) = &u.conf.resolve {
                for e in &r.entries {
                    wanted.insert((u.conf.name.clone(), e.lookup.clone()), r.interval);
                }
            }
        }
        self.entries.retain(|k, _| wanted.contains_key(k));
        for (k, interval) in wanted {
            let e = self.entries.entry(k.clone()).or_insert_with(|| Entry {
                due: now,
                interval,
                failing: false,
                metrics: DnsMetrics::new(&k.0),
            });
            e.interval = interval;
        }
        let due: Vec<(String, Lookup)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(dns) = self.dns(&snap) else { return };
        let answers = futures_util::future::join_all(due.iter().map(|(_, l)| dns.lookup(l))).await;
        let mut changed = Vec::new();
        for ((pool, l), answer) in due.into_iter().zip(answers) {
            let Some(e) = self.entries.get_mut(&(pool.clone(), l.clone())) else {
                continue;
            };
            let wait = match answer {
                Ok(a) => {
                    e.metrics.success.inc();
                    if std::mem::take(&mut e.failing) {
                        tracing::info!(upstream = %pool, name = l.name(), "DNS lookups answer again");
                    }
                    if self.shared.registry.discovered.set(&pool, &l, a.found)
                        && !changed.contains(&pool)
                    {
                        changed.push(pool.clone());
                    }
                    e.interval.min(a.ttl.max(Duration::from_millis(500)))
                }
                Err(err) => {
                    e.metrics.failure.inc();
                    if !std::mem::replace(&mut e.failing, true) {
                        tracing::warn!(upstream = %pool, "{err}; keeping the last good addresses");
                    }
                    e.interval
                }
            };
            // Jitter below the period: replicas spread their queries, none waits longer.
            e.due = Instant::now() + wait.mul_f64(0.8 + 0.2 * fastrand::f64());
        }
        if !changed.is_empty() {
            apply(&self.shared, &changed).await;
        }
    }
}

/// Rebuilds pools `names` from the stored answers and swaps the snapshot, under the
/// reload lock (a reload and discovery never swap over each other).
async fn apply(shared: &Arc<Shared>, names: &[String]) {
    let _set = shared.control.listeners.lock().await;
    let old = shared.snapshot.load_full();
    let upstreams = old
        .upstreams
        .iter()
        .map(|u| {
            if names.contains(&u.conf.name) {
                Arc::new(Upstream::new(
                    u.conf.clone(),
                    &shared.registry,
                    crate::balance::build,
                ))
            } else {
                u.clone()
            }
        })
        .collect();
    let snap = old.with_upstreams(upstreams);
    for u in snap
        .upstreams
        .iter()
        .filter(|u| names.contains(&u.conf.name))
    {
        tracing::info!(upstream = %u.conf.name, servers = u.peers().count(), "DNS discovery updated the pool");
    }
    shared.snapshot.store(Arc::new(snap));
    drop(old);
    let sh = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        sh.registry.prune();
        crate::metrics::retain(&sh.snapshot.load().metric_labels());
    })
    .await;
}
