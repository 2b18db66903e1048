//! nginx `least_conn` (`ngx_http_upstream_get_least_conn_peer`): the eligible peer
//! with the fewest in-flight attempts per unit of weight; ties are broken by nginx's
//! round-robin pass over the tied peers, starting at the first of them.

use std::sync::atomic::Ordering;

use super::round_robin::{smooth_pass, RoundRobin};
use super::{eligible, Balancer, PickState};
use crate::upstream::Tier;

/// Weighted least connections.
#[derive(Debug)]
pub struct LeastConn {
    rr: RoundRobin,
}

impl LeastConn {
    /// A balancer for `tier`.
    pub fn new(tier: &Tier) -> Self {
        LeastConn {
            rr: RoundRobin::new(tier),
        }
    }
}

impl Balancer for LeastConn {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        // (conns, weight) of the best so far; ratios compared by cross products.
        let mut best: Option<(usize, u64, u64)> = None;
        // Eligible peers, and how many share the best ratio.
        let (mut eligible_n, mut tied) = (0usize, 0usize);
        for (i, p) in tier.peers.iter().enumerate() {
            if !eligible(p, i, req) {
                continue;
            }
            eligible_n += 1;
            let c = u64::from(p.state.conns.load(Ordering::Relaxed));
            let w = u64::from(p.conf.weight);
            match best {
                Some((_, bc, bw)) if c * bw > bc * w => {}
                Some((_, bc, bw)) if c * bw == bc * w => tied += 1,
                _ => {
                    best = Some((i, c, w));
                    tied = 1;
                }
            }
        }
        let (first, bc, bw) = best?;
        if tied == 1 {
            return Some(first);
        }
        if tied == eligible_n {
            // Every eligible peer tied (e.g. all idle): nginx's pass over the tied
            // peers is its plain round-robin pass, which the cycle answers in O(1).
            return self.rr.pick(tier, req);
        }
        Some(self.rr.with_weights(tier, |w| {
            let tied = tier
                .peers
                .iter()
                .enumerate()
                .skip(first)
                .filter(|&(i, p)| {
                    eligible(p, i, req)
                        && u64::from(p.state.conns.load(Ordering::Relaxed)) * bw
                            == bc * u64::from(p.conf.weight)
                })
                .map(|(i, _)| i);
            smooth_pass(w, tier, tied).map_or(first, |(b, _)| b)
        }))
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        self.rr.on_failure(tier, idx);
    }
}
