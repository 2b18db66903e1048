//! Text targets: the config loader (TOML → validated `Config`), variable templates
//! (compile, then render against a fixed request), and the nginx-config reader
//! (lexer, parser with includes in a temporary directory, and the converter).
//!
//! The loader reads the files a config names (certificates, keys) and resolves the
//! host names it gives, so these targets run without a network (see
//! [`crate::network_isolated`]) and skip an input naming a file that never ends
//! (`/dev/zero`, `/proc/...`): reading one is no parser bug.

use std::net::SocketAddr;
use std::path::Path;

use fulcrum::config::{self, ConfigError};
use fulcrum::convert::{self, lexer, parser};
use fulcrum::route::template::{RequestId, RequestVars, SslVars, Template};
use http::header::{HeaderMap, HeaderValue};

/// Pieces of fulcrum's TOML for the mutation loop.
pub const CONFIG_DICT: &[&[u8]] = &[
    b"[[upstream]]\n",
    b"[[server]]\n",
    b"[[server.location]]\n",
    b"[global]\n",
    b"[admin]\n",
    b"name = \"u\"\n",
    b"servers = [\"127.0.0.1:1\"]\n",
    b"listen = [\"127.0.0.1:0\"]\n",
    b"path = \"/\"\n",
    b"proxy_pass = \"u\"\n",
    b"balance = \"hash\"\n",
    b"hash_key = \"$remote_addr\"\n",
    b"\"1s\"",
    b"{ a = 1 }",
    b"[\n",
    b"]\n",
    b"~*",
    b"= ",
];

/// Pieces of templates for the mutation loop.
pub const TEMPLATE_DICT: &[&[u8]] = &[
    b"$host",
    b"${http_x_a}",
    b"$arg_x",
    b"$cookie_sid",
    b"$http_cookie",
    b"$proxy_add_x_forwarded_for",
    b"$request_id",
    b"$remote_addr",
    b"$server_port",
    b"$is_args$args",
    b"$ssl_client_s_dn",
    b"${",
    b"$1",
    b"\0",
];

/// Pieces of nginx configs for the mutation loop.
pub const NGINX_DICT: &[&[u8]] = &[
    b"http {\n",
    b"server {\n",
    b"upstream u {\n",
    b"location / {\n",
    b"}\n",
    b"listen 127.0.0.1:8080;\n",
    b"server 127.0.0.1:1 weight=2 max_fails=1;\n",
    b"proxy_pass http://u;\n",
    b"proxy_set_header Host $host;\n",
    b"include *.conf;\n",
    b"\"$a\\\"\"",
    b"'x'",
    b"${x}",
    b"# c\n",
];

/// A config, validated as if read from a file in a directory that does not exist
/// (the files it names relative to itself are missing).
pub fn config(input: &[u8]) {
    crate::require_isolation();
    let text = String::from_utf8_lossy(input);
    if !toml_names_only_plain_files(&text) {
        return;
    }
    let path = Path::new("/nonexistent-fulcrum-fuzz/fulcrum.toml");
    match config::parse(path, &text) {
        Ok(c) => {
            for s in &c.servers {
                for l in &s.locations {
                    if let config::Action::Proxy(p) = &l.action {
                        assert!(p.upstream < c.upstreams.len(), "a location's pool");
                    }
                }
            }
        }
        Err(e) => check_diagnostics(&e, path, &text),
    }
}

/// A refused config names at least one problem, each inside the text.
fn check_diagnostics(e: &ConfigError, path: &Path, text: &str) {
    assert!(
        !e.diagnostics.is_empty(),
        "a config refused without a reason"
    );
    let lines = text.split('\n').count();
    for d in &e.diagnostics {
        assert_eq!(d.path, path);
        assert!(d.line >= 1 && d.line <= lines, "{d}: past line {lines}");
        assert!(d.col >= 1, "{d}");
        assert!(!d.message.is_empty(), "{d}");
    }
}

/// Whether every string the TOML holds names nothing but a plain file, a
/// directory, or no file at all.
fn toml_names_only_plain_files(text: &str) -> bool {
    fn walk(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => plain(s),
            toml::Value::Array(a) => a.iter().all(walk),
            toml::Value::Table(t) => t.iter().all(|(k, v)| plain(k) && walk(v)),
            _ => true,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(t) => t.iter().all(|(k, v)| plain(k) && walk(v)),
        Err(_) => true,
    }
}

/// Whether `name` is no file, a directory, or a regular file of at most 1 MiB
/// outside the kernel's file systems.
fn plain(name: &str) -> bool {
    let p = Path::new(name);
    let Ok(meta) = p.metadata() else {
        return true;
    };
    let special = ["/proc", "/sys", "/dev"];
    let real = p.canonicalize().unwrap_or_default();
    if special.iter().any(|s| real.starts_with(s)) {
        return false;
    }
    meta.is_dir() || (meta.is_file() && meta.len() <= 1 << 20)
}

/// The request every template renders against.
fn request_headers(cookie: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let add = |h: &mut HeaderMap, n: &'static str, v: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(n, v);
        }
    };
    add(&mut h, "host", b"Example.COM:8080");
    add(&mut h, "x-a", b"one");
    add(&mut h, "x-a", b"two");
    add(&mut h, "x-forwarded-for", b"198.51.100.7");
    add(&mut h, "cookie", b"sid=abc; other=1");
    add(&mut h, "cookie", cookie);
    h
}

/// `TEMPLATE [\0 TARGET [\0 COOKIE]]`: the template compiled, then rendered for a
/// request to TARGET (default `/a/b?x=1&y=2`) with a second Cookie line COOKIE.
pub fn template(input: &[u8]) {
    let mut parts = input.splitn(3, |&b| b == 0);
    let src = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let target = parts.next().map(String::from_utf8_lossy);
    let raw_target = target.as_deref().unwrap_or("/a/b?x=1&y=2");
    let headers = request_headers(parts.next().unwrap_or_default());
    let t = match Template::compile(&src) {
        Ok(t) => t,
        Err(e) => {
            let at = e.offset();
            assert_eq!(src.as_bytes().get(at), Some(&b'$'), "{e} at {at}");
            return;
        }
    };
    assert_eq!(t.source(), src);
    let id = RequestId::new();
    let remote: SocketAddr = "192.0.2.1:5555"
        .parse()
        .unwrap_or(SocketAddr::from(([0; 4], 0)));
    let local: SocketAddr = "[::1]:8080".parse().unwrap_or(remote);
    let vars = RequestVars {
        method: &http::Method::POST,
        raw_target,
        uri: raw_target.split('?').next().unwrap_or_default(),
        headers: &headers,
        host: "example.com",
        hostname: "fuzzhost",
        remote,
        local,
        scheme: "https",
        proxy_host: "backend",
        request_id: &id,
        ssl: SslVars {
            protocol: "TLSv1.3",
            server_name: "example.com",
            client_verify: "NONE",
            client_s_dn: "CN=a,O=b",
        },
    };
    let out = t.render(&vars);
    assert_eq!(
        id.peek().is_some(),
        t.uses_request_id(),
        "$request_id made or not"
    );
    let mut again = b"pre".to_vec();
    t.render_into(&vars, &mut again);
    assert_eq!(&again[3..], &out[..], "render and render_into differ");
    if t.is_literal() {
        assert_eq!(out, src.as_bytes());
        assert_eq!(t.literal(), Some(&*src));
    }
}

/// An nginx config: tokens, then the tree with includes (from a temporary
/// directory holding just this file), then the converter.
pub fn nginx_conf(input: &[u8]) {
    crate::require_isolation();
    let text = String::from_utf8_lossy(input);
    let lines = text.split('\n').count();
    let Ok(tokens) = lexer::tokenize(&text) else {
        return;
    };
    let mut last = 1;
    for t in &tokens {
        assert!(
            t.line >= last && t.line <= lines,
            "token at line {}",
            t.line
        );
        last = t.line;
        if let lexer::TokenKind::Word(w) = &t.kind {
            // A glob outside the directory could reach `/proc`: only `plain` names.
            let far_glob = w.contains(['*', '?', '[']) && (w.starts_with('/') || w.contains(".."));
            if far_glob || !plain(w) {
                return;
            }
        }
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("nginx.conf");
    if std::fs::write(&path, text.as_bytes()).is_err() {
        return;
    }
    if let Ok(tree) = parser::parse_file(&path) {
        check_lines(&tree, &path, lines);
    }
    if let Ok(out) = convert::convert(&path) {
        let table = out.toml.parse::<toml::Table>();
        assert!(table.is_ok(), "converted TOML does not parse: {table:?}");
    }
}

/// Every directive of this file is on one of its lines.
fn check_lines(tree: &[parser::Directive], path: &Path, lines: usize) {
    for d in tree {
        if *d.file == *path {
            assert!(
                d.line >= 1 && d.line <= lines,
                "{} past line {lines}",
                d.at()
            );
        }
        check_lines(d.block.as_deref().unwrap_or_default(), path, lines);
    }
}
