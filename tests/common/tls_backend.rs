//! Real TLS backends for the upstream TLS tests: a rustls server config from a
//! [`Pki`]'s files (optionally requiring client certificates from another one) and a
//! tokio-rustls + hyper server that counts the TLS connections it accepted. The CA
//! itself is `tests/common/tls.rs`'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::tls_client::Pki;

/// A server config for `NAME.crt`/`NAME.key` of `pki`, offering `alpn`; with
/// `client_ca`, client certificates signed by that PKI are required.
pub fn server_config(
    pki: &Pki,
    name: &str,
    alpn: &[&[u8]],
    client_ca: Option<&Pki>,
) -> ServerConfig {
    let provider = fulcrum::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = std::fs::read(pki.path(&format!("{name}.crt"))).expect("cert");
    let key = std::fs::read(pki.path(&format!("{name}.key"))).expect("key");
    let chain = pem_chain(&chain);
    let key = PrivateKeyDer::from_pem_slice(&key).expect("key pem");
    let mut cfg = builder.with_single_cert(chain, key).expect("cert");
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg
}

fn pem_chain(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("chain pem")
}

/// A TLS backend on 127.0.0.1:0 answering `NAME VERSION` (the HTTP version the
/// request came in) and counting the TLS connections it accepted.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl TlsBackend {
    pub fn start(name: &'static str, config: ServerConfig) -> TlsBackend {
        let (rt, listener, addr) = super::common::backend_runtime();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    // A failed handshake (an untrusted client, say) just ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            let body = format!("{name} {:?}", req.version());
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            connections,
            _rt: rt,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
