//! nginx `random` and `random two least_conn` (`ngx_http_upstream_get_random_peer`,
//! `ngx_http_upstream_get_random2_peer`): weighted random samples; an unusable sample
//! costs a try, and past 20 round robin takes over.

use std::sync::atomic::Ordering;

use super::round_robin::RoundRobin;
use super::{eligible, Balancer, PickState, WeightWalk};
use crate::upstream::Tier;

/// Weighted random, optionally the less loaded of two samples.
#[derive(Debug)]
pub struct Random {
    rr: RoundRobin,
    walk: WeightWalk,
    two: bool,
}

impl Random {
    /// A balancer for `tier`; `two`: nginx `random two least_conn`.
    pub fn new(tier: &Tier, two: bool) -> Self {
        Random {
            rr: RoundRobin::new(tier),
            walk: WeightWalk::new(tier),
            two,
        }
    }

    /// One weighted sample (nginx `ngx_http_upstream_peek_random_peer`).
    #[inline]
    fn peek(&self) -> usize {
        self.walk.find(fastrand::u64(..self.walk.total()))
    }
}

impl Balancer for Random {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        if req.scratch.gave_up() || self.walk.total() == 0 {
            return self.rr.pick(tier, req);
        }
        if !self.two {
            loop {
                let i = self.peek();
                if eligible(&tier.peers[i], i, req) {
                    return Some(i);
                }
                if req.scratch.give_up() {
                    return self.rr.pick(tier, req);
                }
            }
        }
        let mut prev: Option<usize> = None;
        loop {
            let i = self.peek();
            if prev != Some(i) && eligible(&tier.peers[i], i, req) {
                if let Some(p) = prev {
                    let (a, b) = (&tier.peers[p], &tier.peers[i]);
                    let (ac, bc) = (
                        u64::from(a.state.conns.load(Ordering::Relaxed)),
                        u64::from(b.state.conns.load(Ordering::Relaxed)),
                    );
                    // The first sample only if strictly less loaded per weight (nginx).
                    let first = bc * u64::from(a.conf.weight) > ac * u64::from(b.conf.weight);
                    return Some(if first { p } else { i });
                }
                prev = Some(i);
            }
            // Every sample but the accepted second costs a try, as in nginx.
            if req.scratch.give_up() {
                return self.rr.pick(tier, req);
            }
        }
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        self.rr.on_failure(tier, idx);
    }
}
