//! Server selection. Each algorithm is one module implementing [`Balancer`] over a
//! [`Tier`] (the primary or the backup list of a pool). The common rules — which
//! peers are eligible, falling back to backups, marking a pick — live in
//! [`crate::upstream`]; an algorithm only chooses among eligible peers.
//!
//! Every algorithm is nginx's to the letter (NGINX_COMPAT.md §1–§6) except
//! `peak_ewma`, which nginx does not have. Users' view: docs/balancing.md.

pub mod chash;
pub mod hash;
pub mod ip_hash;
pub mod least_conn;
pub mod peak_ewma;
pub mod random;
pub mod round_robin;

use std::cell::Cell;
use std::fmt::Debug;
use std::net::IpAddr;

use crate::config;
use crate::upstream::{Peer, Tier};

/// nginx gives up hashing (and random sampling) after this many unusable candidates
/// and falls back to round robin.
pub const MAX_TRIES: u32 = 20;

/// The balancer `conf` asks for, over `tier`.
pub fn build(tier: &Tier, conf: &config::Upstream) -> Box<dyn Balancer> {
    use config::Balance as B;
    match conf.balance {
        B::RoundRobin => Box::new(round_robin::RoundRobin::new(tier)),
        B::LeastConn => Box::new(least_conn::LeastConn::new(tier)),
        B::IpHash => Box::new(ip_hash::IpHash::new(tier)),
        B::Hash if conf.consistent => Box::new(chash::ConsistentHash::new(tier)),
        B::Hash => Box::new(hash::Hash::new(tier)),
        B::Random => Box::new(random::Random::new(tier, false)),
        B::RandomTwoLeastConn => Box::new(random::Random::new(tier, true)),
        B::PeakEwma => Box::new(peak_ewma::PeakEwma::new(tier)),
    }
}

/// nginx's weight walk (`while w >= weight[i]: w -= weight[i]; i++`), `down` peers
/// included: a direct table from weight unit to peer when Σ weight is small enough,
/// else a binary search over cumulative weights. Same answer, O(1) or O(log n).
#[derive(Debug)]
pub struct WeightWalk {
    ends: Vec<u64>,
    /// `table[w]`: the peer holding weight unit `w`.
    table: Option<Box<[u32]>>,
}

/// Largest Σ weight given a direct table (1 MiB of entries).
const WALK_TABLE_MAX: u64 = 1 << 18;

impl WeightWalk {
    /// The walk over `tier`'s peers in config order.
    pub fn new(tier: &Tier) -> Self {
        let mut sum = 0;
        let ends: Vec<u64> = tier
            .peers
            .iter()
            .map(|p| {
                sum += u64::from(p.conf.weight);
                sum
            })
            .collect();
        let table = (sum <= WALK_TABLE_MAX).then(|| {
            tier.peers
                .iter()
                .enumerate()
                .flat_map(|(i, p)| std::iter::repeat(i as u32).take(p.conf.weight as usize))
                .collect()
        });
        WeightWalk { ends, table }
    }

    /// Σ weight (nginx `total_weight`).
    #[inline]
    pub fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The peer whose weight range holds `w` (`w < total`).
    #[inline]
    pub fn find(&self, w: u64) -> usize {
        if let Some(i) = self.table.as_ref().and_then(|t| t.get(w as usize)) {
            return *i as usize;
        }
        self.ends
            .partition_point(|&e| e <= w)
            .min(self.ends.len().saturating_sub(1))
    }
}

/// A selection algorithm for one tier of a pool. Built once per config snapshot;
/// its mutable state (weights, cursors) is its own business, but a pick must not
/// block other requests for long.
pub trait Balancer: Send + Sync + Debug {
    /// Chooses one peer of `tier` that is [`eligible`] for this request, or `None`.
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize>;

    /// A try on peer `idx` failed (nginx lowers the round-robin effective weight).
    fn on_failure(&self, _tier: &Tier, _idx: usize) {}

    /// An attempt on peer `idx` ended: its in-flight count (`PeerState::conns`) just
    /// dropped (least_conn's index refiles it; a pick's own increment it expects).
    #[inline]
    fn on_finish(&self, _tier: &Tier, _idx: usize) {}

    /// Whether least_conn's index answers picks now.
    #[cfg(test)]
    fn indexed(&self) -> bool {
        false
    }
}

/// Per-request selection state, carried across the retries of one request.
#[derive(Debug)]
pub struct PickState<'a> {
    /// Peers of the current tier already tried by this request.
    pub tried: &'a mut Tried,
    /// Coarse clock in whole seconds (nginx `ngx_time()`), read only if needed.
    pub now: &'a Now,
    /// The evaluated `hash_key`, for "hash".
    pub key: Option<&'a [u8]>,
    /// The client address, for "ip_hash".
    pub client_ip: Option<IpAddr>,
    /// Scratch the hash algorithms keep between tries of one request (nginx keeps
    /// `hash`, `rehash` and `tries` in its per-request peer data).
    pub scratch: Scratch,
}

/// nginx's `ngx_time()` for one pick: read at most once, and only when a server's
/// failure window has to be checked (a healthy pool never needs the clock).
#[derive(Debug, Default)]
pub struct Now(Cell<Option<u64>>);

impl Now {
    /// A clock fixed at `secs` (tests).
    pub fn at(secs: u64) -> Now {
        Now(Cell::new(Some(secs)))
    }

    /// Whole seconds since the process started.
    #[inline]
    pub fn get(&self) -> u64 {
        match self.0.get() {
            Some(n) => n,
            None => {
                let n = crate::upstream::now_secs();
                self.0.set(Some(n));
                n
            }
        }
    }
}

/// Algorithm scratch carried between tries of one request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scratch {
    /// Running hash value.
    pub hash: u32,
    /// Rehash counter / ring index.
    pub rehash: u32,
    /// Failed candidate count (nginx gives up hashing after 20).
    pub tries: u32,
    /// Whether `hash`/`rehash` have been initialised for this request.
    pub started: bool,
}

impl Scratch {
    /// Counts one more unusable candidate; true once past [`MAX_TRIES`], when nginx
    /// gives up and falls back to round robin.
    #[inline]
    pub fn give_up(&mut self) -> bool {
        self.tries += 1;
        self.gave_up()
    }

    /// Whether an earlier try already gave up (retries go straight to round robin).
    #[inline]
    pub fn gave_up(&self) -> bool {
        self.tries > MAX_TRIES
    }
}

/// A bitset of tried peers: inline for up to 64 peers, allocated beyond.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    small: u64,
    big: Vec<u64>,
}

impl Tried {
    /// Whether peer `i` was tried.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.small & (1 << i) != 0
        } else {
            self.big
                .get(i / 64 - 1)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
        }
    }

    /// Marks peer `i` tried.
    #[inline]
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.small |= 1 << i;
        } else {
            let w = i / 64 - 1;
            if self.big.len() <= w {
                self.big.resize(w + 1, 0);
            }
            self.big[w] |= 1 << (i % 64);
        }
    }

    /// Whether no peer was tried (a request's first pick).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.small == 0 && self.big.iter().all(|w| *w == 0)
    }

    /// Forgets every peer (on moving to the backup tier).
    pub fn clear(&mut self) {
        self.small = 0;
        self.big.clear();
    }
}

/// nginx's eligibility rule (NGINX_COMPAT §1) plus fulcrum's operator and health
/// states: not tried, not down, not drained, healthy, not failed out within
/// `fail_timeout`, not at `max_conns`.
#[inline]
pub fn eligible(peer: &Peer, idx: usize, req: &PickState<'_>) -> bool {
    !req.tried.contains(idx) && peer.available_at(req.now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_bitset() {
        let mut t = Tried::default();
        for i in [0, 5, 63, 64, 200] {
            assert!(!t.contains(i));
            t.insert(i);
            assert!(t.contains(i));
        }
        assert!(!t.contains(65));
        t.clear();
        assert!(!t.contains(200) && !t.contains(5));
    }

    #[test]
    fn weight_walk_matches_linear_walk() {
        let weights = [3u64, 1, 4, 1, 5];
        let mut ends = Vec::new();
        let mut sum = 0;
        for w in weights {
            sum += w;
            ends.push(sum);
        }
        let table: Vec<u32> = weights
            .iter()
            .enumerate()
            .flat_map(|(i, w)| std::iter::repeat(i as u32).take(*w as usize))
            .collect();
        let searched = WeightWalk {
            ends: ends.clone(),
            table: None,
        };
        let direct = WeightWalk {
            ends,
            table: Some(table.into_boxed_slice()),
        };
        for x in 0..searched.total() {
            let (mut w, mut i) = (x, 0);
            while w >= weights[i] {
                w -= weights[i];
                i += 1;
            }
            assert_eq!(searched.find(x), i, "x={x}");
            assert_eq!(direct.find(x), i, "x={x}");
        }
    }
}

#[cfg(test)]
mod tests_algorithms;
