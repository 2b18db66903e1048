//! The upstream side: the rustls `ClientConfig` a pool's connections are made with
//! (trust anchors, an optional client certificate, ALPN), and the name each server
//! is verified as.
//!
//! Without a `ca`, servers are verified against the Mozilla roots compiled in
//! (`webpki-roots`): they are there in a scratch or distroless image too, where a
//! system store often is not. `verify = false` keeps the handshake's signature
//! checks but accepts any certificate (nginx's default `proxy_ssl_verify off`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::certs::{load_chain, load_key, load_roots};
use super::TlsError;

/// What a pool's TLS client is made of.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions<'a> {
    /// Verify the server's certificate chain and name.
    pub verify: bool,
    /// Trust anchors instead of the built-in roots.
    pub ca: Option<&'a Path>,
    /// A client certificate chain and its key (for servers that demand one).
    pub identity: Option<(&'a Path, &'a Path)>,
    /// ALPN protocol offered: `h2` for HTTP/2 pools, `http/1.1` otherwise.
    pub alpn: &'a [u8],
}

/// Builds the client config every connection of a pool shares.
pub fn client_config(o: ClientOptions<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::VERSIONS)?;
    let builder = if o.verify {
        let roots = match o.ca {
            Some(ca) => load_roots(ca)?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    };
    let mut config = match o.identity {
        Some((cert, key)) => {
            let chain = load_chain(cert)?;
            let der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|source| TlsError::Key {
                    path: key.to_path_buf(),
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![o.alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The name a server is verified as (and sent as SNI, unless it is an address):
/// `server_name` when set, else the host the server was written with.
pub fn server_name(configured: Option<&str>, written: &str) -> Option<ServerName<'static>> {
    let host = match configured {
        Some(n) => n,
        None => host_of(written),
    };
    ServerName::try_from(host.to_string()).ok()
}

/// `host` of `host[:port]` or `[v6][:port]`.
fn host_of(written: &str) -> &str {
    if let Some(rest) = written.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match written.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => written,
    }
}

/// `verify = false`: every certificate is accepted; signatures are still checked so
/// the handshake itself stays sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_written_host() {
        let name = |c, w| server_name(c, w).map(|n| n.to_str().into_owned());
        assert_eq!(name(None, "api.test:8443").as_deref(), Some("api.test"));
        assert_eq!(name(None, "api.test").as_deref(), Some("api.test"));
        assert_eq!(name(None, "10.0.0.1:443").as_deref(), Some("10.0.0.1"));
        assert_eq!(name(None, "[::1]:443").as_deref(), Some("::1"));
        assert_eq!(
            name(Some("other.test"), "10.0.0.1").as_deref(),
            Some("other.test")
        );
    }
}
