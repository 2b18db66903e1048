//! nginx smooth weighted round-robin (`ngx_http_upstream_get_peer`), exactly.

use std::sync::Mutex;

use super::{eligible, Balancer, PickState};
use crate::upstream::Tier;

/// Per-peer round-robin weights, as nginx keeps them per worker.
#[derive(Debug, Clone, Copy)]
struct Weights {
    current: i64,
    effective: i64,
}

/// Smooth weighted round-robin. The weights sit behind one mutex per tier: the
/// critical section is a single pass over the tier, with no await inside.
#[derive(Debug)]
pub struct RoundRobin {
    weights: Mutex<Vec<Weights>>,
}

impl RoundRobin {
    /// A balancer for `tier`, every peer at its full weight.
    pub fn new(tier: &Tier) -> Self {
        RoundRobin {
            weights: Mutex::new(
                tier.peers
                    .iter()
                    .map(|p| Weights {
                        current: 0,
                        effective: i64::from(p.conf.weight),
                    })
                    .collect(),
            ),
        }
    }

    /// nginx's pick restricted to the peers `filter` accepts (least_conn and
    /// consistent hash reuse it for their tie-breaks).
    pub fn pick_among(
        &self,
        tier: &Tier,
        req: &mut PickState<'_>,
        filter: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        let mut best: Option<usize> = None;
        let mut best_current = i64::MIN;
        let mut total: i64 = 0;
        for (i, p) in tier.peers.iter().enumerate() {
            if !filter(i) || !eligible(p, i, req) {
                continue;
            }
            let weight = i64::from(p.conf.weight);
            let s = &mut w[i];
            s.current += s.effective;
            total += s.effective;
            if s.effective < weight {
                s.effective += 1;
            }
            // Strictly greater: on a tie the earlier peer wins, as in nginx.
            if best.is_none() || s.current > best_current {
                best = Some(i);
                best_current = s.current;
            }
        }
        let b = best?;
        w[b].current -= total;
        Some(b)
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        self.pick_among(tier, req, |_| true)
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        let p = &tier.peers[idx];
        if p.conf.max_fails == 0 {
            return;
        }
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut w[idx];
        s.effective -= i64::from(p.conf.weight / p.conf.max_fails);
        s.effective = s.effective.max(0);
    }
}
