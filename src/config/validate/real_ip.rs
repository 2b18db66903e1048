//! `real_ip_from`, `real_ip_header`, `real_ip_recursive` (nginx's realip module) and
//! `proxy_protocol`, which every server on one listen address must agree on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::{span_of, Validator};
use crate::config::schema;
use crate::config::{RealIp, RealIpHeader, VirtualServer};

/// One `real_ip_from` entry: a CIDR or a single address, as nginx's
/// `set_real_ip_from`. Host bits set below the prefix are cleared, as nginx does
/// (it warns that they are meaningless).
pub(crate) fn parse_trusted(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    s.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(|_| {
        format!(
            "real_ip_from \"{s}\" is not an address or a CIDR (\"10.0.0.0/8\", \"2001:db8::/32\")"
        )
    })
}

impl Validator<'_> {
    /// The server's realip settings; `None` without `real_ip_from`.
    pub(super) fn real_ip(&mut self, s: &schema::ServerSection) -> Option<RealIp> {
        let header = match &s.real_ip_header {
            None => RealIpHeader::XRealIp,
            Some(h) => match h.get_ref().as_str() {
                v if v.eq_ignore_ascii_case("x-forwarded-for") => RealIpHeader::XForwardedFor,
                v if v.eq_ignore_ascii_case("x-real-ip") => RealIpHeader::XRealIp,
                "proxy_protocol" => RealIpHeader::ProxyProtocol,
                other => {
                    self.r.error(
                        span_of(h),
                        format!("real_ip_header \"{other}\" must be \"X-Forwarded-For\", \"X-Real-IP\" or \"proxy_protocol\""),
                    );
                    RealIpHeader::XRealIp
                }
            },
        };
        let proxy_protocol = s.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref());
        if let (Some(h), RealIpHeader::ProxyProtocol, false) =
            (&s.real_ip_header, header, proxy_protocol)
        {
            self.r.error(
                span_of(h),
                "real_ip_header = \"proxy_protocol\" needs proxy_protocol = true on this server",
            );
        }
        let Some(from) = &s.real_ip_from else {
            for (key, span) in [
                ("real_ip_header", s.real_ip_header.as_ref().map(span_of)),
                (
                    "real_ip_recursive",
                    s.real_ip_recursive.as_ref().map(span_of),
                ),
            ] {
                if let Some(span) = span {
                    self.r
                        .error(span, format!("{key} has no effect without real_ip_from"));
                }
            }
            return None;
        };
        if from.get_ref().is_empty() {
            self.r.error(
                span_of(from),
                "real_ip_from needs at least one address or CIDR",
            );
        }
        let mut nets = Vec::new();
        for f in from.get_ref() {
            match parse_trusted(f.get_ref()) {
                Ok(n) => nets.push(n),
                Err(e) => self.r.error(span_of(f), e),
            }
        }
        Some(RealIp {
            from: nets,
            header,
            recursive: s.real_ip_recursive.as_ref().is_some_and(|r| *r.get_ref()),
        })
    }

    /// Whether a connection starts with a PROXY header is known before its Host, so
    /// every server on a listen address must say the same.
    pub(super) fn check_proxy_protocol(
        &mut self,
        sections: &[schema::ServerSection],
        servers: &[VirtualServer],
        by_addr: &HashMap<SocketAddr, Vec<usize>>,
    ) {
        let mut addrs: Vec<_> = by_addr.iter().collect();
        addrs.sort();
        for (addr, idx) in addrs {
            let first = servers[idx[0]].proxy_protocol;
            if let Some(&other) = idx.iter().find(|&&i| servers[i].proxy_protocol != first) {
                let span = sections[other]
                    .proxy_protocol
                    .as_ref()
                    .map_or_else(|| span_of(&sections[other].listen), span_of);
                self.r.error(
                    span,
                    format!("every server on listen {addr} must have the same proxy_protocol"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_trusted;

    #[test]
    fn trusted_entries_are_addresses_or_cidrs_with_host_bits_cleared() {
        assert_eq!(
            parse_trusted("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_trusted("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_trusted("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_trusted("::1").unwrap().to_string(), "::1/128");
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("example.com").is_err());
    }
}
