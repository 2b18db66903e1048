//! The selection contract between a pool and its balancing algorithm: a pool
//! ([`super::Upstream::select`]) owns the rules every algorithm shares (eligibility,
//! the backup fallback, marking a pick) and asks a [`Balancer`] to choose among a
//! tier's peers; `balance` implements the algorithms, and whoever builds pools
//! (`state`) hands in the [`BalancerFactory`] that makes them.

use std::cell::Cell;
use std::fmt::Debug;
use std::net::IpAddr;

use super::Tier;
use crate::config;

/// Makes the balancer a pool's configuration asks for, over one of its tiers.
pub type BalancerFactory = fn(&Tier, &config::Upstream) -> Box<dyn Balancer>;

/// nginx gives up hashing (and random sampling) after this many unusable candidates
/// and falls back to round robin.
pub const MAX_TRIES: u32 = 20;

/// A selection algorithm for one tier of a pool. Built once per config snapshot;
/// its mutable state (weights, cursors) is its own business, but a pick must not
/// block other requests for long.
pub trait Balancer: Send + Sync + Debug {
    /// Chooses one peer of `tier` that is eligible (`balance::eligible`) for this
    /// request, or `None`.
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
                let n = super::now_secs();
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
}
