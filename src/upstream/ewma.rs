//! A server's peak-sensitive latency estimate, kept with its live state so it
//! survives reloads; the peak-EWMA balancer (`balance::peak_ewma`) reads it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Decay time constant of the average, in nanoseconds (10 s, linkerd's default).
pub const TAU: f64 = 10e9;
/// A peak-sensitive, time-decayed latency average, lock-free.
#[derive(Debug, Default)]
pub struct Ewma {
    /// Nanoseconds as f64 bits; 0: no sample yet.
    value: AtomicU64,
    /// [`crate::clock::coarse_nanos`] of the last sample.
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
