//! Behaviour every algorithm shares (down, failed, max_conns, backup, retries) and
//! algorithm-specific properties, on real `Upstream`s over the real registry (no
//! network: nothing here connects).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::round_robin::RoundRobin;
use super::*;
use crate::config::{Balance, ServerConf, Upstream as UpConf};
use crate::route::template::Template;
use crate::upstream::{Pick, Registry, Selection, TierId, Upstream};

const ALL: [(Balance, bool); 8] = [
    (Balance::RoundRobin, false),
    (Balance::LeastConn, false),
    (Balance::IpHash, false),
    (Balance::Hash, false),
    (Balance::Hash, true),
    (Balance::Random, false),
    (Balance::RandomTwoLeastConn, false),
    (Balance::PeakEwma, false),
];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080))
}

fn server(i: usize) -> ServerConf {
    ServerConf::new(addr(i))
}

fn pool(balance: (Balance, bool), servers: Vec<ServerConf>) -> Upstream {
    let mut conf = UpConf::new("p", servers, balance.0);
    if balance.0 == Balance::Hash {
        conf.hash_key = Some(Template::compile("$request_uri").unwrap());
        conf.consistent = balance.1;
    }
    Upstream::new(conf, &Registry::default(), crate::balance::build)
}

/// One request's first pick, with a per-request key and client address.
fn pick(up: &Upstream, n: usize) -> Option<Pick> {
    let key = format!("/k{n}");
    // ip_hash reads the first three octets only.
    let ip = std::net::IpAddr::from([10, (n >> 8) as u8, n as u8, 7]);
    up.select(&mut Selection::default(), Some(key.as_bytes()), Some(ip))
}

/// Picks `n` requests (each finished at once) and counts picks per (tier, idx).
fn spread(up: &Upstream, n: usize) -> HashMap<(TierId, usize), usize> {
    let mut m = HashMap::new();
    for r in 0..n {
        let p = pick(up, r).expect("a pick");
        *m.entry((p.tier, p.idx)).or_insert(0) += 1;
        up.finish(p, false);
    }
    m
}

#[test]
fn down_peer_never_picked() {
    for b in ALL {
        let mut s: Vec<_> = (0..4).map(server).collect();
        s[1].down = true;
        let up = pool(b, s);
        let m = spread(&up, 400);
        assert!(!m.contains_key(&(TierId::Primary, 1)), "{b:?}: {m:?}");
        assert_eq!(m.values().sum::<usize>(), 400);
        assert!(m.len() == 3, "{b:?} uses every other peer: {m:?}");
    }
}

#[test]
fn failed_peer_out_for_fail_timeout() {
    for b in ALL {
        let up = pool(b, (0..4).map(server).collect());
        // Fail whichever peer serves request 0.
        let first = pick(&up, 0).unwrap();
        up.finish(first, true);
        let m = spread(&up, 400);
        assert!(!m.contains_key(&(first.tier, first.idx)), "{b:?}: {m:?}");
        assert_eq!(
            up.peer(first).state_name(crate::upstream::now_secs()),
            "failed"
        );
    }
}

#[test]
fn max_conns_respected() {
    for b in ALL {
        let mut s: Vec<_> = (0..3).map(server).collect();
        for x in &mut s {
            x.max_conns = 1;
        }
        s.push(ServerConf {
            backup: true,
            ..server(9)
        });
        let up = pool(b, s);
        // Three requests held in flight fill every primary once each.
        let held: Vec<Pick> = (0..3).map(|r| pick(&up, r).unwrap()).collect();
        let mut idx: Vec<_> = held.iter().map(|p| (p.tier, p.idx)).collect();
        idx.sort_by_key(|p| p.1);
        idx.dedup();
        assert_eq!(idx.len(), 3, "{b:?}: {held:?}");
        assert!(held.iter().all(|p| p.tier == TierId::Primary));
        // Every primary at max_conns: the backup serves.
        let p = pick(&up, 3).unwrap();
        assert_eq!(p.tier, TierId::Backup, "{b:?}");
        up.finish(p, false);
        up.finish(held[1], false);
        let p = pick(&up, 4).unwrap();
        assert_eq!((p.tier, p.idx), (TierId::Primary, held[1].idx), "{b:?}");
    }
}

#[test]
fn backup_tier_balanced_by_the_same_algorithm_once_primaries_are_out() {
    for b in ALL {
        let mut s = vec![server(0), server(1)];
        for i in 2..6 {
            s.push(ServerConf {
                backup: true,
                ..server(i)
            });
        }
        let up = pool(b, s);
        for _ in 0..2 {
            let mut sel = Selection::default();
            let p = up.select(&mut sel, Some(b"/x"), None).unwrap();
            up.finish(p, true);
        }
        let m = spread(&up, 400);
        assert!(m.keys().all(|k| k.0 == TierId::Backup), "{b:?}: {m:?}");
        assert!(m.len() >= 3, "{b:?} spreads over the backups: {m:?}");
    }
}

#[test]
fn retries_never_repeat_a_peer_and_end_with_none() {
    for b in ALL {
        let up = pool(b, (0..5).map(server).collect());
        let mut sel = Selection::default();
        let mut seen = Vec::new();
        while let Some(p) = up.select(&mut sel, Some(b"/retry"), None) {
            assert!(!seen.contains(&p.idx), "{b:?}: {seen:?} then {}", p.idx);
            seen.push(p.idx);
            up.finish(p, false);
        }
        assert_eq!(seen.len(), 5, "{b:?}");
    }
}

#[test]
fn hash_algorithms_are_sticky() {
    for b in [
        (Balance::IpHash, false),
        (Balance::Hash, false),
        (Balance::Hash, true),
    ] {
        let up = pool(b, (0..7).map(server).collect());
        for r in 0..50 {
            let a = pick(&up, r).unwrap();
            up.finish(a, false);
            let again = pick(&up, r).unwrap();
            up.finish(again, false);
            assert_eq!(a, again, "{b:?}");
        }
    }
}

#[test]
fn least_conn_prefers_fewest_in_flight_per_weight() {
    let mut s: Vec<_> = (0..3).map(server).collect();
    s[2].weight = 2;
    let up = pool((Balance::LeastConn, false), s);
    // All idle: nginx's round robin with weights 1,1,2 -> c a b c (first four).
    let seq: Vec<usize> = (0..4)
        .map(|r| {
            let p = pick(&up, r).unwrap();
            up.finish(p, false);
            p.idx
        })
        .collect();
    assert_eq!(seq, vec![2, 0, 1, 2]);
    let load = |c: [u32; 3]| {
        for (p, c) in up.primary.peers.iter().zip(c) {
            p.state.conns.store(c, std::sync::atomic::Ordering::Relaxed);
        }
        let p = up.select(&mut Selection::default(), None, None).unwrap();
        up.finish(p, false);
        p.idx
    };
    // Ratios conns/weight: 1, 0, 1 -> peer 1.
    assert_eq!(load([1, 0, 2]), 1);
    // 0, 3, 1 -> peer 0.
    assert_eq!(load([0, 3, 2]), 0);
    // 3, 3, 2/2 -> peer 2 (weights count).
    assert_eq!(load([3, 3, 2]), 2);
}

#[test]
fn peak_ewma_avoids_the_slow_peer() {
    let up = pool((Balance::PeakEwma, false), (0..3).map(server).collect());
    let now = crate::clock::coarse_nanos();
    for i in 0..3 {
        let rtt = if i == 1 { 40_000_000 } else { 2_000_000 };
        up.primary.peers[i].state.ewma.observe(rtt, now);
    }
    let m = spread(&up, 3000);
    let slow = m.get(&(TierId::Primary, 1)).copied().unwrap_or(0);
    // Power of two choices at equal load: the slow peer loses every pairing.
    assert_eq!(slow, 0, "{m:?}");
}

/// nginx's pass, literally, with eligibility and effective weights supplied.
struct Reference {
    weight: Vec<i64>,
    current: Vec<i64>,
    effective: Vec<i64>,
}

impl Reference {
    fn pick(&mut self, eligible: &[bool]) -> usize {
        let mut best: Option<usize> = None;
        let mut total = 0;
        for (i, _) in eligible.iter().enumerate().filter(|(_, e)| **e) {
            self.current[i] += self.effective[i];
            total += self.effective[i];
            if self.effective[i] < self.weight[i] {
                self.effective[i] += 1;
            }
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best.unwrap();
        self.current[b] -= total;
        b
    }
}

#[test]
fn round_robin_cycle_stays_nginx_exact_through_drains_and_failures() {
    let weights = [5u32, 1, 3, 2, 1];
    let servers: Vec<ServerConf> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| ServerConf {
            weight: *w,
            max_fails: 4,
            ..server(i)
        })
        .collect();
    let up = pool((Balance::RoundRobin, false), servers);
    let tier = &up.primary;
    let rr = RoundRobin::new(tier);
    let mut reference = Reference {
        weight: weights.iter().map(|w| i64::from(*w)).collect(),
        current: vec![0; 5],
        effective: weights.iter().map(|w| i64::from(*w)).collect(),
    };
    let now = Now::default();
    let one = |reference: &mut Reference, eligible: [bool; 5]| {
        let mut tried = Tried::default();
        let mut req = PickState {
            tried: &mut tried,
            now: &now,
            key: None,
            client_ip: None,
            scratch: Scratch::default(),
        };
        let got = rr.pick(tier, &mut req).unwrap();
        assert_eq!(got, reference.pick(&eligible));
    };
    assert!(rr.is_fast());
    for _ in 0..17 {
        one(&mut reference, [true; 5]);
    }
    // Drain peer 2 for a while: off the cycle, nginx's pass without it.
    tier.peers[2].state.set_draining(true);
    for _ in 0..9 {
        one(&mut reference, [true, true, false, true, true]);
    }
    assert!(!rr.is_fast());
    tier.peers[2].state.set_draining(false);
    // A failure below max_fails lowers the effective weight (weight/max_fails).
    rr.on_failure(tier, 0);
    reference.effective[0] -= 5 / 4;
    for _ in 0..200 {
        one(&mut reference, [true; 5]);
    }
    // Clean again for long enough: back on a (recorded) cycle, still exact.
    assert!(rr.is_fast(), "a clean period brings the cycle back");
    for _ in 0..40 {
        one(&mut reference, [true; 5]);
    }
}

#[test]
fn ten_thousand_healthy_servers_pick_without_a_scan() {
    let up = pool(
        (Balance::RoundRobin, false),
        (0..10_000).map(server).collect(),
    );
    let rr = RoundRobin::new(&up.primary);
    assert!(rr.is_fast());
    let seq: Vec<Pick> = (0..3).map(|r| pick(&up, r).unwrap()).collect();
    assert_eq!(seq.iter().map(|p| p.idx).collect::<Vec<_>>(), vec![0, 1, 2]);
}

/// Where each of `keys` goes in a hash pool of `servers`, by address.
fn key_map(consistent: bool, servers: &[usize], keys: usize) -> Vec<SocketAddr> {
    let up = pool(
        (Balance::Hash, consistent),
        servers.iter().map(|&i| server(i)).collect(),
    );
    (0..keys)
        .map(|k| {
            let key = format!("/object/{k}?v=1");
            let p = up
                .select(&mut Selection::default(), Some(key.as_bytes()), None)
                .unwrap();
            up.finish(p, false);
            up.peer(p).conf.addr
        })
        .collect()
}

#[test]
fn consistent_hash_moves_about_one_nth_of_keys() {
    const KEYS: usize = 20_000;
    let ten: Vec<usize> = (0..10).collect();
    let before = key_map(true, &ten, KEYS);
    // Remove server 3: only its keys move.
    let nine: Vec<usize> = ten.iter().copied().filter(|&i| i != 3).collect();
    let after = key_map(true, &nine, KEYS);
    let moved: Vec<usize> = (0..KEYS).filter(|&k| before[k] != after[k]).collect();
    assert!(moved.iter().all(|&k| before[k] == addr(3)));
    let share = moved.len() as f64 / KEYS as f64;
    // Add an eleventh: only keys that now land on it move.
    let eleven: Vec<usize> = (0..11).collect();
    let grown = key_map(true, &eleven, KEYS);
    let moved_add: Vec<usize> = (0..KEYS).filter(|&k| before[k] != grown[k]).collect();
    assert!(moved_add.iter().all(|&k| grown[k] == addr(10)));
    let share_add = moved_add.len() as f64 / KEYS as f64;
    println!("consistent hash, 10 servers: remove one moves {share:.3}, add one moves {share_add:.3} (1/N = 0.100, 1/(N+1) = 0.091)");
    assert!((0.05..0.16).contains(&share), "{share}");
    assert!((0.045..0.15).contains(&share_add), "{share_add}");
    // Plain modulo hashing, for contrast, moves most keys.
    let (m10, m9) = (key_map(false, &ten, KEYS), key_map(false, &nine, KEYS));
    let share_mod = (0..KEYS).filter(|&k| m10[k] != m9[k]).count() as f64 / KEYS as f64;
    println!("plain hash, 10 -> 9 servers moves {share_mod:.3}");
    assert!(share_mod > 0.5, "{share_mod}");
}

#[test]
fn pool_impaired_count_follows_state_changes_and_reloads() {
    let reg = Registry::default();
    let conf = |n: usize| UpConf::new("p", (0..n).map(server).collect(), Balance::RoundRobin);
    let old = Upstream::new(conf(3), &reg, crate::balance::build);
    let pool = old.primary.pool.clone();
    let s = |i: usize| old.primary.peers[i].state.clone();
    assert_eq!(pool.impaired(), 0);
    s(2).set_draining(true);
    s(2).set_draining(true);
    s(2).set_unhealthy(true);
    assert_eq!(pool.impaired(), 1, "one server, however many reasons");
    s(1).set_unhealthy(true);
    assert_eq!(pool.impaired(), 2);
    s(1).set_unhealthy(false);
    s(2).set_draining(false);
    assert_eq!(pool.impaired(), 1);
    // A failure counts until a success resets it (after a pick made once the
    // failure window passed: nginx's `accessed < checked`).
    let p = Pick {
        tier: TierId::Primary,
        idx: 0,
    };
    // (Each finish ends an attempt this test starts by hand.)
    s(0).conns
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    old.finish(p, true);
    assert_eq!(pool.impaired(), 2);
    s(0).checked
        .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    s(0).conns
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    old.finish(p, false);
    assert_eq!(pool.impaired(), 1);
    assert_eq!(s(0).conns.load(std::sync::atomic::Ordering::Relaxed), 0);
    // A reload that drops the unhealthy server: once nothing holds its state, the
    // pool is clean again and the new snapshot's round robin walks its cycle.
    let new = Upstream::new(conf(2), &reg, crate::balance::build);
    assert!(Arc::ptr_eq(&new.primary.pool, &pool));
    drop(old);
    reg.prune();
    assert_eq!(pool.impaired(), 0);
    assert!(RoundRobin::new(&new.primary).is_fast());
}

#[test]
fn concurrent_picks_never_return_a_server_after_its_drain() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for b in ALL {
        let up = Arc::new(pool(b, (0..8).map(server).collect()));
        let drained = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let pickers: Vec<_> = (0..3)
            .map(|t| {
                let (up, drained, stop) = (up.clone(), drained.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = t * 1_000_000;
                    let mut after = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let d = drained.load(Ordering::SeqCst);
                        let p = pick(&up, n).expect("a pick");
                        n += 1;
                        if d {
                            assert_ne!(p.idx, 5, "{b:?}: drained server picked");
                            after += 1;
                        }
                        up.finish(p, false);
                    }
                    after
                })
            })
            .collect();
        // Let the pickers run on the cycle, then drain server 5 under them.
        while up.primary.peers[0].state.requests.load(Ordering::Relaxed) < 200 {
            std::thread::yield_now();
        }
        up.primary.peers[5].state.set_draining(true);
        drained.store(true, Ordering::SeqCst);
        let before = up.primary.peers[0].state.requests.load(Ordering::Relaxed);
        while up.primary.peers[0].state.requests.load(Ordering::Relaxed) < before + 200 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        let after: usize = pickers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(after > 0, "{b:?}");
        // Every attempt ended: nothing left in flight.
        for p in &up.primary.peers {
            assert_eq!(p.state.conns.load(Ordering::Relaxed), 0, "{b:?}");
        }
    }
}

#[test]
fn round_robin_stays_exact_while_a_server_sits_at_max_conns() {
    let weights = [3u32, 2, 1, 1];
    let servers: Vec<ServerConf> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| ServerConf {
            weight: *w,
            max_conns: if i == 1 { 1 } else { 0 },
            ..server(i)
        })
        .collect();
    let up = pool((Balance::RoundRobin, false), servers);
    let mut reference = Reference {
        weight: weights.iter().map(|w| i64::from(*w)).collect(),
        current: vec![0; 4],
        effective: weights.iter().map(|w| i64::from(*w)).collect(),
    };
    let mut held = None;
    for n in 0..60 {
        // Server 1 is at max_conns while one of its requests is held.
        let eligible = [true, held.is_none(), true, true];
        let p = up.select(&mut Selection::default(), None, None).unwrap();
        assert_eq!(p.idx, reference.pick(&eligible), "pick {n}");
        match (p.idx, held) {
            // Hold server 1's request for a while, then let it go.
            (1, None) => held = Some((p, n + 9)),
            _ => up.finish(p, false),
        }
        if let Some((h, until)) = held {
            if n >= until {
                up.finish(h, false);
                held = None;
            }
        }
    }
    if let Some((h, _)) = held {
        assert_eq!(up.primary.pool.impaired(), 1, "saturated server flagged");
        up.finish(h, false);
    }
    assert_eq!(up.primary.pool.impaired(), 0);
}

/// nginx's least_conn (NGINX_COMPAT.md §2) written out plainly, O(n) per pick, with
/// its own in-flight counts and round-robin weights.
struct LeastConnReference {
    weight: Vec<i64>,
    current: Vec<i64>,
    effective: Vec<i64>,
    conns: Vec<i64>,
}

impl LeastConnReference {
    fn new(weights: &[u32]) -> Self {
        let weight: Vec<i64> = weights.iter().map(|w| i64::from(*w)).collect();
        LeastConnReference {
            current: vec![0; weight.len()],
            effective: weight.clone(),
            conns: vec![0; weight.len()],
            weight,
        }
    }

    fn pick(&mut self, eligible: &[bool]) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut many = false;
        for i in (0..eligible.len()).filter(|&i| eligible[i]) {
            match best {
                Some(b) if self.conns[i] * self.weight[b] < self.conns[b] * self.weight[i] => {
                    best = Some(i);
                    many = false;
                }
                Some(b) if self.conns[i] * self.weight[b] == self.conns[b] * self.weight[i] => {
                    many = true;
                }
                Some(_) => {}
                None => best = Some(i),
            }
        }
        let mut best = best?;
        if many {
            let first = best;
            let mut total = 0;
            for (i, &ok) in eligible.iter().enumerate().skip(first) {
                let tied = self.conns[i] * self.weight[first] == self.conns[first] * self.weight[i];
                if !ok || !tied {
                    continue;
                }
                self.current[i] += self.effective[i];
                total += self.effective[i];
                if self.effective[i] < self.weight[i] {
                    self.effective[i] += 1;
                }
                if self.current[i] > self.current[best] {
                    best = i;
                }
            }
            self.current[best] -= total;
        }
        self.conns[best] += 1;
        Some(best)
    }

    /// nginx `free_round_robin_peer` on a failed try.
    fn failed(&mut self, i: usize, max_fails: u32) {
        if max_fails != 0 {
            self.effective[i] -= self.weight[i] / i64::from(max_fails);
        }
        self.effective[i] = self.effective[i].max(0);
    }
}

/// The indexed least_conn and the plain reference through the same long random
/// sequences of picks, finishes, failures, retries, drains, health changes and
/// recoveries, over mixed weights and pool sizes: the same pick at every step.
#[test]
fn least_conn_index_picks_what_nginx_picks() {
    let mut seed = 0x5eed_1e57u64;
    let mut rnd = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let sizes = [1usize, 2, 3, 7, 11, 12, 13, 17, 40, 64, 65, 130, 300];
    let (mut indexed_picks, mut picks) = (0usize, 0usize);
    for (round, &n) in sizes.iter().cycle().take(2 * sizes.len()).enumerate() {
        let servers: Vec<ServerConf> = (0..n)
            .map(|i| ServerConf {
                weight: 1 + rnd(5) as u32,
                max_fails: [0, 2, 3][rnd(3) as usize],
                max_conns: if rnd(30) == 0 { 2 + rnd(3) as u32 } else { 0 },
                down: n > 2 && rnd(25) == 0,
                ..server(i)
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let max_fails: Vec<u32> = servers.iter().map(|s| s.max_fails).collect();
        let up = pool((Balance::LeastConn, false), servers);
        let tier = &up.primary;
        let mut reference = LeastConnReference::new(&weights);
        // Requests in flight: their selection (for retries) and current pick.
        let mut flight: Vec<(Selection, Pick, Vec<usize>)> = Vec::new();
        let steps = if n > 100 { 2500 } else { 1500 };
        let eligible = |tried: &[usize]| -> Vec<bool> {
            let now = crate::upstream::now_secs();
            tier.peers
                .iter()
                .enumerate()
                .map(|(i, p)| !tried.contains(&i) && p.available(now))
                .collect()
        };
        let mut start = |mut sel: Selection,
                         mut tried: Vec<usize>,
                         flight: &mut Vec<(Selection, Pick, Vec<usize>)>,
                         reference: &mut LeastConnReference| {
            let want = reference.pick(&eligible(&tried));
            let indexed = tier.balancer().indexed();
            let got = up.select(&mut sel, None, None);
            assert_eq!(
                got.map(|p| p.idx),
                want,
                "round {round}, {n} peers, weights {weights:?}"
            );
            picks += usize::from(n >= super::least_conn::INDEX_MIN_PEERS);
            indexed_picks += usize::from(indexed && tier.balancer().indexed());
            if let Some(p) = got {
                tried.push(p.idx);
                flight.push((sel, p, tried));
            }
        };
        for _ in 0..steps {
            let op = rnd(100);
            let i = rnd(n as u64) as usize;
            let st = &tier.peers[i].state;
            match op {
                0..=44 => start(
                    Selection::default(),
                    Vec::new(),
                    &mut flight,
                    &mut reference,
                ),
                45..=88 if !flight.is_empty() => {
                    let (_, p, _) = flight.swap_remove(rnd(flight.len() as u64) as usize);
                    up.finish(p, false);
                    reference.conns[p.idx] -= 1;
                }
                89..=91 if !flight.is_empty() => {
                    let (sel, p, tried) = flight.swap_remove(rnd(flight.len() as u64) as usize);
                    up.finish(p, true);
                    reference.conns[p.idx] -= 1;
                    reference.failed(p.idx, max_fails[p.idx]);
                    if rnd(2) == 0 {
                        start(sel, tried, &mut flight, &mut reference);
                    }
                }
                92 => {
                    st.set_draining(!st.draining.load(std::sync::atomic::Ordering::Relaxed));
                }
                93 => {
                    st.set_unhealthy(!st.unhealthy.load(std::sync::atomic::Ordering::Relaxed));
                }
                94..=96 => st.reset_failures(),
                _ => {
                    // Everything recovers (nginx: fail_timeout passed, checks pass).
                    for p in &tier.peers {
                        p.state.set_draining(false);
                        p.state.set_unhealthy(false);
                        p.state.reset_failures();
                    }
                }
            }
        }
        for (_, p, _) in flight.drain(..) {
            up.finish(p, false);
        }
    }
    // In indexed pools, the index answered a good share of the picks (the rest
    // were the scan's, while something was impaired).
    assert!(
        indexed_picks * 4 > picks,
        "{indexed_picks} of {picks} picks indexed"
    );
}

/// Requests that started through an older snapshot and finish there after a reload
/// reach only the older balancer: the new index re-reads every peer within 4n picks,
/// so those servers are not left looking busy.
#[test]
fn least_conn_index_heals_counts_changed_through_an_older_snapshot() {
    let registry = Registry::default();
    let conf = || UpConf::new("p", (0..20).map(server).collect(), Balance::LeastConn);
    let old = Upstream::new(conf(), &registry, crate::balance::build);
    let held: Vec<Pick> = (0..10)
        .map(|_| old.select(&mut Selection::default(), None, None).unwrap())
        .collect();
    let new = Upstream::new(conf(), &registry, crate::balance::build);
    let one = || {
        let p = new.select(&mut Selection::default(), None, None).unwrap();
        new.finish(p, false);
        p.idx
    };
    // The ten busy servers are avoided while busy.
    assert!((0..5).all(|_| one() >= 10));
    assert!(new.primary.balancer().indexed());
    for p in held {
        old.finish(p, false);
    }
    for _ in 0..80 {
        one();
    }
    // All idle again: round robin over all twenty reaches the formerly busy ones.
    let mut seen: Vec<usize> = (0..60).map(|_| one()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

/// Threads starting and ending overlapping requests on one indexed pool: once they
/// are done, the index files every server as idle again (no server is left looking
/// busy or idle when it is not), which n held requests show by reaching n servers.
#[test]
fn least_conn_index_stays_consistent_under_concurrent_picks() {
    let servers = (0..100)
        .map(|i| ServerConf {
            weight: 1 + (i % 3) as u32,
            ..server(i)
        })
        .collect();
    let up = pool((Balance::LeastConn, false), servers);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let up = &up;
            s.spawn(move || {
                let mut held = std::collections::VecDeque::new();
                for k in 0..20_000u64 {
                    held.push_back(up.select(&mut Selection::default(), None, None).unwrap());
                    // 1 to 8 requests of this thread in flight.
                    while held.len() > 1 + ((k * 7 + t) % 8) as usize {
                        up.finish(held.pop_front().unwrap(), false);
                    }
                }
                for p in held {
                    up.finish(p, false);
                }
            });
        }
    });
    assert!(up.primary.balancer().indexed());
    let held: Vec<Pick> = (0..100)
        .map(|_| up.select(&mut Selection::default(), None, None).unwrap())
        .collect();
    let mut idx: Vec<usize> = held.iter().map(|p| p.idx).collect();
    idx.sort_unstable();
    assert_eq!(idx, (0..100).collect::<Vec<_>>());
}
