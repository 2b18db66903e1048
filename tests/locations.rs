//! Per-location settings (SPEC §2 `[[server.location]]`): `add_header` and
//! `add_header_always` with nginx's status list and inheritance, the pool and server
//! settings a location overrides, and `return 444`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;

/// A backend answering the status its path names (`.../s/500` → 500), else 200, with
/// a `Cache-Control` of its own.
fn status_backend() -> Backend {
    Backend::with(Arc::new(|parts, _| {
        let path = parts.uri.path();
        let code = path
            .find("/s/")
            .and_then(|i| path[i + 3..].parse::<u16>().ok())
            .unwrap_or(200);
        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
        r.headers_mut()
            .insert("cache-control", http::HeaderValue::from_static("private"));
        r
    }))
}

/// The raw response head for `GET path` (header lines as sent, lowercased).
fn head_of(addr: SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

/// A config with one pool `b` of `backend` and one `[[server]]` on a free port; `server`
/// goes on inside that server (its keys, then its locations).
fn one_pool(backend: SocketAddr, server: &str) -> String {
    format!(
        "[admin]\nlisten = \"off\"\n[upstream.b]\nserver = [\"{backend}\"]\n\
         [[server]]\nlisten = [\"127.0.0.1:0\"]\n{server}"
    )
}

#[test]
fn add_header_follows_nginx_status_list_and_inheritance() {
    let b = status_backend();
    let dead = dead_addr();
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "off"
[upstream.b]
server = ["{b}"]
[upstream.gone]
server = ["{dead}"]
[[server]]
listen = ["127.0.0.1:0"]
add_header = {{ X-Server = "srv" }}
add_header_always = {{ X-Server-Always = "srv-always" }}
[[server.location]]
path = "/"
proxy_pass = "http://b"
add_header = {{ X-Frame-Options = "DENY", Cache-Control = "no-store", X-Uri = "$host$request_uri", X-Empty = "$http_x_missing" }}
add_header_always = {{ X-Always = "yes" }}
[[server.location]]
path = "/inherit/"
proxy_pass = "http://b"
[[server.location]]
path = "/gone/"
proxy_pass = "http://gone"
add_header = {{ X-Ok-Only = "1" }}
add_header_always = {{ X-Always = "1" }}
[[server.location]]
path = "= /redirect"
return = {{ status = 302, location = "/elsewhere" }}
add_header = {{ X-Ret = "r" }}
[[server.location]]
path = "= /teapot"
return = {{ status = 418, body = "no" }}
add_header = {{ X-Ret = "r" }}
"#,
        b = b.addr
    ));
    let addr = f.addr();

    let ok = head_of(addr, "/a?q=1");
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(ok.contains("\r\nx-frame-options: deny"), "{ok}");
    assert!(ok.contains("\r\nx-uri: site.test/a?q=1"), "{ok}");
    assert!(ok.contains("\r\nx-always: yes"), "{ok}");
    // Added to the upstream's own header, not replacing it (nginx appends).
    assert!(ok.contains("\r\ncache-control: private"), "{ok}");
    assert!(ok.contains("\r\ncache-control: no-store"), "{ok}");
    // A value that renders empty adds nothing.
    assert!(!ok.contains("x-empty"), "{ok}");
    // A location with its own tables inherits none of its server's.
    assert!(!ok.contains("x-server"), "{ok}");

    let err = head_of(addr, "/s/500");
    assert!(err.starts_with("http/1.1 500"), "{err}");
    assert!(!err.contains("x-frame-options"), "{err}");
    assert!(err.contains("\r\nx-always: yes"), "{err}");

    let inherited = head_of(addr, "/inherit/x");
    assert!(inherited.contains("\r\nx-server: srv"), "{inherited}");
    assert!(
        inherited.contains("\r\nx-server-always: srv-always"),
        "{inherited}"
    );
    let inherited_404 = head_of(addr, "/inherit/s/404");
    assert!(inherited_404.starts_with("http/1.1 404"), "{inherited_404}");
    assert!(!inherited_404.contains("x-server:"), "{inherited_404}");
    assert!(
        inherited_404.contains("\r\nx-server-always: srv-always"),
        "{inherited_404}"
    );

    // fulcrum's own 502 gets only the `always` entries.
    let bad = head_of(addr, "/gone/x");
    assert!(bad.starts_with("http/1.1 502"), "{bad}");
    assert!(bad.contains("\r\nx-always: 1"), "{bad}");
    assert!(!bad.contains("x-ok-only"), "{bad}");

    // `return`: a redirect is on nginx's list, a 418 is not.
    let redirect = head_of(addr, "/redirect");
    assert!(redirect.starts_with("http/1.1 302"), "{redirect}");
    assert!(redirect.contains("\r\nx-ret: r"), "{redirect}");
    let teapot = head_of(addr, "/teapot");
    assert!(teapot.starts_with("http/1.1 418"), "{teapot}");
    assert!(!teapot.contains("x-ret"), "{teapot}");
}

#[test]
fn add_header_reaches_answers_given_before_a_location() {
    let b = Backend::named("b");
    let f = Fulcrum::start(&one_pool(
        b.addr,
        r#"
add_header_always = { X-Server-Always = "1" }
[[server.location]]
path = "= /only"
proxy_pass = "http://b"
"#,
    ));
    // No location matches: the server's table applies to the 404.
    let miss = head_of(f.addr(), "/nothing");
    assert!(miss.starts_with("http/1.1 404"), "{miss}");
    assert!(miss.contains("\r\nx-server-always: 1"), "{miss}");
}

/// A backend that waits `delay` before answering 200.
fn slow_backend(delay: Duration) -> (SocketAddr, tokio::runtime::Runtime) {
    serve(move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(Full::new(Bytes::from_static(b"slow")))
    })
}

#[test]
fn location_read_timeout_overrides_the_pool() {
    let (slow, _rt) = slow_backend(Duration::from_millis(1500));
    let f = Fulcrum::start(&proxy_config(
        &[slow],
        "read_timeout = \"30s\"",
        "[[server.location]]\npath = \"/hurry/\"\nproxy_pass = \"http://b\"\nread_timeout = \"100ms\"",
    ));
    let hurried = get(f.addr(), "/hurry/x");
    assert_eq!(hurried.status, 504, "{}", hurried.text());
    let patient = get(f.addr(), "/x");
    assert_eq!(patient.status, 200, "{}", patient.text());
}

#[test]
fn location_next_upstream_overrides_the_pool() {
    let live = Backend::named("live");
    let dead = dead_addr();
    // max_fails=0: the dead server is never taken out, so round-robin keeps
    // offering it every second pick.
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "off"
[upstream.b]
server = ["{dead} max_fails=0", "{live} max_fails=0"]
next_upstream = ["off"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b"
[[server.location]]
path = "/retry/"
proxy_pass = "http://b"
next_upstream = ["error"]
[[server.location]]
path = "/once/"
proxy_pass = "http://b"
next_upstream = ["error"]
next_upstream_tries = 1
"#,
        live = live.addr
    ));
    let addr = f.addr();
    let codes = |p: &str| (0..4).map(|_| get(addr, p).status).collect::<Vec<_>>();
    assert!(codes("/retry/x").iter().all(|&c| c == 200));
    assert!(codes("/").contains(&502));
    assert!(codes("/once/x").contains(&502));
}

#[test]
fn location_client_max_body_size_overrides_the_server() {
    let (b, _) = echo();
    let f = Fulcrum::start(&proxy_config(
        &[b.addr],
        "",
        "client_max_body_size = \"1k\"\n[[server.location]]\npath = \"/upload/\"\nproxy_pass = \"http://b\"\nclient_max_body_size = \"16k\"",
    ));
    let post = |path: &str| {
        let body = vec![b'x'; 4096];
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        raw(f.addr(), &req).expect("response")
    };
    assert_eq!(post("/small").status, 413);
    assert_eq!(post("/upload/big").status, 200);
}

#[test]
fn return_444_closes_without_a_response() {
    let b = Backend::named("b");
    let f = Fulcrum::start(&format!(
        r#"
[global]
access_log = "stderr"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{b}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b"
[[server.location]]
path = "/drop"
return = {{ status = 444 }}
"#,
        b = b.addr
    ));
    let mut s = TcpStream::connect(f.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // Closed (EOF or reset) with not one byte of a response.
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(b.hits(), 0);
    // Logged as nginx logs it.
    assert!(
        f.wait_log("\"GET /drop HTTP/1.1\" 444", 10).is_some(),
        "{}",
        f.log_text()
    );
    // Other requests are unaffected.
    assert_eq!(get(f.addr(), "/x").status, 200);
}

#[test]
fn return_444_resets_only_its_h2_stream() {
    let b = Backend::named("b");
    let f = Fulcrum::start(&one_pool(
        b.addr,
        r#"
http2 = true
[[server.location]]
path = "/"
proxy_pass = "http://b"
[[server.location]]
path = "/drop"
return = { status = 444 }
"#,
    ));
    let addr = f.addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = |path: &str| {
            http::Request::get(format!("http://{addr}{path}"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        let dropped =
            tokio::time::timeout(Duration::from_secs(30), send.send_request(req("/drop")))
                .await
                .expect("an answer in time");
        assert!(dropped.is_err(), "444 must reset the stream: {dropped:?}");
        let ok = tokio::time::timeout(Duration::from_secs(30), send.send_request(req("/x")))
            .await
            .expect("an answer in time")
            .expect("the connection still serves");
        assert_eq!(ok.status(), 200);
    });
}

#[test]
fn location_overrides_are_validated_with_positions() {
    let src = r#"
[upstream.b]
server = ["127.0.0.1:9"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b"
read_timeout = "soon"
next_upstream = ["sometimes"]
add_header = { "bad name" = "x" }
"#;
    let err = fulcrum::config::parse(Path::new("f.toml"), src).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("f.toml:9:16"), "{text}");
    assert!(text.contains("f.toml:10:18"), "{text}");
    assert!(text.contains("invalid header name \"bad name\""), "{text}");
    // A location without overrides has the pool's values; one with them, its own.
    let ok = fulcrum::config::parse(
        Path::new("f.toml"),
        r#"
[upstream.b]
server = ["127.0.0.1:9"]
read_timeout = "7s"
next_upstream_tries = 3
[[server]]
listen = ["127.0.0.1:0"]
client_max_body_size = "2k"
[[server.location]]
path = "/"
proxy_pass = "http://b"
[[server.location]]
path = "/x/"
proxy_pass = "http://b"
read_timeout = "1s"
next_upstream_tries = 1
client_max_body_size = 0
"#,
    )
    .expect("valid");
    let locs = &ok.servers[0].locations;
    let opts = |i: usize| match &locs[i].action {
        fulcrum::config::Action::Proxy(pp) => pp.opts,
        fulcrum::config::Action::Return(_) => panic!("a proxy location"),
    };
    assert_eq!(opts(0).read_timeout, Duration::from_secs(7));
    assert_eq!(opts(0).next_upstream_tries, 3);
    assert_eq!(locs[0].client_max_body_size, 2048);
    assert_eq!(opts(1).read_timeout, Duration::from_secs(1));
    assert_eq!(opts(1).next_upstream_tries, 1);
    assert_eq!(locs[1].client_max_body_size, 0);
}
