//! The TLS side of the test harness: a test CA (rcgen) that writes leaf and client
//! certificates as PEM files, and a blocking rustls client that connects with a
//! given SNI name and ALPN list and sends HTTP/1.1 requests. Included by
//! `tests/tls_server.rs` (`#[path]`), so other test crates do not build it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A test CA and the files it signs, in one temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME.crt` and `NAME.key`: a leaf for `sans` signed by the CA, valid
    /// `from`..`until` when given; returns the certificate's DER.
    pub fn leaf_dated(
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

    pub fn leaf(&self, name: &str, sans: &[&str]) -> Vec<u8> {
        self.leaf_dated(name, sans, sans.first().copied().unwrap_or("x"), None)
    }

    /// `tls = { ... }` for `NAME.crt`/`NAME.key` with absolute paths, plus `extra`.
    pub fn tls(&self, name: &str, extra: &str) -> String {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\"{extra} }}",
            self.path(&format!("{name}.crt")).display(),
            self.path(&format!("{name}.key")).display()
        )
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .expect("root");
        roots
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    fulcrum::tls::provider()
}

/// A client config trusting the test CA, offering `alpn`, with an optional client
/// certificate (`NAME` of files in the PKI).
pub fn client_config(pki: &Pki, alpn: &[&[u8]], client: Option<&str>) -> ClientConfig {
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

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake as `name` (SNI, and the name verified).
pub fn connect(addr: SocketAddr, cfg: ClientConfig, name: &str) -> std::io::Result<Tls> {
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
pub fn served_name(s: &Tls) -> String {
    let der = &s.conn.peer_certificates().expect("server certificate")[0];
    fulcrum::tls::inspect::inspect(der).expect("parse").name
}

/// Sends a GET on the TLS stream and reads the response (Content-Length framed):
/// status and body.
pub fn tls_get(s: &mut Tls, path: &str, host: &str) -> (u16, String) {
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
