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

use crate::config;
use crate::upstream::{Peer, Tier};

// The contract every algorithm implements is the pool's (`upstream::select`).
pub use crate::upstream::select::{Balancer, Now, PickState, Scratch, Tried, MAX_TRIES};

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
                .flat_map(|(i, p)| std::iter::repeat_n(i as u32, p.conf.weight as usize))
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
            .flat_map(|(i, w)| std::iter::repeat_n(i as u32, *w as usize))
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
