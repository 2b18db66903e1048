//! nginx `upstream` blocks into `[upstream.NAME]` pools (`targets.rs` points the
//! locations at them).

use super::parser::Directive;
use super::upstream_tls::UpSsl;
use super::{values, Cx};
use crate::config::values as cfg;
use crate::route::template::Template;

/// One pool, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub name: String,
    /// `nginx.conf:42 upstream backend`.
    pub origin: String,
    /// nginx-syntax server strings.
    pub servers: Vec<String>,
    pub balance: Option<&'static str>,
    pub hash_key: Option<String>,
    pub consistent: bool,
    pub keepalive: Option<u64>,
    pub keepalive_timeout: Option<String>,
    /// The pool settings (`location::POOL_KEYS`) as TOML where nginx's default is not
    /// fulcrum's (a location overrides them where it sets its own).
    pub timeouts: [Option<String>; 6],
    /// Reached by `proxy_pass https://` (or `grpcs://`): its servers speak TLS, with
    /// these settings.
    pub tls: Option<UpSsl>,
    /// Reached by `grpc_pass`: HTTP/2 to its servers.
    pub h2: bool,
    /// How the first location reaching it does (TLS settings, h2), and where.
    pub reached: Option<(Option<UpSsl>, bool, String)>,
    /// The pool it is a copy of (reached in another way).
    pub copy_of: Option<String>,
    /// The literal `host:port` it is made for (no `upstream` block).
    pub literal: Option<String>,
    /// The addresses (and backup flags) of its servers so far.
    seen: Vec<(std::net::SocketAddr, bool)>,
}

const NEXT: &str = r#"["error", "timeout"]"#;
/// Their defaults in nginx (connect: 60s, not fulcrum's 5s) and in fulcrum, as TOML.
pub(crate) const NGINX_DEFAULT: [&str; 6] =
    [r#""60s""#, r#""60s""#, r#""60s""#, NEXT, "0", r#""0s""#];
pub(crate) const FULCRUM_DEFAULT: [&str; 6] =
    [r#""5s""#, r#""60s""#, r#""60s""#, NEXT, "0", r#""0s""#];

pub(crate) fn pool(cx: &mut Cx, d: &Directive, block: &[Directive]) -> Option<Pool> {
    let Some(name) = d.args.first().filter(|_| d.args.len() == 1) else {
        cx.warn(d, "needs exactly one name: the pool is dropped");
        return None;
    };
    let mut p = Pool::empty(name, format!("{} upstream {name}", d.short()));
    for s in block {
        directive(cx, s, &mut p);
    }
    if p.servers.is_empty() {
        cx.dropped.insert(name.to_ascii_lowercase());
        cx.warn(d, format!("has no server fulcrum can carry: pool \"{name}\" is dropped, and locations proxying to it answer 502"));
        return None;
    }
    cx.carry(d);
    Some(p)
}

fn directive(cx: &mut Cx, d: &Directive, p: &mut Pool) {
    let a = &d.args;
    let mut set = |b: &'static str| {
        p.balance = Some(b);
        true
    };
    let ok = match (d.name.as_str(), a.len()) {
        ("server", _) => return server(cx, d, p),
        ("zone", _) => true,
        ("least_conn", 0) => set("least_conn"),
        ("ip_hash", 0) => set("ip_hash"),
        ("random", 0) => set("random"),
        ("random", 1) if a[0] == "two" => set("random_two_least_conn"),
        ("random", 2) if a[0] == "two" && a[1] == "least_conn" => set("random_two_least_conn"),
        ("hash", 1 | 2) => {
            if a.len() == 2 && a[1] != "consistent" {
                false
            } else if Template::compile(&a[0]).is_err() {
                cx.warn(d, format!("key \"{}\" uses what fulcrum's templates cannot: the pool balances round robin", a[0]));
                return;
            } else {
                p.balance = Some("hash");
                p.hash_key = Some(a[0].clone());
                p.consistent = a.len() == 2;
                true
            }
        }
        ("keepalive", 1) => match a[0].parse::<u64>() {
            Ok(n) => {
                p.keepalive = Some(n);
                true
            }
            Err(_) => false,
        },
        ("keepalive_timeout", 1) => match values::time(&a[0]) {
            Some(t) => {
                p.keepalive_timeout = Some(t);
                true
            }
            None => false,
        },
        _ => {
            cx.warn(d, "has no fulcrum equivalent in a pool: ignored");
            return;
        }
    };
    if ok {
        cx.carry(d);
    } else {
        cx.warn(d, "has arguments fulcrum does not read: ignored");
    }
}

/// `server ADDR [params]`: carried with the parameters fulcrum knows.
fn server(cx: &mut Cx, d: &Directive, p: &mut Pool) {
    let Some(addr) = d.args.first() else {
        cx.warn(d, "has no address: ignored");
        return;
    };
    if addr.starts_with("unix:") {
        cx.warn(
            d,
            format!(
                "\"{addr}\" is a unix socket, which fulcrum cannot reach: the server is dropped"
            ),
        );
        return;
    }
    let addrs = match cfg::resolve(addr, 80) {
        Ok(a) => a,
        Err(e) => {
            cx.warn(
                d,
                format!("{e}: the server is dropped (fulcrum check resolves every name)"),
            );
            return;
        }
    };
    let backup = d.args[1..].iter().any(|a| a == "backup");
    if addrs.iter().any(|a| p.seen.contains(&(*a, backup))) {
        cx.warn(d, format!("{addr} is already a server of this pool, which fulcrum refuses: the repeat is dropped (its weight is not added)"));
        return;
    }
    p.seen.extend(addrs.into_iter().map(|a| (a, backup)));
    let mut out = vec![addr.clone()];
    for param in &d.args[1..] {
        let (k, v) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param.as_str(), None),
        };
        let carried = match (k, v) {
            ("weight" | "max_fails" | "max_conns", Some(n)) if n.parse::<u32>().is_ok() => {
                Some(param.clone())
            }
            ("fail_timeout", Some(t)) => values::time(t).map(|t| format!("fail_timeout={t}")),
            ("backup" | "down", None) => Some(k.to_string()),
            _ => None,
        };
        match carried {
            Some(c) => out.push(c),
            None => cx.warn(
                d,
                format!("parameter \"{param}\" of server {addr} is not carried: ignored"),
            ),
        }
    }
    p.servers.push(out.join(" "));
    cx.carry(d);
}

impl Pool {
    fn empty(name: &str, origin: String) -> Pool {
        Pool {
            name: name.to_string(),
            origin,
            servers: Vec::new(),
            balance: None,
            hash_key: None,
            consistent: false,
            keepalive: None,
            keepalive_timeout: None,
            timeouts: Default::default(),
            tls: None,
            h2: false,
            reached: None,
            copy_of: None,
            literal: None,
            seen: Vec::new(),
        }
    }

    /// The pool of a literal address (one server, with its port).
    pub fn literal(name: &str, authority: &str, server: String) -> Pool {
        let mut p = Pool::empty(name, format!("{authority} (a literal address, as a pool)"));
        p.servers.push(server);
        p.literal = Some(authority.to_string());
        p
    }

    /// The name nginx verifies its servers as without `proxy_ssl_name`: the
    /// upstream's name, if it can be one (a literal address is verified as its host).
    pub fn verify_name(&self) -> Option<&str> {
        let base = self.copy_of.as_deref().unwrap_or(&self.name);
        let dns = base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (self.literal.is_none() && dns).then_some(base)
    }

    /// Servers written without a port: nginx's upstream default is 80 even when the
    /// pool is reached by `https://`, where fulcrum's would be 443; so with TLS they
    /// say `:80`.
    pub fn explicit_ports(&mut self) {
        if self.tls.is_none() {
            return;
        }
        for s in &mut self.servers {
            let (addr, params) = s.split_once(' ').unwrap_or((s.as_str(), ""));
            if matches!(cfg::split_host_port(addr), Ok((_, None))) {
                let addr = if addr.contains(':') && !addr.starts_with('[') {
                    format!("[{addr}]:80")
                } else {
                    format!("{addr}:80")
                };
                *s = format!("{addr} {params}").trim_end().to_string();
            }
        }
    }
}
