//! `[upstream.NAME] tls`: `true` or `{ verify, ca, server_name, cert, key }`, and
//! the TLS a `https://` proxy_pass turns on. The CA and client certificate files are
//! loaded here, so one that does not load fails `fulcrum check` and a reload.

use std::path::Path;

use super::{span_of, Validator};
use crate::config::schema::{SpannedValue, UpstreamTlsSection};
use crate::config::{Protocol, UpstreamTls};
use crate::tls::client::{client_config, ClientOptions};

impl Validator<'_> {
    /// The pool's TLS, `None` when it has none (or after an error).
    pub(super) fn upstream_tls(
        &mut self,
        base: &Path,
        v: &Option<SpannedValue>,
        protocol: Protocol,
    ) -> Option<UpstreamTls> {
        let v = v.as_ref()?;
        let section = match v.get_ref() {
            toml::Value::Boolean(false) => return None,
            toml::Value::Boolean(true) => UpstreamTlsSection::default(),
            t @ toml::Value::Table(_) => match t.clone().try_into::<UpstreamTlsSection>() {
                Ok(s) => s,
                Err(e) => {
                    let msg = e.message().trim_end().to_string();
                    self.r.error(span_of(v), format!("tls: {msg}"));
                    return None;
                }
            },
            _ => {
                self.r.error(
                    span_of(v),
                    "tls is true, false or { verify, ca, server_name, cert, key }",
                );
                return None;
            }
        };
        if section.cert.is_some() != section.key.is_some() {
            self.r.error(span_of(v), "tls cert and key go together");
            return None;
        }
        let tls = self.tls_client(base, &section, protocol);
        match tls {
            Ok(t) => {
                if !t.verify {
                    self.r.warn(
                        span_of(v),
                        "tls verify = false: the servers' certificates are not checked",
                    );
                }
                Some(t)
            }
            Err(e) => {
                self.r.error(span_of(v), e.to_string());
                None
            }
        }
    }

    /// Default upstream TLS for a pool a `https://` proxy_pass reaches.
    pub(super) fn default_upstream_tls(
        &mut self,
        protocol: Protocol,
    ) -> Result<UpstreamTls, crate::tls::TlsError> {
        self.tls_client(Path::new(""), &UpstreamTlsSection::default(), protocol)
    }

    fn tls_client(
        &mut self,
        base: &Path,
        s: &UpstreamTlsSection,
        protocol: Protocol,
    ) -> Result<UpstreamTls, crate::tls::TlsError> {
        let ca = s.ca.as_ref().map(|c| base.join(c));
        let identity = s
            .cert
            .as_ref()
            .zip(s.key.as_ref())
            .map(|(c, k)| (base.join(c), base.join(k)));
        let verify = s.verify.unwrap_or(true);
        let client = client_config(ClientOptions {
            verify,
            ca: ca.as_deref(),
            identity: identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            alpn: match protocol {
                Protocol::H2 => b"h2",
                Protocol::Http1 => b"http/1.1",
            },
        })?;
        Ok(UpstreamTls {
            verify,
            ca,
            server_name: s.server_name.clone(),
            identity,
            client,
        })
    }
}
