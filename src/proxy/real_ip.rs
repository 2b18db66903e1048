//! nginx's realip module: the client address of a request from a trusted address,
//! read from `X-Forwarded-For`, `X-Real-IP` or the PROXY protocol header.
//!
//! A byte-for-byte port of nginx's `ngx_http_realip_handler`,
//! `ngx_http_get_forwarded_addr` and the address parsers they call
//! (`ngx_parse_addr_port`, `ngx_inet_addr`, `ngx_inet6_addr`): the header is walked
//! right to left, an entry is taken while the address before it is trusted, and
//! nginx's quirks are kept (`"[::1]"` without a port is no address, `1.2.3.` is
//! `1.2.3.0`, `255.255.255.255` never parses), so the same chains give the same
//! `$remote_addr` as nginx; `tests/real_ip.rs` checks that against a real nginx.
//! Rust's own parsers are stricter, which is why this is hand-written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

use super::conn::ConnMeta;
use crate::config::{RealIp, RealIpHeader};

/// The request's client address as `conf` says, or `None` when it stays the
/// connection's (`meta.remote`).
pub fn client(conf: &RealIp, meta: &ConnMeta, headers: &HeaderMap) -> Option<SocketAddr> {
    let mut addr = meta.remote;
    match conf.header {
        RealIpHeader::ProxyProtocol => {
            // `remote` is the PROXY header's client: believed only from a trusted peer.
            return Some(if trusted(meta.peer.ip(), &conf.from) {
                meta.remote
            } else {
                meta.peer
            });
        }
        RealIpHeader::XRealIp => {
            let v = headers.get("x-real-ip")?;
            walk(&mut addr, v.as_bytes(), &conf.from, conf.recursive);
        }
        RealIpHeader::XForwardedFor => {
            forwarded(
                &mut addr,
                headers.get_all("x-forwarded-for").iter().rev(),
                conf,
            );
        }
    }
    (addr != meta.remote).then_some(addr)
}

/// [`client`] for a server that may have no realip settings.
pub fn of_server(
    conf: Option<&RealIp>,
    meta: &ConnMeta,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    client(conf?, meta, headers)
}

/// What one header line gave (nginx's `NGX_OK`, `NGX_DONE`, `NGX_DECLINED`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Walk {
    /// Walked to its first entry (or one entry when not recursive).
    Ok,
    /// Stopped at an untrusted or invalid entry after taking at least one.
    Done,
    /// Took nothing.
    Declined,
}

/// `ngx_http_get_forwarded_addr` over every `X-Forwarded-For` line, last first:
/// without `recursive` only the last line counts.
fn forwarded<'a>(
    addr: &mut SocketAddr,
    lines_last_first: impl Iterator<Item = &'a http::HeaderValue>,
    conf: &RealIp,
) {
    // nginx goes on to an earlier line only after walking a whole one; what was
    // taken stays taken whatever a later step finds.
    for line in lines_last_first {
        let rc = walk(addr, line.as_bytes(), &conf.from, conf.recursive);
        if !conf.recursive || rc != Walk::Ok {
            return;
        }
    }
}

/// `ngx_http_get_forwarded_addr_internal`: one header value, right to left.
fn walk(addr: &mut SocketAddr, xff: &[u8], from: &[ipnet::IpNet], recursive: bool) -> Walk {
    let mut found = false;
    let fail = |found| if found { Walk::Done } else { Walk::Declined };
    // Indices as nginx's pointers: `len` may reach -1 (then nginx reads the byte
    // before the value, a ':' or ' ' of the header line, which is no address).
    let mut len = xff.len() as isize;
    loop {
        if !trusted(addr.ip(), from) {
            return fail(found);
        }
        let mut p = len - 1;
        while p > 0 && matches!(xff[p as usize], b' ' | b',') {
            p -= 1;
            len -= 1;
        }
        while p > 0 {
            if matches!(xff[p as usize], b' ' | b',') {
                p += 1;
                break;
            }
            p -= 1;
        }
        if p < 0 || len < p {
            return fail(found);
        }
        match parse_addr_port(&xff[p as usize..len as usize]) {
            Some(a) => *addr = a,
            None => return fail(found),
        }
        found = true;
        len = p - 1;
        if !(recursive && p > 0) {
            return Walk::Ok;
        }
    }
}

/// nginx's `ngx_cidr_match`: an IPv4-mapped IPv6 address is matched as IPv4 only.
fn trusted(ip: IpAddr, from: &[ipnet::IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    from.iter().any(|n| n.contains(&ip))
}

/// `ngx_parse_addr_port`: an address, `v4:port` or `[v6]:port`; port 0 when none
/// is given (nginx's `$remote_port` is then empty).
fn parse_addr_port(text: &[u8]) -> Option<SocketAddr> {
    if let Some(ip) = parse_addr(text) {
        return Some(SocketAddr::new(ip, 0));
    }
    let (host, port) = if text.first() == Some(&b'[') {
        let close = text.iter().position(|&c| c == b']')?;
        if close == text.len() - 1 || text[close + 1] != b':' {
            return None;
        }
        (&text[1..close], &text[close + 2..])
    } else {
        let colon = text.iter().position(|&c| c == b':')?;
        (&text[..colon], &text[colon + 1..])
    };
    let port = atoi(port).filter(|p| (1..=65535).contains(p))?;
    Some(SocketAddr::new(parse_addr(host)?, port as u16))
}

/// `ngx_atoi`: decimal digits only, at least one.
fn atoi(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &c| {
        c.is_ascii_digit()
            .then(|| v.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
            .filter(|&v| v <= i64::MAX as u64)
    })
}

/// `ngx_parse_addr`: IPv4 as `ngx_inet_addr`, else IPv6 as `ngx_inet6_addr`.
fn parse_addr(text: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = inet_addr(text) {
        return Some(IpAddr::V4(v4));
    }
    inet6_addr(text).map(IpAddr::V6)
}

/// `ngx_inet_addr`: four dot-separated decimal octets, empty ones being 0;
/// 255.255.255.255 is `INADDR_NONE`, nginx's failure value.
fn inet_addr(text: &[u8]) -> Option<Ipv4Addr> {
    let (mut addr, mut octet, mut dots) = (0u32, 0u32, 0u32);
    for &c in text {
        match c {
            b'0'..=b'9' => {
                octet = octet * 10 + u32::from(c - b'0');
                if octet > 255 {
                    return None;
                }
            }
            b'.' => {
                addr = addr.wrapping_shl(8).wrapping_add(octet);
                octet = 0;
                dots += 1;
            }
            _ => return None,
        }
    }
    let addr = (dots == 3).then(|| (addr << 8) + octet)?;
    (addr != u32::MAX).then(|| Ipv4Addr::from(addr))
}

/// `ngx_inet6_addr`, step for step (a leading single ':' is skipped, as nginx does).
fn inet6_addr(mut p: &[u8]) -> Option<Ipv6Addr> {
    if p.is_empty() {
        return None;
    }
    let mut out = [0u8; 16];
    let (mut at, mut zero, mut digit) = (0usize, None::<usize>, None::<&[u8]>);
    let (mut nibbles, mut word, mut n) = (0u32, 0u32, 8u32);
    if p[0] == b':' {
        p = &p[1..];
    }
    for (i, &c) in p.iter().enumerate() {
        let rest = &p[i + 1..];
        if c == b':' {
            if nibbles > 0 {
                digit = Some(rest);
                out[at] = (word >> 8) as u8;
                out[at + 1] = word as u8;
                at += 2;
                n -= 1;
                if n > 0 {
                    nibbles = 0;
                    word = 0;
                    continue;
                }
            } else if zero.is_none() {
                digit = Some(rest);
                zero = Some(at);
                continue;
            }
            return None;
        }
        if c == b'.' && nibbles > 0 {
            let digit = digit.filter(|_| n >= 2)?;
            word = u32::from(inet_addr(digit)?);
            out[at] = (word >> 24) as u8;
            out[at + 1] = (word >> 16) as u8;
            at += 2;
            n -= 1;
            break;
        }
        nibbles += 1;
        if nibbles > 4 {
            return None;
        }
        let v = match (c, c | 0x20) {
            (b'0'..=b'9', _) => c - b'0',
            (_, l @ b'a'..=b'f') => l - b'a' + 10,
            _ => return None,
        };
        word = word * 16 + u32::from(v);
    }
    if nibbles == 0 && zero.is_none() {
        return None;
    }
    out[at] = (word >> 8) as u8;
    out[at + 1] = word as u8;
    at += 2;
    n -= 1;
    match (n, zero) {
        (0, None) => Some(Ipv6Addr::from(out)),
        (0, Some(_)) | (_, None) => None,
        (n, Some(z)) => {
            // Move what followed "::" to the end and zero the gap.
            let gap = 2 * n as usize;
            out.copy_within(z..at, z + gap);
            out[z..z + gap].fill(0);
            Some(Ipv6Addr::from(out))
        }
    }
}

#[cfg(test)]
mod tests;
