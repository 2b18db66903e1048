//! nginx `least_conn` (`ngx_http_upstream_get_least_conn_peer`): the eligible peer
//! with the fewest in-flight attempts per unit of weight; ties are broken by nginx's
//! round-robin pass over the tied peers, starting at the first of them.
//!
//! nginx scans every peer. fulcrum does too while some server is impaired (or on a
//! retry, or while an effective weight recovers), but while every server is available
//! and at full weight it answers from an index in O(distinct weights × log n):
//!
//! - Peers are grouped by their ratio `conns / weight` (a *class*: the peers nginx
//!   would find tied). The least loaded class is the first of an ordered map.
//! - A pass over a class adds each member's weight to its `current_weight`, the same
//!   amount to every member of one weight, so a class keeps a pass counter and each
//!   member stores `current − passes × weight`. Within a class and a weight, members
//!   sit in a binary heap on (stored desc, index asc); the pass's winner is the best
//!   of the heaps' tops, and it gives back the class's total weight.
//! - A class of one peer is nginx's unique minimum: no pass, no weight changes.
//!
//! In-flight counts stay in `PeerState::conns` (the truth for `max_conns` and
//! metrics). A pick expects its own start and refiles that peer at the next pick; an
//! end marks the peer in a dirty set ([`Balancer::on_finish`]) unless the index never
//! saw the request start, and the next pick refiles the marked peers first, so a
//! single thread sees nginx's exact sequence. Ends reported to an older snapshot's
//! balancer (requests in flight across a reload) reach only that balancer's dirty
//! set: every fourth pick also re-reads one peer in turn, so such drift heals within
//! `4n` picks.
//!
//! Leaving the index (something became impaired) writes the exact weights back to
//! the round-robin state the scan uses; coming back rebuilds the index from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::round_robin::{smooth_pass, RoundRobin, Weights};
use super::{eligible, Balancer, PickState};
use crate::upstream::Tier;

/// Smallest tier given an index: below, nginx's scan is faster (measured: 86 ns a
/// pick at 8 servers against the index's ~100; 125 ns at 16 against ~97).
pub const INDEX_MIN_PEERS: usize = 12;
/// One pick in this many re-reads the next peer's live count (healing changes the
/// dirty set missed) within `SCRUB_EVERY × n` picks.
const SCRUB_EVERY: u32 = 4;
/// Most distinct weights an index handles (a pass visits one heap per weight).
const INDEX_MAX_WEIGHTS: usize = 64;

/// Weighted least connections.
#[derive(Debug)]
pub struct LeastConn {
    rr: RoundRobin,
    index: Option<Index>,
}

impl LeastConn {
    /// A balancer for `tier`.
    pub fn new(tier: &Tier) -> Self {
        let rr = RoundRobin::new(tier);
        let index = (tier.peers.len() >= INDEX_MIN_PEERS)
            .then(|| Tree::new(tier))
            .flatten()
            .map(|tree| Index {
                dirty: Dirty::new(tier.peers.len()),
                seen: tree.seen.clone(),
                valid: AtomicBool::new(false),
                tree: Mutex::new(tree),
            });
        LeastConn { rr, index }
    }

    /// Whether picks are currently answered by the index (tests).
    pub fn is_indexed(&self) -> bool {
        self.index
            .as_ref()
            .is_some_and(|ix| ix.valid.load(Ordering::Acquire))
    }

    /// The index's pick, or `None` when the scan must answer (and then the index's
    /// weights have been handed back to the round-robin state).
    fn indexed_pick(&self, ix: &Index, tier: &Tier, req: &PickState<'_>) -> Option<usize> {
        let mut tree = ix.lock();
        if !ix.valid.load(Ordering::Relaxed) {
            ix.dirty.clear();
            self.rr.with_weights(tier, |w| tree.build(tier, w));
            ix.valid.store(true, Ordering::Release);
        }
        while let Some(i) = tree.picked.pop() {
            tree.sync(tier, i as usize);
        }
        ix.dirty.drain(|i| tree.sync(tier, i));
        tree.ticks = tree.ticks.wrapping_add(1);
        if tree.ticks.is_multiple_of(SCRUB_EVERY) {
            let s = tree.scrub;
            tree.scrub = if s + 1 >= tier.peers.len() { 0 } else { s + 1 };
            tree.sync(tier, s);
        }
        if let Some((slot, i)) = tree.peek() {
            if eligible(&tier.peers[i], i, req) {
                tree.commit(slot, i);
                return Some(i);
            }
        }
        self.leave(ix, tree, tier);
        None
    }

    /// Hands the index's weights back to the round-robin state the scan uses.
    fn leave(&self, ix: &Index, tree: MutexGuard<'_, Tree>, tier: &Tier) {
        if ix.valid.swap(false, Ordering::AcqRel) {
            self.rr.with_weights(tier, |w| tree.materialize(tier, w));
        }
    }

    /// nginx's scan over every eligible peer.
    fn scan(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
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
}

impl Balancer for LeastConn {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        if let Some(ix) = &self.index {
            // The index assumes every non-down peer eligible at full weight, and a
            // retry's pass leaves the tried peers out.
            let clean = tier.pool.impaired() == 0 && req.tried.is_empty() && !self.rr.has_deficit();
            if clean {
                if let Some(i) = self.indexed_pick(ix, tier, req) {
                    return Some(i);
                }
            } else if ix.valid.load(Ordering::Acquire) {
                self.leave(ix, ix.lock(), tier);
            }
        }
        self.scan(tier, req)
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        if let Some(ix) = &self.index {
            if ix.valid.load(Ordering::Acquire) {
                self.leave(ix, ix.lock(), tier);
            }
        }
        self.rr.on_failure(tier, idx);
    }

    #[cfg(test)]
    fn indexed(&self) -> bool {
        self.is_indexed()
    }

    #[inline]
    fn on_finish(&self, tier: &Tier, idx: usize) {
        if let Some(ix) = &self.index {
            // The index already files the peer under its count (its request ended
            // before a pick looked at it): nothing to move. A pick filing it at this
            // moment re-reads the count after publishing `seen` (`Tree::sync`), so
            // one of the two sees the other (both sides SeqCst, with the decrement
            // in `Upstream::finish`).
            let now = tier.peers[idx].state.conns.load(Ordering::SeqCst);
            if ix.seen[idx].load(Ordering::SeqCst) != now {
                ix.dirty.insert(idx);
            }
        }
    }
}

#[derive(Debug)]
struct Index {
    tree: Mutex<Tree>,
    /// Whether `tree` holds nginx's weights (else the round-robin state does).
    valid: AtomicBool,
    /// Peers whose in-flight count changed since the tree last looked.
    dirty: Dirty,
    /// The count each peer is filed under (the tree's; written under the lock).
    seen: Arc<[AtomicU32]>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An atomic bitset of peers: one bit per peer, and above [`SUMMARY_MIN_WORDS`]
/// words one summary bit per word, so a drain need not read every word.
#[derive(Debug)]
struct Dirty {
    words: Box<[AtomicU64]>,
    summary: Box<[AtomicU64]>,
}

const SUMMARY_MIN_WORDS: usize = 8;

impl Dirty {
    fn new(n: usize) -> Dirty {
        let words = n.div_ceil(64);
        let summary = if words > SUMMARY_MIN_WORDS {
            words.div_ceil(64)
        } else {
            0
        };
        Dirty {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            summary: (0..summary).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks peer `i`, after its count changed (a drain that sees the bit sees the
    /// count).
    #[inline]
    fn insert(&self, i: usize) {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if let Some(word) = self.words.get(w) {
            word.fetch_or(b, Ordering::AcqRel);
            if let Some(sum) = self.summary.get(w / 64) {
                let sb = 1u64 << (w % 64);
                if sum.load(Ordering::Relaxed) & sb == 0 {
                    sum.fetch_or(sb, Ordering::AcqRel);
                }
            }
        }
    }

    /// Takes the marked peers of word `w`.
    #[inline]
    fn drain_word(&self, w: usize, f: &mut impl FnMut(usize)) {
        let word = &self.words[w];
        if word.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut bits = word.swap(0, Ordering::AcqRel);
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }

    /// Takes every marked peer.
    #[inline]
    fn drain(&self, mut f: impl FnMut(usize)) {
        if self.summary.is_empty() {
            for w in 0..self.words.len() {
                self.drain_word(w, &mut f);
            }
            return;
        }
        for (s, sum) in self.summary.iter().enumerate() {
            if sum.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut ws = sum.swap(0, Ordering::AcqRel);
            while ws != 0 {
                self.drain_word(s * 64 + ws.trailing_zeros() as usize, &mut f);
                ws &= ws - 1;
            }
        }
    }

    fn clear(&self) {
        for a in self.summary.iter().chain(self.words.iter()) {
            a.store(0, Ordering::Release);
        }
    }
}

/// `conns / weight`, ordered (and equal) by value: cross products, no division.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    num: u32,
    den: u32,
}

impl Ratio {
    #[inline]
    fn new(conns: u32, weight: u32) -> Ratio {
        Ratio {
            num: conns,
            den: weight,
        }
    }
}

impl Ord for Ratio {
    #[inline]
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (u64::from(self.num) * u64::from(o.den)).cmp(&(u64::from(o.num) * u64::from(self.den)))
    }
}

impl PartialEq for Ratio {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Ratio {}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// A heap entry: a peer and its `current − passes × weight`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: i64,
    idx: u32,
}

impl Entry {
    /// Whether `self` ranks before `o` (larger weight, then lower index: nginx's
    /// strict `>` lets the earlier peer win a tie).
    #[inline]
    fn before(self, o: Entry) -> bool {
        self.rank() > o.rank()
    }

    /// The order as one integer (one comparison, which compiles without a branch).
    #[inline]
    fn rank(self) -> u128 {
        let key = (self.key as u64) ^ (1 << 63);
        (u128::from(key) << 32) | u128::from(u32::MAX - self.idx)
    }
}

/// The better child of `at` (`l = 2 at + 1` exists), chosen without a branch: which
/// child wins is a coin toss the predictor would miss half the time.
#[inline]
fn better_child(heap: &[Entry], l: usize) -> usize {
    match heap.get(l + 1) {
        Some(r) => l + usize::from(r.rank() > heap[l].rank()),
        None => l,
    }
}

/// Puts `e` at `at` and records where it is.
#[inline]
fn place(heap: &mut [Entry], pos: &mut [u32], at: usize, e: Entry) {
    heap[at] = e;
    pos[e.idx as usize] = at as u32;
}

/// Moves the entry at `at` up to its place.
#[inline]
fn sift_up(heap: &mut [Entry], pos: &mut [u32], mut at: usize) {
    let e = heap[at];
    while at > 0 {
        let parent = (at - 1) / 2;
        if !e.before(heap[parent]) {
            break;
        }
        place(heap, pos, at, heap[parent]);
        at = parent;
    }
    place(heap, pos, at, e);
}

/// Moves the entry at `at` down to its place.
#[inline]
fn sift_down(heap: &mut [Entry], pos: &mut [u32], mut at: usize) {
    let e = heap[at];
    loop {
        let l = 2 * at + 1;
        if l >= heap.len() {
            break;
        }
        let c = better_child(heap, l);
        if !heap[c].before(e) {
            break;
        }
        place(heap, pos, at, heap[c]);
        at = c;
    }
    place(heap, pos, at, e);
}

/// [`sift_down`] for an entry that just lost a pass's total and most likely
/// belongs near the bottom: the hole goes down the better children to a leaf, then
/// the entry climbs back (one comparison per level instead of two).
#[inline]
fn sink(heap: &mut [Entry], pos: &mut [u32], mut at: usize) {
    let e = heap[at];
    loop {
        let l = 2 * at + 1;
        if l >= heap.len() {
            break;
        }
        let c = better_child(heap, l);
        place(heap, pos, at, heap[c]);
        at = c;
    }
    heap[at] = e;
    sift_up(heap, pos, at);
}

/// Peers tied at one ratio.
#[derive(Debug, Default)]
struct Class {
    /// Passes run over this class since it was created.
    passes: i64,
    /// Σ weight of the members (nginx's `total` of a pass).
    total: i64,
    members: u32,
    /// One max-heap of members per distinct weight.
    heaps: Vec<Vec<Entry>>,
}

const NONE: u32 = u32::MAX;

/// The index proper (under the mutex).
#[derive(Debug)]
struct Tree {
    /// Per peer: weight, weight id, count it is filed under, class slot (`NONE` for
    /// down peers), position in its heap.
    weight: Vec<i64>,
    wid: Vec<u16>,
    seen: Arc<[AtomicU32]>,
    class: Vec<u32>,
    pos: Vec<u32>,
    /// Distinct weights by id.
    weights: Vec<i64>,
    slots: Vec<Class>,
    free: Vec<u32>,
    by_ratio: BTreeMap<Ratio, u32>,
    /// Peers picked since the last pick: their count has grown (or is about to).
    picked: Vec<u32>,
    /// The next peer re-read against its live count, and picks since the tree
    /// was made.
    scrub: usize,
    ticks: u32,
}

impl Tree {
    fn new(tier: &Tier) -> Option<Tree> {
        let mut weights: Vec<i64> = Vec::new();
        let mut wid = Vec::with_capacity(tier.peers.len());
        for p in &tier.peers {
            let w = i64::from(p.conf.weight);
            let id = match weights.iter().position(|&x| x == w) {
                Some(id) => id,
                None => {
                    weights.push(w);
                    weights.len() - 1
                }
            };
            wid.push(id as u16);
        }
        if weights.len() > INDEX_MAX_WEIGHTS {
            return None;
        }
        let n = tier.peers.len();
        Some(Tree {
            weight: tier
                .peers
                .iter()
                .map(|p| i64::from(p.conf.weight))
                .collect(),
            wid,
            seen: (0..n).map(|_| AtomicU32::new(0)).collect(),
            class: vec![NONE; n],
            pos: vec![0; n],
            weights,
            slots: Vec::new(),
            free: Vec::new(),
            by_ratio: BTreeMap::new(),
            picked: Vec::new(),
            scrub: 0,
            ticks: 0,
        })
    }

    /// Files every non-down peer by its live count, with nginx's weights `w`.
    fn build(&mut self, tier: &Tier, w: &[Weights]) {
        self.by_ratio.clear();
        self.free.clear();
        self.picked.clear();
        for (slot, c) in self.slots.iter_mut().enumerate() {
            c.passes = 0;
            c.total = 0;
            c.members = 0;
            c.heaps.iter_mut().for_each(Vec::clear);
            self.free.push(slot as u32);
        }
        self.class.fill(NONE);
        for (i, p) in tier.peers.iter().enumerate() {
            if p.conf.down {
                continue;
            }
            let conns = p.state.conns.load(Ordering::Acquire);
            self.file(i, conns, w[i].current);
        }
    }

    /// Peer `i`'s nginx `current_weight` (`i` filed).
    #[inline]
    fn current(&self, i: usize) -> i64 {
        let c = &self.slots[self.class[i] as usize];
        c.heaps[self.wid[i] as usize][self.pos[i] as usize].key + c.passes * self.weight[i]
    }

    /// Writes nginx's weights back (every peer at full effective weight).
    fn materialize(&self, tier: &Tier, w: &mut [Weights]) {
        for (i, p) in tier.peers.iter().enumerate() {
            if self.class[i] != NONE {
                w[i] = Weights {
                    current: self.current(i),
                    effective: i64::from(p.conf.weight),
                };
            }
        }
    }

    /// Moves peer `i` to the class of its live count, if that changed.
    #[inline]
    fn sync(&mut self, tier: &Tier, i: usize) {
        if self.class[i] == NONE {
            return;
        }
        let conns = &tier.peers[i].state.conns;
        let mut now = conns.load(Ordering::SeqCst);
        while now != self.seen[i].load(Ordering::Relaxed) {
            let current = self.current(i);
            self.unfile(i);
            self.file(i, now, current);
            // A finish that read the old `seen` and skipped marking the peer
            // changed the count before that read: read it again (see `on_finish`).
            now = conns.load(Ordering::SeqCst);
        }
    }

    /// Adds peer `i` (count `conns`, nginx `current_weight`) to its class.
    fn file(&mut self, i: usize, conns: u32, current: i64) {
        let ratio = Ratio::new(conns, self.weight[i] as u32);
        let slot = match self.by_ratio.get(&ratio) {
            Some(&s) => s,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(Class {
                            heaps: vec![Vec::new(); self.weights.len()],
                            ..Class::default()
                        });
                        (self.slots.len() - 1) as u32
                    }
                };
                self.by_ratio.insert(ratio, s);
                s
            }
        };
        let c = &mut self.slots[slot as usize];
        c.members += 1;
        c.total += self.weight[i];
        self.seen[i].store(conns, Ordering::SeqCst);
        self.class[i] = slot;
        let heap = &mut c.heaps[self.wid[i] as usize];
        heap.push(Entry {
            key: current - c.passes * self.weight[i],
            idx: i as u32,
        });
        let at = heap.len() - 1;
        sift_up(heap, &mut self.pos, at);
    }

    /// Takes peer `i` out of its class (freeing the class when it empties).
    fn unfile(&mut self, i: usize) {
        let slot = self.class[i];
        let at = self.pos[i] as usize;
        let c = &mut self.slots[slot as usize];
        c.members -= 1;
        c.total -= self.weight[i];
        let heap = &mut c.heaps[self.wid[i] as usize];
        if let Some(last) = heap.pop() {
            if last.idx as usize != i {
                heap[at] = last;
                sift_down(heap, &mut self.pos, at);
                let at = self.pos[last.idx as usize] as usize;
                sift_up(heap, &mut self.pos, at);
            }
        }
        self.class[i] = NONE;
        if c.members == 0 {
            c.passes = 0;
            c.total = 0;
            self.by_ratio.remove(&Ratio::new(
                self.seen[i].load(Ordering::Relaxed),
                self.weight[i] as u32,
            ));
            self.free.push(slot);
        }
    }

    /// nginx's choice without changing anything: the least loaded class, and in it
    /// the winner of the next pass (or its only member).
    #[inline]
    fn peek(&self) -> Option<(u32, usize)> {
        let (_, &slot) = self.by_ratio.first_key_value()?;
        let c = &self.slots[slot as usize];
        let passes = c.passes + i64::from(c.members > 1);
        let mut best: Option<Entry> = None;
        for (heap, w) in c.heaps.iter().zip(&self.weights) {
            let Some(top) = heap.first() else { continue };
            let e = Entry {
                key: top.key + passes * w,
                idx: top.idx,
            };
            if best.is_none_or(|b| e.before(b)) {
                best = Some(e);
            }
        }
        best.map(|e| (slot, e.idx as usize))
    }

    /// Runs the pass [`Tree::peek`] previewed (none for a lone minimum), and notes
    /// the pick: its count grows next.
    #[inline]
    fn commit(&mut self, slot: u32, i: usize) {
        let c = &mut self.slots[slot as usize];
        if c.members > 1 {
            c.passes += 1;
            let heap = &mut c.heaps[self.wid[i] as usize];
            let at = self.pos[i] as usize;
            heap[at].key -= c.total;
            sink(heap, &mut self.pos, at);
        }
        self.picked.push(i as u32);
    }
}
