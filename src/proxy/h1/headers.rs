//! The header lines of a head: which pass through to the client (offsets into the
//! head's bytes, hop-by-hop ones told apart on the raw name) and the per-connection
//! cache that turns raw names into `HeaderName`s.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::error::Invalid;

/// Offsets of a header line in a head: name start and end, value start and end.
pub(super) type Span = (u32, u32, u32, u32);

/// The response headers passed on to the client: the upstream's header lines as it
/// sent them (names in its case, as nginx passes them), minus hop-by-hop ones, kept
/// as offsets into the head's bytes. fulcrum's HTTP/1 server writes them straight
/// out; only hyper's server (h2c listeners) needs them as a `HeaderMap`.
#[derive(Debug, Clone, Default)]
pub struct PassHeaders {
    pub(super) head: Bytes,
    pub(super) lines: Vec<Span>,
}

impl PassHeaders {
    /// Name and value of each header, in the upstream's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.lines.iter().map(|&(ns, ne, vs, ve)| {
            (
                &self.head[ns as usize..ne as usize],
                &self.head[vs as usize..ve as usize],
            )
        })
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The headers as a map (values share the head's bytes).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        for &(ns, ne, vs, ve) in &self.lines {
            // httparse only lets tokens through as names and allowed bytes as values.
            let name = HeaderName::from_bytes(&self.head[ns as usize..ne as usize]);
            let value = HeaderValue::from_maybe_shared(self.head.slice(vs as usize..ve as usize));
            if let (Ok(n), Ok(v)) = (name, value) {
                map.append(n, v);
            }
        }
        map
    }
}

/// What a response header name is to the proxy: RFC 9110 §7.6.1's hop-by-hop set
/// (as [`crate::proxy::forward::is_hop_by_hop`] has it, compared on the raw bytes), with the ones
/// that carry framing told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    Connection,
    TransferEncoding,
    ContentLength,
    Upgrade,
    /// Another hop-by-hop header: dropped.
    Other,
    /// End to end: passed on.
    No,
}

impl Hop {
    /// The kind of header `name` is (ASCII case-insensitive).
    pub(crate) fn of(name: &[u8]) -> Hop {
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if is(b"te") => Hop::Other,
            7 if is(b"trailer") => Hop::Other,
            7 if is(b"upgrade") => Hop::Upgrade,
            10 if is(b"connection") => Hop::Connection,
            10 if is(b"keep-alive") => Hop::Other,
            14 if is(b"content-length") => Hop::ContentLength,
            16 if is(b"proxy-connection") => Hop::Other,
            17 if is(b"transfer-encoding") => Hop::TransferEncoding,
            _ => Hop::No,
        }
    }
}

/// The tokens of a `Connection` value that name other headers.
pub(super) fn connection_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| {
        !t.is_empty()
            && !t.eq_ignore_ascii_case(b"close")
            && !t.eq_ignore_ascii_case(b"keep-alive")
            && !t.eq_ignore_ascii_case(b"upgrade")
    })
}

/// The header names of the previous response on a connection, by position: an
/// upstream repeats the same header set, so a name is usually recognised with one
/// comparison instead of being parsed again.
#[derive(Debug, Default)]
pub struct NameCache(Vec<(Box<[u8]>, HeaderName)>);

impl NameCache {
    /// Positions remembered.
    const MAX: usize = 32;

    /// The name at position `i` of a head, parsed only if it differs from the one
    /// remembered there.
    pub fn get(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, Invalid> {
        if let Some((r, n)) = self.0.get(i) {
            if **r == *raw {
                return Ok(n.clone());
            }
        }
        let n = HeaderName::from_bytes(raw).map_err(|_| Invalid::Head)?;
        if let Some(slot) = self.0.get_mut(i) {
            *slot = (raw.into(), n.clone());
        } else if i == self.0.len() && i < Self::MAX {
            self.0.push((raw.into(), n.clone()));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_cache_follows_the_header_set() {
        let mut c = NameCache::default();
        assert_eq!(c.get(0, b"X-A").unwrap(), "x-a");
        assert_eq!(c.get(1, b"Server").unwrap(), "server");
        // The same bytes at a position come from the cache; others are parsed afresh.
        assert_eq!(c.get(0, b"X-A").unwrap(), "x-a");
        assert_eq!(c.get(1, b"X-B").unwrap(), "x-b");
        assert_eq!(c.get(1, b"X-B").unwrap(), "x-b");
        assert!(c.get(2, b"bad name").is_err());
    }

    #[test]
    fn raw_hop_by_hop_names_match_the_header_name_set() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "content-length",
            "server",
            "x-te",
            "tea",
        ] {
            let hop = Hop::of(name.to_ascii_uppercase().as_bytes());
            let n = HeaderName::from_static(name);
            assert_eq!(
                !matches!(hop, Hop::No | Hop::ContentLength),
                crate::proxy::forward::is_hop_by_hop(&n),
                "{name}"
            );
        }
    }
}
