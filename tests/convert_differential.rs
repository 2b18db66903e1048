//! `fulcrum convert` against a real nginx: one nginx.conf run by nginx, then its
//! conversion run by fulcrum, the same requests to each; every request must reach the
//! same backend with the same upstream URI and the same proxied headers (or get the
//! same status). Skipped without nginx unless FULCRUM_REQUIRE_NGINX=1 (CI).

mod common;
#[path = "common/tls.rs"]
mod tls_client;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use common::{dead_addr, free_port, read_response, Backend, Fulcrum};
use http_body_util::Full;
use hyper::Response;

/// A backend answering `NAME URI` and the headers the proxies set.
fn backend(name: &'static str) -> Backend {
    Backend::with(Arc::new(move |parts, _| {
        let h = |k: &str| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let body = format!(
            "{name} {} host={} real-ip={} from={}",
            parts.uri,
            h("host"),
            h("x-real-ip"),
            h("x-from")
        );
        Response::new(Full::new(Bytes::from(body)))
    }))
}

/// `(status, body)` of a GET on a fresh connection, for each path in order.
fn answers(proxy: SocketAddr, paths: &[&str]) -> Vec<(u16, String)> {
    paths
        .iter()
        .map(|p| {
            // "HOST /path", or just "/path" for Host: site.test.
            let (host, p) = p.split_once(' ').unwrap_or(("site.test", p));
            let mut s = TcpStream::connect(proxy).expect("connect");
            let req = format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).expect("write");
            let r = read_response(&mut s).expect("response");
            let body = if r.status == 200 {
                r.text()
            } else {
                String::new()
            };
            (r.status, body)
        })
        .collect()
}

/// Runs nginx on `conf` and hands its listen addresses (in file order) to `ask`. The ports in `conf` were
/// free when picked, but another process may bind one before nginx does: then
/// nginx says which in its error log, and that port is replaced in `conf` by a new
/// free one and nginx started again (the conversion reads the file after this).
fn run_nginx<T>(
    bin: &Path,
    dir: &Path,
    conf: &Path,
    port: u16,
    ask: &dyn Fn(&[SocketAddr]) -> T,
) -> T {
    let log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let mut port = port;
    for _ in 0..5 {
        let _ = std::fs::remove_file(dir.join("error.log"));
        let mut child = Command::new(bin)
            .args(["-p", &dir.display().to_string()])
            .args(["-c", &conf.display().to_string()])
            .args(["-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Up when it accepts on the port while running; an exit is a failed start.
        let up = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false;
            }
            if TcpStream::connect(addr).is_ok() {
                break true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if up {
            let out = ask(&listens(conf));
            let _ = child.kill();
            let _ = child.wait();
            return out;
        }
        let taken = log()
            .lines()
            .find(|l| l.contains("Address already in use"))
            .and_then(|l| l.split("bind() to 127.0.0.1:").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse::<u16>().ok());
        let Some(taken) = taken else { break };
        let fresh = free_port();
        let text = std::fs::read_to_string(conf).expect("read conf");
        let text = text
            .replace(
                &format!("127.0.0.1:{taken} "),
                &format!("127.0.0.1:{fresh} "),
            )
            .replace(
                &format!("127.0.0.1:{taken};"),
                &format!("127.0.0.1:{fresh};"),
            );
        std::fs::write(conf, text).expect("write conf");
        if taken == port {
            port = fresh;
        }
    }
    panic!("nginx did not start:\n{}", log());
}

/// The `listen 127.0.0.1:PORT` addresses of an nginx.conf, in file order.
fn listens(conf: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(conf).expect("read conf");
    let mut out: Vec<SocketAddr> = Vec::new();
    for w in text.split("listen 127.0.0.1:").skip(1) {
        let port: String = w.chars().take_while(char::is_ascii_digit).collect();
        let a = SocketAddr::from(([127, 0, 0, 1], port.parse().expect("port")));
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Backends of these names, a prefix directory, a free port, and the head of an
/// nginx.conf keeping nginx's own files in the prefix (convert warns on each), open
/// inside `http {`.
fn setup(names: &[&'static str]) -> (Vec<Backend>, tempfile::TempDir, u16, String) {
    let backends = names.iter().map(|n| backend(n)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let port = free_port();
    let head = format!(
        "worker_processes 1;
error_log {d}/error.log; pid {d}/nginx.pid; events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
    uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; access_log off;"
    );
    (backends, dir, port, head)
}

/// The answers of nginx on `conf` to GETs of `paths`, which fulcrum on its
/// conversion must repeat.
fn same_through_both(
    bin: &Path,
    dir: &Path,
    path: &Path,
    port: u16,
    paths: &[&str],
) -> Vec<(u16, String)> {
    let ask = |a: &[SocketAddr]| answers(a[0], paths);
    let (expected, toml, got) = through_both(bin, dir, path, port, &ask);
    for ((p, want), have) in paths.iter().zip(&expected).zip(&got) {
        assert_eq!(want, have, "{p}: nginx vs fulcrum\n{toml}");
    }
    expected
}

/// What `ask` gets from nginx on `conf` and from fulcrum on its conversion (with the
/// converted TOML).
fn through_both<T>(
    bin: &Path,
    dir: &Path,
    path: &Path,
    port: u16,
    ask: &dyn Fn(&[SocketAddr]) -> T,
) -> (T, String, T) {
    let expected = run_nginx(bin, dir, path, port, ask);

    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("convert")
        .arg(path)
        .output()
        .expect("convert runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).expect("utf-8");
    let _f = Fulcrum::start(&toml);
    let got = ask(&listens(path));
    (expected, toml, got)
}

#[test]
fn nginx_and_its_conversion_route_the_same() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a", "b", "c", "d", "e"]);
    let at = |i: usize| backends[i].addr.to_string();
    let conf = format!(
        r#"{head}
    proxy_set_header X-From http;
    upstream app {{ server {a} weight=2; server {b}; }}
    upstream hashed {{ hash $request_uri; server {c}; server {d_}; }}
    upstream spare {{ server {dead}; server {e} backup; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; }}
        location = /exact {{ proxy_pass http://hashed; }}
        location ^~ /static/ {{ proxy_pass http://{c}/files/; }}
        location ~ \.php$ {{ proxy_pass http://app; }}
        location ~* \.png$ {{ return 404; }}
        location /v1/ {{
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_pass http://hashed/v2/;
        }}
        location /spare/ {{ proxy_pass http://spare; }}
        location /old/ {{ rewrite ^/old/(.*)$ /new/$1 break; proxy_pass http://app; }}
    }}
}}
"#,
        a = at(0),
        b = at(1),
        c = at(2),
        d_ = at(3),
        e = at(4),
        dead = dead_addr(),
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    let paths = [
        "/",
        "/x?q=1",
        "/index.php",
        "/exact",
        "/static/app.js",
        "/img/A.PNG",
        "/v1/users?id=7",
        "/v1/",
        "/spare/x",
        "/a",
        "/b",
        "/exact",
        "/v1/orders/9",
        "/deep/x.php",
        "/old/a/b?c=d",
    ];
    let expected = same_through_both(&bin, dir.path(), &path, port, &paths);
    // The answers are real: every backend but the dead one's primary was reached.
    assert!(
        expected.iter().any(|(_, b)| b.starts_with("e /spare/x")),
        "{expected:?}"
    );
}

/// Two servers on one address chosen by Host (the `default_server` second in the
/// file), least_conn, `location = /` against `/`, `^~` against a regex, and a
/// server-level `proxy_set_header` a location replaces.
#[test]
fn server_names_default_server_and_precedence_match_nginx() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a", "b", "c"]);
    let at = |i: usize| backends[i].addr.to_string();
    let conf = format!(
        r#"{head}
    upstream pool {{ least_conn; server {a}; server {b}; }}
    server {{
        listen 127.0.0.1:{port};
        server_name www.site.test;
        proxy_set_header X-From www;
        location = / {{ proxy_pass http://{c}/root; }}
        location / {{ proxy_pass http://pool; }}
        location ^~ /assets/ {{ proxy_pass http://{c}; }}
        location ~ \.css$ {{ proxy_set_header X-Real-IP $remote_addr; proxy_pass http://pool; }}
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name .other.test;
        location / {{ return 302 http://www.site.test$request_uri; }}
    }}
}}
"#,
        a = at(0),
        b = at(1),
        c = at(2),
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    let paths = [
        "www.site.test /",
        "www.site.test /x",
        "www.site.test /y",
        "www.site.test /assets/site.css",
        "www.site.test /css/site.css",
        "other.test /a",
        "x.other.test /b",
        "unknown.test /c",
        "www.site.test /z",
    ];
    let expected = same_through_both(&bin, dir.path(), &path, port, &paths);
    assert!(expected.iter().any(|(s, _)| *s == 302), "{expected:?}");
    assert!(expected[0].1.starts_with("c /root host="), "{expected:?}");
}

/// One request as raw bytes: `(method, path, body length)`; the answer as status
/// (0: closed without a response), the `X-*` response headers the configs add, and
/// the backend's first word for a 200.
fn ask_raw(proxy: SocketAddr, reqs: &[(&str, &str, usize)]) -> Vec<(u16, String, String)> {
    reqs.iter()
        .map(|(method, path, len)| {
            let mut s = TcpStream::connect(proxy).expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .expect("timeout");
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: site.test\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            req.resize(req.len() + len, b'x');
            // nginx may answer 413 and close before reading the whole body.
            let _ = s.write_all(&req);
            let Ok(r) = read_response(&mut s) else {
                return (0, String::new(), String::new());
            };
            let added = ["x-site", "x-own", "x-always"]
                .iter()
                .map(|h| format!("{h}={}", r.header(h).unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(" ");
            let who = if r.status == 200 {
                r.text().split(' ').next().unwrap_or("").to_string()
            } else {
                String::new()
            };
            (r.status, added, who)
        })
        .collect()
}

/// `add_header [always]` with nginx's inheritance and status list, a location's own
/// `client_max_body_size` and `proxy_read_timeout`, and `return 444`.
#[test]
fn added_headers_limits_and_444_match_nginx() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a"]);
    let conf = format!(
        r#"{head}
    upstream app {{ server {a}; }}
    upstream gone {{ server {dead}; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1k;
        add_header X-Site site;
        add_header X-Always yes always;
        location / {{ proxy_pass http://app; }}
        location /own/ {{ add_header X-Own $host always; proxy_pass http://app; }}
        location /big/ {{ client_max_body_size 8k; proxy_read_timeout 5s; proxy_pass http://app; }}
        location /gone/ {{ proxy_pass http://gone; }}
        location = /drop {{ return 444; }}
        location = /moved {{ return 301 /elsewhere; }}
    }}
}}
"#,
        a = backends[0].addr,
        dead = dead_addr(),
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    let reqs = [
        ("GET", "/x", 0),
        ("GET", "/own/x", 0),
        ("POST", "/x", 4096),
        ("POST", "/big/x", 4096),
        ("GET", "/gone/x", 0),
        ("GET", "/drop", 0),
        ("GET", "/moved", 0),
    ];
    let ask = |a: &[SocketAddr]| ask_raw(a[0], &reqs);
    let (expected, toml, got) = through_both(&bin, dir.path(), &path, port, &ask);
    for ((r, want), have) in reqs.iter().zip(&expected).zip(&got) {
        assert_eq!(want, have, "{r:?}: nginx vs fulcrum\n{toml}");
    }
    // The answers are real: nginx added, limited, failed and dropped.
    let statuses: Vec<u16> = expected.iter().map(|e| e.0).collect();
    assert_eq!(statuses, [200, 200, 413, 200, 502, 0, 301], "{expected:?}");
    assert_eq!(expected[1].1, "x-site=- x-own=site.test x-always=-");
    assert_eq!(expected[4].1, "x-site=- x-own=- x-always=yes");
}

/// A site on a cleartext and an `ssl` address in one nginx server (fulcrum: two
/// `[[server]]`s), its certificate named relative to nginx's prefix and its TLS
/// settings inherited from `http`: the same requests over TLS (SNI, the test CA)
/// and in cleartext reach the same backends with the same URI and headers
/// (`$scheme`, `$ssl_server_name`, `$ssl_protocol` included).
#[test]
fn a_tls_site_on_80_and_443_matches_nginx() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a", "b", "c"]);
    let pki = tls_client::Pki::new();
    pki.leaf("site", &["site.test", "www.site.test"]);
    for f in ["site.crt", "site.key"] {
        std::fs::copy(pki.path(f), dir.path().join(f)).expect("copy");
    }
    let plain = free_port();
    let [a, b, c] = [0, 1, 2].map(|i| backends[i].addr);
    let conf = format!(
        r#"{head}
    ssl_certificate site.crt;
    ssl_certificate_key site.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    upstream app {{ server {a} weight=3; server {b}; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        listen 127.0.0.1:{plain};
        server_name site.test www.site.test;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $scheme;
        proxy_set_header X-From "$ssl_server_name $ssl_protocol";
        location / {{ proxy_pass http://app; }}
        location /api/ {{ proxy_pass http://{c}/v1/; }}
        location = /old {{ return 301 https://$host/new; }}
    }}
}}
"#,
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    let paths = ["/", "/x?y=1", "/api/users", "/old", "/a", "/b", "/api/"];
    let ask = |a: &[SocketAddr]| {
        let mut out = Vec::new();
        for p in paths {
            let cfg = tls_client::client_config(&pki, &[b"http/1.1"], None);
            let mut s = tls_client::connect(a[0], cfg, "site.test").expect("handshake");
            // A redirect's body is each server's own page: the status is compared.
            let (status, body) = tls_client::tls_get(&mut s, p, "site.test");
            out.push((status, if status == 200 { body } else { String::new() }));
        }
        let cleartext = answers(a[1], &paths);
        (out, cleartext)
    };
    let (expected, toml, got) = through_both(&bin, dir.path(), &path, port, &ask);
    assert!(toml.contains("tls = { cert = "), "{toml}");
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(expected.0[i], got.0[i], "TLS {p}: nginx vs fulcrum\n{toml}");
        assert_eq!(
            expected.1[i], got.1[i],
            "cleartext {p}: nginx vs fulcrum\n{toml}"
        );
    }
    // The answers are real: TLS reached the backends with the SNI name.
    assert!(
        expected.0[0].1.contains("from=site.test TLSv1.3"),
        "{expected:?}"
    );
    assert!(
        expected.1[0]
            .1
            .starts_with("a / host=site.test real-ip=http"),
        "{expected:?}"
    );
    assert_eq!(expected.0[3].0, 301, "{expected:?}");
}

/// `ip_hash`, `hash ... consistent`, `random`-free pools whose first server is dead
/// (`proxy_next_upstream` on to the next, or `off`: 502), a backup behind a down
/// primary, and `proxy_next_upstream_tries 1`: each request reaches the backend
/// nginx's own choice reaches.
#[test]
fn hashing_failover_and_backups_match_nginx() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a", "b", "c", "d", "e"]);
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| backends[i].addr);
    let dead = dead_addr();
    let conf = format!(
        r#"{head}
    upstream sticky {{ ip_hash; server {a}; server {b}; server {c}; }}
    upstream users {{ hash $arg_user consistent; server {a}; server {b} weight=2; server {c}; }}
    upstream failover {{ server {dead} max_fails=1 fail_timeout=30s; server {d}; }}
    upstream spare {{ server {e} down; server {b} backup; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_next_upstream error timeout http_503;
        location /sticky/ {{ proxy_pass http://sticky; }}
        location /users/ {{ proxy_set_header X-From $arg_user; proxy_pass http://users/u/; }}
        location /failover/ {{ proxy_pass http://failover; }}
        location /strict/ {{ proxy_next_upstream off; proxy_pass http://failover; }}
        location /once/ {{ proxy_next_upstream_tries 1; proxy_pass http://failover; }}
        location ^~ /spare/ {{ proxy_pass http://spare; }}
    }}
}}
"#,
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    let mut paths = vec![
        "/sticky/1",
        "/sticky/2",
        "/sticky/3",
        "/failover/x",
        "/failover/y",
        "/failover/z",
        "/spare/s",
        "/spare/t",
    ];
    let users = [
        "/users/a?user=alice",
        "/users/b?user=bob",
        "/users/c?user=carol",
        "/users/d?user=dave",
        "/users/e?user=erin",
        "/users/f?user=frank",
        "/users/a?user=alice",
    ];
    paths.extend(users);
    let expected = same_through_both(&bin, dir.path(), &path, port, &paths);
    // The answers are real: failover and the backup reached live servers.
    assert!(expected[3].1.starts_with("d /failover/x"), "{expected:?}");
    assert!(expected[6].1.starts_with("b /spare/s"), "{expected:?}");
    assert_eq!(expected[8].1, expected[14].1, "{expected:?}");
}

/// `grpc_pass` to a pool and to a literal address, with `grpc_set_header` and a
/// `grpc_read_timeout`: nginx's grpc module and fulcrum's `protocol = "h2"` pools
/// speak HTTP/2 (prior knowledge) to the same h2c backends, which see the same
/// path, authority and headers.
#[test]
fn grpc_pass_matches_nginx() {
    let Some(bin) = common::nginx_bin() else {
        return;
    };
    let (backends, dir, port, head) = setup(&["a", "b", "c"]);
    let [a, b, c] = [0, 1, 2].map(|i| backends[i].addr);
    let conf = format!(
        r#"{head}
    upstream svc {{ server {a}; server {b}; }}
    server {{
        listen 127.0.0.1:{port};
        grpc_set_header X-From grpc;
        grpc_read_timeout 30s;
        location /pkg.Svc/ {{ grpc_pass grpc://svc; }}
        location /lit.Svc/ {{ grpc_set_header X-Real-IP lit; grpc_pass {c}; }}
        location / {{ proxy_pass http://{c}; }}
    }}
}}
"#
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write");
    // `/plain` reaches `c` over HTTP/1 while `/lit.Svc/` reaches it over h2. (A pool
    // split for two protocols balances each copy on its own, where nginx shares one
    // round-robin turn: docs/convert.md; the unit tests show the split.)
    let paths = [
        "/pkg.Svc/Get",
        "/pkg.Svc/List",
        "/lit.Svc/Get",
        "/pkg.Svc/Put",
        "/plain",
    ];
    let expected = same_through_both(&bin, dir.path(), &path, port, &paths);
    // The answers are real: HTTP/2 (the backend sees the :scheme and :authority,
    // nginx's $proxy_host) to the pool and the literal address, HTTP/1 to /plain.
    assert!(
        expected[0].1.starts_with("a http://svc/pkg.Svc/Get")
            && expected[0].1.contains("from=grpc"),
        "{expected:?}"
    );
    assert!(
        expected[2]
            .1
            .starts_with(&format!("c http://{c}/lit.Svc/Get")),
        "{expected:?}"
    );
    assert!(expected[4].1.starts_with("c /plain"), "{expected:?}");
}
