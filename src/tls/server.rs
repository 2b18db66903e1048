//! Downstream TLS: one rustls `ServerConfig` per `[[server]]` (its certificate and
//! its client-certificate policy), and the handshake of a listener whose servers
//! share one address: the ClientHello is read first ([`LazyConfigAcceptor`]), its
//! SNI picks the server (the caller applies nginx's `server_name` rules), and that
//! server's config finishes the handshake — so each server has its own
//! certificate and its own `client_auth`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::certs::{self, CertKey};
use super::inspect::CertInfo;
use super::TlsError;

/// Whether clients must present a certificate (nginx `ssl_verify_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    Off,
    /// Asked for; a client without one gets in (`$ssl_client_verify` = NONE), one
    /// with a certificate that does not verify is refused.
    Optional,
    /// A client without a certificate that verifies is refused in the handshake.
    Required,
}

/// The ALPN protocols offered, in preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One virtual server's TLS: the rustls config its handshakes finish with, and its
/// certificate's facts (metrics, warnings).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Its config.
    pub config: Arc<ServerConfig>,
    /// Its certificate's leaf.
    pub cert: CertInfo,
}

impl ServerTls {
    /// Builds the config of `cert` with `client_auth` against the CAs in
    /// `client_ca` (needed unless `client_auth` is off).
    pub fn new(
        cert: CertKey,
        client_ca: Option<&Path>,
        client_auth: ClientAuth,
    ) -> Result<ServerTls, TlsError> {
        let builder = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::VERSIONS)?;
        let builder = match (client_ca, client_auth) {
            (Some(path), ClientAuth::Optional | ClientAuth::Required) => {
                let roots = Arc::new(certs::load_roots(path)?);
                let mut v = WebPkiClientVerifier::builder_with_provider(roots, super::provider());
                if client_auth == ClientAuth::Optional {
                    v = v.allow_unauthenticated();
                }
                let v = v.build().map_err(|source| TlsError::Verifier {
                    path: path.to_path_buf(),
                    source,
                })?;
                builder.with_client_cert_verifier(v)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified)));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // Every handshake is a full one (see docs/tls.md): no session cache, no tickets.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            cert: cert.info,
        })
    }
}

/// What a finished handshake says, for the request path (`$ssl_*`, the access log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// "TLSv1.3" or "TLSv1.2".
    pub protocol: &'static str,
    /// The SNI name the client sent, "" without one.
    pub server_name: String,
    /// "SUCCESS" (a certificate that verified), or "NONE".
    pub client_verify: &'static str,
    /// The client certificate's subject, RFC 2253; "" without one.
    pub client_s_dn: String,
    /// ALPN chose h2.
    pub h2: bool,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// While reading the ClientHello (not TLS, a version below 1.2, a reset, ...).
    #[error("reading the ClientHello: {0}")]
    Hello(#[source] io::Error),
    /// The address has no TLS config (any more: a reload made it cleartext).
    #[error("no TLS config for this address")]
    NoConfig,
    /// While finishing it (no shared cipher, a refused client certificate, ...).
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
}

/// Runs a server-side handshake on `io`: `pick` gets the SNI name (lowercased;
/// `None` without SNI or for an IP literal) and returns the config to finish with
/// (`None`: refuse).
pub async fn accept<IO, F>(io: IO, pick: F) -> Result<(TlsStream<IO>, TlsFacts), HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Option<&str>) -> Option<Arc<ServerConfig>>,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(HandshakeError::Hello)?;
    let sni = start
        .client_hello()
        .server_name()
        .filter(|n| n.parse::<std::net::IpAddr>().is_err())
        .map(str::to_ascii_lowercase);
    let config = pick(sni.as_deref()).ok_or(HandshakeError::NoConfig)?;
    let stream = start
        .into_stream(config)
        .await
        .map_err(HandshakeError::Handshake)?;
    let facts = facts(&stream, sni);
    Ok((stream, facts))
}

fn facts<IO>(stream: &TlsStream<IO>, sni: Option<String>) -> TlsFacts {
    let (_, conn) = stream.get_ref();
    let protocol = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let leaf = conn.peer_certificates().and_then(|c| c.first());
    TlsFacts {
        protocol,
        server_name: sni.unwrap_or_default(),
        client_verify: if leaf.is_some() { "SUCCESS" } else { "NONE" },
        client_s_dn: leaf
            .and_then(|c| super::inspect::subject_dn(c))
            .unwrap_or_default(),
        h2: conn.alpn_protocol() == Some(b"h2"),
    }
}
