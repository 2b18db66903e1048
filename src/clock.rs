//! A cheap monotonic clock for time stamps and deadlines on the request path.
//!
//! A precise `Instant::now()` costs tens of nanoseconds on the VMs we run on;
//! `CLOCK_MONOTONIC_COARSE` reads in a few and ticks every 1–4 ms, which is plenty
//! for `fail_timeout`, idle-connection ages and timeouts counted in seconds. Response
//! times for metrics are still measured with the precise clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Monotonic nanoseconds (coarse: a few milliseconds of resolution).
#[inline]
pub fn coarse_nanos() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        base().0.elapsed().as_nanos() as u64
    }
}

/// Wall-clock time, coarse like [`coarse_nanos`]: for log time stamps printed to the
/// second (nginx prints its cached time there too).
#[inline]
pub fn coarse_wall() -> std::time::SystemTime {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        std::time::UNIX_EPOCH + Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::time::SystemTime::now()
    }
}

/// An `Instant` and the coarse reading taken with it, to map one clock onto the other.
fn base() -> &'static (Instant, u64) {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    BASE.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            (Instant::now(), coarse_nanos())
        }
        #[cfg(not(target_os = "linux"))]
        {
            (Instant::now(), 0)
        }
    })
}

/// Whole seconds since the clock was first used (about process start): nginx's
/// `ngx_time()` granularity, which `fail_timeout` accounting relies on.
#[inline]
pub fn uptime_secs() -> u64 {
    coarse_nanos().saturating_sub(base().1) / 1_000_000_000
}

/// The `Instant` of a coarse reading (for timer deadlines), within the coarse clock's
/// resolution.
pub fn instant_at(coarse: u64) -> Instant {
    let (at, c0) = *base();
    match coarse.checked_sub(c0) {
        Some(d) => at + Duration::from_nanos(d),
        None => at
            .checked_sub(Duration::from_nanos(c0 - coarse))
            .unwrap_or(at),
    }
}

/// hyper's timer with the coarse clock for `now()`: hyper reads the time to arm the
/// header-read timeout on every request, and a coarse read is ~10× cheaper. The
/// sleeps themselves are tokio's.
#[derive(Clone, Debug, Default)]
pub struct CoarseTimer(hyper_util::rt::TokioTimer);

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, d: Duration) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        self.0.sleep(d)
    }

    fn sleep_until(&self, deadline: Instant) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        self.0.sleep_until(deadline)
    }

    fn now(&self) -> Instant {
        instant_at(coarse_nanos())
    }

    fn reset(&self, sleep: &mut std::pin::Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        self.0.reset(sleep, new_deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clock_tracks_the_precise_one() {
        let c = coarse_nanos();
        let i = instant_at(c);
        let now = Instant::now();
        // Within the coarse clock's resolution (a few ms), generously bounded.
        let gap = if now > i { now - i } else { i - now };
        assert!(gap < Duration::from_millis(50), "{gap:?}");
        assert!(coarse_nanos() >= c);
    }
}
