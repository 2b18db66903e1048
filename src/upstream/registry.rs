//! Live server state keyed by (pool, address), so it survives config reloads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::{PeerState, PoolState};

/// Hands out the live state of each server; the same key always gets the same state
/// while it is in use.
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<(String, SocketAddr), Arc<PeerState>>>,
    pools: Mutex<HashMap<String, Arc<PoolState>>>,
    /// What DNS discovery found for `resolve` pools.
    pub discovered: super::discovered::Discovered,
}

impl Registry {
    /// The state of server `addr` in pool `upstream`, created on first use.
    pub fn get(&self, upstream: &str, addr: SocketAddr) -> Arc<PeerState> {
        self.get_or_init(upstream, addr, |_| {})
    }

    /// Like [`Registry::get`], running `init` on a state created now (not on one
    /// kept from an earlier snapshot): e.g. mandatory health checks start unhealthy.
    pub fn get_or_init(
        &self,
        upstream: &str,
        addr: SocketAddr,
        init: impl FnOnce(&PeerState),
    ) -> Arc<PeerState> {
        let pool = self.pool(upstream);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((upstream.to_string(), addr))
            .or_insert_with(|| {
                let s = PeerState::new(pool);
                init(&s);
                Arc::new(s)
            })
            .clone()
    }

    /// The state shared by every server of pool `upstream`.
    pub fn pool(&self, upstream: &str) -> Arc<PoolState> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(upstream.to_string()).or_default().clone()
    }

    /// Forgets states no snapshot holds any more (called after a reload).
    pub fn prune(&self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| Arc::strong_count(s) > 1);
        drop(map);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, p| Arc::strong_count(p) > 1);
        let names = pools.keys().cloned().collect();
        drop(pools);
        self.discovered.retain_pools(&names);
    }
}
