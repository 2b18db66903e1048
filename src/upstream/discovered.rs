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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, Resolve, ResolveEntry};
    use std::time::Duration;

    fn entry(text: &str, lookup: Lookup) -> ResolveEntry {
        ResolveEntry {
            params: config::values::ServerParams::parse(text).unwrap(),
            lookup,
        }
    }

    #[test]
    fn expands_entries_in_order_with_srv_weights() {
        let host = Lookup::Host {
            host: "a.test".into(),
            port: 81,
        };
        let srv = Lookup::Srv {
            name: "_http._tcp.b.test".into(),
        };
        let mut conf = config::Upstream::new("p", Vec::new(), Balance::RoundRobin);
        conf.resolve = Some(Resolve {
            interval: Duration::from_secs(5),
            entries: vec![
                entry("a.test:81 max_fails=3", host.clone()),
                entry("b.test service=http", srv.clone()),
            ],
        });
        let d = Discovered::default();
        assert!(d.expand(&conf).is_empty(), "nothing answered yet");
        let a: SocketAddr = "127.0.0.2:81".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:90".parse().unwrap();
        let plain = |addr| Found {
            addr,
            weight: None,
            target: String::new(),
        };
        assert!(d.set("p", &host, vec![plain(a), plain(a)]));
        assert!(!d.set("p", &host, vec![plain(a)]), "same answer: no change");
        let weighted = |addr, w| Found {
            addr,
            weight: Some(w),
            target: "t.b.test".into(),
        };
        d.set("p", &srv, vec![weighted(b, 0), weighted(a, 7)]);
        let got = d.expand(&conf);
        let view: Vec<(SocketAddr, u32, u32, &str)> = got
            .iter()
            .map(|(s, o)| (s.addr, s.weight, s.max_fails, &**o))
            .collect();
        // 127.0.0.2:81 from the SRV answer is the host entry's address again: kept once.
        assert_eq!(
            view,
            vec![(a, 1, 3, "a.test"), (b, 1, 1, "_http._tcp.b.test")]
        );
        assert_eq!(got[1].0.name, "t.b.test:90");
        d.retain_pools(&HashSet::new());
        assert!(d.get("p", &host).is_none());
    }
}
