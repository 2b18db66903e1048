//! PEM files: certificate chains, private keys (PKCS#8, PKCS#1 RSA, SEC1 EC) and
//! CA bundles, each error naming its file.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::inspect::{self, CertInfo};
use super::TlsError;

/// A certificate chain with its key, checked to match, and what its leaf says.
#[derive(Debug, Clone)]
pub struct CertKey {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's dates and names.
    pub info: CertInfo,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, source: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        source,
    }
}

/// Every certificate of a PEM file, leaf first; an error if there is none.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, e),
    })
}

/// The certificates of a CA bundle as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_chain(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCert {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A chain and its key, loaded and checked: the key must belong to the leaf.
pub fn load_cert_key(cert: &Path, key: &Path) -> Result<CertKey, TlsError> {
    let chain = load_chain(cert)?;
    let der = load_key(key)?;
    let signer = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::Key {
            path: key.to_path_buf(),
            source,
        })?;
    let info = inspect::inspect(&chain[0]).map_err(|reason| TlsError::BadCert {
        path: cert.to_path_buf(),
        reason,
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    })?;
    Ok(CertKey {
        certified: Arc::new(certified),
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate and its key for `alg` into `dir`.
    fn write_pair(dir: &Path, name: &str, alg: &'static rcgen::SignatureAlgorithm) {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }

    #[test]
    fn ecdsa_and_ed25519_pairs_load_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_pair(d, "p256", &rcgen::PKCS_ECDSA_P256_SHA256);
        write_pair(d, "p384", &rcgen::PKCS_ECDSA_P384_SHA384);
        write_pair(d, "ed", &rcgen::PKCS_ED25519);
        for name in ["p256", "p384", "ed"] {
            let ck = load_cert_key(
                &d.join(format!("{name}.crt")),
                &d.join(format!("{name}.key")),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ck.info.name, format!("{name}.test"));
        }
        let err = load_cert_key(&d.join("p256.crt"), &d.join("ed.key")).expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn files_without_a_certificate_or_key_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let e = load_chain(&empty).expect_err("no cert");
        assert!(matches!(e, TlsError::NoCert { .. }), "{e}");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let e = load_key(&empty).expect_err("no key");
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        let e = load_chain(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(e.to_string().starts_with("cannot read"), "{e}");
    }
}
