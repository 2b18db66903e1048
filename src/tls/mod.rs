//! TLS with rustls, knowing no config type: the crypto provider and protocol
//! versions fulcrum allows ([`provider`], [`VERSIONS`]), PEM loading ([`certs`]),
//! what a certificate says ([`inspect`]), and the downstream side: per-server
//! `ServerConfig`s and the handshake that picks one by SNI ([`server`]).
//!
//! It sits at the bottom layer so that `config` can load and check certificates
//! while it validates (a broken one fails `fulcrum check` and a reload) and
//! `runtime` can accept with them; an upstream TLS client reuses the provider,
//! [`certs`] and [`TlsError`].
//!
//! The provider is ring: it builds with a C compiler alone (aws-lc-rs needs cmake
//! and, on some targets, nasm), see docs/tls.md.

pub mod certs;
pub mod client;
pub mod inspect;
pub mod server;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

/// TLS 1.3 and 1.2: nothing older is offered or accepted (SPEC §2).
pub static VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider every TLS config of fulcrum is built with (ring), made once.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Why certificates, keys or a TLS config could not be loaded; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read \"{}\": {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("invalid PEM in \"{}\": {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("no certificate in \"{}\"", path.display())]
    NoCert {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("no private key in \"{}\"", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind the provider cannot sign with.
    #[error("unsupported private key in \"{}\": {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the key in \"{}\" does not match the certificate in \"{}\"", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate that does not parse as X.509.
    #[error("invalid certificate in \"{}\": {reason}", path.display())]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A CA file whose certificates cannot verify anything.
    #[error("client CA \"{}\": {source}", path.display())]
    Verifier {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the settings (a bug: the versions and provider are fixed).
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}
