//! The `[[server]]` sections: listen addresses, locations and their `proxy_pass`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_spanned::Spanned;

use super::location::ServerDefaults;
use super::{span_of, Validator};
use crate::config::schema;
use crate::config::values;
use crate::config::{Balance, Location, ProxyPass, ServerConf, Upstream, VirtualServer};
use crate::route::location::LocationPattern;

impl Validator<'_> {
    pub(super) fn server(
        &mut self,
        s: &schema::ServerSection,
        base: &std::path::Path,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> VirtualServer {
        let mut listen = Vec::new();
        for l in s.listen.get_ref() {
            match values::parse_listen(l.get_ref()) {
                Ok(a) => listen.push(a),
                Err(e) => self.r.error(span_of(l), e.to_string()),
            }
        }
        if s.listen.get_ref().is_empty() {
            self.r
                .error(span_of(&s.listen), "listen needs at least one address");
        }
        let inherited = ServerDefaults {
            add_headers: self.add_headers(&s.add_header, &s.add_header_always),
            client_max_body_size: self.size(&s.client_max_body_size, 1024 * 1024),
        };
        let tls = s.tls.as_ref().and_then(|t| self.server_tls(base, t));
        let mut locations = Vec::new();
        let mut sections = Vec::new();
        for loc in &s.location {
            if let Some(l) = self.location(loc, &inherited, upstreams, by_name) {
                locations.push(l);
                sections.push(loc);
            }
        }
        // Duplicate literal locations are an error in nginx.
        let table = crate::route::LocationTable::new(
            locations
                .iter()
                .map(|l: &Location| (l.pattern.clone(), false))
                .collect(),
        );
        for (_, later) in table.duplicates() {
            self.r.error(
                span_of(&sections[later].path),
                format!("duplicate location \"{}\"", locations[later].path),
            );
        }
        VirtualServer {
            listen,
            server_names: s
                .server_name
                .iter()
                .map(|n| server_name(n.get_ref()))
                .collect(),
            client_max_body_size: inherited.client_max_body_size,
            client_header_timeout: self.positive(
                &s.client_header_timeout,
                Duration::from_secs(60),
                "client_header_timeout",
            ),
            client_body_timeout: self.positive(
                &s.client_body_timeout,
                Duration::from_secs(60),
                "client_body_timeout",
            ),
            keepalive_timeout: self.positive(
                &s.keepalive_timeout,
                Duration::from_secs(75),
                "keepalive_timeout",
            ),
            http2: s.http2.as_ref().is_some_and(|h| *h.get_ref()),
            add_headers: inherited.add_headers,
            proxy_protocol: s.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
            real_ip: self.real_ip(s),
            tls,
            locations,
        }
    }

    /// A server timeout: a duration above zero (a zero `client_body_timeout` would
    /// refuse every body that has to wait for the network at all, a zero header or
    /// keep-alive timeout would close every connection at once).
    fn positive(&mut self, v: &Option<Spanned<String>>, default: Duration, key: &str) -> Duration {
        let d = self.duration(v, default);
        match v {
            Some(s) if d.is_zero() => {
                self.r
                    .error(span_of(s), format!("{key} must be above zero"));
                default
            }
            _ => d,
        }
    }

    pub(super) fn proxy_pass(
        &mut self,
        pp: &Spanned<String>,
        pattern: &LocationPattern,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> Option<ProxyPass> {
        let (authority, uri_part, https) = self.proxy_pass_url(pp, pattern)?;
        if let Some(&i) = by_name.get(&authority.to_ascii_lowercase()) {
            if https && upstreams[i].tls.is_none() {
                let name = &upstreams[i].name;
                self.r.error(
                    span_of(pp),
                    format!("upstream \"{name}\" has no tls: set tls = true in [upstream.{name}] to proxy_pass https:// to it"),
                );
                return None;
            }
            return Some(proxy_to(
                &upstreams[i],
                i,
                upstreams[i].name.clone(),
                uri_part,
            ));
        }
        let (idx, proxy_host) = self.literal_upstream(pp, authority, https, upstreams, by_name)?;
        Some(proxy_to(&upstreams[idx], idx, proxy_host, uri_part))
    }

    /// `http[s]://AUTHORITY[/URI]` split into the authority, the URI part and
    /// whether it is `https`.
    fn proxy_pass_url<'s>(
        &mut self,
        pp: &'s Spanned<String>,
        pattern: &LocationPattern,
    ) -> Option<(&'s str, Option<String>, bool)> {
        let raw = pp.get_ref();
        let (rest, https) = if let Some(r) = raw.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = raw.strip_prefix("https://") {
            (r, true)
        } else {
            self.r.error(
                span_of(pp),
                format!("invalid URL prefix in \"{raw}\" (expected http:// or https://)"),
            );
            return None;
        };
        let (authority, uri_part) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        if uri_part.is_some() && pattern.is_regex() {
            self.r.error(
                span_of(pp),
                "\"proxy_pass\" cannot have URI part in location given by regular expression",
            );
            return None;
        }
        if authority.is_empty() {
            self.r.error(span_of(pp), format!("no host in \"{raw}\""));
            return None;
        }
        Some((authority, uri_part, https))
    }

    /// The implicit upstream of a literal `host[:port]` (added on its first use; with
    /// TLS for `https`, port 443 by default) and the `$proxy_host` it gets: its index
    /// and that name.
    fn literal_upstream(
        &mut self,
        pp: &Spanned<String>,
        authority: &str,
        https: bool,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> Option<(usize, String)> {
        let raw = pp.get_ref();
        let (host, port) = match values::split_host_port(authority) {
            Ok(hp) => hp,
            Err(e) => {
                self.r.error(span_of(pp), e.to_string());
                return None;
            }
        };
        // An upstream name must match without a port; anything else is a literal
        // address, and a name that does not resolve is "host not found" as in nginx.
        let default_port = if https { 443 } else { 80 };
        let addrs = match values::resolve(authority, default_port) {
            Ok(a) => a,
            Err(_)
                if port.is_none()
                    && !host.contains('.')
                    && host.parse::<std::net::IpAddr>().is_err() =>
            {
                self.r.error(
                    span_of(pp),
                    format!("no upstream named \"{host}\" (in proxy_pass \"{raw}\")"),
                );
                return None;
            }
            Err(e) => {
                self.r.error(span_of(pp), e.to_string());
                return None;
            }
        };
        let scheme = if https { "https://" } else { "" };
        let key = format!("{scheme}{}", authority.to_ascii_lowercase());
        let idx = match by_name.get(&key) {
            Some(&i) => i,
            None => {
                let mut u = implicit_upstream(authority, &addrs);
                if https {
                    match self.default_upstream_tls(u.protocol) {
                        Ok(t) => u.tls = Some(t),
                        Err(e) => {
                            self.r.error(span_of(pp), e.to_string());
                            return None;
                        }
                    }
                }
                upstreams.push(u);
                by_name.insert(key, upstreams.len() - 1);
                upstreams.len() - 1
            }
        };
        let proxy_host = match port {
            None => host.to_string(),
            Some(p) if p == default_port => host.to_string(),
            Some(_) => authority.to_string(),
        };
        Some((idx, proxy_host))
    }

    pub(super) fn check_listens(
        &mut self,
        sections: &[schema::ServerSection],
        servers: &[VirtualServer],
    ) {
        // Every address's server_name table must build (regexes, wildcards).
        let mut by_addr: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
        for (i, s) in servers.iter().enumerate() {
            for a in &s.listen {
                let list = by_addr.entry(*a).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        for (addr, idx) in &by_addr {
            self.check_tls_mix(sections, servers, *addr, idx);
            let names: Vec<Vec<String>> = idx
                .iter()
                .map(|&i| servers[i].server_names.clone())
                .collect();
            if let Err(e) = crate::route::server_name::ServerNameTable::new(&names) {
                let at = &sections[idx[0]].listen;
                self.r.error(span_of(at), e.to_string());
            }
        }
        self.check_proxy_protocol(sections, servers, &by_addr);
        // A wildcard and a specific address on one port cannot both be bound.
        let addrs: Vec<SocketAddr> = by_addr.keys().copied().collect();
        for a in &addrs {
            if a.ip().is_unspecified() {
                if let Some(b) = addrs
                    .iter()
                    .find(|b| b.port() == a.port() && *b != a && b.is_ipv4() == a.is_ipv4())
                {
                    let sec = servers
                        .iter()
                        .position(|s| s.listen.contains(b))
                        .unwrap_or(0);
                    self.r.error(
                        span_of(&sections[sec].listen),
                        format!("listen {b} conflicts with {a} on the same port"),
                    );
                }
            }
        }
    }
}

/// A `proxy_pass` to `pool` (index `upstream`) with `Host: proxy_host` and the pool's
/// settings; the location adds its `proxy_set_header`s and overrides.
fn proxy_to(
    pool: &Upstream,
    upstream: usize,
    proxy_host: String,
    uri_part: Option<String>,
) -> ProxyPass {
    ProxyPass {
        upstream,
        opts: pool.pass,
        proxy_host_header: host_header(&proxy_host),
        proxy_host,
        uri_part,
        set_headers: Vec::new(),
    }
}

fn host_header(name: &str) -> http::HeaderValue {
    // Upstream names and addresses are plain ASCII; anything else falls back safely.
    http::HeaderValue::from_str(name).unwrap_or(http::HeaderValue::from_static("localhost"))
}

fn implicit_upstream(authority: &str, addrs: &[SocketAddr]) -> Upstream {
    let servers = addrs
        .iter()
        .map(|a| ServerConf {
            name: authority.to_string(),
            ..ServerConf::new(*a)
        })
        .collect();
    Upstream::new(authority, servers, Balance::RoundRobin)
}

/// A name lowercased; a regex keeps its case: `\D` is not `\d` (the table matches
/// regexes caselessly, as nginx).
fn server_name(n: &str) -> String {
    if n.starts_with('~') {
        n.to_string()
    } else {
        n.to_ascii_lowercase()
    }
}
