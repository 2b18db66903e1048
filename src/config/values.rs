//! Parsers for the scalar value syntaxes of the config file: durations, sizes,
//! addresses and nginx-style `server` strings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Parses a duration with a unit: "250ms", "5s", "1m", "1h30m" (nginx also accepts
/// a bare number of seconds; so do we).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("invalid duration \"{s}\": {e}"));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration \"{s}\": {e}"))
}

/// Parses a size: an integer byte count, or a number with `k`, `m` or `g` (powers of 1024).
pub fn parse_size_str(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1024u64),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1024 * 1024),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size \"{s}\" (use bytes, or a number with k, m or g)"))
}

/// Parses a listen address: "addr:port", `[v6]:port`, or a bare port ("8080" = 0.0.0.0:8080).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(port) = s.strip_prefix("*:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("invalid listen address \"{s}\" (expected ip:port)"))
}

/// Splits `host[:port]` into host and optional port, accepting `[v6]:port`.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("invalid address \"{s}\": missing ']'"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if after.is_empty() {
            return Ok((host, None));
        }
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("invalid port in \"{s}\""))?;
        return Ok((host, Some(port)));
    }
    match s.rfind(':') {
        // A bare IPv6 address without brackets has several colons: no port.
        Some(i) if s[..i].contains(':') => Ok((s, None)),
        Some(i) => {
            let port = s[i + 1..]
                .parse::<u16>()
                .map_err(|_| format!("invalid port in \"{s}\""))?;
            Ok((&s[..i], Some(port)))
        }
        None => Ok((s, None)),
    }
}

/// Resolves `host[:port]` to every address it names (a hostname may give several,
/// which become several servers, as in nginx).
pub fn resolve(s: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(s)?;
    if host.is_empty() {
        return Err(format!("invalid address \"{s}\": empty host"));
    }
    let port = port.unwrap_or(default_port);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut out: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("host not found in upstream \"{s}\": {e}"))?
        .collect();
    // The resolver may list an address once per socket type; keep the first of each.
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    if out.is_empty() {
        return Err(format!("host not found in upstream \"{s}\""));
    }
    Ok(out)
}

/// One `server` entry's parameters, as written in nginx syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerParams {
    /// The address as written (`host[:port]`): the name nginx hashes for consistent hashing.
    pub addr: String,
    /// `weight=N`, default 1; 0 is invalid.
    pub weight: u32,
    /// `max_fails=N`, default 1; 0 disables passive failure accounting.
    pub max_fails: u32,
    /// `fail_timeout=T`, default 10s.
    pub fail_timeout: Duration,
    /// `max_conns=N`, default 0 = unlimited.
    pub max_conns: u32,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
}

impl ServerParams {
    /// Defaults as nginx, for the given address.
    pub fn new(addr: String) -> Self {
        ServerParams {
            addr,
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
        }
    }

    /// The server these parameters describe at one resolved address.
    pub fn server(&self, addr: SocketAddr) -> super::ServerConf {
        super::ServerConf {
            name: self.addr.clone(),
            addr,
            weight: self.weight,
            max_fails: self.max_fails,
            fail_timeout: self.fail_timeout,
            max_conns: self.max_conns,
            backup: self.backup,
            down: self.down,
        }
    }

    /// Applies one `key=value` (or flag) parameter; messages follow nginx's wording.
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), String> {
        let num = |v: Option<&str>| -> Result<u32, String> {
            v.and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| format!("invalid parameter \"{key}={}\"", v.unwrap_or("")))
        };
        match (key, value) {
            ("weight", v) => {
                self.weight = num(v)?;
                if self.weight == 0 {
                    return Err("invalid parameter \"weight=0\": weight must be at least 1".into());
                }
            }
            ("max_fails", v) => self.max_fails = num(v)?,
            ("max_conns", v) => self.max_conns = num(v)?,
            ("fail_timeout", Some(v)) => self.fail_timeout = parse_duration(v)?,
            ("backup", None) => self.backup = true,
            ("down", None) => self.down = true,
            (k, Some(v)) => return Err(format!("invalid parameter \"{k}={v}\"")),
            (k, None) => return Err(format!("invalid parameter \"{k}\"")),
        }
        Ok(())
    }

    /// Parses `host[:port] [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut words = s.split_ascii_whitespace();
        let addr = words
            .next()
            .ok_or_else(|| "empty server entry".to_string())?;
        let mut p = ServerParams::new(addr.to_string());
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => p.apply(k, Some(v))?,
                None => p.apply(w, None)?,
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_str("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size_str("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size_str("100").unwrap(), 100);
        assert!(parse_size_str("1t").is_err());
        assert!(parse_size_str("m").is_err());
    }

    #[test]
    fn server_strings() {
        let p = ServerParams::parse("10.0.0.1:8080 weight=5 max_fails=3 backup").unwrap();
        assert_eq!(p.addr, "10.0.0.1:8080");
        assert_eq!(
            (p.weight, p.max_fails, p.backup, p.down),
            (5, 3, true, false)
        );
        let p = ServerParams::parse("b fail_timeout=30s max_conns=7 down").unwrap();
        assert_eq!(p.fail_timeout, Duration::from_secs(30));
        assert_eq!((p.max_conns, p.down), (7, true));
        assert!(ServerParams::parse("a weight=0").is_err());
        assert!(ServerParams::parse("a weight=x").is_err());
        assert!(ServerParams::parse("a sticky").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(split_host_port("[::1]:81").unwrap(), ("::1", Some(81)));
        assert_eq!(split_host_port("a.b").unwrap(), ("a.b", None));
        assert_eq!(split_host_port("a.b:8").unwrap(), ("a.b", Some(8)));
        assert!(split_host_port("a.b:x").is_err());
        assert_eq!(resolve("127.0.0.1", 80).unwrap()[0].port(), 80);
        assert!(!resolve("localhost:9", 80).unwrap().is_empty());
        assert_eq!(parse_listen("8080").unwrap().port(), 8080);
        assert!(parse_listen("nope").is_err());
    }
}
