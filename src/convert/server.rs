//! nginx `server` blocks into `[[server]]`: listen addresses (ordered so that
//! nginx's `default_server` is fulcrum's first server on the address), names, limits.

use super::headers::AddHeader;
use super::location::{self, Inherit, Loc};
use super::parser::Directive;
use super::tls::{self, ServerTls};
use super::Cx;

/// One virtual server, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `nginx.conf:12 server`.
    pub origin: String,
    pub at: String,
    pub listen: Vec<String>,
    /// Addresses it is nginx's `default_server` of.
    pub defaults: Vec<String>,
    pub names: Vec<String>,
    pub max_body: Option<u64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub add_headers: Option<Vec<AddHeader>>,
    pub http2: bool,
    /// Its TLS: then every address in `listen` is a TLS one.
    pub tls: Option<ServerTls>,
    /// `real_ip_*` as the server's level and the `http` level set them.
    pub real_ip: super::real_ip::RealIpConv,
    pub locations: Vec<Loc>,
}

/// The `listen` addresses of one nginx server: cleartext ones, TLS ones, and the
/// first `listen ... ssl` (where a TLS listener that cannot be served is warned).
#[derive(Default)]
struct Listens {
    count: usize,
    tls: Vec<String>,
    tls_at: Option<String>,
}

/// One nginx `server`: one `[[server]]` per kind of address it listens on, cleartext
/// and TLS (fulcrum's `tls` is per server, nginx's `ssl` per address), none when it
/// has no address fulcrum can serve.
pub(crate) fn server(
    cx: &mut Cx,
    d: &Directive,
    block: &[Directive],
    parent: &Inherit,
) -> Vec<Server> {
    cx.server_name = first_name(block);
    let inh = parent.level(cx, block, "server");
    let mut s = Server {
        origin: format!("{} server", d.short()),
        at: d.at(),
        listen: Vec::new(),
        defaults: Vec::new(),
        names: Vec::new(),
        max_body: inh.max_body,
        header_timeout: inh.header_timeout.clone(),
        body_timeout: inh.body_timeout.clone(),
        keepalive_timeout: inh.keepalive_timeout.clone(),
        add_headers: inh.add_headers.clone(),
        http2: false,
        tls: None,
        real_ip: inh.real_ip.clone(),
        locations: Vec::new(),
    };
    let mut listens = Listens::default();
    let mut returned = None;
    for c in block {
        match (c.name.as_str(), &c.block) {
            ("listen", _) => listen(cx, c, &mut s, &mut listens, inh.ssl.on),
            ("server_name", _) => names(cx, c, &mut s.names),
            ("http2", _) if c.args.first().is_some_and(|a| a == "on") => {
                s.http2 = true;
                cx.carry(c);
            }
            ("http2", _) => cx.carry(c),
            ("location", Some(b)) => location::location(cx, c, b, &inh, &mut s.locations),
            ("location", None) => cx.warn(c, "has no block: skipped"),
            ("return", _) if returned.is_none() => {
                returned = location::returned(cx, c).map(|a| (a, c))
            }
            _ => {}
        }
    }
    // A server-level return answers before any location is looked at.
    if let Some((action, c)) = returned {
        s.locations = vec![Loc {
            path: "/".into(),
            at: c.at(),
            origin: format!("{} return (server level: every request)", c.short()),
            action,
            timeouts: Default::default(),
            max_body: inh.max_body,
            add_headers: inh.add_headers.clone(),
        }];
    }
    if listens.count == 0 {
        let any = "0.0.0.0:80".to_string();
        if inh.ssl.on {
            listens.tls.push(any);
            listens.tls_at = Some(d.at());
        } else {
            s.listen.push(any);
        }
    }
    let out = split(cx, s, listens, &inh);
    cx.server_name = None;
    if out.is_empty() {
        cx.warn(
            d,
            "has no listen address fulcrum can serve: the server is dropped",
        );
    } else {
        cx.carry(d);
    }
    out
}

/// The server as its cleartext `[[server]]` and its TLS one (with the `tls` table,
/// when its certificate loads: otherwise its TLS addresses are not served).
fn split(cx: &mut Cx, mut s: Server, listens: Listens, inh: &Inherit) -> Vec<Server> {
    let mut out = Vec::new();
    if !listens.tls.is_empty() {
        match tls::server_tls(&inh.ssl) {
            Ok(t) => {
                let mut ts = s.clone();
                ts.origin.push_str(" (its ssl listeners)");
                ts.defaults.retain(|a| listens.tls.contains(a));
                ts.listen = listens.tls;
                ts.tls = Some(t);
                ts.http2 = false;
                out.push(ts);
            }
            Err(why) => {
                let at = listens.tls_at.unwrap_or_else(|| s.at.clone());
                cx.warn_at(&at, "listen", format!("{} ssl: {why}: not served (fail closed: the site is not served in cleartext there either)", listens.tls.join(" ")));
            }
        }
    }
    if !s.listen.is_empty() {
        let listen = s.listen.clone();
        s.defaults.retain(|a| listen.contains(a));
        out.insert(0, s);
    }
    out
}

/// nginx's `$server_name`: the first name of the server's first `server_name`, if
/// it is a plain name (a constant convert can write).
fn first_name(block: &[Directive]) -> Option<String> {
    block
        .iter()
        .find(|c| c.name == "server_name")
        .and_then(|c| c.args.first())
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        })
        .cloned()
}

fn listen(cx: &mut Cx, d: &Directive, s: &mut Server, ls: &mut Listens, ssl_on: bool) {
    ls.count += 1;
    let Some(raw) = d.args.first() else {
        cx.warn(d, "has no address: ignored");
        return;
    };
    let Some(addr) = address(raw) else {
        cx.warn(d, format!("\"{raw}\" is not an address fulcrum can listen on (unix sockets, host names): ignored"));
        return;
    };
    let (mut default, mut ssl, mut http2) = (false, ssl_on, false);
    for p in &d.args[1..] {
        match p.as_str() {
            "default_server" | "default" => default = true,
            "http2" => http2 = true,
            "ssl" => ssl = true,
            "quic" => {
                cx.warn(d, "\"quic\" is HTTP/3 over UDP, which fulcrum does not serve: the address is not served (clients use the TCP one)");
                return;
            }
            "proxy_protocol" => {
                cx.warn(d, "\"proxy_protocol\" is not carried (fulcrum's proxy_protocol is per server and names the client as $remote_addr, nginx's only with real_ip_header proxy_protocol): the address is not served");
                return;
            }
            other => cx.warn(d, format!("parameter \"{other}\" is not carried: ignored")),
        }
    }
    if default {
        s.defaults.push(addr.clone());
    }
    // h2 is offered by ALPN on every TLS listener; `http2` on a cleartext one is h2c.
    s.http2 |= http2 && !ssl;
    let list = if ssl { &mut ls.tls } else { &mut s.listen };
    if !list.contains(&addr) {
        list.push(addr);
    }
    if ssl && ls.tls_at.is_none() {
        ls.tls_at = Some(d.at());
    }
    cx.carry(d);
}

/// nginx's listen forms as `addr:port`: `80`, `*:80`, `1.2.3.4`, `1.2.3.4:80`, `[::]:80`.
fn address(raw: &str) -> Option<String> {
    if let Ok(port) = raw.parse::<u16>() {
        return Some(format!("0.0.0.0:{port}"));
    }
    let raw = raw
        .strip_prefix("*:")
        .map_or(raw.to_string(), |p| format!("0.0.0.0:{p}"));
    if let Ok(a) = raw.parse::<std::net::SocketAddr>() {
        return Some(a.to_string());
    }
    if let Ok(ip) = raw.parse::<std::net::Ipv4Addr>() {
        return Some(format!("{ip}:80"));
    }
    let v6 = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'))?;
    v6.parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| format!("[{ip}]:80"))
}

fn names(cx: &mut Cx, d: &Directive, out: &mut Vec<String>) {
    for n in &d.args {
        if n.contains('$') && !n.starts_with('~') {
            cx.warn(
                d,
                format!(
                    "name \"{n}\" has a variable, which fulcrum's server_name does not: ignored"
                ),
            );
        } else if let Some(suffix) = n.strip_prefix('.') {
            out.push(suffix.to_ascii_lowercase());
            out.push(format!("*.{}", suffix.to_ascii_lowercase()));
        } else if !n.is_empty()
            && crate::route::server_name::ServerNameTable::new(&[vec![n.clone()]]).is_err()
        {
            cx.warn(
                d,
                format!("name \"{n}\" is not one fulcrum can match: ignored"),
            );
        } else if !n.is_empty() {
            out.push(if n.starts_with('~') {
                n.clone()
            } else {
                n.to_ascii_lowercase()
            });
        }
    }
    cx.carry(d);
}

/// nginx's default server of an address is its `default_server`, fulcrum's is the
/// first server on it: those move to the front (stable). fulcrum cannot bind a
/// wildcard and a specific address on one port, so a specific one becomes the
/// wildcard, with a warning.
pub(crate) fn order(cx: &mut Cx, servers: &mut [Server]) {
    servers.sort_by_key(|s| s.defaults.is_empty());
    unreachable_defaults(cx, servers);
    let wild: Vec<String> = servers
        .iter()
        .flat_map(|s| s.listen.iter())
        .filter(|a| a.starts_with("0.0.0.0:") || a.starts_with("[::]:"))
        .cloned()
        .collect();
    for s in servers.iter_mut() {
        let mut listen = Vec::new();
        for a in &s.listen {
            let port = a.rsplit(':').next().unwrap_or("");
            let any = if a.starts_with('[') {
                format!("[::]:{port}")
            } else {
                format!("0.0.0.0:{port}")
            };
            if *a != any && wild.contains(&any) {
                cx.warn_at(&s.at, "listen", format!("{a}: another server listens on {any}, and fulcrum binds one or the other: this server answers on {any}"));
                if !listen.contains(&any) && !s.listen.contains(&any) {
                    listen.push(any);
                }
            } else {
                listen.push(a.clone());
            }
        }
        s.listen = listen;
    }
}

/// One order cannot put two servers first: a `default_server` of an address that an
/// earlier default server also listens on stays second there. Warned, naming what
/// answers instead.
fn unreachable_defaults(cx: &mut Cx, servers: &[Server]) {
    for (i, s) in servers.iter().enumerate() {
        for addr in &s.defaults {
            let first = servers[..i].iter().find(|o| o.listen.contains(addr));
            if let Some(first) = first {
                cx.warn_at(&s.at, "listen", format!("{addr} default_server: fulcrum's default is the first server on an address, and the server at {} (a default_server elsewhere) comes first there: requests for unknown names on {addr} go to it", first.at));
            }
        }
    }
}

/// nginx's `ssl` is per address: a server without TLS listening where another has
/// it would be TLS there in nginx too, and fulcrum needs one or the other per
/// address. Its cleartext listener there is dropped, warned (and the server with it
/// when nothing is left).
pub(crate) fn tls_addresses(cx: &mut Cx, servers: &mut Vec<Server>) {
    let tls: Vec<String> = servers
        .iter()
        .filter(|s| s.tls.is_some())
        .flat_map(|s| s.listen.iter().cloned())
        .collect();
    for s in servers.iter_mut().filter(|s| s.tls.is_none()) {
        let at = s.at.clone();
        s.listen.retain(|a| {
            let hit = tls.contains(a);
            if hit {
                cx.warn_at(&at, "listen", format!("{a} is a TLS address (another server has ssl there) and this server has no ssl_certificate fulcrum can serve there: it is not served on {a}"));
            }
            !hit
        });
        if s.listen.is_empty() {
            cx.warn_at(
                &at,
                "server",
                "has no listen address left: the server is dropped",
            );
        }
    }
    servers.retain(|s| !s.listen.is_empty());
}
