//! What a certificate says that fulcrum shows: its validity dates (warnings,
//! `fulcrum_tls_certificate_not_after_timestamp_seconds`), its first name (that
//! metric's `server_name`) and its subject in RFC 2253 form (`$ssl_client_s_dn`).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The first DNS name of its subjectAltName, else its subject's CN, else "".
    pub name: String,
    /// The subject, RFC 2253 (`CN=a,O=b`).
    pub subject: String,
}

/// Parses a DER certificate; the error is the parser's message.
pub fn inspect(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        name: first_name(&cert),
        subject: rfc2253(cert.subject()),
    })
}

/// The RFC 2253 subject of a DER certificate (`None` if it does not parse).
pub fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(rfc2253(cert.subject()))
}

fn first_name(cert: &X509Certificate<'_>) -> String {
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                return d.to_string();
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// RFC 2253 (what nginx's `$ssl_client_s_dn` prints since 1.11.6): the RDNs last
/// first, joined by `,`; several attributes of one RDN by `+`; known attribute
/// types by their short name, others by dotted OID with the value as `#hex`.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    match (
                        x509_parser::objects::oid2abbrev(oid, registry),
                        atv.as_str(),
                    ) {
                        (Ok(short), Ok(value)) => format!("{short}={}", escape(value)),
                        _ => format!("{}=#{}", oid.to_id_string(), hex(atv.attr_value().data)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 §2.4: `,+"\<>;` escaped, and a leading `#` or space, a trailing space.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_rfc2253() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" #x "), "\\ #x\\ ");
        assert_eq!(escape("#a"), "\\#a");
        assert_eq!(escape("plain"), "plain");
    }
}
