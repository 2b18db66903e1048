//! What DNS discovery found for each entry of a `resolve` pool, kept beside the live
//! server state so that every snapshot built — by discovery itself or by a config
//! reload — expands the pool to the same servers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{self, Lookup, ServerConf};

/// One address a lookup gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Found {
    /// The address (an SRV record's port, or the entry's).
    pub addr: SocketAddr,
    /// The SRV record's weight; `None` for A/AAAA (the entry's `weight=`).
    pub weight: Option<u32>,
    /// The SRV target (empty for A/AAAA).
    pub target: String,
}

/// The answers by (pool, lookup).
type Sets = HashMap<(String, Lookup), Arc<Vec<Found>>>;

/// The last good answer of every (pool, lookup).
#[derive(Debug, Default)]
pub struct Discovered {
    sets: Mutex<Sets>,
}

impl Discovered {
    /// The last good answer for `lookup` of `pool`, if one was stored.
    pub fn get(&self, pool: &str, lookup: &Lookup) -> Option<Arc<Vec<Found>>> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.get(&(pool.to_string(), lookup.clone())).cloned()
    }

    /// Stores an answer (sorted); true if it differs from the one stored before.
    pub fn set(&self, pool: &str, lookup: &Lookup, mut found: Vec<Found>) -> bool {
        found.sort();
        found.dedup();
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pool.to_string(), lookup.clone());
        if sets.get(&key).is_some_and(|old| **old == found) {
            return false;
        }
        sets.insert(key, Arc::new(found));
        true
    }

    /// Forgets answers for pools not in `pools`.
    pub fn retain_pools(&self, pools: &HashSet<String>) {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.retain(|(pool, _), _| pools.contains(pool));
    }

    /// The servers of a `resolve` pool from the stored answers, in entry order, with
    /// the name each came from; an entry never answered yet gives none.
    pub fn expand(&self, conf: &config::Upstream) -> Vec<(ServerConf, Arc<str>)> {
        let Some(r) = &conf.resolve else {
            return conf
                .servers
                .iter()
                .map(|s| (s.clone(), origin_of(&s.name)))
                .collect();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for e in &r.entries {
            let origin: Arc<str> = e.lookup.name().into();
            let Some(found) = self.get(&conf.name, &e.lookup) else {
                continue;
            };
            for f in found.iter() {
                if !seen.insert((f.addr, e.params.backup)) {
                    continue;
                }
                let mut s = e.params.server(f.addr);
                if let Some(w) = f.weight {
                    // SRV weight 0 means "rarely": the lowest weight there is.
                    s.weight = w.max(1);
                    s.name = format!("{}:{}", f.target, f.addr.port());
                }
                out.push((s, origin.clone()));
            }
        }
        out
    }
}

/// The host part of a server as written (`host[:port]` → `host`).
fn origin_of(name: &str) -> Arc<str> {
    config::values::split_host_port(name)
        .map_or(name, |(h, _)| h)
        .into()
}
