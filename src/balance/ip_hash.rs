//! nginx `ip_hash` (`ngx_http_upstream_get_ip_hash_peer`): a hash of the client
//! address (the first three octets of IPv4, all sixteen bytes of IPv6) walked over
//! the weights; an unusable peer rehashes, and after 20 of them round robin takes over.

use std::net::IpAddr;

use super::round_robin::RoundRobin;
use super::{eligible, Balancer, PickState, WeightWalk};
use crate::upstream::Tier;

/// Client-address affinity.
#[derive(Debug)]
pub struct IpHash {
    rr: RoundRobin,
    walk: WeightWalk,
}

impl IpHash {
    /// A balancer for `tier`.
    pub fn new(tier: &Tier) -> Self {
        IpHash {
            rr: RoundRobin::new(tier),
            walk: WeightWalk::new(tier),
        }
    }
}

/// The address bytes nginx hashes.
fn hashed_bytes(ip: Option<IpAddr>) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    match ip {
        Some(IpAddr::V4(v4)) => {
            buf[..3].copy_from_slice(&v4.octets()[..3]);
            (buf, 3)
        }
        Some(IpAddr::V6(v6)) => (v6.octets(), 16),
        // Unix sockets: nginx hashes three zero bytes.
        None => (buf, 3),
    }
}

impl Balancer for IpHash {
    fn pick(&self, tier: &Tier, req: &mut PickState<'_>) -> Option<usize> {
        let total = self.walk.total();
        if req.scratch.gave_up() || total == 0 {
            return self.rr.pick(tier, req);
        }
        if !req.scratch.started {
            req.scratch.started = true;
            req.scratch.hash = 89;
        }
        let (bytes, len) = hashed_bytes(req.client_ip);
        let mut h = req.scratch.hash;
        loop {
            for &b in &bytes[..len] {
                h = (h * 113 + u32::from(b)) % 6271;
            }
            let i = self.walk.find(u64::from(h) % total);
            if eligible(&tier.peers[i], i, req) {
                // Kept only on success, as nginx.
                req.scratch.hash = h;
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
