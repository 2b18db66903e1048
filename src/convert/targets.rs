//! Every location pointed at what it proxies to: a kept pool, a literal address that
//! resolves, or else a 502 with a warning. nginx sets upstream TLS (`proxy_ssl_*`)
//! and the protocol (`grpc_pass`) per location, fulcrum per pool: a pool reached in
//! two ways becomes two pools, the second a copy (warned). Each location keeps only
//! the pool settings it must override to mean what nginx does there.

use super::location::{Action, Loc};
use super::upstream::{Pool, FULCRUM_DEFAULT, NGINX_DEFAULT};
use super::upstream_tls::UpSsl;
use super::{Cx, Http};
use crate::config::values as cfg;

pub(crate) fn resolve_targets(cx: &mut Cx, http: &mut Http) {
    let mut servers = std::mem::take(&mut http.servers);
    for s in &mut servers {
        for l in &mut s.locations {
            target(cx, &mut http.upstreams, l);
        }
    }
    http.servers = servers;
    for p in &mut http.upstreams {
        for (i, t) in p.timeouts.iter_mut().enumerate() {
            *t = (NGINX_DEFAULT[i] != FULCRUM_DEFAULT[i]).then(|| NGINX_DEFAULT[i].to_string());
        }
        p.explicit_ports();
    }
}

/// How a location reaches its servers: TLS settings (for `https://`/`grpcs://`)
/// and HTTP/2 (`grpc_pass`).
type Way = (Option<UpSsl>, bool);

fn target(cx: &mut Cx, pools: &mut Vec<Pool>, l: &mut Loc) {
    let Action::Proxy {
        authority, ssl, h2, ..
    } = &l.action
    else {
        l.timeouts = Default::default();
        return;
    };
    let (authority, way) = (authority.clone(), (ssl.clone(), *h2));
    let key = authority.to_ascii_lowercase();
    let directive = if way.1 { "grpc_pass" } else { "proxy_pass" };
    let named = pools
        .iter()
        .position(|p| p.name.to_ascii_lowercase() == key);
    if let Some(i) = named {
        // The pool has nginx's defaults: only a setting of its own differs.
        overrides(l, &NGINX_DEFAULT);
        if let Err(why) = variant(cx, pools, i, l, way) {
            cx.warn_at(&l.at, directive, why.clone());
            l.action = Action::bad_gateway(why);
        }
    } else if cx.dropped.contains(&key) {
        let why = format!("proxies to the dropped pool \"{authority}\": answers 502");
        cx.warn_at(&l.at, directive, why.clone());
        l.action = Action::bad_gateway(why);
    } else if let Err(e) = cfg::resolve(&authority, if way.0.is_some() { 443 } else { 80 }) {
        let why = format!("{e}: the location answers 502");
        cx.warn_at(&l.at, directive, why.clone());
        l.action = Action::bad_gateway(why);
    } else if way.1 || way.0.as_ref().is_some_and(|s| !s.is_default()) {
        // fulcrum's literal proxy_pass has no TLS settings and speaks HTTP/1: a pool.
        overrides(l, &NGINX_DEFAULT);
        let i = literal_pool(pools, &authority, &way);
        if let Err(why) = variant(cx, pools, i, l, way) {
            cx.warn_at(&l.at, directive, why.clone());
            l.action = Action::bad_gateway(why);
        }
    } else {
        if way.0.is_some() {
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

/// A pool for a literal `grpc_pass` address or an `https://` one with
/// `proxy_ssl_*` settings (the one already made for it, or a new one); the
/// location is pointed at it, sending the Host nginx would (`$proxy_host`).
fn literal_pool(pools: &mut Vec<Pool>, authority: &str, way: &Way) -> usize {
    let port = if way.0.is_some() { 443 } else { 80 };
    let server = match cfg::split_host_port(authority) {
        Ok((_, Some(_))) => authority.to_string(),
        _ => format!("{authority}:{port}"),
    };
    let base: String = authority
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if let Some(i) = pools
        .iter()
        .position(|p| p.literal.as_deref() == Some(authority))
    {
        return i;
    }
    let name = free_name(
        pools,
        &format!("{}-{base}", if way.1 { "grpc" } else { "tls" }),
    );
    pools.push(Pool::literal(&name, authority, server));
    pools.len() - 1
}

/// The pool index a location reaching pool `i` in `way` uses: `i` for the first way
/// it is reached in, a copy for each other (fulcrum sets TLS and the protocol per
/// pool). The location is pointed at it; an error when its TLS files do not load.
fn variant(
    cx: &mut Cx,
    pools: &mut Vec<Pool>,
    i: usize,
    l: &mut Loc,
    way: Way,
) -> Result<(), String> {
    let base = pools[i].name.clone();
    let j = match pools[i].reached.clone() {
        None => i,
        Some((s, h, _)) if (&s, h) == (&way.0, way.1) => i,
        Some((_, _, first)) => {
            let found = pools.iter().position(|p| {
                p.copy_of.as_deref() == Some(&base) && (&p.tls, p.h2) == (&way.0, way.1)
            });
            match found {
                Some(j) => j,
                None => {
                    let mut copy = pools[i].clone();
                    copy.name = free_name(pools, &format!("{base}-{}", suffix(&way)));
                    copy.copy_of = Some(base.clone());
                    copy.reached = None;
                    copy.origin.push_str(&format!(" (a copy for {})", l.origin));
                    cx.warn_at(&l.at, if way.1 { "grpc_pass" } else { "proxy_pass" }, format!("reaches pool \"{base}\" with other TLS settings or protocol than the location at {first}, and fulcrum sets them per pool: this location gets a copy, \"{}\" (the same servers, with their own balancing and failure counts)", copy.name));
                    pools.push(copy);
                    pools.len() - 1
                }
            }
        }
    };
    if pools[j].reached.is_none() {
        if let Some(ssl) = &way.0 {
            let table = ssl.toml(pools[j].verify_name());
            super::tls::loads(&format!(
                "[upstream.x]\nserver = [\"127.0.0.1:1\"]\ntls = {table}\n"
            ))
            .map_err(|e| {
                format!(
                    "upstream TLS for \"{}\" cannot be loaded ({e}): the location answers 502",
                    pools[j].name
                )
            })?;
            if ssl.cert.is_some() != ssl.key.is_some() {
                cx.warn_at(&l.at, "proxy_pass", format!("TLS to \"{base}\": a client certificate without its key (or a key without its certificate): none is sent"));
            }
            if ssl.verify != Some(true) {
                let (d, p) = if way.1 {
                    ("grpc_pass", "grpc")
                } else {
                    ("proxy_pass", "proxy")
                };
                let to = pools[j].literal.as_deref().unwrap_or(&base);
                cx.warn_at(&l.at, d, format!("TLS to \"{to}\": nginx does not verify its servers' certificates by default ({p}_ssl_verify off), so the pool \"{}\" gets verify = false; set {p}_ssl_verify on with {p}_ssl_trusted_certificate (verify = true, ca)", pools[j].name));
            }
        }
        pools[j].reached = Some((way.0.clone(), way.1, l.at.clone()));
        pools[j].tls = way.0;
        pools[j].h2 = way.1;
    }
    if pools[j].name != base || pools[j].literal.is_some() {
        point(
            l,
            &pools[j].name,
            pools[j].literal.as_deref().unwrap_or(&base),
        );
    }
    Ok(())
}

fn suffix(way: &Way) -> &'static str {
    match way {
        (_, true) => "grpc",
        (Some(_), false) => "tls",
        (None, false) => "http",
    }
}

/// `want`, or `want-2`, `want-3`…: the first name no pool has.
fn free_name(pools: &[Pool], want: &str) -> String {
    let taken = |n: &str| pools.iter().any(|p| p.name.eq_ignore_ascii_case(n));
    if !taken(want) {
        return want.to_string();
    }
    (2..)
        .map(|k| format!("{want}-{k}"))
        .find(|n| !taken(n))
        .unwrap_or_default()
}

/// Points the location's proxy_pass at pool `name`, keeping the Host nginx sends
/// (`$proxy_host`, the name it wrote) unless the location sets its own.
fn point(l: &mut Loc, name: &str, proxy_host: &str) {
    if let Action::Proxy {
        url,
        authority,
        headers,
        ..
    } = &mut l.action
    {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url.as_str()));
        let uri = &rest[authority.len().min(rest.len())..];
        *url = format!("{scheme}://{name}{uri}");
        *authority = name.to_string();
        let list = headers.get_or_insert_with(Vec::new);
        if !list.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            list.push(("Host".to_string(), proxy_host.to_string()));
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
