//! Writing the converted config as readable TOML, each block under a comment naming
//! its nginx source line.

use std::fmt::Write;

use super::headers::AddHeader;
use super::location::{Action, Loc};
use super::server::Server;
use super::upstream::Pool;
use super::values::toml_str as q;
use super::Http;

/// A TOML key: bare when it can be.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        s.to_string()
    } else {
        q(s)
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| q(i)).collect();
    format!("[{}]", quoted.join(", "))
}

pub(crate) fn config(http: &Http) -> String {
    let mut out =
        String::from("# Converted from nginx by `fulcrum convert`.\n\n[admin]\nlisten = \"off\"\n");
    for p in &http.upstreams {
        pool(&mut out, p);
    }
    for s in &http.servers {
        server(&mut out, s);
    }
    out
}

fn pool(out: &mut String, p: &Pool) {
    let _ = writeln!(out, "\n# {}\n[upstream.{}]", p.origin, key(&p.name));
    out.push_str("server = [\n");
    for s in &p.servers {
        let _ = writeln!(out, "    {},", q(s));
    }
    out.push_str("]\n");
    if let Some(b) = p.balance {
        let _ = writeln!(out, "balance = {}", q(b));
    }
    if let Some(k) = &p.hash_key {
        let _ = writeln!(out, "hash_key = {}", q(k));
    }
    if p.consistent {
        out.push_str("consistent = true\n");
    }
    if let Some(k) = p.keepalive {
        let _ = writeln!(out, "keepalive = {k}");
    }
    if let Some(t) = &p.keepalive_timeout {
        let _ = writeln!(out, "keepalive_timeout = {}", q(t));
    }
    if p.h2 {
        out.push_str("protocol = \"h2\"\n");
    }
    if let Some(t) = &p.tls {
        let _ = writeln!(out, "tls = {}", t.toml(p.verify_name()));
    }
    for (name, t) in super::location::POOL_KEYS.iter().zip(&p.timeouts) {
        if let Some(t) = t {
            let _ = writeln!(out, "{name} = {t}");
        }
    }
}

fn server(out: &mut String, s: &Server) {
    let _ = writeln!(
        out,
        "\n# {}\n[[server]]\nlisten = {}",
        s.origin,
        list(&s.listen)
    );
    if !s.names.is_empty() {
        let _ = writeln!(out, "server_name = {}", list(&s.names));
    }
    if let Some(t) = &s.tls {
        let _ = writeln!(out, "tls = {}", t.toml());
    }
    if let Some(n) = s.max_body {
        let _ = writeln!(out, "client_max_body_size = {n}");
    }
    if let Some(t) = &s.header_timeout {
        let _ = writeln!(out, "client_header_timeout = {}", q(t));
    }
    if let Some(t) = &s.body_timeout {
        let _ = writeln!(out, "client_body_timeout = {}", q(t));
    }
    if let Some(t) = &s.keepalive_timeout {
        let _ = writeln!(out, "keepalive_timeout = {}", q(t));
    }
    if s.http2 {
        out.push_str("http2 = true\n");
    }
    if let Some(list) = &s.add_headers {
        add_headers(out, list);
    }
    super::real_ip::emit(out, &s.real_ip);
    for l in &s.locations {
        location(out, l, s);
    }
}

fn location(out: &mut String, l: &Loc, s: &Server) {
    let _ = writeln!(out, "\n# {}", l.origin);
    if let Action::Return { why: Some(why), .. } = &l.action {
        let _ = writeln!(out, "# {why}");
    }
    let _ = writeln!(out, "[[server.location]]\npath = {}", q(&l.path));
    match &l.action {
        Action::Proxy { url, headers, .. } => {
            let _ = writeln!(out, "proxy_pass = {}", q(url));
            if let Some(h) = headers {
                let pairs: Vec<String> = h
                    .iter()
                    .map(|(k, v)| format!("{} = {}", key(k), q(v)))
                    .collect();
                if pairs.is_empty() {
                    out.push_str("proxy_set_header = {}\n");
                } else {
                    let _ = writeln!(out, "proxy_set_header = {{ {} }}", pairs.join(", "));
                }
            }
        }
        Action::Return {
            status,
            body,
            location,
            ..
        } => {
            let mut parts = vec![format!("status = {status}")];
            if let Some(b) = body {
                parts.push(format!("body = {}", q(b)));
            }
            if let Some(l) = location {
                parts.push(format!("location = {}", q(l)));
            }
            let _ = writeln!(out, "return = {{ {} }}", parts.join(", "));
        }
    }
    for (name, t) in super::location::POOL_KEYS.iter().zip(&l.timeouts) {
        if let Some((t, _)) = t {
            let _ = writeln!(out, "{name} = {t}");
        }
    }
    if l.max_body != s.max_body {
        let _ = writeln!(
            out,
            "client_max_body_size = {}",
            l.max_body.unwrap_or(1 << 20)
        );
    }
    if l.add_headers != s.add_headers {
        // An empty list still has to be written: it stops the server's from applying.
        add_headers(out, l.add_headers.as_deref().unwrap_or(&[]));
    }
}

/// `add_header` and `add_header_always` tables; an empty list is written as an empty
/// `add_header` table (a level with one inherits none).
fn add_headers(out: &mut String, list: &[AddHeader]) {
    for (key_name, always) in [("add_header", false), ("add_header_always", true)] {
        let pairs: Vec<String> = list
            .iter()
            .filter(|h| h.always == always)
            .map(|h| format!("{} = {}", key(&h.name), q(&h.value)))
            .collect();
        if !pairs.is_empty() {
            let _ = writeln!(out, "{key_name} = {{ {} }}", pairs.join(", "));
        } else if !always && list.is_empty() {
            let _ = writeln!(out, "{key_name} = {{}}");
        }
    }
}
