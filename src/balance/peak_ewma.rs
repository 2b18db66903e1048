//! Peak EWMA with power of two choices (as linkerd and finagle): each server keeps a
//! moving average of its response-head latency that jumps up at once on a slower
//! response and decays towards faster ones with time constant [`TAU`]; a pick samples
//! two distinct eligible servers and takes the lower `latency × (in-flight + 1) /
//! weight`. A server that turns slow or piles up requests sheds traffic at its next
//! response; a server that stopped getting traffic looks cheaper as its estimate decays.

use std::sync::atomic::Ordering;

use super::{eligible, Balancer, PickState};
use crate::upstream::{Peer, Tier};

#[doc(inline)]
pub use crate::upstream::ewma::{Ewma, TAU};

/// Cost of a server with no latency sample yet and requests in flight (finagle's
/// penalty): try a new server once, not with a burst.
const PENALTY: f64 = 1e15;
/// Random draws before falling back to a scan (most servers unavailable).
const SAMPLES: u32 = 8;

/// The load cost of sending one more request to `p`.
#[inline]
fn cost(p: &Peer, now: u64) -> f64 {
    let pending = f64::from(p.state.conns.load(Ordering::Relaxed));
    let ewma = p.state.ewma.get(now);
    let c = if ewma == 0.0 && pending > 0.0 {
        PENALTY + pending
    } else {
        ewma * (pending + 1.0)
    };
    c / f64::from(p.conf.weight)
}

/// Power of two choices over peak EWMA cost.
#[derive(Debug)]
pub struct PeakEwma;

impl PeakEwma {
    /// A balancer for `tier` (all its state lives in the peers).
    pub fn new(_tier: &Tier) -> Self {
        PeakEwma
    }
}

/// Up to [`SAMPLES`] uniform draws for an eligible peer other than `not`.
fn sample(tier: &Tier, req: &PickState<'_>, not: Option<usize>) -> Option<usize> {
    let n = tier.peers.len();
    for _ in 0..SAMPLES {
        let i = match not {
            None => fastrand::usize(..n),
            Some(a) => {
                let j = fastrand::usize(..n - 1);
                j + usize::from(j >= a)
            }
        };
        if eligible(&tier.peers[i], i, req) {
            return Some(i);
        }
    }
    None
}

impl Balancer for PeakEwma {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        let n = tier.peers.len();
        let now = crate::clock::coarse_nanos();
        if n >= 2 {
            if let Some(a) = sample(tier, req, None) {
                if let Some(b) = sample(tier, req, Some(a)) {
                    let (ca, cb) = (cost(&tier.peers[a], now), cost(&tier.peers[b], now));
                    return Some(if cb < ca { b } else { a });
                }
            }
        }
        // Few eligible servers: the cheapest of them all.
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in tier.peers.iter().enumerate() {
            if eligible(p, i, req) {
                let c = cost(p, now);
                if best.is_none_or(|(_, bc)| c < bc) {
                    best = Some((i, c));
                }
            }
        }
        best.map(|(i, _)| i)
    }
}
