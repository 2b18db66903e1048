//! nginx `location` blocks into `[[server.location]]`: the pattern, what the
//! location does (`proxy_pass`, `grpc_pass`, `return`, the rewrite idiom) and the
//! guards that make it fail closed.

use super::headers::AddHeader;
use super::inherit::GUARDS;
pub(crate) use super::inherit::{Inherit, POOL_KEYS};
use super::parser::Directive;
use super::upstream_tls::UpSsl;
use super::Cx;
use crate::route::location::LocationPattern;
use crate::route::template::Template;

/// What a location does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Proxy {
        url: String,
        /// The `host[:port]` or pool name of the URL.
        authority: String,
        headers: Option<Vec<(String, String)>>,
        /// `https://`/`grpcs://`: the `proxy_ssl_*`/`grpc_ssl_*` settings in force.
        ssl: Option<UpSsl>,
        /// `grpc_pass`: HTTP/2 to the servers.
        h2: bool,
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
            "grpc_pass" if action.is_none() => action = grpc(cx, c, &inh),
            "return" | "proxy_pass" | "grpc_pass" => cx.warn(
                c,
                "comes after the location's return, proxy_pass or grpc_pass, which answers first: ignored",
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
    cx.carry(d);
    let grpc = matches!(action, Action::Proxy { h2: true, .. });
    out.push(Loc {
        origin: format!("{} location {}", d.short(), d.args.join(" ")),
        path,
        at: d.at(),
        action,
        timeouts: if grpc {
            inh.grpc.timeouts.clone()
        } else {
            inh.timeouts.clone()
        },
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
        (
            [r],
            Some(Action::Proxy {
                url,
                authority,
                h2: false,
                ..
            }),
        ) if url.len() == "http://".len() + authority.len() => idiom(&r.args, path),
        _ => None,
    };
    match (uri_part, action) {
        (
            Some(part),
            Some(Action::Proxy {
                url,
                authority,
                headers,
                ssl,
                h2,
            }),
        ) => {
            for r in &rewrites {
                cx.carry(r);
            }
            Some(Action::Proxy {
                url: format!("{url}{part}"),
                authority,
                headers,
                ssl,
                h2,
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
    // `$server_name` is the server's first name, a constant fulcrum can write.
    let text = text.map(|t| cx.server_vars(&t));
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
    cx.carry(d);
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
    let https = url.starts_with("https://");
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
    cx.carry(d);
    Some(Action::Proxy {
        url: url.clone(),
        authority: authority.to_string(),
        headers: inh.headers.clone(),
        ssl: https.then(|| inh.proxy_ssl.clone()),
        h2: false,
    })
}

/// `grpc_pass [grpc[s]://]ADDRESS`: a proxy_pass over HTTP/2 (TLS for `grpcs://`),
/// with the `grpc_*` settings.
fn grpc(cx: &mut Cx, d: &Directive, inh: &Inherit) -> Option<Action> {
    let [url] = d.args.as_slice() else {
        cx.warn(d, "needs one address: ignored");
        return None;
    };
    let (tls, authority) = match (url.strip_prefix("grpcs://"), url.strip_prefix("grpc://")) {
        (Some(a), _) => (true, a),
        (_, Some(a)) => (false, a),
        _ => (false, url.as_str()),
    };
    if authority.contains('$') || authority.contains('/') || authority.starts_with("unix:") {
        let why = format!("\"{url}\" has variables or is a unix socket, which fulcrum's proxy_pass does not have: the location answers 502");
        cx.warn(d, why.clone());
        return Some(Action::bad_gateway(why));
    }
    cx.carry(d);
    let scheme = if tls { "https" } else { "http" };
    Some(Action::Proxy {
        url: format!("{scheme}://{authority}"),
        authority: authority.to_string(),
        headers: inh.grpc.headers.clone(),
        ssl: tls.then(|| inh.grpc.ssl.clone()),
        h2: true,
    })
}
