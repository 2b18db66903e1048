//! nginx's `ssl_*` directives (http and server levels) into a server's `tls` table:
//! the certificate, its key and client verification are carried; what fulcrum's
//! TLS does differently is warned (`docs/convert.md` says which and why). The files
//! a `tls` table names are loaded by fulcrum's own validation before it is written:
//! a server whose TLS cannot be served loses its TLS listeners (fail closed: the site
//! is never served in cleartext on its TLS port).

use std::path::Path;

use super::parser::Directive;
use super::values::toml_str as q;
use super::Cx;

/// A file an `ssl_*` directive names: its path (nginx's prefix applied) and where.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub path: String,
    pub at: String,
}

/// The `ssl_*` settings in force at a level; a level's own value replaces the
/// inherited one, each on its own, as nginx merges them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SslConv {
    pub cert: Option<File>,
    pub key: Option<File>,
    pub client_ca: Option<File>,
    pub trusted: Option<File>,
    /// `ssl_verify_client`'s value.
    pub verify: Option<String>,
    /// The old `ssl on`: every listen address of the server is TLS.
    pub on: bool,
    /// Why the TLS cannot be served as nginx does (a file fulcrum cannot read the way
    /// nginx would, a guard fulcrum cannot enforce), with where it was said.
    pub broken: Option<String>,
    /// The file directives the current level has set itself (a second one there is
    /// nginx's second certificate, which fulcrum does not have).
    pub own: Vec<String>,
}

/// A server's `tls` table, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    pub client_auth: &'static str,
}

impl ServerTls {
    /// The inline TOML table.
    pub fn toml(&self) -> String {
        let mut parts = vec![
            format!("cert = {}", q(&self.cert)),
            format!("key = {}", q(&self.key)),
        ];
        if let Some(ca) = &self.client_ca {
            parts.push(format!("client_ca = {}", q(ca)));
        }
        parts.push(format!("client_auth = {}", q(self.client_auth)));
        format!("{{ {} }}", parts.join(", "))
    }
}

/// The versions fulcrum speaks.
const VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

/// Takes `d` if it is an `ssl_*` directive of the http or server level (true),
/// carrying or warning it.
pub(crate) fn directive(cx: &mut Cx, d: &Directive, context: &str, conf: &mut SslConv) -> bool {
    let name = d.name.as_str();
    if !(name == "ssl" || name.starts_with("ssl_")) || !matches!(context, "http" | "server") {
        return false;
    }
    let arg = d.args.first().map(String::as_str).unwrap_or("");
    match name {
        "ssl_certificate"
        | "ssl_certificate_key"
        | "ssl_client_certificate"
        | "ssl_trusted_certificate" => file(cx, d, conf),
        "ssl_verify_client" => match arg {
            "on" | "optional" | "off" => {
                conf.verify = Some(arg.to_string());
                cx.carry(d);
            }
            "optional_no_ca" => {
                conf.verify = Some(arg.to_string());
                cx.warn(d, "optional_no_ca (a certificate asked for but not verified) is not something fulcrum does: with a client CA it is \"optional\" (a certificate that does not chain to it is refused in the handshake), without one \"off\" (no certificate is asked for, $ssl_client_verify is NONE)");
            }
            _ => cx.warn(d, "has a value nginx would reject: ignored"),
        },
        "ssl" => {
            conf.on = arg == "on";
            cx.carry(d);
        }
        "ssl_protocols" => protocols(cx, d),
        "ssl_crl" => {
            let why = format!(
                "ssl_crl ({}) refuses revoked client certificates, which fulcrum cannot check",
                d.at()
            );
            cx.warn(d, "lists revoked client certificates, which fulcrum cannot check: the server's TLS listeners are not served (fail closed)");
            conf.broken.get_or_insert(why);
        }
        _ => same_or_warned(cx, d, arg),
    }
    true
}

/// The `ssl_*` settings fulcrum has no key for: silent where its behaviour is the
/// one the value asks for, warned otherwise.
fn same_or_warned(cx: &mut Cx, d: &Directive, arg: &str) {
    let same = match d.name.as_str() {
        "ssl_prefer_server_ciphers"
        | "ssl_session_tickets"
        | "ssl_stapling"
        | "ssl_early_data"
        | "ssl_reject_handshake" => arg == "off",
        "ssl_session_cache" => matches!(arg, "off" | "none"),
        "ssl_ecdh_curve" => arg == "auto",
        _ => false,
    };
    if same {
        cx.carry(d);
        return;
    }
    let why = match d.name.as_str() {
        "ssl_ciphers" | "ssl_prefer_server_ciphers" => "is not configurable in fulcrum: rustls' suites (AES-GCM, ChaCha20-Poly1305, ECDHE only) in the client's order of preference apply",
        "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_session_ticket_key" => "is session resumption, which fulcrum does not do: every handshake is a full one",
        "ssl_dhparam" => "is for DHE suites, which fulcrum does not offer (ECDHE only): ignored",
        "ssl_ecdh_curve" => "is not configurable in fulcrum: X25519, P-256 and P-384 are offered",
        "ssl_stapling" | "ssl_stapling_verify" | "ssl_stapling_file" | "ssl_stapling_responder" => "is OCSP stapling, which fulcrum does not do: clients check revocation themselves",
        "ssl_handshake_timeout" => "is not carried: the server's client_header_timeout bounds the handshake",
        "ssl_verify_depth" => "is not carried: fulcrum verifies client chains of any depth up to client_ca",
        "ssl_buffer_size" => "is not configurable in fulcrum: rustls sizes its records",
        "ssl_early_data" => "is TLS 1.3 early data, which fulcrum does not accept: clients send it again after the handshake",
        "ssl_reject_handshake" => "is not carried: fulcrum completes the handshake with the address's first certificate for unknown names",
        _ => "has no fulcrum equivalent: ignored",
    };
    cx.warn(d, why);
}

/// `ssl_protocols`: silent when every version named is one fulcrum speaks and both
/// are named; otherwise the difference is warned.
fn protocols(cx: &mut Cx, d: &Directive) {
    let dropped: Vec<&str> = d
        .args
        .iter()
        .map(String::as_str)
        .filter(|v| !VERSIONS.contains(v))
        .collect();
    let added: Vec<&str> = VERSIONS
        .into_iter()
        .filter(|v| !d.args.iter().any(|a| a == v))
        .collect();
    if dropped.is_empty() && added.is_empty() {
        cx.carry(d);
        return;
    }
    let mut parts = Vec::new();
    if !dropped.is_empty() {
        parts.push(format!("{} not offered", dropped.join(" ")));
    }
    if !added.is_empty() {
        parts.push(format!("{} offered too", added.join(" ")));
    }
    cx.warn(
        d,
        format!(
            "names versions fulcrum does not follow: it speaks TLSv1.2 and TLSv1.3 only ({})",
            parts.join("; ")
        ),
    );
}

/// A file directive: carried (relative paths against nginx's prefix) unless it names
/// what fulcrum cannot read (variables, `data:`, engines), which breaks the TLS.
fn file(cx: &mut Cx, d: &Directive, conf: &mut SslConv) {
    let SslConv {
        own,
        broken,
        cert,
        key,
        client_ca,
        trusted,
        ..
    } = conf;
    let slot = match d.name.as_str() {
        "ssl_certificate" => cert,
        "ssl_certificate_key" => key,
        "ssl_client_certificate" => client_ca,
        _ => trusted,
    };
    let Some(raw) = d.args.first().filter(|_| d.args.len() == 1) else {
        cx.warn(d, "needs one file: ignored");
        return;
    };
    if own.contains(&d.name) {
        cx.warn(d, "is a second one at this level (nginx picks one per key type): fulcrum serves one certificate per server, the first");
        return;
    }
    own.push(d.name.clone());
    if raw.contains('$') || raw.starts_with("data:") || raw.starts_with("engine:") {
        cx.warn(d, format!("\"{raw}\" is not a file fulcrum can load (variables, data:, engine:): the server's TLS listeners are not served (fail closed)"));
        broken.get_or_insert(format!(
            "{} ({}) cannot be loaded by fulcrum",
            d.name,
            d.at()
        ));
        return;
    }
    *slot = Some(File {
        path: cx.prefix.join(raw).display().to_string(),
        at: d.at(),
    });
    cx.carry(d);
}

/// The `tls` table of a server with TLS listeners, or why it cannot have one.
pub(crate) fn server_tls(conf: &SslConv) -> Result<ServerTls, String> {
    if let Some(why) = &conf.broken {
        return Err(why.clone());
    }
    let (Some(cert), Some(key)) = (&conf.cert, &conf.key) else {
        return Err(match &conf.cert {
            None => "no ssl_certificate is defined for it".to_string(),
            Some(c) => format!("ssl_certificate ({}) has no ssl_certificate_key", c.at),
        });
    };
    let verify = conf.verify.as_deref().unwrap_or("off");
    let ca = conf.client_ca.as_ref().or(conf.trusted.as_ref());
    let (client_ca, client_auth) = match (verify, ca) {
        ("off", _) => (None, "off"),
        ("optional_no_ca", None) => (None, "off"),
        (_, None) => {
            return Err(format!(
                "ssl_verify_client {verify} has no ssl_client_certificate to verify against"
            ))
        }
        ("on", Some(ca)) => (Some(ca.path.clone()), "required"),
        (_, Some(ca)) => (Some(ca.path.clone()), "optional"),
    };
    let tls = ServerTls {
        cert: cert.path.clone(),
        key: key.path.clone(),
        client_ca,
        client_auth,
    };
    loads(&format!(
        "[[server]]\nlisten = [\"127.0.0.1:443\"]\ntls = {}\n",
        tls.toml()
    ))?;
    Ok(tls)
}

/// Whether fulcrum's validation accepts `fragment` (a `[[server]]` or
/// `[upstream.x]` naming TLS files): the files exist and load. The error otherwise.
pub(crate) fn loads(fragment: &str) -> Result<(), String> {
    let toml = format!("[admin]\nlisten = \"off\"\n{fragment}");
    crate::config::parse(Path::new("tls.toml"), &toml)
        .map(drop)
        .map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| d.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
}
