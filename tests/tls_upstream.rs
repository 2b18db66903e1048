//! TLS to the backends (SPEC §2 `[upstream.NAME] tls`, `https://` in proxy_pass):
//! real TLS backends with certificates made here (rcgen), verified against a test
//! CA, refused when untrusted (502, the reason logged), client certificates for a
//! backend that demands them, pooled connections reused, and h2 chosen by ALPN.

mod common;
#[path = "common/tls_backend.rs"]
mod tls_backend;
#[path = "common/tls.rs"]
mod tls_client;

use std::process::Command;

use common::*;
use tls_backend::{server_config, TlsBackend};
use tls_client::Pki;

fn pool_config(backend: std::net::SocketAddr, upstream_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "off"
[upstream.b]
server = ["localhost:{port}"]
{upstream_extra}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "https://b"
"#,
        port = backend.port()
    )
}

#[test]
fn verified_backend_is_reached_and_its_connections_are_pooled() {
    let pki = Pki::new();
    pki.leaf("backend", &["localhost"]);
    let b = TlsBackend::start(
        "secure",
        server_config(&pki, "backend", &[b"http/1.1"], None),
    );
    let ca = pki.path("ca.crt");
    let f = Fulcrum::start(&pool_config(
        b.addr,
        &format!("tls = {{ ca = \"{}\" }}", ca.display()),
    ));
    let mut c = Conn::open(f.addr());
    for _ in 0..5 {
        let r = c.get("/x");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "secure HTTP/1.1");
    }
    // Five requests, one TLS connection: pooled like cleartext ones.
    assert_eq!(b.connections(), 1);
}

#[test]
fn untrusted_backend_is_a_502_with_the_reason_logged() {
    let pki = Pki::new();
    pki.leaf("backend", &["localhost"]);
    let b = TlsBackend::start(
        "secure",
        server_config(&pki, "backend", &[b"http/1.1"], None),
    );
    // `tls = true`: verified against the built-in roots, which do not have this CA.
    let f = Fulcrum::start(&pool_config(b.addr, "tls = true"));
    let r = get(f.addr(), "/x");
    assert_eq!(r.status, 502, "{}", r.text());
    let line = f.wait_log("SSL handshake failed", 10).unwrap_or_default();
    assert!(line.contains("UnknownIssuer"), "{}", f.log_text());
    assert_eq!(b.connections(), 0);
}

#[test]
fn name_mismatch_is_refused_and_server_name_fixes_it() {
    let pki = Pki::new();
    pki.leaf("backend", &["api.internal"]);
    let b = TlsBackend::start(
        "named",
        server_config(&pki, "backend", &[b"http/1.1"], None),
    );
    let ca = pki.path("ca.crt").display().to_string();
    let f = Fulcrum::start(&pool_config(b.addr, &format!("tls = {{ ca = \"{ca}\" }}")));
    assert_eq!(get(f.addr(), "/x").status, 502);
    assert!(
        f.wait_log("not valid for name", 10).is_some(),
        "{}",
        f.log_text()
    );
    let f = Fulcrum::start(&pool_config(
        b.addr,
        &format!("tls = {{ ca = \"{ca}\", server_name = \"api.internal\" }}"),
    ));
    assert_eq!(get(f.addr(), "/x").text(), "named HTTP/1.1");
}

#[test]
fn client_certificate_for_a_backend_that_requires_one() {
    let servers = Pki::new();
    servers.leaf("backend", &["localhost"]);
    let clients = Pki::new();
    clients.leaf("fulcrum", &["fulcrum.client"]);
    let cfg = server_config(&servers, "backend", &[b"http/1.1"], Some(&clients));
    let b = TlsBackend::start("mtls", cfg);
    let ca = servers.path("ca.crt").display().to_string();
    let without = Fulcrum::start(&pool_config(b.addr, &format!("tls = {{ ca = \"{ca}\" }}")));
    assert_eq!(get(without.addr(), "/x").status, 502);
    let with = Fulcrum::start(&pool_config(
        b.addr,
        &format!(
            "tls = {{ ca = \"{ca}\", cert = \"{}\", key = \"{}\" }}",
            clients.path("fulcrum.crt").display(),
            clients.path("fulcrum.key").display()
        ),
    ));
    let r = get(with.addr(), "/x");
    assert_eq!((r.status, r.text().as_str()), (200, "mtls HTTP/1.1"));
}

#[test]
fn h2_pool_over_tls_negotiates_h2_by_alpn() {
    let pki = Pki::new();
    pki.leaf("backend", &["localhost"]);
    let b = TlsBackend::start("grpcish", server_config(&pki, "backend", &[b"h2"], None));
    let ca = pki.path("ca.crt").display().to_string();
    let f = Fulcrum::start(&pool_config(
        b.addr,
        &format!("protocol = \"h2\"\ntls = {{ ca = \"{ca}\" }}"),
    ));
    let mut c = Conn::open(f.addr());
    for _ in 0..4 {
        assert_eq!(c.get("/x").text(), "grpcish HTTP/2.0");
    }
    assert_eq!(b.connections(), 1);
    // An HTTP/1-only backend cannot agree on h2: the handshake fails.
    let h1 = TlsBackend::start("old", server_config(&pki, "backend", &[b"http/1.1"], None));
    let f = Fulcrum::start(&pool_config(
        h1.addr,
        &format!("protocol = \"h2\"\ntls = {{ ca = \"{ca}\" }}"),
    ));
    assert_eq!(get(f.addr(), "/x").status, 502);
    assert!(
        f.wait_log("NoApplicationProtocol", 10).is_some(),
        "{}",
        f.log_text()
    );
}

#[test]
fn verify_off_accepts_any_certificate_with_a_warning() {
    let pki = Pki::new();
    pki.leaf("backend", &["elsewhere.test"]);
    let b = TlsBackend::start("lax", server_config(&pki, "backend", &[b"http/1.1"], None));
    let config = pool_config(b.addr, "tls = { verify = false }");
    let f = Fulcrum::start(&config);
    assert_eq!(get(f.addr(), "/x").text(), "lax HTTP/1.1");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&f.config)
        .output()
        .expect("check runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify = false"), "{text}");
}

#[test]
fn check_names_a_missing_ca_and_https_needs_a_tls_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.toml");
    let run = |src: &str| {
        std::fs::write(&path, src).expect("write");
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("check runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let missing = pool_config(
        "127.0.0.1:9".parse().unwrap(),
        "tls = { ca = \"nope/ca.pem\" }",
    );
    let (code, text) = run(&missing);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nope/ca.pem"), "{text}");
    assert!(text.contains("f.toml:6:"), "{text}");
    let plain = pool_config("127.0.0.1:9".parse().unwrap(), "");
    let (code, text) = run(&plain);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("upstream \"b\" has no tls"), "{text}");
    // A literal https:// address gets TLS (and port 443) by itself.
    let literal = plain.replace("https://b", "https://127.0.0.1");
    let (code, text) = run(&literal);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn health_checks_of_a_tls_pool_speak_tls() {
    let pki = Pki::new();
    pki.leaf("backend", &["localhost"]);
    let b = TlsBackend::start(
        "checked",
        server_config(&pki, "backend", &[b"http/1.1"], None),
    );
    let ca = pki.path("ca.crt").display().to_string();
    // mandatory: the server gets traffic only once a check (over TLS) has passed.
    let f = Fulcrum::start(&pool_config(
        b.addr,
        &format!(
            "tls = {{ ca = \"{ca}\" }}\n[upstream.b.health_check]\ninterval = \"200ms\"\nrise = 1\nmandatory = true"
        ),
    ));
    let up = eventually(30, || get(f.addr(), "/x").status == 200);
    assert!(up, "the TLS health check never passed:\n{}", f.log_text());
    assert_eq!(get(f.addr(), "/x").text(), "checked HTTP/1.1");
}
