//! nginx smooth weighted round-robin (`ngx_http_upstream_get_peer`), exactly, in
//! O(1) per pick while every server is available.
//!
//! With every non-`down` peer eligible and every effective weight at its configured
//! weight, nginx's pass is a pure function of the `current` weights and the sequence
//! it produces is periodic with period `W` = Σ weight: after `W` picks each peer was
//! chosen `weight` times and every `current` is back where it started. fulcrum keeps
//! that cycle (the picks and the state at its start) and walks it with one atomic
//! cursor: no lock, no scan. The first cycle is computed at load (from all-zero
//! weights, as nginx starts); others are recorded.
//!
//! When something changes (a failure, an unhealthy or draining server, a server at
//! `max_conns`, a retry), the cursor's position gives the exact nginx state (`current
//! = base + pos·weight − W·picks so far`), which is handed to the mutex-guarded
//! nginx pass. The pass then runs as nginx does, O(n), until the pool is clean again
//! and one whole recorded cycle has brought the state back to where the recording
//! began: that recording becomes the new cycle. So a single-threaded sequence of picks
//! is nginx's, through failures and recoveries.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{eligible, Balancer, PickState};
use crate::upstream::Tier;

/// Longest cycle kept (entries of 4 bytes). Pools with a larger Σ weight always use
/// the O(n) pass.
pub const MAX_CYCLE: u64 = 1 << 20;
/// Most work (cycle length × distinct weights) spent computing the first cycle at load;
/// beyond, it is recorded from live picks instead.
const BUILD_BUDGET: u64 = 1 << 26;

/// Per-peer round-robin weights, as nginx keeps them per worker.
#[derive(Debug, Clone, Copy)]
pub struct Weights {
    /// nginx `current_weight`.
    pub current: i64,
    /// nginx `effective_weight`.
    pub effective: i64,
}

/// nginx's §1 pass over `candidates` (eligible peers, in config order): each gains
/// its effective weight, which recovers by one towards its weight; the largest
/// current weight wins, the earliest on a tie, and gives back the total. Returns the
/// winner and whether every candidate was already at full effective weight.
/// least_conn and consistent hash run it over their tied or same-point peers.
pub fn smooth_pass(
    w: &mut [Weights],
    tier: &Tier,
    candidates: impl IntoIterator<Item = usize>,
) -> Option<(usize, bool)> {
    let mut best: Option<usize> = None;
    let mut total: i64 = 0;
    let mut full = true;
    for i in candidates {
        let weight = i64::from(tier.peers[i].conf.weight);
        let s = &mut w[i];
        s.current += s.effective;
        total += s.effective;
        if s.effective < weight {
            s.effective += 1;
            full = false;
        }
        let current = s.current;
        // Strictly greater: on a tie the earlier peer wins, as in nginx.
        if best.is_none_or(|b| current > w[b].current) {
            best = Some(i);
        }
    }
    let b = best?;
    w[b].current -= total;
    Some((b, full))
}

/// The cursor packs the cycle's generation (top 16 bits) over the position (low 48
/// bits, 9 years at a million picks per second before it wraps).
const GEN_SHIFT: u32 = 48;
const POS_MASK: u64 = (1 << GEN_SHIFT) - 1;

/// A cycle being recorded from clean passes.
#[derive(Debug)]
struct Recording {
    base: Vec<i64>,
    picks: Vec<u32>,
}

#[derive(Debug)]
struct Slow {
    w: Vec<Weights>,
    rec: Option<Recording>,
    /// The weights at the start of the installed cycle.
    base: Vec<i64>,
}

impl Slow {
    /// Peers below their configured weight (recovering from failures).
    fn deficit(&self, tier: &Tier) -> u32 {
        self.w
            .iter()
            .zip(&tier.peers)
            .filter(|(s, p)| s.effective < i64::from(p.conf.weight))
            .count() as u32
    }
}

/// Smooth weighted round-robin.
#[derive(Debug)]
pub struct RoundRobin {
    /// Σ weight of the non-down peers: the cycle length.
    period: u64,
    /// Whether cycles are used at all (not beyond [`MAX_CYCLE`]).
    cycles: bool,
    /// Set while picks walk `cycle`.
    fast: AtomicBool,
    /// One period of the all-available sequence (peer indexes), written under the
    /// lock while `fast` is off. Plain atomics rather than a swapped pointer: a pick
    /// costs no reference count, and a late reader still gets a valid index.
    cycle: Box<[AtomicU32]>,
    /// Generation and position in `cycle`.
    cursor: AtomicU64,
    slow: Mutex<Slow>,
    /// Peers below their configured effective weight, readable without the lock;
    /// written under it.
    deficit: AtomicU32,
}

/// Length of nginx's smooth round-robin cycle: Σ weight of the peers not `down`.
fn period(weights: &[u32], down: &[bool]) -> u64 {
    weights
        .iter()
        .zip(down)
        .filter(|(_, d)| !**d)
        .map(|(w, _)| u64::from(*w))
        .sum()
}

impl RoundRobin {
    /// A balancer for `tier`, every peer at its full weight, walking a precomputed
    /// cycle while every peer is available.
    pub fn new(tier: &Tier) -> Self {
        let weights: Vec<u32> = tier.peers.iter().map(|p| p.conf.weight).collect();
        let down: Vec<bool> = tier.peers.iter().map(|p| p.conf.down).collect();
        let period = period(&weights, &down);
        let cycles = period > 0 && period <= MAX_CYCLE;
        let canonical = cycles
            .then(|| canonical_cycle(&weights, &down, period))
            .flatten();
        let cycle: Box<[AtomicU32]> = match &canonical {
            Some(picks) => picks.iter().map(|&i| AtomicU32::new(i)).collect(),
            None if cycles => (0..period).map(|_| AtomicU32::new(0)).collect(),
            None => Box::default(),
        };
        RoundRobin {
            period,
            cycles,
            fast: AtomicBool::new(canonical.is_some()),
            cycle,
            cursor: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                w: weights
                    .iter()
                    .map(|w| Weights {
                        current: 0,
                        effective: i64::from(*w),
                    })
                    .collect(),
                rec: None,
                base: vec![0; weights.len()],
            }),
            deficit: AtomicU32::new(0),
        }
    }

    /// Whether some peer is below its configured effective weight (so a pick among
    /// one candidate still changes nginx's state).
    #[inline]
    pub fn has_deficit(&self) -> bool {
        self.deficit.load(Ordering::Relaxed) != 0
    }

    /// Recounts the deficit after the weights changed, if there may be one.
    fn settle(&self, slow: &Slow, tier: &Tier) {
        if self.deficit.load(Ordering::Relaxed) != 0 {
            self.deficit.store(slow.deficit(tier), Ordering::Relaxed);
        }
    }

    /// Whether picks currently walk the precomputed cycle (no lock, no scan).
    pub fn is_fast(&self) -> bool {
        self.fast.load(Ordering::Acquire)
    }

    /// Locks the nginx state, first leaving the cycle if it was in use. `ticket`: the
    /// cursor value this thread drew and did not use (the state is rebuilt as of
    /// before it, so a single thread sees nginx's exact sequence).
    fn lock(&self, tier: &Tier, ticket: Option<u64>) -> MutexGuard<'_, Slow> {
        let mut slow = self.slow.lock().unwrap_or_else(|e| e.into_inner());
        if self.fast.swap(false, Ordering::AcqRel) {
            let now = self.cursor.load(Ordering::Relaxed);
            let t = match ticket {
                Some(t) if t >> GEN_SHIFT == now >> GEN_SHIFT => t,
                _ => now,
            };
            let pos = ((t & POS_MASK) % self.period) as usize;
            let mut picked = vec![0i64; tier.peers.len()];
            for a in &self.cycle[..pos] {
                if let Some(n) = picked.get_mut(a.load(Ordering::Relaxed) as usize) {
                    *n += 1;
                }
            }
            let w = self.period as i64;
            let Slow {
                w: weights,
                base,
                rec,
            } = &mut *slow;
            for (i, (s, p)) in weights.iter_mut().zip(&tier.peers).enumerate() {
                let weight = i64::from(p.conf.weight);
                s.effective = weight;
                s.current = if p.conf.down {
                    base[i]
                } else {
                    base[i] + pos as i64 * weight - w * picked[i]
                };
            }
            *rec = None;
        }
        slow
    }

    /// Runs `f` on nginx's weights (for least_conn and consistent hash tie-breaks,
    /// which update them over a subset of the peers).
    pub fn with_weights<R>(&self, tier: &Tier, f: impl FnOnce(&mut [Weights]) -> R) -> R {
        let mut slow = self.lock(tier, None);
        slow.rec = None;
        let r = f(&mut slow.w);
        self.settle(&slow, tier);
        r
    }

    /// nginx's pass over every eligible peer, under the lock.
    fn pass(&self, tier: &Tier, req: &mut PickState<'_>, ticket: Option<u64>) -> Option<usize> {
        let mut slow = self.lock(tier, ticket);
        // Clean: every non-down peer eligible and at full effective weight, so the
        // pass is one of the cycle's.
        let mut all_eligible = true;
        let candidates = tier.peers.iter().enumerate().filter_map(|(i, p)| {
            let ok = eligible(p, i, req);
            all_eligible &= ok || p.conf.down;
            ok.then_some(i)
        });
        let (b, full) = smooth_pass(&mut slow.w, tier, candidates)?;
        let clean = all_eligible && full;
        self.settle(&slow, tier);
        if self.cycles {
            self.record(&mut slow, tier, clean, b);
        }
        Some(b)
    }

    /// Records clean passes; a full period that returns to its starting state
    /// becomes the cycle again.
    fn record(&self, slow: &mut Slow, tier: &Tier, clean: bool, pick: usize) {
        if !clean {
            slow.rec = None;
            return;
        }
        let Slow { w, rec, base } = slow;
        let Some(r) = rec else {
            *rec = Some(Recording {
                base: w.iter().map(|s| s.current).collect(),
                picks: Vec::new(),
            });
            return;
        };
        r.picks.push(pick as u32);
        if (r.picks.len() as u64) < self.period {
            return;
        }
        let back = r.base.iter().zip(w.iter()).all(|(b, s)| *b == s.current);
        if back && tier.pool.impaired() == 0 {
            if let Some(r) = rec.take() {
                for (a, &i) in self.cycle.iter().zip(&r.picks) {
                    a.store(i, Ordering::Relaxed);
                }
                *base = r.base;
                let generation = (self.cursor.load(Ordering::Relaxed) >> GEN_SHIFT) + 1;
                self.cursor
                    .store((generation & 0xffff) << GEN_SHIFT, Ordering::Relaxed);
                self.fast.store(true, Ordering::Release);
            }
        } else {
            r.base.clear();
            r.base.extend(w.iter().map(|s| s.current));
            r.picks.clear();
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        // A retry's pass leaves the tried peers out, which changes nginx's state:
        // only first picks may use the cycle.
        if self.fast.load(Ordering::Acquire) && tier.pool.impaired() == 0 && req.tried.is_empty() {
            let t = self.cursor.fetch_add(1, Ordering::Relaxed);
            let pos = (t & POS_MASK) % self.period;
            let i = self.cycle[pos as usize].load(Ordering::Relaxed) as usize;
            // Only max_conns or a state change not yet counted can make the
            // scheduled peer ineligible: checking it alone is O(1).
            if i < tier.peers.len() && eligible(&tier.peers[i], i, req) {
                return Some(i);
            }
            return self.pass(tier, req, Some(t));
        }
        self.pass(tier, req, None)
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        let p = &tier.peers[idx];
        if p.conf.max_fails == 0 {
            return;
        }
        let mut slow = self.lock(tier, None);
        slow.rec = None;
        let s = &mut slow.w[idx];
        s.effective -= i64::from(p.conf.weight / p.conf.max_fails);
        s.effective = s.effective.max(0);
        self.deficit.store(slow.deficit(tier), Ordering::Relaxed);
    }
}

/// nginx's sequence from all-zero weights over the non-down peers, for one period.
/// Peers of equal weight are chosen in index order (their `current` differs only by
/// how often each was picked), so each step compares one candidate per distinct
/// weight: O(period × distinct weights) instead of O(period × peers).
fn canonical_cycle(weights: &[u32], down: &[bool], period: u64) -> Option<Vec<u32>> {
    let mut groups: Vec<(i64, Vec<u32>)> = Vec::new();
    for (i, (&w, &d)) in weights.iter().zip(down).enumerate() {
        if d {
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == i64::from(w)) {
            Some(g) => g.1.push(i as u32),
            None => groups.push((i64::from(w), vec![i as u32])),
        }
    }
    if period.saturating_mul(groups.len() as u64) > BUILD_BUDGET {
        return None;
    }
    // Per group: how many full rounds were picked, and the next member.
    let mut state = vec![(0i64, 0usize); groups.len()];
    let total = period as i64;
    let mut out = Vec::with_capacity(period as usize);
    for t in 1..=total {
        let mut best: Option<(i64, u32, usize)> = None;
        for (g, (w, members)) in groups.iter().enumerate() {
            let (rounds, next) = state[g];
            let value = t * w - total * rounds;
            let idx = members[next];
            if best.is_none_or(|(bv, bi, _)| value > bv || (value == bv && idx < bi)) {
                best = Some((value, idx, g));
            }
        }
        let (_, idx, g) = best?;
        out.push(idx);
        let (rounds, next) = &mut state[g];
        *next += 1;
        if *next == groups[g].1.len() {
            *next = 0;
            *rounds += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's pass, literally, over all-eligible peers.
    fn naive(weights: &[u32], down: &[bool], n: usize) -> Vec<u32> {
        let mut cur = vec![0i64; weights.len()];
        let mut out = Vec::new();
        for _ in 0..n {
            let mut best: Option<usize> = None;
            let mut total = 0;
            for i in 0..weights.len() {
                if down[i] {
                    continue;
                }
                cur[i] += i64::from(weights[i]);
                total += i64::from(weights[i]);
                if best.is_none_or(|b| cur[i] > cur[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            cur[b] -= total;
            out.push(b as u32);
        }
        out
    }

    #[test]
    fn canonical_cycle_is_nginx_sequence() {
        let mut seed = 7u64;
        let mut rnd = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..300 {
            let n = 1 + rnd(12) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rnd(7) as u32).collect();
            let down: Vec<bool> = (0..n).map(|_| rnd(5) == 0).collect();
            let period = period(&weights, &down);
            if period == 0 {
                continue;
            }
            let got = canonical_cycle(&weights, &down, period).unwrap();
            assert_eq!(
                got,
                naive(&weights, &down, period as usize),
                "{weights:?} {down:?}"
            );
        }
        assert_eq!(
            canonical_cycle(&[5, 1, 1], &[false; 3], 7).unwrap(),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
    }
}
