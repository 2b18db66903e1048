//! Upstream pools at run time: the immutable per-snapshot view ([`Upstream`],
//! [`Tier`], [`Peer`]) over live per-server state ([`PeerState`]) that outlives
//! snapshots, so a reload keeps failure counts, in-flight counts and pooled
//! connections for servers that stay.

pub mod conn;
pub mod discovered;
pub mod ewma;
pub mod h2;
mod registry;
pub mod select;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use registry::Registry;
pub use select::{Balancer, BalancerFactory, Now, PickState};

use crate::config::{self, ServerConf};
use conn::IdlePool;

/// Whole seconds since the process started: nginx's `ngx_time()` granularity, which
/// `fail_timeout` accounting relies on.
pub fn now_secs() -> u64 {
    crate::clock::uptime_secs()
}

/// State shared by every server of one pool, across snapshots.
#[derive(Debug, Default)]
pub struct PoolState {
    /// Servers of the pool that are unhealthy, draining, at `max_conns` or have
    /// failures on record. While it is zero every non-`down` server is available, so
    /// a balancer may use a precomputed schedule instead of scanning the pool.
    impaired: AtomicU32,
}

impl PoolState {
    /// How many servers of the pool are impaired now.
    #[inline]
    pub fn impaired(&self) -> u32 {
        self.impaired.load(Ordering::Acquire)
    }
}

const IMPAIRED_UNHEALTHY: u8 = 1;
const IMPAIRED_DRAINING: u8 = 2;
const IMPAIRED_FAILING: u8 = 4;
const IMPAIRED_SATURATED: u8 = 8;

/// Live state of one server, shared by every snapshot that contains it.
#[derive(Debug, Default)]
pub struct PeerState {
    /// Attempts in flight (nginx `conns`).
    pub conns: AtomicU32,
    /// Failures counted since the last reset (nginx `fails`).
    pub fails: AtomicU32,
    /// Time of the last failure (nginx `accessed`).
    pub accessed: AtomicU64,
    /// Start of the current failure window / last probe (nginx `checked`).
    pub checked: AtomicU64,
    /// Set while active health checks say the server is down.
    pub unhealthy: AtomicBool,
    /// Set by the operator: no new requests.
    pub draining: AtomicBool,
    /// Attempts started.
    pub requests: AtomicU64,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// Idle keep-alive connections to this server.
    pub idle: IdlePool,
    /// HTTP/2 connections to this server (`protocol = "h2"`).
    pub h2: h2::H2Pool,
    /// Peak-EWMA latency estimate.
    pub ewma: ewma::Ewma,
    /// Why this server counts in its pool's [`PoolState::impaired`].
    impairment: Impairment,
}

/// The reasons a server counts as impaired (bit set), and its pool's count.
#[derive(Debug, Default)]
struct Impairment {
    bits: AtomicU8,
    pool: Arc<PoolState>,
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if *self.bits.get_mut() != 0 {
            self.pool.impaired.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl PeerState {
    /// A fresh state belonging to `pool`.
    pub fn new(pool: Arc<PoolState>) -> PeerState {
        let mut s = PeerState::default();
        s.impairment.pool = pool;
        s
    }

    /// Sets or clears one impairment reason, keeping the pool's count exact.
    fn impair(&self, bit: u8, on: bool) {
        let imp = &self.impairment;
        let prev = if on {
            imp.bits.fetch_or(bit, Ordering::AcqRel)
        } else {
            imp.bits.fetch_and(!bit, Ordering::AcqRel)
        };
        let next = if on { prev | bit } else { prev & !bit };
        if prev == 0 && next != 0 {
            imp.pool.impaired.fetch_add(1, Ordering::AcqRel);
        } else if prev != 0 && next == 0 {
            imp.pool.impaired.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Marks the server unhealthy (active checks) or healthy; returns the old value.
    pub fn set_unhealthy(&self, v: bool) -> bool {
        let old = self.unhealthy.swap(v, Ordering::Relaxed);
        self.impair(IMPAIRED_UNHEALTHY, v);
        old
    }

    /// Starts or ends an operator drain; returns the old value.
    pub fn set_draining(&self, v: bool) -> bool {
        let old = self.draining.swap(v, Ordering::Relaxed);
        self.impair(IMPAIRED_DRAINING, v);
        old
    }

    /// Flags the server while it is at `max_conns`, after its in-flight count changed
    /// across the cap. Checked twice: a concurrent change that crossed back between
    /// the read and the flag is caught by the second read (or by its own call).
    fn note_conns(&self, max_conns: u32) {
        for _ in 0..2 {
            let at = self.conns.load(Ordering::Acquire) >= max_conns;
            self.impair(IMPAIRED_SATURATED, at);
            if (self.conns.load(Ordering::Acquire) >= max_conns) == at {
                break;
            }
        }
    }

    /// Counts a failure (nginx `fails += 1`).
    fn add_failure(&self) -> u32 {
        let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        self.impair(IMPAIRED_FAILING, true);
        n
    }

    /// Forgets failures (nginx `fails = 0`).
    pub(crate) fn reset_failures(&self) {
        if self.fails.swap(0, Ordering::Relaxed) != 0 {
            self.impair(IMPAIRED_FAILING, false);
            // A failure counted meanwhile must keep the server flagged.
            if self.fails.load(Ordering::Relaxed) != 0 {
                self.impair(IMPAIRED_FAILING, true);
            }
        }
    }
}

/// One server of a tier in a snapshot: its configuration and its live state.
pub struct Peer {
    /// Configuration.
    pub conf: ServerConf,
    /// `fail_timeout` in whole seconds.
    pub fail_timeout: u64,
    /// Live state.
    pub state: Arc<PeerState>,
    /// The name it came from: the hostname (or address) as written, or the SRV name.
    pub origin: Arc<str>,
    /// Metric handles, resolved with the snapshot.
    pub metrics: crate::metrics::PeerMetrics,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({})", self.conf.addr)
    }
}

impl Peer {
    /// Out by passive accounting: `max_fails` reached within `fail_timeout`.
    #[inline]
    pub fn failed_out(&self, now: u64) -> bool {
        self.failed_out_at(&Now::at(now))
    }

    /// [`Peer::failed_out`], reading the clock only if failures were counted.
    #[inline]
    fn failed_out_at(&self, now: &Now) -> bool {
        let s = &self.state;
        self.conf.max_fails != 0
            && s.fails.load(Ordering::Relaxed) >= self.conf.max_fails
            && now.get().saturating_sub(s.checked.load(Ordering::Relaxed)) <= self.fail_timeout
    }

    /// At its `max_conns` cap.
    #[inline]
    pub fn at_max_conns(&self) -> bool {
        self.conf.max_conns != 0 && self.state.conns.load(Ordering::Relaxed) >= self.conf.max_conns
    }

    /// Not down, drained or unhealthy (the states that do not depend on time).
    #[inline]
    pub fn enabled(&self) -> bool {
        !self.conf.down
            && !self.state.draining.load(Ordering::Relaxed)
            && !self.state.unhealthy.load(Ordering::Relaxed)
    }

    /// Whether a request may be sent here now (ignoring what this request tried).
    #[inline]
    pub fn available(&self, now: u64) -> bool {
        self.available_at(&Now::at(now))
    }

    /// [`Peer::available`] with a lazily read clock.
    #[inline]
    pub fn available_at(&self, now: &Now) -> bool {
        self.enabled() && !self.failed_out_at(now) && !self.at_max_conns()
    }

    /// The `state` of `/status`.
    pub fn state_name(&self, now: u64) -> &'static str {
        if self.conf.down {
            "down"
        } else if self.state.draining.load(Ordering::Relaxed) {
            "draining"
        } else if self.state.unhealthy.load(Ordering::Relaxed) {
            "unhealthy"
        } else if self.failed_out(now) {
            "failed"
        } else {
            "up"
        }
    }
}

/// The primary or the backup list of a pool, with its balancer.
#[derive(Debug)]
pub struct Tier {
    /// Peers in config order.
    pub peers: Vec<Peer>,
    /// Σ weight, down peers included (nginx).
    pub total_weight: u64,
    /// One primary peer and no backups: nginx never disables nor retries it.
    pub single: bool,
    /// The pool's shared state (its impaired count).
    pub pool: Arc<PoolState>,
    balancer: OnceLock<Box<dyn Balancer>>,
}

impl Tier {
    /// A tier of `peers` balanced as `conf` says.
    pub fn new(
        peers: Vec<Peer>,
        single: bool,
        conf: &config::Upstream,
        pool: Arc<PoolState>,
        balancers: BalancerFactory,
    ) -> Tier {
        let total_weight = peers.iter().map(|p| u64::from(p.conf.weight)).sum();
        let tier = Tier {
            peers,
            total_weight,
            single,
            pool,
            balancer: OnceLock::new(),
        };
        let _ = tier.balancer.set(balancers(&tier, conf));
        tier
    }

    /// This tier's balancer.
    pub fn balancer(&self) -> &dyn Balancer {
        match self.balancer.get() {
            Some(b) => b.as_ref(),
            None => unreachable!("Tier::new always sets the balancer"),
        }
    }
}

/// Which tier a pick came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierId {
    /// Primary servers.
    Primary,
    /// Backup servers.
    Backup,
}

/// A pool in a snapshot.
#[derive(Debug)]
pub struct Upstream {
    /// Its configuration.
    pub conf: config::Upstream,
    /// Primary servers.
    pub primary: Tier,
    /// Backup servers, if any.
    pub backup: Option<Tier>,
    /// Servers not marked `down` (primaries and backups): nginx's try budget before
    /// a location's `next_upstream_tries` caps it.
    pub servers_up: u32,
    /// Metric handles, resolved with the snapshot.
    pub metrics: crate::metrics::UpstreamMetrics,
}

/// Per-request selection state of one pool.
#[derive(Debug, Default)]
pub struct Selection {
    tried: select::Tried,
    on_backup: bool,
    scratch: select::Scratch,
}

/// A chosen peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The tier.
    pub tier: TierId,
    /// Index within the tier.
    pub idx: usize,
}

impl Upstream {
    /// Builds the runtime pool, taking live state for each server from `registry`
    /// and a balancer for each tier from `balancers`.
    pub fn new(
        conf: config::Upstream,
        registry: &Registry,
        balancers: BalancerFactory,
    ) -> Upstream {
        // Mandatory checks: a new server gets no traffic before its first pass.
        let mandatory = conf.health_check.as_ref().is_some_and(|h| h.mandatory);
        let mut conf = conf;
        let expanded = registry.discovered.expand(&conf);
        if conf.resolve.is_some() {
            conf.servers = expanded.iter().map(|(s, _)| s.clone()).collect();
        }
        let mk = |backup: bool| -> Vec<Peer> {
            expanded
                .iter()
                .filter(|(s, _)| s.backup == backup)
                .map(|(s, origin)| Peer {
                    conf: s.clone(),
                    origin: origin.clone(),
                    fail_timeout: s.fail_timeout.as_secs(),
                    state: registry.get_or_init(&conf.name, s.addr, |st| {
                        st.set_unhealthy(mandatory);
                    }),
                    metrics: crate::metrics::PeerMetrics::new(&conf.name, s.addr),
                })
                .collect()
        };
        let primary = mk(false);
        let backup = mk(true);
        let single = primary.len() == 1 && backup.is_empty();
        let servers_up = conf.servers.iter().filter(|s| !s.down).count() as u32;
        let pool = registry.pool(&conf.name);
        let primary = Tier::new(primary, single, &conf, pool.clone(), balancers);
        let backup = (!backup.is_empty()).then(|| Tier::new(backup, false, &conf, pool, balancers));
        Upstream {
            metrics: crate::metrics::UpstreamMetrics::new(&conf.name),
            conf,
            primary,
            backup,
            servers_up,
        }
    }

    /// Every server of the pool, primaries then backups.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.primary
            .peers
            .iter()
            .chain(self.backup.iter().flat_map(|b| &b.peers))
    }

    /// The tier a pick refers to.
    pub fn tier(&self, id: TierId) -> &Tier {
        match (id, &self.backup) {
            (TierId::Backup, Some(b)) => b,
            _ => &self.primary,
        }
    }

    /// The peer a pick refers to.
    pub fn peer(&self, pick: Pick) -> &Peer {
        &self.tier(pick.tier).peers[pick.idx]
    }

    /// Chooses the next peer for a request (nginx `get_round_robin_peer` and the
    /// backup fallback), and counts the attempt as started. `None`: no live upstream.
    pub fn select(
        &self,
        sel: &mut Selection,
        key: Option<&[u8]>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<Pick> {
        let now = Now::default();
        if self.primary.peers.is_empty() && self.backup.is_none() {
            // A `resolve` pool whose names answered with no address.
            return None;
        }
        if self.primary.single {
            let p = &self.primary.peers[0];
            if sel.tried.contains(0) || !p.enabled() || p.at_max_conns() {
                return None;
            }
            sel.tried.insert(0);
            p.state.conns.fetch_add(1, Ordering::Relaxed);
            p.state.requests.fetch_add(1, Ordering::Relaxed);
            return Some(Pick {
                tier: TierId::Primary,
                idx: 0,
            });
        }
        loop {
            let id = if sel.on_backup {
                TierId::Backup
            } else {
                TierId::Primary
            };
            let tier = self.tier(id);
            let mut req = PickState {
                tried: &mut sel.tried,
                now: &now,
                key,
                client_ip,
                scratch: sel.scratch,
            };
            let picked = tier.balancer().pick(tier, &mut req);
            sel.scratch = req.scratch;
            if let Some(idx) = picked {
                let p = &tier.peers[idx];
                sel.tried.insert(idx);
                let s = &p.state;
                let conns = s.conns.fetch_add(1, Ordering::AcqRel) + 1;
                if p.conf.max_conns != 0 && conns >= p.conf.max_conns {
                    s.note_conns(p.conf.max_conns);
                }
                s.requests.fetch_add(1, Ordering::Relaxed);
                // `checked` matters only once failures were counted (the failure
                // window, and whether a success resets `fails`): a healthy server
                // costs no clock read.
                if s.fails.load(Ordering::Relaxed) != 0 {
                    let now = now.get();
                    if now.saturating_sub(s.checked.load(Ordering::Relaxed)) > p.fail_timeout {
                        s.checked.store(now, Ordering::Relaxed);
                    }
                }
                return Some(Pick { tier: id, idx });
            }
            if sel.on_backup || self.backup.is_none() {
                return None;
            }
            // Every primary is out: the request moves to the backups for good.
            sel.on_backup = true;
            sel.tried.clear();
            sel.scratch = Default::default();
        }
    }

    /// Ends an attempt (nginx `free_round_robin_peer`): failure accounting, then
    /// the in-flight count.
    pub fn finish(&self, pick: Pick, failed: bool) {
        let tier = self.tier(pick.tier);
        let p = &tier.peers[pick.idx];
        let s = &p.state;
        if !tier.single {
            if failed {
                let now = now_secs();
                let fails = s.add_failure();
                s.failures.fetch_add(1, Ordering::Relaxed);
                s.accessed.store(now, Ordering::Relaxed);
                s.checked.store(now, Ordering::Relaxed);
                tier.balancer().on_failure(tier, pick.idx);
                if p.conf.max_fails != 0 && fails == p.conf.max_fails {
                    tracing::warn!(
                        upstream = %self.conf.name,
                        server = %p.conf.addr,
                        "upstream server temporarily disabled"
                    );
                }
            } else if s.accessed.load(Ordering::Relaxed) < s.checked.load(Ordering::Relaxed) {
                s.reset_failures();
            }
        } else if failed {
            s.failures.fetch_add(1, Ordering::Relaxed);
        }
        // SeqCst: least_conn's index pairs it with its own reads (`on_finish`).
        let conns = s.conns.fetch_sub(1, Ordering::SeqCst);
        if p.conf.max_conns != 0 && conns >= p.conf.max_conns {
            s.note_conns(p.conf.max_conns);
        }
        tier.balancer().on_finish(tier, pick.idx);
    }

    /// Whether the balancer wants response times ([`Upstream::observe_rtt`]).
    #[inline]
    pub fn wants_rtt(&self) -> bool {
        self.conf.balance == config::Balance::PeakEwma
    }

    /// Reports how long the picked server took to send its response head.
    pub fn observe_rtt(&self, pick: Pick, rtt: Duration) {
        self.peer(pick)
            .state
            .ewma
            .observe(rtt.as_nanos() as u64, crate::clock::coarse_nanos());
    }
}
