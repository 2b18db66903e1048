//! nginx's `proxy_ssl_*` (and `grpc_ssl_*`) directives, set per location in nginx,
//! into the `tls` table of the pool the location reaches (fulcrum sets TLS per pool).

use super::parser::Directive;
use super::values::toml_str as q;
use super::Cx;

/// The upstream TLS settings in force at a level (nginx's defaults when `None`:
/// no verification, the name `$proxy_host`, no client certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UpSsl {
    pub verify: Option<bool>,
    /// CA bundle (nginx's prefix applied).
    pub ca: Option<String>,
    /// `proxy_ssl_name`: the name verified (and sent as SNI).
    pub name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Takes `proxy_ssl_*` / `grpc_ssl_*` (`rest` is the name after `proxy_`/`grpc_`),
/// carrying or warning it; false when `rest` is not an `ssl_` one.
pub(crate) fn directive(cx: &mut Cx, d: &Directive, rest: &str, conf: &mut UpSsl) -> bool {
    if !rest.starts_with("ssl") {
        return false;
    }
    let arg = d.args.first().map(String::as_str).unwrap_or("");
    let path = |cx: &Cx| Some(cx.prefix.join(arg).display().to_string());
    let on_off = matches!(arg, "on" | "off") && d.args.len() == 1;
    match rest {
        "ssl_verify" if on_off => conf.verify = Some(arg == "on"),
        "ssl_trusted_certificate" if !arg.contains('$') => conf.ca = path(cx),
        "ssl_certificate" if !arg.contains('$') => conf.cert = path(cx),
        "ssl_certificate_key" if !arg.contains('$') => conf.key = path(cx),
        "ssl_name" if arg == "$proxy_host" => conf.name = None,
        "ssl_name" if !arg.contains('$') && !arg.is_empty() => conf.name = Some(arg.to_string()),
        // fulcrum sends SNI (the server's host, or ssl_name) unless it is an address.
        "ssl_server_name" if arg == "on" => {}
        "ssl_server_name" if arg == "off" => {
            cx.warn(d, "off: fulcrum sends the name as SNI anyway (the server's host as written, or proxy_ssl_name), unless it is an IP address");
            return true;
        }
        // rustls resumes sessions to the servers, as nginx's default.
        "ssl_session_reuse" if arg == "on" => {}
        "ssl_protocols" if d.args.iter().all(|a| a == "TLSv1.2" || a == "TLSv1.3") => {}
        "ssl" if on_off => {}
        _ => {
            let why = match rest {
                "ssl_ciphers" | "ssl_protocols" | "ssl_conf_command" => {
                    "is not configurable in fulcrum: rustls' TLSv1.2/TLSv1.3 suites apply"
                }
                "ssl_session_reuse" => "off: fulcrum's client resumes TLS sessions to the servers",
                "ssl_verify_depth" => "is not carried: chains of any depth up to the CA verify",
                "ssl_crl" => "is not carried: a revoked server certificate is not detected",
                _ => "has a value or form fulcrum cannot carry (variables): ignored",
            };
            cx.warn(d, why);
            return true;
        }
    }
    cx.carry(d);
    true
}

impl UpSsl {
    /// The pool's `tls` table: `pool` is the name nginx verifies against when
    /// `proxy_ssl_name` is not set (`$proxy_host`: the upstream's name), if the servers'
    /// own hosts are not that name.
    pub fn toml(&self, pool: Option<&str>) -> String {
        let verify = self.verify.unwrap_or(false);
        let mut parts = vec![format!("verify = {verify}")];
        if let Some(ca) = &self.ca {
            parts.push(format!("ca = {}", q(ca)));
        }
        match &self.name {
            Some(n) => parts.push(format!("server_name = {}", q(n))),
            None => {
                if let Some(p) = pool.filter(|_| verify) {
                    parts.push(format!("server_name = {}", q(p)));
                }
            }
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            parts.push(format!("cert = {}, key = {}", q(c), q(k)));
        }
        format!("{{ {} }}", parts.join(", "))
    }

    /// Whether these are all nginx's defaults (fulcrum's `tls = { verify = false }`).
    pub fn is_default(&self) -> bool {
        *self == UpSsl::default()
    }
}
