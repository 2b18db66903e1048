//! What each level (`http`, `server`, `location`) passes down to the levels inside
//! it: `proxy_set_header` and `grpc_set_header` (a level with its own set inherits
//! none), timeouts, limits, TLS settings, and the access guards that make a location
//! fail closed.

use super::headers::{self, AddHeader};
use super::parser::Directive;
use super::upstream_tls::UpSsl;
use super::{values, Cx};

/// What a level passes to the levels inside it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inherit {
    /// The nearest level's own `proxy_set_header` list.
    pub headers: Option<Vec<(String, String)>>,
    /// The pool settings of [`POOL_SETTINGS`]: (TOML value, PATH:LINE).
    pub timeouts: [Option<(String, String)>; 6],
    pub max_body: Option<u64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    /// The downstream `keepalive_timeout` (http, server).
    pub keepalive_timeout: Option<String>,
    /// The nearest level's own `add_header` list (nginx inherits it as a whole too).
    pub add_headers: Option<Vec<AddHeader>>,
    /// `set_real_ip_from`, `real_ip_header`, `real_ip_recursive` in force.
    pub real_ip: super::real_ip::RealIpConv,
    /// The `ssl_*` settings in force (http, server).
    pub ssl: super::tls::SslConv,
    /// The `proxy_ssl_*` settings in force.
    pub proxy_ssl: UpSsl,
    /// The `grpc_*` counterparts of the proxy settings, inherited on their own.
    pub grpc: Grpc,
    /// Guards in force, each as `"auth_basic" at PATH:LINE`; `off` clears its kind.
    guards: Vec<(String, String)>,
}
/// `grpc_set_header`, `grpc_*_timeout`, `grpc_next_upstream*`, `grpc_ssl_*`: nginx
/// inherits them apart from their `proxy_*` counterparts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grpc {
    pub headers: Option<Vec<(String, String)>>,
    pub timeouts: [Option<(String, String)>; 6],
    pub ssl: UpSsl,
}

/// Names a level handles itself rather than through [`Inherit::level`].
fn structural(context: &str, name: &str) -> bool {
    match context {
        "http" => matches!(name, "upstream" | "server"),
        "server" => matches!(
            name,
            "listen" | "server_name" | "location" | "http2" | "return"
        ),
        _ => matches!(
            name,
            "location" | "proxy_pass" | "grpc_pass" | "return" | "limit_except" | "if" | "rewrite"
        ),
    }
}

/// The nginx directives fulcrum sets per pool, and the pool keys they become.
pub(crate) const POOL_SETTINGS: [&str; 6] = [
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_read_timeout",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
];
pub(crate) const POOL_KEYS: [&str; 6] = [
    "connect_timeout",
    "send_timeout",
    "read_timeout",
    "next_upstream",
    "next_upstream_tries",
    "next_upstream_timeout",
];

/// A pool setting's value as TOML, or `None` when nginx would reject it.
fn pool_value(cx: &mut Cx, d: &Directive, i: usize) -> Option<String> {
    let arg = d.args.first().map(String::as_str).unwrap_or("");
    match i {
        3 => {
            let mut kept = Vec::new();
            for a in &d.args {
                // The conditions fulcrum's next_upstream has (SPEC §2).
                let known = matches!(
                    a.as_str(),
                    "error"
                        | "timeout"
                        | "invalid_header"
                        | "non_idempotent"
                        | "off"
                        | "http_500"
                        | "http_502"
                        | "http_503"
                        | "http_504"
                        | "http_429"
                );
                if known {
                    kept.push(values::toml_str(a));
                } else {
                    cx.warn(
                        d,
                        format!("\"{a}\" is not a condition fulcrum has: not retried on"),
                    );
                }
            }
            (!kept.is_empty()).then(|| format!("[{}]", kept.join(", ")))
        }
        4 => arg.parse::<u32>().ok().map(|n| n.to_string()),
        _ => values::time(arg).map(|t| values::toml_str(&t)),
    }
}

pub(crate) const GUARDS: [&str; 5] = ["auth_basic", "auth_request", "allow", "deny", "satisfy"];

impl Inherit {
    /// The settings in force inside `block`: this level's own over the inherited ones.
    /// Carries or warns every directive of the level that is not structural.
    pub fn level(&self, cx: &mut Cx, block: &[Directive], context: &str) -> Inherit {
        let mut next = self.clone();
        let mut own_headers: Option<Vec<(String, String)>> = None;
        let mut own_grpc: Option<Vec<(String, String)>> = None;
        let mut own_added: Option<Vec<AddHeader>> = None;
        let mut own_from: Option<Vec<String>> = None;
        let mut own_access = false;
        next.ssl.own.clear();
        for d in block {
            let name = d.name.as_str();
            if structural(context, name) {
                continue;
            }
            if GUARDS.contains(&name) {
                next.guard(cx, d, &mut own_access);
                continue;
            }
            if name == "include" {
                unreadable(cx, d, context, &mut next.guards);
                continue;
            }
            if let Some(rest) = name.strip_prefix("grpc_") {
                next.grpc_directive(cx, d, rest, &mut own_grpc);
                continue;
            }
            if let Some(rest) = name.strip_prefix("proxy_") {
                if super::upstream_tls::directive(cx, d, rest, &mut next.proxy_ssl) {
                    continue;
                }
            }
            if name == "proxy_set_header" {
                let list = own_headers.get_or_insert_with(Vec::new);
                headers::set_header(cx, d, list);
                continue;
            }
            if name == "add_header" {
                let list = own_added.get_or_insert_with(Vec::new);
                headers::add_header(cx, d, list);
                continue;
            }
            if super::real_ip::directive(cx, d, context, &mut next.real_ip, &mut own_from)
                || super::tls::directive(cx, d, context, &mut next.ssl)
            {
                continue;
            }
            if !next.setting(cx, d, context) {
                cx.warn(d, super::other_message(d));
            }
        }
        if own_headers.is_some() {
            next.headers = own_headers;
        }
        if own_grpc.is_some() {
            next.grpc.headers = own_grpc;
        }
        if own_added.is_some() {
            next.add_headers = own_added;
        }
        if own_from.is_some() {
            next.real_ip.from = own_from;
        }
        next
    }

    /// A `grpc_*` directive (`rest` after the prefix), as its `proxy_*` counterpart
    /// into the gRPC settings.
    fn grpc_directive(
        &mut self,
        cx: &mut Cx,
        d: &Directive,
        rest: &str,
        own: &mut Option<Vec<(String, String)>>,
    ) {
        if rest == "set_header" {
            headers::set_header(cx, d, own.get_or_insert_with(Vec::new));
        } else if let Some(i) = POOL_SETTINGS.iter().position(|t| t[6..] == *rest) {
            match pool_value(cx, d, i) {
                Some(v) => {
                    self.grpc.timeouts[i] = Some((v, d.at()));
                    cx.carry(d);
                }
                None => cx.warn(d, "has a value nginx would reject: ignored"),
            }
        } else if !super::upstream_tls::directive(cx, d, rest, &mut self.grpc.ssl) {
            cx.warn(d, super::other_message(d));
        }
    }

    /// Timeouts, limits and what fulcrum does anyway; false when not one of them.
    fn setting(&mut self, cx: &mut Cx, d: &Directive, context: &str) -> bool {
        let name = d.name.as_str();
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        if let Some(i) = POOL_SETTINGS.iter().position(|t| *t == name) {
            match pool_value(cx, d, i) {
                Some(v) => {
                    self.timeouts[i] = Some((v, d.at()));
                    cx.carry(d);
                }
                None => cx.warn(d, "has a value nginx would reject: ignored"),
            }
            return true;
        }
        match (name, context) {
            ("client_max_body_size", _) => match values::size(arg) {
                Some(n) => {
                    self.max_body = Some(n);
                    cx.carry(d);
                }
                None => cx.warn(d, "has a size nginx would reject: ignored"),
            },
            ("client_body_timeout", "http" | "server") => match values::time(arg) {
                Some(t) => {
                    self.body_timeout = Some(t);
                    cx.carry(d);
                }
                None => cx.warn(d, "has a time nginx would reject: ignored"),
            },
            ("keepalive_timeout", "http" | "server") => {
                keepalive(cx, d, &mut self.keepalive_timeout)
            }
            ("client_body_timeout" | "keepalive_timeout", _) => cx.warn(
                d,
                "is set per server in fulcrum: the server's timeout applies here",
            ),
            ("client_header_timeout", "http" | "server") => match values::time(arg) {
                Some(t) => {
                    self.header_timeout = Some(t);
                    cx.carry(d);
                }
                None => cx.warn(d, "has a time nginx would reject: ignored"),
            },
            // fulcrum speaks HTTP/1.1 upstream, streams bodies and passes upgrades itself.
            ("proxy_http_version", _) | ("proxy_buffering" | "proxy_request_buffering", _) => {
                cx.carry(d)
            }
            ("proxy_redirect", _) if arg == "off" => cx.carry(d),
            ("map", "http")
                if d.args.first().is_some_and(|a| a == "$http_upgrade")
                    && d.args.get(1).is_some_and(|a| a == "$connection_upgrade") =>
            {
                cx.carry(d)
            }
            _ => return false,
        }
        true
    }

    fn guard(&mut self, cx: &mut Cx, d: &Directive, own_access: &mut bool) {
        let name = d.name.as_str();
        let off = d.args.first().is_some_and(|a| a == "off");
        if matches!(name, "allow" | "deny") {
            if !*own_access {
                // A level with its own rules inherits none from above.
                self.guards.retain(|(n, _)| n != "allow" && n != "deny");
                *own_access = true;
            }
            if name == "allow" && d.args.first().is_some_and(|a| a == "all") {
                cx.carry(d);
                return;
            }
        } else {
            self.guards.retain(|(n, _)| n != name);
            if off {
                cx.carry(d);
                return;
            }
        }
        cx.warn(d, "guards access, which fulcrum cannot enforce: every location under it answers 403 (fail closed)");
        self.guards.push((name.to_string(), d.at()));
    }

    /// The guard that makes a location fail closed, if any.
    pub(crate) fn guarded(&self) -> Option<String> {
        self.guards.first().map(|(n, at)| {
            format!("guarded by {n} ({at}), which fulcrum cannot enforce: 403 (fail closed)")
        })
    }
}

/// The downstream `keepalive_timeout TIME [HEADER_TIME]`: the time is carried (but
/// not 0, nginx's "no keep-alive", which fulcrum's timer does not have); the
/// `Keep-Alive: timeout=` header time is warned.
fn keepalive(cx: &mut Cx, d: &Directive, out: &mut Option<String>) {
    match d.args.first().and_then(|a| values::time(a)) {
        Some(t) if t == "0s" || t == "0ms" => {
            cx.warn(d, "0 (keep-alive off) is not carried: connections stay alive for the inherited keepalive_timeout, or fulcrum's default 75s");
            return;
        }
        Some(t) => {
            *out = Some(t);
            cx.carry(d);
        }
        None => {
            cx.warn(d, "has a time nginx would reject: ignored");
            return;
        }
    }
    if d.args.len() > 1 {
        cx.warn(d, "header time (the Keep-Alive: timeout= response header) is not carried: fulcrum sends no Keep-Alive header");
    }
}

/// An `include` whose file is not here: what it said is unknown, so in a server or
/// a location it fails closed.
fn unreadable(cx: &mut Cx, d: &Directive, context: &str, guards: &mut Vec<(String, String)>) {
    let file = d.args.first().map_or("", String::as_str);
    if context == "http" {
        cx.warn(
            d,
            format!("\"{file}\" is not there: its directives are not carried"),
        );
    } else {
        cx.warn(d, format!("\"{file}\" is not there, and it may have guarded access: every location under it answers 403 (fail closed; convert where the file exists)"));
        guards.push(("include".into(), d.at()));
    }
}
