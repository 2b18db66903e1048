//! `[[server]] tls`: the files are loaded and checked here, so a certificate that
//! does not load fails `fulcrum check`, the start and a reload (which then keeps
//! the running config and its certificates), each error naming its file.

use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::{span_of, Validator};
use crate::config::{schema, ServerTlsConf, VirtualServer};
use crate::tls::certs::load_cert_key;
use crate::tls::server::{ClientAuth, ServerTls};
use crate::tls::TlsError;

impl Validator<'_> {
    /// Loads a server's certificate, key and client CA; `None` after an error.
    pub(super) fn server_tls(
        &mut self,
        base: &Path,
        t: &Spanned<schema::ServerTlsSection>,
    ) -> Option<ServerTlsConf> {
        let t = t.get_ref();
        let cert = self.tls_path(base, &t.cert, "cert")?;
        let key = self.tls_path(base, &t.key, "key")?;
        let client_ca = match &t.client_ca {
            Some(c) => Some(self.tls_path(base, c, "client_ca")?),
            None => None,
        };
        let client_auth = self.client_auth(t, client_ca.is_some())?;
        let loaded = load_cert_key(&cert, &key)
            .and_then(|ck| ServerTls::new(ck, client_ca.as_deref(), client_auth));
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                // At the key that names the file the error is about.
                let at = match error_file(&e) {
                    Some(p) if *p == key => span_of(&t.key),
                    Some(p) if Some(p) == client_ca.as_ref() => {
                        t.client_ca.as_ref().map_or(span_of(&t.cert), span_of)
                    }
                    _ => span_of(&t.cert),
                };
                self.r.error(at, e.to_string());
                return None;
            }
        };
        self.validity_warning(&t.cert, &cert, &loaded);
        Some(ServerTlsConf {
            cert,
            key,
            client_ca,
            client_auth,
            loaded,
        })
    }

    fn tls_path(&mut self, base: &Path, p: &Spanned<String>, what: &str) -> Option<PathBuf> {
        if p.get_ref().is_empty() {
            self.r
                .error(span_of(p), format!("tls {what} must not be empty"));
            return None;
        }
        Some(base.join(p.get_ref()))
    }

    /// `client_auth`: "required" by default once `client_ca` is given (its
    /// certificates are there to be verified against), "off" without one.
    fn client_auth(&mut self, t: &schema::ServerTlsSection, has_ca: bool) -> Option<ClientAuth> {
        let Some(a) = &t.client_auth else {
            return Some(if has_ca {
                ClientAuth::Required
            } else {
                ClientAuth::Off
            });
        };
        let auth = match a.get_ref().as_str() {
            "off" => ClientAuth::Off,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                self.r.error(
                    span_of(a),
                    format!("invalid client_auth \"{other}\" (expected \"off\", \"optional\" or \"required\")"),
                );
                return None;
            }
        };
        if auth != ClientAuth::Off && !has_ca {
            self.r.error(
                span_of(a),
                format!("client_auth = \"{}\" needs client_ca", a.get_ref()),
            );
            return None;
        }
        Some(auth)
    }

    /// An expired or not yet valid certificate still loads (clients decide), but
    /// is said, with its dates.
    fn validity_warning(&mut self, at: &Spanned<String>, path: &Path, tls: &ServerTls) {
        let now = chrono::Utc::now().timestamp();
        let (from, until) = (tls.cert.not_before, tls.cert.not_after);
        let state = if now > until {
            "has expired"
        } else if now < from {
            "is not yet valid"
        } else {
            return;
        };
        self.r.warn(
            span_of(at),
            format!(
                "certificate \"{}\" {state} (valid from {} until {})",
                path.display(),
                date(from),
                date(until)
            ),
        );
    }

    /// Servers sharing a listen address are all TLS or all cleartext: one socket
    /// cannot be both (nginx's `listen ... ssl` is per address too).
    pub(super) fn check_tls_mix(
        &mut self,
        sections: &[schema::ServerSection],
        servers: &[VirtualServer],
        addr: std::net::SocketAddr,
        idx: &[usize],
    ) {
        let Some(&first) = idx.first() else { return };
        let tls = servers[first].tls.is_some() || sections[first].tls.is_some();
        for &i in &idx[1..] {
            if (servers[i].tls.is_some() || sections[i].tls.is_some()) != tls {
                self.r.error(
                    span_of(&sections[i].listen),
                    format!("servers on {addr} must all have tls or none have it"),
                );
                return;
            }
        }
    }
}

fn error_file(e: &TlsError) -> Option<&PathBuf> {
    match e {
        TlsError::Read { path, .. }
        | TlsError::Pem { path, .. }
        | TlsError::NoCert { path }
        | TlsError::NoKey { path }
        | TlsError::Key { path, .. }
        | TlsError::BadCert { path, .. }
        | TlsError::Verifier { path, .. } => Some(path),
        TlsError::Mismatch { key, .. } => Some(key),
        TlsError::Config(_) => None,
    }
}

fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}
