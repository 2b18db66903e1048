//! Peak EWMA with power of two choices (as linkerd and finagle): each server keeps a
//! moving average of its response-head latency that jumps up at once on a slower
//! response and decays towards faster ones with time constant [`TAU`]; a pick samples
//! two distinct eligible servers and takes the lower `latency × (in-flight + 1) /
//! weight`. A server that turns slow or piles up requests sheds traffic at its next
//! response; a server that stopped getting traffic looks cheaper as its estimate decays.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{eligible, Balancer, PickState};
use crate::upstream::{Peer, Tier};

/// Decay time constant of the average, in nanoseconds (10 s, linkerd's default).
pub const TAU: f64 = 10e9;
/// Cost of a server with no latency sample yet and requests in flight (finagle's
/// penalty): try a new server once, not with a burst.
const PENALTY: f64 = 1e15;
/// Random draws before falling back to a scan (most servers unavailable).
const SAMPLES: u32 = 8;

/// A peak-sensitive, time-decayed latency average, lock-free.
#[derive(Debug, Default)]
pub struct Ewma {
    /// Nanoseconds as f64 bits; 0: no sample yet.
    value: AtomicU64,
    /// [`clock`] of the last sample.
    stamp: AtomicU64,
}

impl Ewma {
    /// Adds a sample of `rtt` nanoseconds taken at `now`.
    pub fn observe(&self, rtt: u64, now: u64) {
        let rtt = rtt as f64;
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let w = decay(now.saturating_sub(last) as f64);
        // A concurrent sample may win; either is a fine estimate.
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let v = f64::from_bits(bits);
                let next = if rtt > v {
                    rtt
                } else {
                    v * w + rtt * (1.0 - w)
                };
                Some(next.to_bits())
            });
    }

    /// The estimate at `now`, decayed since the last sample; 0 if none yet.
    #[inline]
    pub fn get(&self, now: u64) -> f64 {
        let v = f64::from_bits(self.value.load(Ordering::Relaxed));
        if v == 0.0 {
            return 0.0;
        }
        let age = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        v * decay(age)
    }
}

/// `exp(-age / TAU)`. Under steady traffic the age is well under a millisecond, where
/// `1 - x` is within 5e-9 of it and costs no `exp` on the pick path.
#[inline]
fn decay(age: f64) -> f64 {
    let x = age / TAU;
    if x < 1e-4 {
        1.0 - x
    } else {
        (-x).exp()
    }
}

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
                if best.map_or(true, |(_, bc)| c < bc) {
                    best = Some((i, c));
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_then_decay() {
        let e = Ewma::default();
        assert_eq!(e.get(0), 0.0);
        e.observe(2_000_000, 1_000);
        assert_eq!(e.get(1_000), 2_000_000.0);
        // A slower sample is taken at once.
        e.observe(40_000_000, 2_000);
        assert_eq!(e.get(2_000), 40_000_000.0);
        // A faster one pulls it down only as time passes.
        e.observe(2_000_000, 2_000 + 1_000_000);
        let v = e.get(2_000 + 1_000_000);
        assert!(v > 39_000_000.0 && v < 40_000_000.0, "{v}");
        e.observe(2_000_000, 2_000 + 20_000_000_000);
        let v = e.get(2_000 + 20_000_000_000);
        assert!(v < 8_000_000.0, "{v}");
        // Idle time decays the estimate read back.
        assert!(e.get(2_000 + 40_000_000_000) < v / 5.0);
    }

    #[test]
    fn cheap_decay_is_close_to_exp() {
        for age in [0.0, 1.0, 1e3, 1e5, 9.9e5, 1e6, 1e7, 1e9, 1e10, 1e11] {
            let exact = (-age / TAU).exp();
            assert!((decay(age) - exact).abs() < 1e-8, "{age}");
        }
    }
}
