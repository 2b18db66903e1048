//! Conversion tests of TLS (servers and upstreams), gRPC and the downstream
//! `keepalive_timeout`, with certificates made at test time.

use super::tests::{config, warned};
use super::*;

/// An nginx.conf in a directory that also holds `site.crt`/`site.key` and `ca.crt`
/// (self-signed, made here), converted.
fn run_with_certs(nginx: &str) -> (Output, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["site.test".to_string()]).expect("cert");
    std::fs::write(d.path().join("site.crt"), ck.cert.pem()).expect("write");
    std::fs::write(d.path().join("site.key"), ck.key_pair.serialize_pem()).expect("write");
    std::fs::write(d.path().join("ca.crt"), ck.cert.pem()).expect("write");
    let p = d.path().join("nginx.conf");
    std::fs::write(&p, nginx).expect("write");
    match convert(&p) {
        Ok(o) => (o, d),
        Err(e) => panic!("{e}\n--- nginx:\n{nginx}"),
    }
}

/// The converted pool named `n`.
fn pool<'c>(c: &'c crate::config::Config, o: &Output, n: &str) -> &'c crate::config::Upstream {
    c.upstreams
        .iter()
        .find(|u| u.name == n)
        .unwrap_or_else(|| panic!("{n}: {}", o.toml))
}

#[test]
fn a_server_on_80_and_443_ssl_becomes_two_servers_with_inherited_certificates() {
    let (o, dir) = run_with_certs(
        "http {
  ssl_certificate site.crt;
  ssl_certificate_key site.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache off;
  server {
    listen 127.0.0.1:8080;
    listen 127.0.0.1:8443 ssl http2;
    server_name site.test;
    ssl_client_certificate ca.crt;
    ssl_verify_client optional;
    ssl_prefer_server_ciphers on;
    location / { return 200 ok; }
  }
}",
    );
    let c = config(&o);
    assert_eq!(c.servers.len(), 2, "{}", o.toml);
    assert!(c.servers[0].tls.is_none());
    assert!(
        !c.servers[0].http2,
        "http2 on an ssl address is ALPN, not h2c"
    );
    assert_eq!(c.servers[0].listen[0].port(), 8080);
    let tls = c.servers[1].tls.as_ref().expect("tls");
    assert_eq!(c.servers[1].listen[0].port(), 8443);
    // Relative to nginx's prefix (the main file's directory), written absolute.
    assert_eq!(tls.cert, dir.path().join("site.crt"));
    assert_eq!(tls.client_ca.as_deref(), Some(&*dir.path().join("ca.crt")));
    assert!(
        o.toml.contains("client_auth = \"optional\" }"),
        "{}",
        o.toml
    );
    assert_eq!(c.servers[1].server_names, ["site.test"]);
    assert_eq!(c.servers[1].locations.len(), 1);
    // Versions within fulcrum's and a cache that is off are carried silently.
    assert!(warned(&o, "ssl_protocols").is_empty());
    assert!(warned(&o, "ssl_session_cache").is_empty());
    assert_eq!(warned(&o, "ssl_prefer_server_ciphers").len(), 1);
}

#[test]
fn tls_directives_fulcrum_does_otherwise_are_warned() {
    let (o, _dir) = run_with_certs(
        "http { server {
  listen 127.0.0.1:8443 ssl;
  ssl_certificate site.crt;
  ssl_certificate_key site.key;
  ssl_certificate site.crt;
  ssl_protocols TLSv1 TLSv1.1 TLSv1.2;
  ssl_ciphers HIGH:!aNULL;
  ssl_session_timeout 10m;
  ssl_dhparam dh.pem;
  ssl_stapling on;
  ssl_verify_client optional_no_ca;
  location / { return 200 ok; }
} }",
    );
    let p = warned(&o, "ssl_protocols");
    assert!(
        p[0].contains("TLSv1 TLSv1.1 not offered") && p[0].contains("TLSv1.3 offered too"),
        "{p:?}"
    );
    for name in [
        "ssl_ciphers",
        "ssl_session_timeout",
        "ssl_dhparam",
        "ssl_stapling",
        "ssl_verify_client",
        "ssl_certificate",
    ] {
        assert_eq!(warned(&o, name).len(), 1, "{name}: {:?}", o.warnings);
    }
    let c = config(&o);
    // optional_no_ca without a CA: no certificate is asked for.
    let tls = c.servers[0].tls.as_ref().expect("tls");
    assert!(tls.client_ca.is_none());
    assert!(o.toml.contains("client_auth = \"off\" }"), "{}", o.toml);
}

#[test]
fn a_tls_listener_whose_certificate_does_not_load_is_not_served() {
    let (o, _dir) = run_with_certs(
        "http {
  server { listen 127.0.0.1:8080; listen 127.0.0.1:8443 ssl;
    ssl_certificate missing.crt; ssl_certificate_key missing.key;
    location / { return 200 a; } }
  server { listen 127.0.0.1:9443 ssl; location / { return 200 b; } }
  server { listen 127.0.0.1:9444 ssl; ssl_certificate site.crt; ssl_certificate_key site.key;
    ssl_verify_client on; location / { return 200 c; } }
}",
    );
    let c = config(&o);
    // Only the cleartext address of the first server stays: never the site in
    // cleartext on its TLS port.
    assert_eq!(c.servers.len(), 1, "{}", o.toml);
    assert_eq!(c.servers[0].listen[0].port(), 8080);
    assert!(c.servers[0].tls.is_none());
    let w = warned(&o, "listen");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].contains("nginx.conf:2:") && w[0].contains("missing.crt"),
        "{w:?}"
    );
    assert!(w[1].contains("no ssl_certificate"), "{w:?}");
    assert!(w[2].contains("no ssl_client_certificate"), "{w:?}");
    assert_eq!(warned(&o, "server").len(), 2, "{:?}", o.warnings);
}

#[test]
fn upstream_tls_settings_become_the_pools_tls_and_ports_stay_nginxs() {
    let (o, dir) = run_with_certs(
        "http {
  upstream secure { server localhost; server 127.0.0.1:9443; }
  upstream other { server 127.0.0.1:9444; }
  server { listen 127.0.0.1:8080;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate ca.crt;
    proxy_ssl_name site.test;
    proxy_ssl_server_name on;
    proxy_ssl_certificate site.crt;
    proxy_ssl_certificate_key site.key;
    location / { proxy_pass https://secure; }
    location /lax/ { proxy_ssl_verify off; proxy_pass https://secure; }
    location /plain/ { proxy_pass http://secure; }
    location /lit/ { proxy_pass https://localhost; }
  }
  server { listen 127.0.0.1:8081;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate ca.crt;
    location /other/ { proxy_pass https://other; }
  }
}",
    );
    let c = config(&o);
    let pool = |n: &str| pool(&c, &o, n);
    let secure = pool("secure");
    let tls = secure.tls.as_ref().expect("tls");
    assert!(tls.verify);
    assert_eq!(tls.ca.as_deref(), Some(&*dir.path().join("ca.crt")));
    assert_eq!(tls.server_name.as_deref(), Some("site.test"));
    assert!(tls.identity.is_some());
    // nginx's upstream port is 80 even for https://.
    assert!(
        secure.servers.iter().all(|s| s.addr.port() != 443),
        "{}",
        o.toml
    );
    assert!(o.toml.contains("\"localhost:80\""), "{}", o.toml);
    // The location that disagrees, and the cleartext one, get copies.
    assert!(!pool("secure-tls").tls.as_ref().expect("tls").verify);
    assert!(pool("secure-http").tls.is_none());
    assert!(
        o.toml.contains(
            "proxy_pass = \"https://secure-tls/\"\nproxy_set_header = { Host = \"secure\" }"
        ) || o.toml.contains(
            "proxy_pass = \"https://secure-tls\"\nproxy_set_header = { Host = \"secure\" }"
        ),
        "{}",
        o.toml
    );
    // Without proxy_ssl_name, nginx verifies against $proxy_host: the pool's name.
    let other = pool("other").tls.as_ref().expect("tls");
    assert_eq!(other.server_name.as_deref(), Some("other"));
    // A literal https:// address keeps port 443, as nginx.
    let lit = c
        .upstreams
        .iter()
        .find(|u| u.tls.is_some() && u.servers.iter().any(|s| s.addr.port() == 443))
        .expect("a literal https pool on 443");
    assert!(lit.tls.as_ref().expect("tls").verify, "{}", o.toml);
    assert_eq!(warned(&o, "proxy_pass").len(), 3, "{:?}", o.warnings);
}

#[test]
fn grpc_pass_is_an_h2_pool_with_grpc_settings() {
    let (o, _dir) = run_with_certs(
        "http {
  upstream svc { server 127.0.0.1:50051; }
  server { listen 127.0.0.1:8080; http2 on;
    grpc_read_timeout 5m;
    proxy_read_timeout 7s;
    grpc_set_header X-Grpc yes;
    location /api.Svc/ { grpc_pass grpc://svc; }
    location /tls.Svc/ { grpc_ssl_verify off; grpc_pass grpcs://127.0.0.1:50052; }
    location /lit.Svc/ { grpc_pass 127.0.0.1:50053; }
    location /rest/ { proxy_pass http://svc; }
  }
}",
    );
    let c = config(&o);
    let pool = |n: &str| pool(&c, &o, n);
    assert_eq!(pool("svc").protocol, crate::config::Protocol::H2);
    assert_eq!(pool("svc-http").protocol, crate::config::Protocol::Http1);
    let tls = pool("grpc-127-0-0-1-50052");
    assert!(tls.tls.is_some() && tls.protocol == crate::config::Protocol::H2);
    assert_eq!(
        pool("grpc-127-0-0-1-50053").protocol,
        crate::config::Protocol::H2
    );
    let t = &o.toml;
    assert!(
        t.contains("proxy_pass = \"http://svc\"\nproxy_set_header = { X-Grpc = \"yes\" }\nread_timeout = \"300s\""),
        "{t}"
    );
    assert!(
        t.contains("proxy_pass = \"http://grpc-127-0-0-1-50053\"\nproxy_set_header = { X-Grpc = \"yes\", Host = \"127.0.0.1:50053\" }"),
        "{t}"
    );
    assert!(
        t.contains("proxy_pass = \"http://svc-http\"\nproxy_set_header = { Host = \"svc\" }\nread_timeout = \"7s\""),
        "{t}"
    );
    assert_eq!(warned(&o, "proxy_pass").len(), 1, "{:?}", o.warnings);
    let w = warned(&o, "grpc_pass");
    assert!(
        w.len() == 1 && w[0].contains("grpc_ssl_verify off"),
        "{w:?}"
    );
}

#[test]
fn keepalive_timeout_is_the_servers_and_its_header_time_is_warned() {
    let (o, _dir) = run_with_certs(
        "http { keepalive_timeout 30 20;
  server { listen 127.0.0.1:8080; location / { keepalive_timeout 5s; return 200 a; } }
  server { listen 127.0.0.1:8081; keepalive_timeout 0; location / { return 200 b; } }
  server { listen 127.0.0.1:8082; keepalive_timeout 2m; location / { return 200 c; } }
}",
    );
    let c = config(&o);
    let secs: Vec<u64> = c
        .servers
        .iter()
        .map(|s| s.keepalive_timeout.as_secs())
        .collect();
    // 0 (no keep-alive) cannot be said: the http level's 30s stays there.
    assert_eq!(secs, [30, 30, 120], "{}", o.toml);
    let w = warned(&o, "keepalive_timeout");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("nginx.conf:1:") && w[0].contains("header time"));
    assert!(w[1].contains("nginx.conf:2:") && w[1].contains("per server"));
    assert!(w[2].contains("nginx.conf:3:") && w[2].contains("keep-alive off"));
}

#[test]
fn server_name_in_a_redirect_is_the_servers_first_name() {
    let (o, _dir) = run_with_certs(
        "http {
  server { listen 127.0.0.1:8080; server_name git.example.test www.example.test;
    return 301 https://$server_name$request_uri; }
  server { listen 127.0.0.1:8081; server_name ~^(?<x>.+)$; return 301 https://$server_name/; }
  server { listen 127.0.0.1:8082; server_name api.example.test;
    add_header X-Server $server_name; location / { return 200 ok; } }
}",
    );
    assert!(
        o.toml.contains(
            "return = { status = 301, location = \"https://git.example.test$request_uri\" }"
        ),
        "{}",
        o.toml
    );
    assert!(
        o.toml
            .contains("add_header = { X-Server = \"api.example.test\" }"),
        "{}",
        o.toml
    );
    // A regex is not a name fulcrum can write: warned, as before.
    assert_eq!(warned(&o, "return").len(), 1, "{:?}", o.warnings);
    config(&o);
}

#[test]
fn a_client_certificate_without_its_key_is_warned() {
    let (o, _dir) = run_with_certs(
        "http { upstream s { server 127.0.0.1:9443; }
  server { listen 127.0.0.1:8080; proxy_ssl_certificate site.crt;
    location / { proxy_pass https://s; } } }",
    );
    let w = warned(&o, "proxy_pass");
    assert!(w.iter().any(|w| w.contains("without its key")), "{w:?}");
    assert!(pool(&config(&o), &o, "s")
        .tls
        .as_ref()
        .expect("tls")
        .identity
        .is_none());
}

#[test]
fn a_literal_https_address_without_a_port_is_443_as_in_nginx() {
    let (o, _dir) = run_with_certs(
        "http { server { listen 127.0.0.1:8080; location / { proxy_pass https://localhost; } } }",
    );
    let c = config(&o);
    let u = c
        .upstreams
        .iter()
        .find(|u| u.tls.is_some())
        .expect("an https pool");
    assert!(u.servers.iter().all(|s| s.addr.port() == 443), "{}", o.toml);
}
