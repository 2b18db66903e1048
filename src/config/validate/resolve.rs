//! `resolve`, `resolve_interval` and `service=` of `[upstream.NAME]`, and
//! `[global] resolver` / `resolver_timeout`: what the DNS discovery is asked to follow.

use std::net::SocketAddr;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{span_of, Validator};
use crate::config::schema;
use crate::config::values;
use crate::config::{Lookup, Resolve, ResolveEntry};

impl Validator<'_> {
    /// `[global] resolver`: DNS servers as `addr[:port]` (port 53 by default).
    pub(super) fn resolver(
        &mut self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Vec<SocketAddr> {
        let Some(list) = v else { return Vec::new() };
        let mut out = Vec::new();
        for s in list.get_ref() {
            let text = s.get_ref();
            let parsed = values::split_host_port(text)
                .ok()
                .and_then(|(h, p)| Some(SocketAddr::new(h.parse().ok()?, p.unwrap_or(53))));
            match parsed {
                Some(a) => out.push(a),
                None => self.r.error(
                    span_of(s),
                    format!("invalid resolver \"{text}\" (expected an IP address with an optional port)"),
                ),
            }
        }
        if list.get_ref().is_empty() {
            self.r.error(span_of(list), "resolver must not be empty");
        }
        out
    }

    /// `[global] resolver_timeout`, above zero (default 2s).
    pub(super) fn resolver_timeout(&mut self, v: &Option<Spanned<String>>) -> Duration {
        let d = self.duration(v, Duration::from_secs(2));
        if let Some(s) = v.as_ref().filter(|_| d.is_zero()) {
            self.r
                .error(span_of(s), "resolver_timeout must be above zero");
        }
        d
    }

    /// `resolve = true`: the entries to follow; `None` for a pool resolved once at load.
    pub(super) fn resolve(
        &mut self,
        u: &schema::UpstreamSection,
        default_port: u16,
    ) -> Option<Resolve> {
        let on = u.resolve.as_ref().is_some_and(|r| *r.get_ref());
        if !on {
            if let Some(i) = &u.resolve_interval {
                self.r
                    .error(span_of(i), "\"resolve_interval\" needs resolve = true");
            }
            return None;
        }
        let interval = self.duration(&u.resolve_interval, Duration::from_secs(5));
        if let Some(i) = u.resolve_interval.as_ref().filter(|_| interval.is_zero()) {
            self.r
                .error(span_of(i), "resolve_interval must be above zero");
        }
        let mut entries = Vec::new();
        for entry in u.server.get_ref() {
            let Some(params) = self.server_entry(entry) else {
                continue;
            };
            match lookup_of(&params, default_port) {
                Ok(lookup) => entries.push(ResolveEntry { params, lookup }),
                Err(e) => self.r.error(span_of(entry), e),
            }
        }
        if u.server.get_ref().is_empty() {
            self.r.error(span_of(&u.server), "no servers in upstream");
        }
        Some(Resolve { interval, entries })
    }
}

/// The DNS question of one entry: nginx 1.27's `service=` rules.
fn lookup_of(p: &values::ServerParams, default_port: u16) -> Result<Lookup, String> {
    let (host, port) = values::split_host_port(&p.addr).map_err(|e| e.to_string())?;
    if host.is_empty() {
        return Err(format!("invalid address \"{}\": empty host", p.addr));
    }
    let host = host.trim_end_matches('.').to_string();
    let Some(service) = &p.service else {
        return Ok(Lookup::Host {
            host,
            port: port.unwrap_or(default_port),
        });
    };
    if port.is_some() {
        return Err(format!(
            "\"service=\" takes no port: each SRV record gives its own (\"{}\")",
            p.addr
        ));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "\"service=\" needs a name, not an address (\"{}\")",
            p.addr
        ));
    }
    Ok(Lookup::Srv {
        name: srv_name(service, &host),
    })
}

/// `service=http` → `_http._tcp.HOST`; a name with a dot (`_http._tcp`,
/// `server1.backend`) is a prefix joined to HOST as it is.
fn srv_name(service: &str, host: &str) -> String {
    if service.contains('.') {
        format!("{service}.{host}")
    } else {
        format!("_{}._tcp.{host}", service.trim_start_matches('_'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_names_as_nginx() {
        assert_eq!(srv_name("http", "b.ns.svc"), "_http._tcp.b.ns.svc");
        assert_eq!(srv_name("_http._tcp", "b.ns.svc"), "_http._tcp.b.ns.svc");
        assert_eq!(
            srv_name("server1.backend", "example.com"),
            "server1.backend.example.com"
        );
    }

    #[test]
    fn lookups() {
        let p = values::ServerParams::parse("b.test:8080 weight=2").unwrap();
        assert_eq!(
            lookup_of(&p, 80).unwrap(),
            Lookup::Host {
                host: "b.test".into(),
                port: 8080
            }
        );
        let p = values::ServerParams::parse("b.test service=http").unwrap();
        assert_eq!(
            lookup_of(&p, 80).unwrap(),
            Lookup::Srv {
                name: "_http._tcp.b.test".into()
            }
        );
        let p = values::ServerParams::parse("b.test:80 service=http").unwrap();
        assert!(lookup_of(&p, 80).is_err());
    }
}
