//! Writing a line's pieces: escaping, numbers, addresses and times, into a growing
//! `Vec` or into a [`Line`] presized for the whole line.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Version;

use super::entry::Try;

/// Where a line is built: a `Vec` that grows, or a [`Line`] sized for it beforehand.
pub(super) trait Out: Write {
    fn put(&mut self, b: &[u8]);
    #[inline]
    fn push(&mut self, c: u8) {
        self.put(&[c]);
    }
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    #[inline]
    fn push(&mut self, c: u8) {
        Vec::push(self, c);
    }
}

/// A line written into memory already sized for its worst case: each piece is one
/// bounds check and a copy (inlined for the fixed pieces), with no growth checks.
/// Running out of room sets `overflow` and drops the rest instead of panicking.
pub(super) struct Line<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) at: usize,
    pub(super) overflow: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.put(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Out for Line<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.at..self.at + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }
}

/// Printable ASCII other than `"` and `\`: written as is in both formats.
#[inline]
pub(super) fn plain(c: u8) -> bool {
    (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\'
}

/// nginx's default log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
pub(super) fn escape_into(out: &mut impl Out, b: &[u8]) {
    if b.iter().all(|&c| plain(c)) {
        out.put(b);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if !plain(c) {
            out.put(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.push(c);
        }
    }
}

pub(super) fn dash_or_escaped(out: &mut impl Out, v: Option<&[u8]>) {
    match v {
        Some(b) if !b.is_empty() => escape_into(out, b),
        _ => out.push(b'-'),
    }
}

// Lines are built with these rather than `write!`: the formatting machinery is most
// of a line's cost otherwise, and the writer thread shares the proxy's CPU.

#[inline]
pub(super) fn put_int(out: &mut impl Out, n: impl itoa::Integer) {
    out.put(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n` in decimal to `buf` at `at`; returns the new end. Octets and ports are
/// most of a line's numbers, and one stack buffer per address beats a call per digit run.
#[inline]
fn put_small(buf: &mut [u8; 22], at: usize, n: u16) -> usize {
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut v = n;
    for i in (at..at + digits).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    at + digits
}

/// The decimal text of every octet value (left-aligned) and its length.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (h, d, u) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = if i >= 100 {
            ([b'0' + h, b'0' + d, b'0' + u], 3)
        } else if i >= 10 {
            ([b'0' + d, b'0' + u, 0], 2)
        } else {
            ([b'0' + u, 0, 0], 1)
        };
        i += 1;
    }
    t
};

/// `A.B.C.D` and, with `port`, `:PORT`, built on the stack and appended at once.
#[inline]
fn put_v4(out: &mut impl Out, ip: std::net::Ipv4Addr, port: Option<u16>) {
    let mut buf = [0u8; 22];
    let mut at = 0;
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        let (text, n) = OCTETS[usize::from(o)];
        buf[at..at + 3].copy_from_slice(&text);
        at += usize::from(n);
    }
    if let Some(p) = port {
        buf[at] = b':';
        at = put_small(&mut buf, at + 1, p);
    }
    out.put(&buf[..at]);
}

pub(super) fn put_ip(out: &mut impl Out, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => put_v4(out, v4, None),
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ADDR:PORT`, `[V6]:PORT`.
fn put_addr(out: &mut impl Out, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => put_v4(out, *v4.ip(), Some(v4.port())),
        SocketAddr::V6(_) => {
            out.push(b'[');
            put_ip(out, a.ip());
            out.push(b']');
            out.push(b':');
            put_int(out, a.port());
        }
    }
}

pub(super) fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// `$request_time` style: seconds with millisecond resolution.
pub(super) fn write_secs(out: &mut impl Out, d: Duration) {
    let ms = d.subsec_millis();
    if d.as_secs() < 10 {
        out.put(&[
            b'0' + d.as_secs() as u8,
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ]);
        return;
    }
    put_int(out, d.as_secs());
    out.put(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
}

/// Which list of the tries to write.
#[derive(Clone, Copy)]
pub(super) enum TryField {
    Addr,
    Status,
    Time,
}

/// nginx's `, `-separated list of the tries (none: nothing is written).
pub(super) fn write_tries(out: &mut impl Out, tries: &[Try], field: TryField) {
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            out.put(b", ");
        }
        match field {
            TryField::Addr => put_addr(out, t.addr),
            TryField::Status if t.status == 0 => out.push(b'-'),
            TryField::Status => put_int(out, t.status),
            TryField::Time => write_secs(out, t.time),
        }
    }
}

/// Appends a line written by `fast` into `bound` bytes reserved at the end of `out`;
/// if the bound were ever short, by `slow` into `out` itself.
pub(super) fn presized(
    out: &mut Vec<u8>,
    bound: usize,
    fast: impl FnOnce(&mut Line<'_>),
    slow: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.resize(start + bound, 0);
    let mut line = Line {
        buf: &mut out[start..],
        at: 0,
        overflow: false,
    };
    fast(&mut line);
    let (end, overflow) = (start + line.at, line.overflow);
    out.truncate(end);
    if overflow {
        out.truncate(start);
        slow(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_addresses_match_display() {
        for o in [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255] {
            for port in [0u16, 7, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
                let a = SocketAddr::from(([o, 255 - o, o / 2, 9], port));
                let mut out = Vec::new();
                put_addr(&mut out, a);
                assert_eq!(out, a.to_string().into_bytes());
                out.clear();
                put_ip(&mut out, a.ip());
                assert_eq!(out, a.ip().to_string().into_bytes());
            }
        }
    }

    #[test]
    fn numbers_and_addresses() {
        let mut out = Vec::new();
        for d in [1234, 5, 12_000] {
            write_secs(&mut out, Duration::from_millis(d));
            out.push(b' ');
        }
        put_addr(&mut out, "[::1]:8080".parse().unwrap());
        out.push(b' ');
        put_addr(&mut out, "10.0.0.255:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1.234 0.005 12.000 [::1]:8080 10.0.0.255:80"
        );
    }
}
