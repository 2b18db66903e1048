//! Request forwarding as nginx does it: headers, locations, proxy_pass URIs, return.

mod common;
use common::*;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

/// A backend that answers with the request line and headers it received.
fn echo() -> Backend {
    Backend::with(Arc::new(|parts, body| {
        let mut s = format!("{} {}\n", parts.method, parts.uri);
        for (k, v) in &parts.headers {
            s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        s.push_str(&format!("body={}\n", body.len()));
        Response::new(Full::new(Bytes::from(s)))
    }))
}

fn header_lines(text: &str) -> Vec<String> {
    text.lines().skip(1).map(|l| l.to_string()).collect()
}

#[test]
fn proxy_set_header_xff_and_hop_by_hop() {
    let b = echo();
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.backend]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
proxy_set_header = {{ Host = "$host", X-Real-IP = "$remote_addr", X-Forwarded-For = "$proxy_add_x_forwarded_for", X-Empty = "", X-Uri = "$uri?$args" }}
"#,
        b.addr
    ));
    let r = raw(
        f.addr(),
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\
          Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
          Proxy-Connection: keep-alive\r\nX-Empty: client\r\nX-Custom: c\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let text = r.text();
    let h = header_lines(&text);
    assert_eq!(text.lines().next().unwrap(), "GET /a/b?x=1");
    // proxy_set_header in config order, first.
    assert_eq!(h[0], "host: example.com");
    assert_eq!(h[1], "x-real-ip: 127.0.0.1");
    assert_eq!(h[2], "x-forwarded-for: 10.0.0.1, 127.0.0.1");
    assert_eq!(h[3], "x-uri: /a/b?x=1");
    // An empty value sends nothing and still drops the client's header.
    assert!(!text.contains("x-empty"));
    // Hop-by-hop headers, and those named in Connection, never pass.
    for hop in [
        "x-secret",
        "keep-alive",
        "te:",
        "proxy-connection",
        "connection",
    ] {
        assert!(!text.contains(hop), "{hop} was forwarded:\n{text}");
    }
    assert!(text.contains("x-custom: c"));
}

#[test]
fn default_host_is_proxy_host_and_xff_only_when_set() {
    let b = echo();
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.pool]
server = ["{0}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://pool"
[[server.location]]
path = "/lit/"
proxy_pass = "http://{0}/"
"#,
        b.addr
    ));
    let t = get(f.addr(), "/x").text();
    assert!(t.contains("host: pool\n"), "{t}");
    assert!(!t.contains("x-forwarded-for"), "{t}");
    let t = get(f.addr(), "/lit/y").text();
    assert!(t.starts_with("GET /y\n"), "{t}");
    assert!(t.contains(&format!("host: {}\n", b.addr)), "{t}");
}

#[test]
fn location_precedence_and_proxy_pass_uris() {
    let b = echo();
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://b/root/"
[[server.location]]
path = "= /exact"
return = {{ status = 200, body = "exact" }}
[[server.location]]
path = "/api/"
proxy_pass = "http://b/v2/"
[[server.location]]
path = "^~ /static/"
return = {{ status = 200, body = "static-prefix" }}
[[server.location]]
path = "~ \\.(png|jpg)$"
return = {{ status = 200, body = "regex" }}
[[server.location]]
path = "~* \\.GIF$"
return = {{ status = 200, body = "iregex" }}
[[server.location]]
path = "/images/"
return = {{ status = 200, body = "images-prefix" }}
[[server.location]]
path = "/raw"
proxy_pass = "http://b"
[[server.location]]
path = "/go"
return = {{ status = 301, location = "https://$host$request_uri" }}
"#,
        b.addr
    ));
    let a = f.addr();
    assert_eq!(get(a, "/exact").text(), "exact");
    // "=" only matches exactly; /exact/x falls to the longest prefix "/".
    assert!(get(a, "/exact/x").text().starts_with("GET /root/exact/x"));
    // ^~ stops the regex search.
    assert_eq!(get(a, "/static/a.png").text(), "static-prefix");
    // A regex beats a plain prefix.
    assert_eq!(get(a, "/images/a.png").text(), "regex");
    assert_eq!(get(a, "/images/a.PNG").text(), "images-prefix");
    assert_eq!(get(a, "/images/a.gif").text(), "iregex");
    // No regex matches: the longest prefix.
    assert_eq!(get(a, "/images/a.txt").text(), "images-prefix");
    // proxy_pass with a URI part replaces the matched prefix, on the normalized path.
    assert!(get(a, "/api/a%20b//c/../d?x=1")
        .text()
        .starts_with("GET /v2/a%20b/d?x=1\n"));
    // Without a URI part the raw target passes unchanged.
    assert!(get(a, "/raw//x/../y?q")
        .text()
        .starts_with("GET /raw//x/../y?q\n"));
    // nginx's 301 to add the slash of a proxy_pass prefix location.
    let r = get_host(a, "/api?z=1", "h.example");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://h.example/api/?z=1"));
    // return with a templated Location.
    let r = get_host(a, "/go?x", "h.example");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://h.example/go?x"))
    );
    // Dot segments above the root are a bad request.
    assert_eq!(get(a, "/../etc/passwd").status, 400);
}

#[test]
fn server_name_selection_and_default() {
    let b = echo();
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["default.test"]
[[server.location]]
path = "/"
return = {{ status = 200, body = "default" }}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["*.example.com", "www.example.*"]
[[server.location]]
path = "/"
return = {{ status = 200, body = "wild" }}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["api.example.com"]
[[server.location]]
path = "/"
return = {{ status = 200, body = "exact" }}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ['~^\D+\.digits$']
[[server.location]]
path = "/"
return = {{ status = 200, body = "regex" }}
"#,
        b.addr
    ));
    let a = f.addr();
    // A regex keeps its case (`\D` is not `\d`) and matches caselessly.
    assert_eq!(get_host(a, "/", "ABC.digits").text(), "regex");
    assert_eq!(get_host(a, "/", "123.digits").text(), "default");
    assert_eq!(get_host(a, "/", "api.example.com").text(), "exact");
    assert_eq!(get_host(a, "/", "API.Example.com.:81").text(), "exact");
    assert_eq!(get_host(a, "/", "x.example.com").text(), "wild");
    assert_eq!(get_host(a, "/", "www.example.org").text(), "wild");
    assert_eq!(get_host(a, "/", "other.test").text(), "default");
    // HTTP/1.1 without Host is a bad request, as in nginx.
    let r = raw(a, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    // HTTP/1.0 without Host goes to the default server.
    let r = raw(a, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.text(), "default");
}
