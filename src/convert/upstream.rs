//! nginx `upstream` blocks into `[upstream.NAME]` pools, and the pool settings nginx
//! gives per location (`proxy_*_timeout`, `proxy_next_upstream*`): a pool gets nginx's
//! defaults, a location overrides what it sets differently.

use super::location::{Action, Loc};
use super::parser::Directive;
use super::{values, Cx, Http};
use crate::config::values as cfg;
use crate::route::template::Template;

/// One pool, ready to write.
#[derive(Debug)]
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
    /// Reached by `proxy_pass https://`: its servers speak TLS.
    pub tls: bool,
    /// The addresses (and backup flags) of its servers so far.
    seen: Vec<(std::net::SocketAddr, bool)>,
}

const NEXT: &str = r#"["error", "timeout"]"#;
/// Their defaults in nginx (connect: 60s, not fulcrum's 5s) and in fulcrum, as TOML.
const NGINX_DEFAULT: [&str; 6] = [r#""60s""#, r#""60s""#, r#""60s""#, NEXT, "0", r#""0s""#];
const FULCRUM_DEFAULT: [&str; 6] = [r#""5s""#, r#""60s""#, r#""60s""#, NEXT, "0", r#""0s""#];

pub(crate) fn pool(cx: &mut Cx, d: &Directive, block: &[Directive]) -> Option<Pool> {
    let Some(name) = d.args.first().filter(|_| d.args.len() == 1) else {
        cx.warn(d, "needs exactly one name: the pool is dropped");
        return None;
    };
    let mut p = Pool {
        name: name.clone(),
        origin: format!("{} upstream {name}", d.short()),
        servers: Vec::new(),
        balance: None,
        hash_key: None,
        consistent: false,
        keepalive: None,
        keepalive_timeout: None,
        timeouts: Default::default(),
        tls: false,
        seen: Vec::new(),
    };
    for s in block {
        directive(cx, s, &mut p);
    }
    if p.servers.is_empty() {
        cx.dropped.insert(name.to_ascii_lowercase());
        cx.warn(d, format!("has no server fulcrum can carry: pool \"{name}\" is dropped, and locations proxying to it answer 502"));
        return None;
    }
    cx.carry();
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
        cx.carry();
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
    cx.carry();
}

/// Points every location at what it proxies to: a kept pool, a literal address that
/// resolves, or else a 502 with a warning; and leaves in each location only the pool
/// settings it must override to mean what nginx does there.
pub(crate) fn resolve_targets(cx: &mut Cx, http: &mut Http) {
    let names: Vec<String> = http
        .upstreams
        .iter()
        .map(|p| p.name.to_ascii_lowercase())
        .collect();
    for s in &mut http.servers {
        for l in &mut s.locations {
            let Action::Proxy { authority, .. } = &l.action else {
                l.timeouts = Default::default();
                continue;
            };
            let authority = authority.clone();
            let key = authority.to_ascii_lowercase();
            let https =
                matches!(&l.action, Action::Proxy { url, .. } if url.starts_with("https://"));
            if let Some(i) = names.iter().position(|n| *n == key) {
                // The pool has nginx's defaults: only a setting of its own differs.
                overrides(l, &NGINX_DEFAULT);
                if https && !http.upstreams[i].tls {
                    http.upstreams[i].tls = true;
                    cx.warn_at(&l.at, "proxy_pass", format!("https:// to \"{authority}\": nginx does not verify its certificates by default (proxy_ssl_verify off), so the pool gets tls = {{ verify = false }}; set verify = true with a ca"));
                }
            } else if cx.dropped.contains(&key) {
                let why = format!("proxies to the dropped pool \"{authority}\": answers 502");
                cx.warn_at(&l.at, "proxy_pass", why.clone());
                l.action = Action::bad_gateway(why);
            } else if let Err(e) = cfg::resolve(&authority, if https { 443 } else { 80 }) {
                let why = format!("{e}: the location answers 502");
                cx.warn_at(&l.at, "proxy_pass", why.clone());
                l.action = Action::bad_gateway(why);
            } else {
                if https {
                    cx.warn_at(&l.at, "proxy_pass", format!("https:// to \"{authority}\": fulcrum verifies its certificate against the built-in roots, which nginx does not do by default (proxy_ssl_verify off)"));
                }
                // A literal address is an implicit pool with fulcrum's defaults.
                for (i, t) in l.timeouts.iter_mut().enumerate() {
                    if t.is_none() {
                        *t = Some((NGINX_DEFAULT[i].to_string(), l.at.clone()));
                    }
                }
                overrides(l, &FULCRUM_DEFAULT);
            }
        }
    }
    for p in &mut http.upstreams {
        for (i, t) in p.timeouts.iter_mut().enumerate() {
            *t = (NGINX_DEFAULT[i] != FULCRUM_DEFAULT[i]).then(|| NGINX_DEFAULT[i].to_string());
        }
    }
}

/// Keeps the location's settings that differ from its pool's `pool` values.
fn overrides(l: &mut Loc, pool: &[&str; 6]) {
    for (i, t) in l.timeouts.iter_mut().enumerate() {
        if t.as_ref().is_some_and(|(v, _)| v == pool[i]) {
            *t = None;
        }
    }
}
