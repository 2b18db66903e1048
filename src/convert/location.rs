//! nginx `location` blocks into `[[server.location]]`, and what each level (`http`,
//! `server`, `location`) passes down: `proxy_set_header` (a level with its own set
//! inherits none), timeouts, limits, and the access guards that make a location fail
//! closed.

use super::headers::{self, AddHeader};
use super::parser::Directive;
use super::{values, Cx};
use crate::route::location::LocationPattern;
use crate::route::template::Template;

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
    /// The nearest level's own `add_header` list (nginx inherits it as a whole too).
    pub add_headers: Option<Vec<AddHeader>>,
    /// `set_real_ip_from`, `real_ip_header`, `real_ip_recursive` in force.
    pub real_ip: super::real_ip::RealIpConv,
    /// Guards in force, each as `"auth_basic" at PATH:LINE`; `off` clears its kind.
    guards: Vec<(String, String)>,
}

/// What a location does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Proxy {
        url: String,
        /// The `host[:port]` or pool name of the URL.
        authority: String,
        headers: Option<Vec<(String, String)>>,
    },
    Return {
        status: u16,
        body: Option<String>,
        location: Option<String>,
        /// Why convert wrote this instead of what nginx does (a comment).
        why: Option<String>,
    },
}

impl Action {
    pub fn bad_gateway(why: String) -> Action {
        Action::status(502, why)
    }

    fn status(status: u16, why: String) -> Action {
        Action::Return {
            status,
            body: None,
            location: None,
            why: Some(why),
        }
    }
}

/// One location, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub path: String,
    /// `PATH:LINE` of the `location`.
    pub at: String,
    /// `nginx.conf:42 location /api/`.
    pub origin: String,
    pub action: Action,
    /// The pool settings in force: (TOML value, PATH:LINE); once targets are resolved,
    /// only those the location must override.
    pub timeouts: [Option<(String, String)>; 6],
    pub max_body: Option<u64>,
    pub add_headers: Option<Vec<AddHeader>>,
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
            "location" | "proxy_pass" | "return" | "limit_except" | "if" | "rewrite"
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
                let known = matches!(
                    a.as_str(),
                    "error" | "timeout" | "invalid_header" | "non_idempotent" | "off"
                ) || a
                    .strip_prefix("http_")
                    .is_some_and(|c| c.parse::<u16>().is_ok());
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

const GUARDS: [&str; 5] = ["auth_basic", "auth_request", "allow", "deny", "satisfy"];

impl Inherit {
    /// The settings in force inside `block`: this level's own over the inherited ones.
    /// Carries or warns every directive of the level that is not structural.
    pub fn level(&self, cx: &mut Cx, block: &[Directive], context: &str) -> Inherit {
        let mut next = self.clone();
        let mut own_headers: Option<Vec<(String, String)>> = None;
        let mut own_added: Option<Vec<AddHeader>> = None;
        let mut own_from: Option<Vec<String>> = None;
        let mut own_access = false;
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
            if super::real_ip::directive(cx, d, context, &mut next.real_ip, &mut own_from) {
                continue;
            }
            if !next.setting(cx, d, context) {
                cx.warn(d, super::other_message(d));
            }
        }
        if own_headers.is_some() {
            next.headers = own_headers;
        }
        if own_added.is_some() {
            next.add_headers = own_added;
        }
        if own_from.is_some() {
            next.real_ip.from = own_from;
        }
        next
    }

    /// Timeouts, limits and what fulcrum does anyway; false when not one of them.
    fn setting(&mut self, cx: &mut Cx, d: &Directive, context: &str) -> bool {
        let name = d.name.as_str();
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        if let Some(i) = POOL_SETTINGS.iter().position(|t| *t == name) {
            match pool_value(cx, d, i) {
                Some(v) => {
                    self.timeouts[i] = Some((v, d.at()));
                    cx.carry();
                }
                None => cx.warn(d, "has a value nginx would reject: ignored"),
            }
            return true;
        }
        match (name, context) {
            ("client_max_body_size", _) => match values::size(arg) {
                Some(n) => {
                    self.max_body = Some(n);
                    cx.carry();
                }
                None => cx.warn(d, "has a size nginx would reject: ignored"),
            },
            ("client_body_timeout", "http" | "server") => match values::time(arg) {
                Some(t) => {
                    self.body_timeout = Some(t);
                    cx.carry();
                }
                None => cx.warn(d, "has a time nginx would reject: ignored"),
            },
            ("client_body_timeout", _) => cx.warn(
                d,
                "is set per server in fulcrum: the server's timeout applies here",
            ),
            ("client_header_timeout", "http" | "server") => match values::time(arg) {
                Some(t) => {
                    self.header_timeout = Some(t);
                    cx.carry();
                }
                None => cx.warn(d, "has a time nginx would reject: ignored"),
            },
            // fulcrum speaks HTTP/1.1 upstream, streams bodies and passes upgrades itself.
            ("proxy_http_version", _) | ("proxy_buffering" | "proxy_request_buffering", _) => {
                cx.carry()
            }
            ("proxy_redirect", _) if arg == "off" => cx.carry(),
            ("map", "http")
                if d.args.first().is_some_and(|a| a == "$http_upgrade")
                    && d.args.get(1).is_some_and(|a| a == "$connection_upgrade") =>
            {
                cx.carry()
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
                cx.carry();
                return;
            }
        } else {
            self.guards.retain(|(n, _)| n != name);
            if off {
                cx.carry();
                return;
            }
        }
        cx.warn(d, "guards access, which fulcrum cannot enforce: every location under it answers 403 (fail closed)");
        self.guards.push((name.to_string(), d.at()));
    }

    /// The guard that makes a location fail closed, if any.
    fn guarded(&self) -> Option<String> {
        self.guards.first().map(|(n, at)| {
            format!("guarded by {n} ({at}), which fulcrum cannot enforce: 403 (fail closed)")
        })
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

/// `location [modifier] path { ... }` and the locations nested in it (flattened).
pub(crate) fn location(
    cx: &mut Cx,
    d: &Directive,
    block: &[Directive],
    parent: &Inherit,
    out: &mut Vec<Loc>,
) {
    let Some(path) = pattern(&d.args) else {
        cx.warn(
            d,
            "is not a form fulcrum has (named locations, bad modifiers): skipped",
        );
        return;
    };
    if let Err(e) = LocationPattern::parse(&path) {
        cx.warn(d, format!("\"{path}\": {e}: skipped"));
        return;
    }
    let inh = parent.level(cx, block, "location");
    let mut action = None;
    let mut guard = inh.guarded();
    for c in block {
        match c.name.as_str() {
            "limit_except" => {
                cx.warn(c, "guards methods, which fulcrum cannot enforce: the location answers 403 (fail closed)");
                guard.get_or_insert_with(|| format!("guarded by limit_except ({}), which fulcrum cannot enforce: 403 (fail closed)", c.at()));
            }
            "if" if rejects(c) => {
                cx.warn(c, "may refuse requests (a 4xx return or an access rule inside), which fulcrum cannot evaluate: the location answers 403 (fail closed)");
                guard.get_or_insert_with(|| {
                    format!(
                        "guarded by if ({}), which fulcrum cannot evaluate: 403 (fail closed)",
                        c.at()
                    )
                });
            }
            "if" => cx.warn(c, super::other_message(c)),
            "return" if action.is_none() => action = returned(cx, c),
            "proxy_pass" if action.is_none() => action = proxied(cx, c, &inh, &path),
            "return" | "proxy_pass" => cx.warn(
                c,
                "comes after the location's return or proxy_pass, which answers first: ignored",
            ),
            _ => {}
        }
    }
    let action = rewritten(cx, block, &path, action);
    let action = match (guard, action) {
        (Some(why), _) => Action::status(403, why),
        (None, Some(a)) => a,
        (None, None) => {
            let why =
                "has no proxy_pass or return (nginx serves files here): answers 404".to_string();
            cx.warn(d, why.clone());
            Action::status(404, why)
        }
    };
    cx.carry();
    out.push(Loc {
        origin: format!("{} location {}", d.short(), d.args.join(" ")),
        path,
        at: d.at(),
        action,
        timeouts: inh.timeouts.clone(),
        max_body: inh.max_body,
        add_headers: inh.add_headers.clone(),
    });
    for c in block.iter().filter(|c| c.name == "location") {
        if let Some(b) = &c.block {
            location(cx, c, b, &inh, out);
        }
    }
}

/// The `rewrite ^/prefix/(.*)$ /new/$1 break;` + `proxy_pass http://b;` idiom in
/// location `/prefix/` is `proxy_pass http://b/new/;`; any other `rewrite` is warned.
fn rewritten(
    cx: &mut Cx,
    block: &[Directive],
    path: &str,
    action: Option<Action>,
) -> Option<Action> {
    let rewrites: Vec<&Directive> = block.iter().filter(|c| c.name == "rewrite").collect();
    let uri_part = match (rewrites.as_slice(), &action) {
        ([r], Some(Action::Proxy { url, authority, .. }))
            if url.len() == "http://".len() + authority.len() =>
        {
            idiom(&r.args, path)
        }
        _ => None,
    };
    match (uri_part, action) {
        (
            Some(part),
            Some(Action::Proxy {
                url,
                authority,
                headers,
            }),
        ) => {
            cx.carry();
            Some(Action::Proxy {
                url: format!("{url}{part}"),
                authority,
                headers,
            })
        }
        (_, action) => {
            for r in rewrites {
                cx.warn(r, super::other_message(r));
            }
            action
        }
    }
}

/// The URI part a rewrite idiom amounts to in a plain prefix location `path`.
fn idiom(args: &[String], path: &str) -> Option<String> {
    let [re, repl, flag] = args else { return None };
    let plain = |p: &str| {
        p.starts_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'))
    };
    if flag != "break" || !plain(path) {
        return None;
    }
    let inner = re.strip_prefix('^')?;
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    let part = repl.strip_suffix("$1")?;
    (inner.strip_suffix("(.*)")? == path && plain(part) && part.ends_with('/'))
        .then(|| part.to_string())
}

/// Whether an `if` block may refuse a request: a `return` of 4xx, or an access rule.
fn rejects(d: &Directive) -> bool {
    d.block.iter().flatten().any(|c| match c.name.as_str() {
        "return" => c
            .args
            .first()
            .and_then(|a| a.parse::<u16>().ok())
            .is_some_and(|s| (400..500).contains(&s) || s == 444),
        name => GUARDS.contains(&name) || name == "limit_except",
    })
}

/// fulcrum's `path` for nginx's location arguments (`=/x` glued or apart).
fn pattern(args: &[String]) -> Option<String> {
    match args {
        [m, p] if matches!(m.as_str(), "=" | "^~" | "~" | "~*") => Some(format!("{m} {p}")),
        [p] if p.starts_with('@') => None,
        [p] => {
            for m in ["^~", "~*", "=", "~"] {
                if let Some(rest) = p.strip_prefix(m).filter(|r| !r.is_empty()) {
                    return Some(format!("{m} {rest}"));
                }
            }
            Some(p.clone())
        }
        _ => None,
    }
}

pub(crate) fn returned(cx: &mut Cx, d: &Directive) -> Option<Action> {
    let (status, text) = match d.args.as_slice() {
        [url]
            if url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with('$') =>
        {
            (302, Some(url.clone()))
        }
        [code] => (code.parse().ok()?, None),
        [code, text] => (code.parse().ok()?, Some(text.clone())),
        _ => {
            cx.warn(d, "has arguments fulcrum does not read: ignored");
            return None;
        }
    };
    if !(100..=999).contains(&status) {
        cx.warn(d, "has an invalid code: ignored");
        return None;
    }
    let text = match text {
        Some(t) if Template::compile(&t).is_err() => {
            cx.warn(
                d,
                format!("\"{t}\" uses what fulcrum's templates cannot: returned without it"),
            );
            None
        }
        t => t,
    };
    let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
    cx.carry();
    Some(Action::Return {
        status,
        body: text.clone().filter(|_| !redirect),
        location: text.filter(|_| redirect),
        why: None,
    })
}

fn proxied(cx: &mut Cx, d: &Directive, inh: &Inherit, path: &str) -> Option<Action> {
    let [url] = d.args.as_slice() else {
        cx.warn(d, "needs one URL: ignored");
        return None;
    };
    let fail = |cx: &mut Cx, what: &str| {
        let why = format!("\"{url}\" {what}: the location answers 502");
        cx.warn(d, why.clone());
        Some(Action::bad_gateway(why))
    };
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return fail(cx, "is not http:// or https:// (unix sockets)");
    };
    if url.contains('$') {
        return fail(cx, "has variables, which fulcrum's proxy_pass does not");
    }
    let (authority, uri) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !uri.is_empty() && (path.starts_with("~ ") || path.starts_with("~* ")) {
        return fail(
            cx,
            "has a URI part in a regex location (nginx refuses it too)",
        );
    }
    cx.carry();
    Some(Action::Proxy {
        url: url.clone(),
        authority: authority.to_string(),
        headers: inh.headers.clone(),
    })
}
