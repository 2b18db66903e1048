//! The `[upstream.NAME]` sections: balance, retries, servers and health checks.

use std::collections::HashMap;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{span_of, Validator};
use crate::config::schema;
use crate::config::values::{self, ServerParams, ValueError};
use crate::config::{
    Balance, CheckKind, HealthCheck, NextUpstream, PassOpts, Protocol, ServerConf, Upstream,
};
use crate::route::template::Template;

impl Validator<'_> {
    pub(super) fn server_entry(&mut self, v: &schema::SpannedValue) -> Option<ServerParams> {
        let res = match v.get_ref() {
            toml::Value::String(s) => ServerParams::parse(s),
            toml::Value::Table(t) => (|| {
                let addr = match t.get("addr") {
                    Some(toml::Value::String(a)) => a.clone(),
                    _ => return Err(ValueError::ServerTableAddr),
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
                        (k, _) => return Err(ValueError::ServerKeyType { key: k.to_string() }),
                    }
                }
                Ok(p)
            })(),
            _ => Err(ValueError::ServerType),
        };
        res.map_err(|e| self.r.error(span_of(v), e.to_string()))
            .ok()
    }

    pub(super) fn upstream(
        &mut self,
        name: &Spanned<String>,
        u: &schema::UpstreamSection,
        base: &std::path::Path,
    ) -> Option<Upstream> {
        let balance = self.balance(&u.balance);
        let hash_key = self.hash_key(u, balance);
        let consistent = self.consistent(&u.consistent, balance);
        let protocol = self.protocol(&u.protocol);
        let tls = self.upstream_tls(base, &u.tls, protocol);
        // The port servers without one get: 443 with TLS, as nginx's https://.
        let port = if u.tls.is_some() { 443 } else { 80 };
        let next = self.next_upstream(&u.next_upstream);
        let (servers, resolve) = match self.resolve(u, port) {
            Some(r) => (Vec::new(), Some(r)),
            None => (self.upstream_servers(name, &u.server, port), None),
        };
        Some(Upstream {
            name: name.get_ref().clone(),
            servers,
            balance,
            hash_key,
            consistent,
            keepalive: self.count(&u.keepalive, 64, "keepalive") as usize,
            keepalive_timeout: self.duration(&u.keepalive_timeout, Duration::from_secs(60)),
            pass: PassOpts {
                connect_timeout: self.duration(&u.connect_timeout, Duration::from_secs(5)),
                send_timeout: self.duration(&u.send_timeout, Duration::from_secs(60)),
                read_timeout: self.duration(&u.read_timeout, Duration::from_secs(60)),
                next_upstream: next,
                next_upstream_tries: self.count(&u.next_upstream_tries, 0, "next_upstream_tries")
                    as u32,
                next_upstream_timeout: self.duration(&u.next_upstream_timeout, Duration::ZERO),
            },
            protocol,
            tls,
            health_check: u
                .health_check
                .as_ref()
                .map(|h| self.health_check(h.get_ref())),
            resolve,
        })
    }

    fn balance(&mut self, v: &Option<Spanned<String>>) -> Balance {
        match v.as_ref().map(|b| (b, b.get_ref().as_str())) {
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
        }
    }

    /// `hash_key`: required by, and only allowed with, `balance = "hash"`.
    fn hash_key(&mut self, u: &schema::UpstreamSection, balance: Balance) -> Option<Template> {
        match &u.hash_key {
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
        }
    }

    fn consistent(&mut self, v: &Option<Spanned<bool>>, balance: Balance) -> bool {
        match v {
            Some(c) if balance != Balance::Hash => {
                self.r
                    .error(span_of(c), "\"consistent\" needs balance = \"hash\"");
                false
            }
            Some(c) => *c.get_ref(),
            None => false,
        }
    }

    /// `protocol`: "http1" (default) or "h2" (prior knowledge on cleartext).
    fn protocol(&mut self, v: &Option<Spanned<String>>) -> Protocol {
        let Some(p) = v else {
            return Protocol::Http1;
        };
        match p.get_ref().as_str() {
            "http1" => Protocol::Http1,
            "h2" => Protocol::H2,
            other => {
                self.r.error(
                    span_of(p),
                    format!("invalid protocol \"{other}\" (expected \"http1\" or \"h2\")"),
                );
                Protocol::Http1
            }
        }
    }

    /// `next_upstream`: when to retry on the next server (default: error, timeout).
    pub(super) fn next_upstream(
        &mut self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> NextUpstream {
        let Some(list) = v else {
            return NextUpstream {
                error: true,
                timeout: true,
                ..Default::default()
            };
        };
        let mut next = NextUpstream::default();
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
        next
    }

    /// The `server` list, each name resolved to its addresses; none and duplicates
    /// are errors.
    fn upstream_servers(
        &mut self,
        name: &Spanned<String>,
        list: &Spanned<Vec<schema::SpannedValue>>,
        default_port: u16,
    ) -> Vec<ServerConf> {
        let mut servers = Vec::new();
        for entry in list.get_ref() {
            let Some(p) = self.server_entry(entry) else {
                continue;
            };
            if p.service.is_some() {
                self.r
                    .error(span_of(entry), "\"service=\" needs resolve = true");
                continue;
            }
            match values::resolve(&p.addr, default_port) {
                Ok(addrs) => servers.extend(addrs.into_iter().map(|addr| p.server(addr))),
                Err(e) => self.r.error(span_of(entry), e.to_string()),
            }
        }
        if list.get_ref().is_empty() {
            self.r.error(
                span_of(list),
                format!("no servers in upstream \"{}\"", name.get_ref()),
            );
        }
        let mut seen = HashMap::new();
        for s in &servers {
            if seen.insert((s.addr, s.backup), ()).is_some() {
                self.r.error(
                    span_of(list),
                    format!(
                        "duplicate server {} in upstream \"{}\"",
                        s.addr,
                        name.get_ref()
                    ),
                );
            }
        }
        servers
    }

    fn health_check(&mut self, h: &schema::HealthCheckSection) -> HealthCheck {
        let kind = self.check_kind(&h.kind);
        let path = self.check_path(&h.path);
        let interval = self.check_period(&h.interval, Duration::from_secs(5), "interval");
        let timeout = self.check_period(&h.timeout, Duration::from_secs(2), "timeout");
        let rise = self.streak(&h.rise, 2, "rise");
        let fall = self.streak(&h.fall, 3, "fall");
        let expect_status = match &h.expect_status {
            None => vec![(200, 399)],
            Some(v) => self.expect_status(v),
        };
        let host = self.check_host(&h.host);
        let port = self.check_port(&h.port);
        let grpc_service = self.grpc_service(kind, &h.grpc_service);
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
            grpc_service,
        }
    }

    /// `grpc_service`: only for gRPC checks; any string (protobuf carries it as is).
    fn grpc_service(&mut self, kind: CheckKind, v: &Option<Spanned<String>>) -> String {
        let Some(s) = v else {
            return String::new();
        };
        if kind != CheckKind::Grpc {
            self.r.error(
                span_of(s),
                "grpc_service is only for health_check type = \"grpc\"".to_string(),
            );
        }
        s.get_ref().clone()
    }

    fn check_kind(&mut self, v: &Option<Spanned<String>>) -> CheckKind {
        match v.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "http")) => CheckKind::Http,
            Some((_, "tcp")) => CheckKind::Tcp,
            Some((_, "grpc")) => CheckKind::Grpc,
            Some((k, other)) => {
                self.r.error(
                    span_of(k),
                    format!(
                        "invalid health_check type \"{other}\" (expected \"http\", \"tcp\" or \"grpc\")"
                    ),
                );
                CheckKind::Http
            }
        }
    }

    /// The request path of HTTP checks: an origin-form `/...` (default `/`).
    fn check_path(&mut self, v: &Option<Spanned<String>>) -> String {
        let Some(p) = v else {
            return "/".to_string();
        };
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

    /// `interval` and `timeout`: a duration above zero.
    fn check_period(
        &mut self,
        v: &Option<Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Duration {
        let d = self.duration(v, default);
        if let Some(s) = v {
            if d.is_zero() {
                self.r.error(
                    span_of(s),
                    format!("health_check {what} must be above zero"),
                );
            }
        }
        d
    }

    /// `rise` and `fall`: a count of consecutive results, at least 1.
    fn streak(&mut self, v: &Option<Spanned<i64>>, default: u32, what: &str) -> u32 {
        match v {
            None => default,
            Some(n) if (1..=i64::from(u32::MAX)).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.r
                    .error(span_of(n), format!("{what} must be at least 1"));
                default
            }
        }
    }

    fn check_host(&mut self, v: &Option<Spanned<String>>) -> Option<String> {
        v.as_ref().map(|x| {
            if http::HeaderValue::from_str(x.get_ref()).is_err() || x.get_ref().is_empty() {
                self.r.error(
                    span_of(x),
                    format!("invalid health_check host \"{}\"", x.get_ref()),
                );
            }
            x.get_ref().clone()
        })
    }

    fn check_port(&mut self, v: &Option<Spanned<i64>>) -> Option<u16> {
        v.as_ref().and_then(|p| match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.r.error(
                    span_of(p),
                    format!("invalid port {} (expected 1-65535)", p.get_ref()),
                );
                None
            }
        })
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
                other => Err(ValueError::StatusType {
                    value: other.to_string(),
                }),
            };
            // Items inside an array carry no span of their own: point at the key's value.
            match parsed {
                Ok(r) => out.push(r),
                Err(e) => self.r.error(span_of(v), e.to_string()),
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
}

/// One `expect_status` item: "200" or "200-399", codes 100-599.
fn status_range(s: &str) -> Result<(u16, u16), ValueError> {
    let code = |c: &str| {
        let bad = |source| ValueError::Status {
            text: c.to_string(),
            source,
        };
        match c.trim().parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            Ok(_) => Err(bad(None)),
            Err(e) => Err(bad(Some(e))),
        }
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (code(lo)?, code(hi)?);
            if lo > hi {
                return Err(ValueError::EmptyStatusRange {
                    text: s.to_string(),
                });
            }
            Ok((lo, hi))
        }
        None => code(s).map(|c| (c, c)),
    }
}
