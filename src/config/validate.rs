//! Schema → runtime [`Config`], collecting every problem with its position.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::{ConfigError, Reporter};
use super::schema::{self, FileConfig};
use super::values::{self, ServerParams};
use super::*;
use crate::route::location::LocationPattern;
use crate::route::template::Template;

const NOT_YET: &str = "is not supported yet";

pub(super) fn validate(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let mut r = Reporter::new(path, src);
    let file: FileConfig = match toml::from_str(src) {
        Ok(f) => f,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            r.error_at(at, e.message().trim_end().to_string());
            return Err(r.finish().err().unwrap_or(ConfigError {
                diagnostics: Vec::new(),
            }));
        }
    };
    let mut v = Validator { r };
    let config = v.config(path, file);
    v.r.finish()?;
    Ok(config)
}

struct Validator<'a> {
    r: Reporter<'a>,
}

fn span_of<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

impl Validator<'_> {
    fn duration(&mut self, v: &Option<Spanned<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match values::parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.r.error(span_of(s), e);
                    default
                }
            },
        }
    }

    fn count(&mut self, v: &Option<Spanned<i64>>, default: u64, what: &str) -> u64 {
        match v {
            None => default,
            Some(n) if *n.get_ref() >= 0 => *n.get_ref() as u64,
            Some(n) => {
                self.r
                    .error(span_of(n), format!("{what} must not be negative"));
                default
            }
        }
    }

    fn size(&mut self, v: &Option<schema::SpannedValue>, default: u64) -> u64 {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => values::parse_size_str(s),
            other => Err(format!(
                "invalid size {other} (use bytes, or a string like \"1m\")"
            )),
        };
        parsed.unwrap_or_else(|e| {
            self.r.error(span_of(v), e);
            default
        })
    }

    fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::compile(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                // +1 skips the opening quote of the TOML string.
                self.r
                    .error_at(s.span().start + 1 + e.offset(), e.to_string());
                None
            }
        }
    }

    fn not_yet<T>(&mut self, v: &Option<Spanned<T>>, key: &str) {
        if let Some(v) = v {
            self.r.error(span_of(v), format!("\"{key}\" {NOT_YET}"));
        }
    }

    fn config(&mut self, path: &Path, file: FileConfig) -> Config {
        let global = self.global(&file.global);
        let admin = self.admin(&file.admin);
        let mut upstreams = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (name, section) in &file.upstream {
            if let Some(u) = self.upstream(name, section) {
                by_name.insert(name.get_ref().to_ascii_lowercase(), upstreams.len());
                upstreams.push(u);
            }
        }
        let mut servers = Vec::new();
        for s in &file.server {
            servers.push(self.server(s, &mut upstreams, &mut by_name));
        }
        self.check_listens(&file.server, &servers);
        let mut demo = Vec::new();
        if let Some(d) = &file.demo {
            for b in &d.get_ref().backends {
                match values::parse_listen(b.get_ref()) {
                    Ok(a) => demo.push(a),
                    Err(e) => self.r.error(span_of(b), e),
                }
            }
        }
        Config {
            path: path.to_path_buf(),
            global,
            admin,
            upstreams,
            servers,
            demo,
            demo_requests: file.demo.as_ref().map_or(0, |d| d.get_ref().requests),
        }
    }

    fn global(&mut self, g: &schema::GlobalSection) -> Global {
        let access_log = match g.access_log.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("off") => AccessLogTarget::Off,
            Some("stdout") => AccessLogTarget::Stdout,
            Some("stderr") => AccessLogTarget::Stderr,
            Some("") => {
                if let Some(a) = &g.access_log {
                    self.r.error(span_of(a), "access_log must not be empty");
                }
                AccessLogTarget::Off
            }
            Some(path) => AccessLogTarget::Path(path.into()),
        };
        let access_log_format = match g.access_log_format.as_ref() {
            None => AccessLogFormat::Combined,
            Some(f) => match f.get_ref().as_str() {
                "combined" => AccessLogFormat::Combined,
                "json" => AccessLogFormat::Json,
                other => {
                    self.r.error(
                        span_of(f),
                        format!(
                            "invalid access_log_format \"{other}\" (expected \"combined\" or \"json\")"
                        ),
                    );
                    AccessLogFormat::Combined
                }
            },
        };
        if let Some(l) = &g.log_level {
            if tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err() {
                self.r
                    .error(span_of(l), format!("invalid log_level \"{}\"", l.get_ref()));
            }
        }
        Global {
            worker_threads: self.count(&g.worker_threads, 0, "worker_threads") as usize,
            shutdown_timeout: self.duration(&g.shutdown_timeout, Duration::from_secs(30)),
            log_level: g.log_level.as_ref().map(|l| l.get_ref().clone()),
            max_connections: self.count(&g.max_connections, 0, "max_connections") as usize,
            access_log,
            access_log_format,
        }
    }

    fn admin(&mut self, a: &schema::AdminSection) -> Option<Admin> {
        let listen = match &a.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
            Some(l) if l.get_ref() == "off" => return None,
            Some(l) => match values::parse_listen(l.get_ref()) {
                Ok(a) => a,
                Err(e) => {
                    self.r.error(span_of(l), e);
                    return None;
                }
            },
        };
        let token = match &a.token {
            Some(t) if t.get_ref().is_empty() => {
                self.r.error(span_of(t), "admin token must not be empty");
                None
            }
            t => t.as_ref().map(|t| t.get_ref().clone()),
        };
        Some(Admin { listen, token })
    }

    fn server_entry(&mut self, v: &schema::SpannedValue) -> Option<ServerParams> {
        let res = match v.get_ref() {
            toml::Value::String(s) => ServerParams::parse(s),
            toml::Value::Table(t) => (|| {
                let addr = match t.get("addr") {
                    Some(toml::Value::String(a)) => a.clone(),
                    _ => return Err("server table needs addr = \"host:port\"".to_string()),
                };
                let mut p = ServerParams::new(addr);
                for (k, val) in t {
                    match (k.as_str(), val) {
                        ("addr", _) => {}
                        ("backup" | "down", toml::Value::Boolean(b)) => {
                            if *b {
                                p.apply(k, None)?;
                            }
                        }
                        (_, toml::Value::Integer(n)) => p.apply(k, Some(&n.to_string()))?,
                        (_, toml::Value::String(s)) => p.apply(k, Some(s))?,
                        (k, _) => return Err(format!("invalid type for server key \"{k}\"")),
                    }
                }
                Ok(p)
            })(),
            _ => Err("a server is a string or an inline table".to_string()),
        };
        res.map_err(|e| self.r.error(span_of(v), e)).ok()
    }

    fn upstream(
        &mut self,
        name: &Spanned<String>,
        u: &schema::UpstreamSection,
    ) -> Option<Upstream> {
        let balance = match u.balance.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "round_robin")) => Balance::RoundRobin,
            Some((_, "least_conn")) => Balance::LeastConn,
            Some((_, "ip_hash")) => Balance::IpHash,
            Some((_, "hash")) => Balance::Hash,
            Some((_, "random")) => Balance::Random,
            Some((_, "random_two_least_conn")) => Balance::RandomTwoLeastConn,
            Some((_, "peak_ewma")) => Balance::PeakEwma,
            Some((b, other)) => {
                self.r.error(span_of(b), format!("unknown balance \"{other}\" (expected round_robin, least_conn, ip_hash, hash, random, random_two_least_conn or peak_ewma)"));
                Balance::RoundRobin
            }
        };
        let hash_key = match &u.hash_key {
            Some(k) if balance != Balance::Hash => {
                self.r
                    .error(span_of(k), "\"hash_key\" needs balance = \"hash\"");
                None
            }
            Some(k) => self.template(k),
            None => {
                if balance == Balance::Hash {
                    let at = u.balance.as_ref().map_or(span_of(&u.server), span_of);
                    self.r.error(at, "balance \"hash\" needs a hash_key");
                }
                None
            }
        };
        let consistent = match &u.consistent {
            Some(c) if balance != Balance::Hash => {
                self.r
                    .error(span_of(c), "\"consistent\" needs balance = \"hash\"");
                false
            }
            Some(c) => *c.get_ref(),
            None => false,
        };
        self.not_yet(&u.tls, "tls");
        self.not_yet(&u.resolve, "resolve");
        self.not_yet(&u.resolve_interval, "resolve_interval");
        if let Some(p) = &u.protocol {
            match p.get_ref().as_str() {
                "http1" => {}
                "h2" => self
                    .r
                    .error(span_of(p), format!("protocol \"h2\" {NOT_YET}")),
                other => self.r.error(
                    span_of(p),
                    format!("invalid protocol \"{other}\" (expected \"http1\" or \"h2\")"),
                ),
            }
        }
        let mut next = NextUpstream {
            error: true,
            timeout: true,
            ..Default::default()
        };
        if let Some(list) = &u.next_upstream {
            next = NextUpstream::default();
            let items = list.get_ref();
            for it in items {
                let s = it.get_ref().as_str();
                match s {
                    "error" => next.error = true,
                    "timeout" => next.timeout = true,
                    "invalid_header" => next.invalid_header = true,
                    "non_idempotent" => next.non_idempotent = true,
                    "off" if items.len() == 1 => {}
                    "off" => self
                        .r
                        .error(span_of(it), "\"off\" cannot be combined with other values"),
                    _ => {
                        let code = s.strip_prefix("http_").and_then(|c| c.parse::<u16>().ok());
                        if !code.is_some_and(|c| next.statuses.insert(c)) {
                            self.r
                                .error(span_of(it), format!("invalid next_upstream value \"{s}\""));
                        }
                    }
                }
            }
        }
        let mut servers = Vec::new();
        for entry in u.server.get_ref() {
            let Some(p) = self.server_entry(entry) else {
                continue;
            };
            match values::resolve(&p.addr, 80) {
                Ok(addrs) => servers.extend(addrs.into_iter().map(|addr| p.server(addr))),
                Err(e) => self.r.error(span_of(entry), e),
            }
        }
        if u.server.get_ref().is_empty() {
            self.r.error(
                span_of(&u.server),
                format!("no servers in upstream \"{}\"", name.get_ref()),
            );
        }
        let mut seen = HashMap::new();
        for s in &servers {
            if seen.insert((s.addr, s.backup), ()).is_some() {
                self.r.error(
                    span_of(&u.server),
                    format!(
                        "duplicate server {} in upstream \"{}\"",
                        s.addr,
                        name.get_ref()
                    ),
                );
            }
        }
        Some(Upstream {
            name: name.get_ref().clone(),
            servers,
            balance,
            hash_key,
            consistent,
            keepalive: self.count(&u.keepalive, 64, "keepalive") as usize,
            keepalive_timeout: self.duration(&u.keepalive_timeout, Duration::from_secs(60)),
            connect_timeout: self.duration(&u.connect_timeout, Duration::from_secs(5)),
            send_timeout: self.duration(&u.send_timeout, Duration::from_secs(60)),
            read_timeout: self.duration(&u.read_timeout, Duration::from_secs(60)),
            next_upstream: next,
            next_upstream_tries: self.count(&u.next_upstream_tries, 0, "next_upstream_tries")
                as u32,
            next_upstream_timeout: self.duration(&u.next_upstream_timeout, Duration::ZERO),
            health_check: u
                .health_check
                .as_ref()
                .map(|h| self.health_check(h.get_ref())),
        })
    }

    fn health_check(&mut self, h: &schema::HealthCheckSection) -> HealthCheck {
        let kind = match h.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "http")) => CheckKind::Http,
            Some((_, "tcp")) => CheckKind::Tcp,
            Some((k, other)) => {
                self.r.error(
                    span_of(k),
                    format!("invalid health_check type \"{other}\" (expected \"http\" or \"tcp\")"),
                );
                CheckKind::Http
            }
        };
        let path = match &h.path {
            None => "/".to_string(),
            Some(p) => {
                let ok = p.get_ref().starts_with('/')
                    && http::uri::PathAndQuery::try_from(p.get_ref().as_str()).is_ok();
                if !ok {
                    self.r.error(
                        span_of(p),
                        format!(
                            "invalid health_check path \"{}\" (expected \"/...\")",
                            p.get_ref()
                        ),
                    );
                }
                p.get_ref().clone()
            }
        };
        let interval = self.duration(&h.interval, Duration::from_secs(5));
        if let Some(i) = &h.interval {
            if interval.is_zero() {
                self.r
                    .error(span_of(i), "health_check interval must be above zero");
            }
        }
        let timeout = self.duration(&h.timeout, Duration::from_secs(2));
        if let Some(t) = &h.timeout {
            if timeout.is_zero() {
                self.r
                    .error(span_of(t), "health_check timeout must be above zero");
            }
        }
        let mut streak = |v: &Option<Spanned<i64>>, default: u32, what: &str| match v {
            None => default,
            Some(n) if (1..=i64::from(u32::MAX)).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.r
                    .error(span_of(n), format!("{what} must be at least 1"));
                default
            }
        };
        let rise = streak(&h.rise, 2, "rise");
        let fall = streak(&h.fall, 3, "fall");
        let expect_status = match &h.expect_status {
            None => vec![(200, 399)],
            Some(v) => self.expect_status(v),
        };
        let host = h.host.as_ref().map(|x| {
            if http::HeaderValue::from_str(x.get_ref()).is_err() || x.get_ref().is_empty() {
                self.r.error(
                    span_of(x),
                    format!("invalid health_check host \"{}\"", x.get_ref()),
                );
            }
            x.get_ref().clone()
        });
        let port = h
            .port
            .as_ref()
            .and_then(|p| match u16::try_from(*p.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.r.error(
                        span_of(p),
                        format!("invalid port {} (expected 1-65535)", p.get_ref()),
                    );
                    None
                }
            });
        HealthCheck {
            kind,
            path,
            interval,
            timeout,
            rise,
            fall,
            expect_status,
            host,
            port,
            mandatory: h.mandatory.as_ref().is_some_and(|m| *m.get_ref()),
        }
    }

    /// `expect_status`: "200-399", 200, or a list of codes and ranges.
    fn expect_status(&mut self, v: &schema::SpannedValue) -> Vec<(u16, u16)> {
        let items: Vec<&toml::Value> = match v.get_ref() {
            toml::Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        let mut out = Vec::new();
        for it in &items {
            let parsed = match it {
                toml::Value::Integer(n) => status_range(&n.to_string()),
                toml::Value::String(s) => status_range(s),
                other => Err(format!(
                    "invalid expect_status item {other} (expected a code or \"lo-hi\")"
                )),
            };
            // Items inside an array carry no span of their own: point at the key's value.
            match parsed {
                Ok(r) => out.push(r),
                Err(e) => self.r.error(span_of(v), e),
            }
        }
        if items.is_empty() {
            self.r.error(span_of(v), "expect_status must not be empty");
        }
        if out.is_empty() {
            out.push((200, 399));
        }
        out
    }

    fn server(
        &mut self,
        s: &schema::ServerSection,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> VirtualServer {
        let mut listen = Vec::new();
        for l in s.listen.get_ref() {
            match values::parse_listen(l.get_ref()) {
                Ok(a) => listen.push(a),
                Err(e) => self.r.error(span_of(l), e),
            }
        }
        if s.listen.get_ref().is_empty() {
            self.r
                .error(span_of(&s.listen), "listen needs at least one address");
        }
        self.not_yet(&s.tls, "tls");
        self.not_yet(&s.keepalive_timeout, "keepalive_timeout");
        let mut locations = Vec::new();
        let mut sections = Vec::new();
        for loc in &s.location {
            if let Some(l) = self.location(loc, upstreams, by_name) {
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
                .map(|n| n.get_ref().to_ascii_lowercase())
                .collect(),
            client_max_body_size: self.size(&s.client_max_body_size, 1024 * 1024),
            client_header_timeout: self.duration(&s.client_header_timeout, Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(75),
            http2: s.http2.as_ref().is_some_and(|h| *h.get_ref()),
            locations,
        }
    }

    fn location(
        &mut self,
        loc: &schema::LocationSection,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> Option<Location> {
        let pattern = match LocationPattern::parse(loc.path.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                self.r.error(span_of(&loc.path), e);
                return None;
            }
        };
        let action = match (&loc.proxy_pass, &loc.return_) {
            (Some(_), Some(r)) => {
                self.r.error(
                    span_of(r),
                    "a location has either proxy_pass or return, not both",
                );
                return None;
            }
            (None, None) => {
                self.r
                    .error(span_of(&loc.path), "location needs proxy_pass or return");
                return None;
            }
            (None, Some(r)) => {
                if loc.proxy_set_header.is_some() {
                    // Harmless in nginx, but a sign of a mistake: say so.
                }
                let ret = r.get_ref();
                let status = *ret.status.get_ref();
                if !(100..=999).contains(&status) {
                    self.r.error(
                        span_of(&ret.status),
                        format!("invalid return code \"{status}\""),
                    );
                }
                Action::Return(Return {
                    status: status.clamp(100, 999) as u16,
                    body: ret.body.as_ref().and_then(|b| self.template(b)),
                    location: ret.location.as_ref().and_then(|b| self.template(b)),
                })
            }
            (Some(pp), None) => {
                let target = self.proxy_pass(pp, &pattern, upstreams, by_name)?;
                let mut set_headers = Vec::new();
                if let Some(h) = &loc.proxy_set_header {
                    for (name, value) in h.get_ref() {
                        match http::HeaderName::from_bytes(name.as_bytes()) {
                            Ok(n) => {
                                if let Some(t) = self.template(value) {
                                    set_headers.push((n, t));
                                }
                            }
                            Err(_) => self
                                .r
                                .error(span_of(value), format!("invalid header name \"{name}\"")),
                        }
                    }
                }
                Action::Proxy(ProxyPass {
                    set_headers,
                    ..target
                })
            }
        };
        Some(Location {
            path: loc.path.get_ref().clone(),
            pattern,
            action,
        })
    }

    fn proxy_pass(
        &mut self,
        pp: &Spanned<String>,
        pattern: &LocationPattern,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> Option<ProxyPass> {
        let raw = pp.get_ref();
        let rest = if let Some(r) = raw.strip_prefix("http://") {
            r
        } else if raw.starts_with("https://") {
            self.r
                .error(span_of(pp), format!("\"https://\" in proxy_pass {NOT_YET}"));
            return None;
        } else {
            self.r.error(
                span_of(pp),
                format!("invalid URL prefix in \"{raw}\" (expected http://)"),
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
        if let Some(&i) = by_name.get(&authority.to_ascii_lowercase()) {
            return Some(ProxyPass {
                upstream: i,
                proxy_host_header: host_header(&upstreams[i].name),
                proxy_host: upstreams[i].name.clone(),
                uri_part,
                set_headers: Vec::new(),
            });
        }
        let (host, port) = match values::split_host_port(authority) {
            Ok(hp) => hp,
            Err(e) => {
                self.r.error(span_of(pp), e);
                return None;
            }
        };
        // An upstream name must match without a port; anything else is a literal
        // address, and a name that does not resolve is "host not found" as in nginx.
        let addrs = match values::resolve(authority, 80) {
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
                self.r.error(span_of(pp), e);
                return None;
            }
        };
        let key = authority.to_ascii_lowercase();
        let idx = match by_name.get(&key) {
            Some(&i) => i,
            None => {
                upstreams.push(implicit_upstream(authority, &addrs));
                by_name.insert(key, upstreams.len() - 1);
                upstreams.len() - 1
            }
        };
        let proxy_host = match port {
            Some(80) | None => host.to_string(),
            Some(_) => authority.to_string(),
        };
        Some(ProxyPass {
            upstream: idx,
            proxy_host_header: host_header(&proxy_host),
            proxy_host,
            uri_part,
            set_headers: Vec::new(),
        })
    }

    fn check_listens(&mut self, sections: &[schema::ServerSection], servers: &[VirtualServer]) {
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
        for idx in by_addr.values() {
            let names: Vec<Vec<String>> = idx
                .iter()
                .map(|&i| servers[i].server_names.clone())
                .collect();
            if let Err(e) = crate::route::server_name::ServerNameTable::new(&names) {
                let at = &sections[idx[0]].listen;
                self.r.error(span_of(at), e);
            }
        }
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

/// One `expect_status` item: "200" or "200-399", codes 100-599.
fn status_range(s: &str) -> Result<(u16, u16), String> {
    let code = |c: &str| match c.trim().parse::<u16>() {
        Ok(n) if (100..=599).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid status \"{c}\" in expect_status (expected 100-599)"
        )),
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (code(lo)?, code(hi)?);
            if lo > hi {
                return Err(format!("empty status range \"{s}\" in expect_status"));
            }
            Ok((lo, hi))
        }
        None => code(s).map(|c| (c, c)),
    }
}
