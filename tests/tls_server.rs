//! Downstream TLS end to end: a real fulcrum process, certificates made here with
//! rcgen (a test CA, leaf certificates, client certificates), and a rustls client.
//! SNI picks each server's certificate (exact and wildcard names), no SNI gets the
//! first server's, HTTP/1.1 and h2 by ALPN reach the backend with `$ssl_*` set,
//! TLS 1.1 and a missing required client certificate fail the handshake (counted),
//! certificates rotate on a live listener, and `fulcrum check` loads them.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A test CA and the files it signs, in one temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "fulcrum test CA");
        let ca_key = KeyPair::generate().expect("key");
        let ca = p.self_signed(&ca_key).expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write ca");
        Pki { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME.crt` and `NAME.key`: a leaf for `sans` signed by the CA, valid
    /// `from`..`until` when given; returns the certificate's DER.
    fn leaf_dated(
        &self,
        name: &str,
        sans: &[&str],
        cn: &str,
        dates: Option<(i32, i32)>,
    ) -> Vec<u8> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "Acme, Inc");
        if let Some((from, until)) = dates {
            p.not_before = rcgen::date_time_ymd(from, 1, 1);
            p.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
        cert.der().to_vec()
    }

    fn leaf(&self, name: &str, sans: &[&str]) -> Vec<u8> {
        self.leaf_dated(name, sans, sans.first().copied().unwrap_or("x"), None)
    }

    /// `tls = { ... }` for `NAME.crt`/`NAME.key` with absolute paths, plus `extra`.
    fn tls(&self, name: &str, extra: &str) -> String {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\"{extra} }}",
            self.path(&format!("{name}.crt")).display(),
            self.path(&format!("{name}.key")).display()
        )
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .expect("root");
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    fulcrum::tls::provider()
}

/// A client config trusting the test CA, offering `alpn`, with an optional client
/// certificate (`NAME` of files in the PKI).
fn client_config(pki: &Pki, alpn: &[&[u8]], client: Option<&str>) -> ClientConfig {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots());
    let mut c = match client {
        None => b.with_no_client_auth(),
        Some(name) => {
            let chain =
                fulcrum::tls::certs::load_chain(&pki.path(&format!("{name}.crt"))).expect("chain");
            let key: PrivateKeyDer<'static> =
                fulcrum::tls::certs::load_key(&pki.path(&format!("{name}.key"))).expect("key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake as `name` (SNI, and the name verified).
fn connect(addr: SocketAddr, cfg: ClientConfig, name: &str) -> std::io::Result<Tls> {
    let server: ServerName<'static> = ServerName::try_from(name.to_string()).expect("name");
    let conn = ClientConnection::new(Arc::new(cfg), server).expect("client");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The first name of the certificate the server presented.
fn served_name(s: &Tls) -> String {
    let der = &s.conn.peer_certificates().expect("server certificate")[0];
    fulcrum::tls::inspect::inspect(der).expect("parse").name
}

/// Sends a GET on the TLS stream and reads the response (Content-Length framed):
/// status and body.
fn tls_get(s: &mut Tls, path: &str, host: &str) -> (u16, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    s.flush().expect("flush");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).to_string())
}

/// A backend answering with the TLS facts fulcrum passed in headers.
fn facts_backend() -> Backend {
    Backend::with(Arc::new(|parts: &http::request::Parts, _: &Bytes| {
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let body = format!(
            "proto={} sni={} verify={} dn={} scheme={} version={:?}",
            h("x-proto"),
            h("x-sni"),
            h("x-verify"),
            h("x-dn"),
            h("x-scheme"),
            parts.version
        );
        http::Response::new(Full::new(Bytes::from(body)))
    }))
}

const SET_HEADERS: &str = r#"proxy_set_header = { X-Proto = "$ssl_protocol", X-Sni = "$ssl_server_name", X-Verify = "$ssl_client_verify", X-Dn = "$ssl_client_s_dn", X-Scheme = "$scheme" }"#;

/// Two TLS servers on one address (`a.example.com`, `*.wild.example`), each
/// proxying to `backend` with the `$ssl_*` headers; `a_extra` goes into a's `tls`.
fn two_servers(pki: &Pki, backend: SocketAddr, a_extra: &str, b_extra: &str) -> String {
    pki.leaf("a", &["a.example.com", "127.0.0.1"]);
    pki.leaf("w", &["*.wild.example"]);
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{backend}"]
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["a.example.com"]
{}
[[server.location]]
path = "/"
proxy_pass = "http://b"
{SET_HEADERS}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["*.wild.example"]
{}
[[server.location]]
path = "/"
proxy_pass = "http://b"
{SET_HEADERS}
"#,
        pki.tls("a", a_extra),
        pki.tls("w", b_extra)
    )
}

fn scrape(f: &Fulcrum) -> String {
    let admin = f.admin.expect("admin");
    get(admin, "/metrics").text()
}

/// HTTP/1.1 over TLS end to end: the certificate of the server the SNI names
/// (exact and wildcard), the `$ssl_*` variables and `$scheme` at the backend.
#[test]
fn sni_picks_each_servers_certificate_and_http1_reaches_the_backend() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let http11: &[&[u8]] = &[b"http/1.1"];

    let mut a = connect(f.addr(), client_config(&pki, http11, None), "a.example.com").expect("a");
    assert_eq!(served_name(&a), "a.example.com");
    let (status, body) = tls_get(&mut a, "/", "a.example.com");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "proto=TLSv1.3 sni=a.example.com verify=NONE dn=- scheme=https version=HTTP/1.1"
    );
    // Keep-alive on the same TLS connection.
    assert_eq!(tls_get(&mut a, "/again", "a.example.com").0, 200);

    let mut w = connect(
        f.addr(),
        client_config(&pki, http11, None),
        "x.wild.example",
    )
    .expect("w");
    assert_eq!(served_name(&w), "*.wild.example");
    let (status, body) = tls_get(&mut w, "/", "x.wild.example");
    assert_eq!(status, 200);
    assert!(body.contains("sni=x.wild.example"), "{body}");
}

/// No SNI, an IP literal (no SNI is sent for one) and an unknown name all get the
/// first server's certificate.
#[test]
fn no_sni_ip_and_unknown_names_get_the_first_servers_certificate() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let mut cfg = client_config(&pki, &[], None);
    cfg.enable_sni = false;
    let mut s = connect(f.addr(), cfg, "a.example.com").expect("no sni");
    assert_eq!(served_name(&s), "a.example.com");
    let (status, body) = tls_get(&mut s, "/", "a.example.com");
    assert_eq!(status, 200);
    assert!(
        body.contains("sni=- "),
        "no SNI renders empty (the header is not sent): {body}"
    );

    let s = connect(f.addr(), client_config(&pki, &[], None), "127.0.0.1").expect("ip");
    assert_eq!(served_name(&s), "a.example.com");

    // An unknown name: the default certificate, which this client cannot verify.
    let err = connect(f.addr(), client_config(&pki, &[], None), "other.test");
    assert!(
        err.is_err(),
        "the default certificate does not name other.test"
    );
}
