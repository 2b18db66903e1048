//! Server selection. Each algorithm is one module implementing [`Balancer`] over a
//! [`Tier`] (the primary or the backup list of a pool). The common rules — which
//! peers are eligible, falling back to backups, marking a pick — live in
//! [`crate::upstream`]; an algorithm only chooses among eligible peers.

pub mod round_robin;

use std::fmt::Debug;
use std::net::IpAddr;

use crate::upstream::{Peer, Tier};

/// A selection algorithm for one tier of a pool. Built once per config snapshot;
/// its mutable state (weights, cursors) is its own business, but a pick must not
/// block other requests for long.
pub trait Balancer: Send + Sync + Debug {
    /// Chooses one peer of `tier` that is [`eligible`] for this request, or `None`.
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize>;

    /// A try on peer `idx` failed (nginx lowers the round-robin effective weight).
    fn on_failure(&self, _tier: &Tier, _idx: usize) {}
}

/// Per-request selection state, carried across the retries of one request.
#[derive(Debug)]
pub struct PickState<'a> {
    /// Peers of the current tier already tried by this request.
    pub tried: &'a mut Tried,
    /// Coarse clock in whole seconds (nginx `ngx_time()`).
    pub now: u64,
    /// The evaluated `hash_key`, for "hash".
    pub key: Option<&'a [u8]>,
    /// The client address, for "ip_hash".
    pub client_ip: Option<IpAddr>,
    /// Scratch the hash algorithms keep between tries of one request (nginx keeps
    /// `hash`, `rehash` and `tries` in its per-request peer data).
    pub scratch: Scratch,
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
    !req.tried.contains(idx) && peer.available(req.now)
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
