//! The immutable routing snapshot every request reads, swapped whole on reload.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Action, Config, Global, VirtualServer};
use crate::route::location::{LocationPattern, LocationTable};
use crate::route::server_name::ServerNameTable;
use crate::upstream::{Registry, Upstream};

/// One virtual server with its compiled location table.
#[derive(Debug)]
pub struct VServer {
    /// Configuration.
    pub conf: VirtualServer,
    /// Location lookup.
    pub locations: LocationTable,
    /// Metrics/log label.
    pub label: String,
}

/// The virtual servers reachable on one listen address.
pub struct ListenerRoutes {
    /// Host → index into `servers`.
    pub names: ServerNameTable,
    /// Indexes into [`Snapshot::servers`], in config order (the first is the default).
    pub servers: Vec<usize>,
}

/// Everything a request needs, immutable.
pub struct Snapshot {
    /// `[global]`.
    pub global: Global,
    /// Virtual servers.
    pub servers: Vec<VServer>,
    /// Pools.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Routes per listen address.
    /// FxHash: every request looks its listener up; SipHash's DoS resistance buys
    /// nothing for keys taken from the config.
    pub listeners: FxHashMap<SocketAddr, ListenerRoutes>,
}

impl Snapshot {
    /// Builds the snapshot for `config`, taking live server state from `registry`.
    /// Fails only on what validation already rejects (kept as an error, not a panic).
    pub fn build(config: Config, registry: &Registry) -> Result<Snapshot, String> {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .into_iter()
            .map(|u| Arc::new(Upstream::new(u, registry)))
            .collect();
        let mut servers = Vec::new();
        for vs in config.servers {
            let locs = vs
                .locations
                .iter()
                .map(|l| {
                    let pat = LocationPattern::parse(&l.path)?;
                    Ok((pat, matches!(l.action, Action::Proxy(_))))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let label = vs.label();
            servers.push(VServer {
                locations: LocationTable::new(locs),
                label,
                conf: vs,
            });
        }
        let mut by_addr: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
        for (i, s) in servers.iter().enumerate() {
            for a in &s.conf.listen {
                let v = by_addr.entry(*a).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        let mut listeners = FxHashMap::default();
        for (addr, idx) in by_addr {
            let names: Vec<Vec<String>> = idx
                .iter()
                .map(|&i| servers[i].conf.server_names.clone())
                .collect();
            let names = ServerNameTable::new(&names)?;
            listeners.insert(
                addr,
                ListenerRoutes {
                    names,
                    servers: idx,
                },
            );
        }
        Ok(Snapshot {
            global: config.global,
            servers,
            upstreams,
            listeners,
        })
    }

    /// Listen addresses with whether any server on them wants h2c, sorted.
    pub fn listen_addrs(&self) -> Vec<(SocketAddr, bool)> {
        let mut v: Vec<(SocketAddr, bool)> = self
            .listeners
            .iter()
            .map(|(a, r)| (*a, r.servers.iter().any(|&i| self.servers[i].conf.http2)))
            .collect();
        v.sort();
        v
    }
}
