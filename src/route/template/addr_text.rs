//! Numbers and IP addresses as nginx writes them into variables (`$remote_addr`,
//! `$server_port`): no `fmt`, and IPv6 exactly as `ngx_inet6_ntop` prints it.

use std::net::IpAddr;

/// Appends `n` in decimal without going through `fmt`.
pub(super) fn push_dec(out: &mut Vec<u8>, mut n: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    loop {
        i -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in lowercase hex without leading zeros (nginx `%xd`).
fn push_hex(out: &mut Vec<u8>, n: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = [
        HEX[usize::from(n >> 12)],
        HEX[usize::from((n >> 8) & 0xf)],
        HEX[usize::from((n >> 4) & 0xf)],
        HEX[usize::from(n & 0xf)],
    ];
    let skip = (n.leading_zeros() / 4).min(3) as usize;
    out.extend_from_slice(&digits[skip..]);
}

fn push_ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    for (i, o) in octets.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_dec(out, u16::from(*o));
    }
}

/// Appends an address as nginx's `addr_text` (no brackets, no port).
pub(super) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4.octets()),
        IpAddr::V6(v6) => push_ipv6(out, &v6.octets()),
    }
}

/// `ngx_inet6_ntop`, byte for byte: the first longest run of two or more zero
/// groups becomes `::`, and IPv4-mapped (`::ffff:a.b.c.d`) or -compatible addresses
/// end in dotted decimal.
fn push_ipv6(out: &mut Vec<u8>, p: &[u8; 16]) {
    let mut zero = usize::MAX;
    let mut last = usize::MAX;
    let mut max = 1;
    let mut n = 0;
    for i in (0..16).step_by(2) {
        if p[i] != 0 || p[i + 1] != 0 {
            if max < n {
                zero = last;
                max = n;
            }
            n = 0;
            continue;
        }
        if n == 0 {
            last = i;
        }
        n += 1;
    }
    if max < n {
        zero = last;
        max = n;
    }

    let mut end = 16;
    if zero == 0 {
        // The same (odd-looking) test as nginx, so `::1` stays `::1`.
        if (max == 5 && p[10] == 0xff && p[11] == 0xff)
            || max == 6
            || (max == 7 && p[14] != 0 && p[15] != 1)
        {
            end = 12;
        }
        out.push(b':');
    }
    let mut i = 0;
    while i < end {
        if i == zero {
            out.push(b':');
            i += max * 2;
            continue;
        }
        push_hex(out, u16::from_be_bytes([p[i], p[i + 1]]));
        if i < 14 {
            out.push(b':');
        }
        i += 2;
    }
    if end == 12 {
        push_ipv4(out, [p[12], p[13], p[14], p[15]]);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

    use super::*;

    fn ntop(s: &str) -> String {
        let ip: Ipv6Addr = s.parse().unwrap();
        let mut out = Vec::new();
        push_ip(&mut out, IpAddr::V6(ip));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ipv6_formatting_matches_nginx() {
        assert_eq!(ntop("::"), "::");
        assert_eq!(ntop("::1"), "::1");
        assert_eq!(ntop("1::"), "1::");
        assert_eq!(ntop("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
        // A single zero group is not compressed.
        assert_eq!(ntop("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
        assert_eq!(ntop("fe80::abcd:ef01:0:10"), "fe80::abcd:ef01:0:10");
        assert_eq!(ntop("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
        assert_eq!(ntop("::192.0.2.1"), "::192.0.2.1");
        assert_eq!(ntop("::0.0.1.2"), "::0.0.1.2");
        assert_eq!(ntop("::2"), "::2");
        assert_eq!(ntop("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
        assert_eq!(ntop("ffff::"), "ffff::");
        let sa = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 7));
        let mut out = Vec::new();
        push_ip(&mut out, sa.ip());
        assert_eq!(out, b"::1");
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u16, 7, 10, 99, 100, 65535] {
            let mut out = Vec::new();
            push_dec(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
