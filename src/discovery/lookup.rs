//! The DNS questions of discovery, asked with `hickory-resolver` (no getaddrinfo
//! thread): A and AAAA for a hostname, SRV (then the targets' addresses) for
//! `service=`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::Lookup;
use crate::upstream::discovered::Found;

/// A good answer: the addresses and how long they may be kept.
#[derive(Debug)]
pub struct Answer {
    /// Every address (empty: the name has none).
    pub found: Vec<Found>,
    /// The shortest TTL of the records used.
    pub ttl: Duration,
}

/// Why a lookup gave no answer (the last good set stays).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver failed: timeout, refused, SERVFAIL, ...
    #[error("DNS lookup of {name} failed: {source}")]
    Resolve {
        /// The name asked for.
        name: String,
        /// The resolver's error.
        #[source]
        source: ResolveError,
    },
    /// `/etc/resolv.conf` could not be read (and no `[global] resolver` is set).
    #[error("cannot read the system resolver configuration: {0}")]
    System(#[source] ResolveError),
}

/// The resolver of one `[global] resolver` / `resolver_timeout` setting.
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// A resolver asking `servers` (over UDP, TCP for truncated answers), or the
    /// nameservers of `/etc/resolv.conf` when `servers` is empty.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Dns, LookupError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(LookupError::System)?
        } else {
            let mut cfg = ResolverConfig::new();
            for s in servers {
                cfg.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                cfg.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(cfg, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Discovery decides when to ask again (interval or TTL); a cache would
        // hold answers past a `resolve_interval` shorter than the TTL.
        opts.cache_size = 0;
        Ok(Dns {
            resolver: builder.build(),
        })
    }

    /// Asks `lookup`. "No such name" and "no records" are good, empty answers.
    pub async fn lookup(&self, lookup: &Lookup) -> Result<Answer, LookupError> {
        match lookup {
            Lookup::Host { host, port } => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    return Ok(Answer {
                        found: vec![found(SocketAddr::new(ip, *port), None, "")],
                        ttl: Duration::MAX,
                    });
                }
                self.host(host, *port).await
            }
            Lookup::Srv { name } => self.srv(name).await,
        }
    }

    async fn host(&self, host: &str, port: u16) -> Result<Answer, LookupError> {
        match self.resolver.lookup_ip(absolute(host)).await {
            Ok(l) => Ok(Answer {
                found: l
                    .iter()
                    .map(|ip| found(SocketAddr::new(ip, port), None, ""))
                    .collect(),
                ttl: remaining(l.valid_until()),
            }),
            Err(e) => empty_or(host, e),
        }
    }

    async fn srv(&self, name: &str) -> Result<Answer, LookupError> {
        let srv = match self.resolver.srv_lookup(absolute(name)).await {
            Ok(s) => s,
            Err(e) => return empty_or(name, e),
        };
        let mut ttl = remaining(srv.as_lookup().valid_until());
        // Addresses the server sent along (additional section), by target.
        let mut known: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for r in srv.as_lookup().records() {
            let ip = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            known.entry(r.name().to_ascii()).or_default().push(ip);
        }
        let mut out = Vec::new();
        for rec in srv.iter() {
            let target = rec.target().to_ascii();
            let ips = match known.get(&target) {
                Some(ips) => ips.clone(),
                None => {
                    let a = self.host(&target, rec.port()).await?;
                    ttl = ttl.min(a.ttl);
                    a.found.iter().map(|f| f.addr.ip()).collect()
                }
            };
            let shown = target.trim_end_matches('.');
            for ip in ips {
                let addr = SocketAddr::new(ip, rec.port());
                out.push(found(addr, Some(u32::from(rec.weight())), shown));
            }
        }
        Ok(Answer { found: out, ttl })
    }
}

fn found(addr: SocketAddr, weight: Option<u32>, target: &str) -> Found {
    Found {
        addr,
        weight,
        target: target.to_string(),
    }
}

/// A name with a dot is asked as written (no search domains), as nginx does; a
/// bare name goes through the search list of `resolv.conf`.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else if name.contains('.') {
        format!("{name}.")
    } else {
        name.to_string()
    }
}

fn remaining(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}

fn empty_or(name: &str, e: ResolveError) -> Result<Answer, LookupError> {
    if e.is_no_records_found() || e.is_nx_domain() {
        return Ok(Answer {
            found: Vec::new(),
            ttl: Duration::MAX,
        });
    }
    Err(LookupError::Resolve {
        name: name.to_string(),
        source: e,
    })
}
