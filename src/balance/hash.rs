//! nginx `hash KEY` (`ngx_http_upstream_get_hash_peer`), Cache::Memcached style:
//! `hash += (crc32([REHASH] KEY) >> 16) & 0x7fff`, walked over the weights; an
//! unusable peer rehashes with the next counter, and after 20 round robin takes over.

use super::round_robin::RoundRobin;
use super::{eligible, Balancer, PickState, WeightWalk};
use crate::upstream::Tier;

/// Key affinity by modulo over the weights.
#[derive(Debug)]
pub struct Hash {
    rr: RoundRobin,
    walk: WeightWalk,
}

impl Hash {
    /// A balancer for `tier`.
    pub fn new(tier: &Tier) -> Self {
        Hash {
            rr: RoundRobin::new(tier),
            walk: WeightWalk::new(tier),
        }
    }
}

/// `crc32(decimal(rehash) + key)`, the number omitted when zero.
fn rehash_crc(rehash: u32, key: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if rehash > 0 {
        let mut digits = [0u8; 10];
        let mut n = rehash;
        let mut at = digits.len();
        while n > 0 {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        h.update(&digits[at..]);
    }
    h.update(key);
    h.finalize()
}

impl Balancer for Hash {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        let key = req.key.unwrap_or_default();
        let total = self.walk.total();
        if req.scratch.gave_up() || key.is_empty() || total == 0 {
            return self.rr.pick(tier, req);
        }
        loop {
            let s = &mut req.scratch;
            s.hash = s
                .hash
                .wrapping_add((rehash_crc(s.rehash, key) >> 16) & 0x7fff);
            s.rehash += 1;
            let i = self.walk.find(u64::from(s.hash) % total);
            if eligible(&tier.peers[i], i, req) {
                return Some(i);
            }
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
    fn rehash_prefixes_the_decimal_counter() {
        assert_eq!(rehash_crc(0, b"key"), crc32fast::hash(b"key"));
        assert_eq!(rehash_crc(1, b"key"), crc32fast::hash(b"1key"));
        assert_eq!(rehash_crc(20, b"/a?b"), crc32fast::hash(b"20/a?b"));
    }
}
