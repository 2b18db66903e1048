//! The immutable routing snapshot every request reads, swapped whole on reload.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::access_log::{AccessLog, OpenError};
use crate::config::{Action, Config, Global, VirtualServer};
use crate::metrics::{LabelSets, RequestMetrics};
use crate::route::location::{LocationPattern, LocationTable, PatternError};
use crate::route::server_name::{NameError, ServerNameTable};
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
    /// Request metric handles per location (index as in `conf.locations`).
    pub location_metrics: Vec<RequestMetrics>,
    /// Request metric handles for answers given before a location is chosen
    /// (404, bad requests, slash redirects): `upstream=""`.
    pub own_metrics: RequestMetrics,
}

/// How far routing got before a request was answered (which metrics count it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Site {
    /// No virtual server chosen yet.
    #[default]
    Listener,
    /// A virtual server (index into [`Snapshot::servers`]) but no location.
    Server(usize),
    /// A location of a virtual server.
    Location(usize, usize),
}

/// The virtual servers reachable on one listen address.
pub struct ListenerRoutes {
    /// Host → index into `servers`.
    pub names: ServerNameTable,
    /// Indexes into [`Snapshot::servers`], in config order (the first is the default).
    pub servers: Vec<usize>,
}

/// Why a snapshot could not be built from a config that passed validation (what
/// validation already rejects; kept as an error, not a panic).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A location `path` does not parse.
    #[error(transparent)]
    Location(#[from] PatternError),
    /// The `server_name`s of a listen address do not build a table.
    #[error(transparent)]
    ServerName(#[from] NameError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] OpenError),
}

/// Everything a request needs, immutable.
pub struct Snapshot {
    /// `[global]`.
    pub global: Global,
    /// Virtual servers (shared with the snapshots DNS discovery derives from this one).
    pub servers: Arc<Vec<VServer>>,
    /// Pools.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Routes per listen address.
    /// FxHash: every request looks its listener up; SipHash's DoS resistance buys
    /// nothing for keys taken from the config.
    pub listeners: Arc<FxHashMap<SocketAddr, ListenerRoutes>>,
    /// Request metric handles for a request with no virtual server (its listener
    /// was removed by a reload): `server="", upstream=""`.
    pub unrouted_metrics: RequestMetrics,
    /// The access log, `None` when off. Each snapshot opens its own, so a reload
    /// applies new settings and reopens the file (log rotation).
    pub access_log: Option<Arc<AccessLog>>,
    /// `$hostname`: the machine's name, read once per process.
    pub hostname: Arc<str>,
}

/// The machine's host name (`localhost` if it has none that is UTF-8), read once.
fn hostname() -> Arc<str> {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
            .into()
    })
    .clone()
}

impl Snapshot {
    /// The metric label values this snapshot has series for (what a reload keeps).
    pub fn metric_labels(&self) -> LabelSets {
        let mut keep = LabelSets::default();
        for vs in self.servers.iter() {
            keep.routes.insert((vs.label.clone(), String::new()));
            for rm in &vs.location_metrics {
                keep.routes
                    .insert((vs.label.clone(), rm.upstream().to_string()));
            }
        }
        for up in &self.upstreams {
            keep.pools.insert(up.conf.name.clone());
            for p in up.peers() {
                keep.servers
                    .insert((up.conf.name.clone(), p.conf.addr.to_string()));
            }
        }
        keep
    }

    /// Builds the snapshot for `config`, taking live server state from `registry`.
    /// Fails only on what validation already rejects (kept as an error, not a panic).
    pub fn build(config: Config, registry: &Registry) -> Result<Snapshot, BuildError> {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .into_iter()
            .map(|u| Arc::new(Upstream::new(u, registry, crate::balance::build)))
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
                .collect::<Result<Vec<_>, PatternError>>()?;
            let label = vs.label();
            let location_metrics = vs
                .locations
                .iter()
                .map(|l| match &l.action {
                    Action::Proxy(pp) => {
                        let name = upstreams.get(pp.upstream).map_or("", |u| &u.conf.name);
                        RequestMetrics::new(&label, name)
                    }
                    Action::Return(_) => RequestMetrics::new(&label, ""),
                })
                .collect();
            servers.push(VServer {
                locations: LocationTable::new(locs),
                location_metrics,
                own_metrics: RequestMetrics::new(&label, ""),
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
        let access_log =
            AccessLog::open(&config.global.access_log, config.global.access_log_format)?;
        Ok(Snapshot {
            global: config.global,
            servers: Arc::new(servers),
            upstreams,
            listeners: Arc::new(listeners),
            unrouted_metrics: RequestMetrics::new("", ""),
            access_log: access_log.map(Arc::new),
            hostname: hostname(),
        })
    }

    /// This snapshot with other pools (same names, same order): what DNS discovery
    /// swaps in when a `resolve` pool's addresses change. Everything else is shared.
    pub fn with_upstreams(&self, upstreams: Vec<Arc<Upstream>>) -> Snapshot {
        Snapshot {
            global: self.global.clone(),
            servers: self.servers.clone(),
            upstreams,
            listeners: self.listeners.clone(),
            unrouted_metrics: self.unrouted_metrics.clone(),
            access_log: self.access_log.clone(),
            hostname: self.hostname.clone(),
        }
    }

    /// The request metric handles for an answer given at `site`.
    pub fn request_metrics(&self, site: Site, listen_key: SocketAddr) -> &RequestMetrics {
        match site {
            Site::Location(vs, loc) => &self.servers[vs].location_metrics[loc],
            Site::Server(vs) => &self.servers[vs].own_metrics,
            // Before the Host is known: the listener's default server, as nginx logs it.
            Site::Listener => match self.listeners.get(&listen_key) {
                Some(r) => r
                    .servers
                    .first()
                    .map_or(&self.unrouted_metrics, |&i| &self.servers[i].own_metrics),
                None => &self.unrouted_metrics,
            },
        }
    }

    /// The TLS config a handshake on `listen_key` finishes with: that of the server
    /// whose `server_name` matches the SNI name (nginx's rules, wildcards and
    /// regexes included), or of the address's first server without SNI or for a
    /// name none matches. `None` if the address is not (or no longer) TLS.
    pub fn tls_config(
        &self,
        listen_key: SocketAddr,
        sni: Option<&str>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let r = self.listeners.get(&listen_key)?;
        let at = sni.map_or(0, |n| r.names.find(n));
        let i = *r.servers.get(at).or(r.servers.first())?;
        let tls = self.servers[i].conf.tls.as_ref()?;
        Some(tls.loaded.config.clone())
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
