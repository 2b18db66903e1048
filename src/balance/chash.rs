//! nginx `hash KEY consistent` (`ngx_http_upstream_init_chash`,
//! `ngx_http_upstream_get_chash_peer`): a ketama ring of `160 × weight` points per
//! server, looked up with `crc32(key)`; the point's server's eligible peers are
//! chosen among by nginx's round-robin pass, and an unusable point moves on to the
//! next one, up to 20 before round robin takes over.

use std::collections::HashMap;

use super::round_robin::{smooth_pass, RoundRobin};
use super::{eligible, Balancer, PickState};
use crate::upstream::Tier;

/// Ketama consistent hashing.
#[derive(Debug)]
pub struct ConsistentHash {
    rr: RoundRobin,
    /// Point hashes, sorted, distinct.
    hashes: Vec<u32>,
    /// Each point's owner: the peer index of a server with one address, else
    /// [`MULTI`] over the server id.
    owners: Vec<u32>,
    /// `first[b]`: the first point whose hash's top `bits` bits are ≥ `b`, so a
    /// lookup searches one small bucket (a 10,000-server ring has 3 million points).
    first: Vec<u32>,
    bits: u32,
    /// Peer indexes of each server id (a hostname with several addresses has several).
    servers: Vec<Vec<u32>>,
    /// A fresh CRC-32 hasher, cloned per key (the CPU feature check done once).
    crc: crc32fast::Hasher,
}

/// Marks an owner that is a server id (several peers), not a peer index.
const MULTI: u32 = 1 << 31;

/// Splits a `server` name as nginx does for the ring: `unix:` path, else a trailing
/// `:digits` port, else no port.
fn host_port(name: &str) -> (&[u8], &[u8]) {
    let b = name.as_bytes();
    if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"unix:") {
        return (&b[5..], b"");
    }
    for j in 0..b.len() {
        let c = b[b.len() - j - 1];
        if c == b':' {
            return (&b[..b.len() - j - 1], &b[b.len() - j..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (b, b"")
}

/// The ring points of one server: `crc32(host \0 port le32(prev))`, chained.
pub fn server_points(name: &str, weight: u32) -> impl Iterator<Item = u32> {
    let (host, port) = host_port(name);
    let mut base = crc32fast::Hasher::new();
    base.update(host);
    base.update(b"\0");
    base.update(port);
    let mut prev = 0u32;
    (0..160 * weight).map(move |_| {
        let mut h = base.clone();
        h.update(&prev.to_le_bytes());
        prev = h.finalize();
        prev
    })
}

impl ConsistentHash {
    /// A ring over `tier`'s peers (`down` ones included, as nginx).
    pub fn new(tier: &Tier) -> Self {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut servers: Vec<Vec<u32>> = Vec::new();
        let mut points = Vec::new();
        for (i, p) in tier.peers.iter().enumerate() {
            let id = *ids.entry(p.conf.name.as_str()).or_insert_with(|| {
                servers.push(Vec::new());
                (servers.len() - 1) as u32
            });
            servers[id as usize].push(i as u32);
            points.extend(server_points(&p.conf.name, p.conf.weight).map(|h| (h, id)));
        }
        // Stable: among equal hashes the first in config order stays (nginx leaves it
        // to qsort; collisions between different servers are rare).
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        let (hashes, owners): (Vec<u32>, Vec<u32>) = points
            .into_iter()
            .map(|(h, id)| match servers[id as usize].as_slice() {
                [one] if *one < MULTI => (h, *one),
                _ => (h, MULTI | id),
            })
            .unzip();
        // About 8 points per bucket, at most 2^16 buckets.
        let bits = (usize::BITS - (hashes.len() / 8).leading_zeros()).min(16);
        let first = (0..=1u64 << bits)
            .map(|b| {
                let lo = b << (32 - bits);
                hashes.partition_point(|&h| u64::from(h) < lo) as u32
            })
            .collect();
        ConsistentHash {
            rr: RoundRobin::new(tier),
            hashes,
            owners,
            first,
            bits,
            servers,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The first point at or after `hash` (may be one past the end, as nginx).
    fn find_point(&self, hash: u32) -> usize {
        let b = (u64::from(hash) >> (32 - self.bits)) as usize;
        let (lo, hi) = (self.first[b] as usize, self.first[b + 1] as usize);
        lo + self.hashes[lo..hi].partition_point(|&h| h < hash)
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        let key = req.key.unwrap_or_default();
        if req.scratch.gave_up() || key.is_empty() || self.hashes.is_empty() {
            return self.rr.pick(tier, req);
        }
        if !req.scratch.started {
            req.scratch.started = true;
            let mut crc = self.crc.clone();
            crc.update(key);
            req.scratch.hash = self.find_point(crc.finalize()) as u32;
        }
        loop {
            let n = self.hashes.len();
            let owner = &self.owners[req.scratch.hash as usize % n];
            // A server with one address is its own candidate list.
            let server: &[u32] = if owner & MULTI == 0 {
                std::slice::from_ref(owner)
            } else {
                &self.servers[(owner & !MULTI) as usize]
            };
            let mut candidates = server
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| eligible(&tier.peers[i], i, req));
            if let Some(first) = candidates.next() {
                let more = candidates.next().is_some();
                // One candidate and every weight whole: nginx's pass changes nothing.
                if !more && !self.rr.has_deficit() {
                    return Some(first);
                }
                return Some(self.rr.with_weights(tier, |w| {
                    let candidates = server
                        .iter()
                        .map(|&i| i as usize)
                        .filter(|&i| eligible(&tier.peers[i], i, req));
                    smooth_pass(w, tier, candidates).map_or(first, |(b, _)| b)
                }));
            }
            req.scratch.hash = req.scratch.hash.wrapping_add(1);
            if req.scratch.give_up() {
                return self.rr.pick(tier, req);
            }
        }
    }

    fn on_failure(&self, tier: &Tier, idx: usize) {
        self.rr.on_failure(tier, idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_as_nginx() {
        assert_eq!(host_port("10.0.0.1:8080"), (&b"10.0.0.1"[..], &b"8080"[..]));
        assert_eq!(host_port("backend"), (&b"backend"[..], &b""[..]));
        assert_eq!(host_port("[::1]:81"), (&b"[::1]"[..], &b"81"[..]));
        assert_eq!(host_port("UNIX:/s"), (&b"/s"[..], &b""[..]));
        assert_eq!(host_port("host:8a"), (&b"host:8a"[..], &b""[..]));
    }

    #[test]
    fn bucketed_lookup_matches_binary_search() {
        use crate::config::{Balance, ServerConf, Upstream as UpConf};
        use crate::upstream::{Registry, Upstream};
        for n in [1, 3, 40] {
            let servers = (0..n)
                .map(|i| ServerConf::new(([10, 1, 0, i as u8 + 1], 80).into()))
                .collect();
            let up = Upstream::new(
                UpConf::new("r", servers, Balance::Hash),
                &Registry::default(),
                crate::balance::build,
            );
            let ring = ConsistentHash::new(&up.primary);
            let mut probes = vec![0, 1, u32::MAX, ring.hashes[0], *ring.hashes.last().unwrap()];
            probes.extend(ring.hashes.iter().step_by(7).map(|h| h.wrapping_add(1)));
            probes.extend((0..2000u32).map(|i| i.wrapping_mul(2_654_435_761)));
            for h in probes {
                assert_eq!(
                    ring.find_point(h),
                    ring.hashes.partition_point(|&p| p < h),
                    "n={n} h={h}"
                );
            }
        }
    }

    #[test]
    fn a_name_with_several_addresses_shares_its_points_round_robin() {
        use crate::config::{Balance, ServerConf, Upstream as UpConf};
        use crate::upstream::{Registry, Selection, Upstream};
        let named = |i: u8, name: &str| ServerConf {
            name: name.into(),
            ..ServerConf::new(([10, 1, 0, i], 80).into())
        };
        let servers = vec![named(1, "multi"), named(2, "multi"), named(3, "single")];
        let mut conf = UpConf::new("r", servers, Balance::Hash);
        conf.hash_key = Some(crate::route::template::Template::compile("$request_uri").unwrap());
        conf.consistent = true;
        let up = Upstream::new(conf, &Registry::default(), crate::balance::build);
        let ring = ConsistentHash::new(&up.primary);
        assert_eq!(ring.servers.len(), 2);
        let owner_of =
            |key: &[u8]| ring.owners[ring.find_point(crc32fast::hash(key)) % ring.hashes.len()];
        let key_of = |multi: bool| {
            (0..1000)
                .map(|i| format!("/k{i}"))
                .find(|k| (owner_of(k.as_bytes()) & MULTI != 0) == multi)
                .unwrap()
        };
        let pick = |key: &str| {
            let p = up
                .select(&mut Selection::default(), Some(key.as_bytes()), None)
                .unwrap();
            up.finish(p, false);
            p.idx
        };
        // The shared name's key alternates between its two addresses (nginx's pass
        // over equal weights); the single address's key always lands on it.
        let (m, s) = (key_of(true), key_of(false));
        assert_eq!(
            (0..4).map(|_| pick(&m)).collect::<Vec<_>>(),
            vec![0, 1, 0, 1]
        );
        assert!((0..4).all(|_| pick(&s) == 2));
    }

    #[test]
    fn points_chain_on_previous_hash() {
        let pts: Vec<u32> = server_points("a:1", 1).collect();
        assert_eq!(pts.len(), 160);
        assert_eq!(pts[0], crc32fast::hash(b"a\x001\x00\x00\x00\x00"));
        let mut next = b"a\x001".to_vec();
        next.extend_from_slice(&pts[0].to_le_bytes());
        assert_eq!(pts[1], crc32fast::hash(&next));
    }
}
