//! Parsers for the scalar value syntaxes of the config file: durations, sizes,
//! addresses and nginx-style `server` strings.

use std::net::{AddrParseError, SocketAddr, ToSocketAddrs};
use std::num::ParseIntError;
use std::time::Duration;

/// Why a config value does not parse. `Display` is the message `fulcrum check` prints
/// (nginx's wording where nginx has one).
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// A duration that is empty or only whitespace.
    #[error("empty duration")]
    EmptyDuration,
    /// A bare number of seconds too large for a `u64`.
    #[error("invalid duration \"{text}\": {source}")]
    DurationSeconds {
        /// The value as written.
        text: String,
        /// Why the number does not parse.
        #[source]
        source: ParseIntError,
    },
    /// A duration with units that humantime rejects.
    #[error("invalid duration \"{text}\": {source}")]
    Duration {
        /// The value as written.
        text: String,
        /// Why humantime rejects it.
        #[source]
        source: humantime::DurationError,
    },
    /// A size string that is not bytes or a number with `k`, `m` or `g`, or overflows.
    #[error("invalid size \"{text}\" (use bytes, or a number with k, m or g)")]
    Size {
        /// The value as written.
        text: String,
        /// Why the number does not parse; `None` when it parses but overflows.
        #[source]
        source: Option<ParseIntError>,
    },
    /// A size that is neither a string nor a non-negative integer.
    #[error("invalid size {value} (use bytes, or a string like \"1m\")")]
    SizeType {
        /// The TOML value, as TOML writes it.
        value: String,
    },
    /// A listen address that is not `ip:port`, `*:port` or a port.
    #[error("invalid listen address \"{text}\" (expected ip:port)")]
    Listen {
        /// The value as written.
        text: String,
        /// Why it is not a socket address.
        #[source]
        source: AddrParseError,
    },
    /// `[v6` without the closing bracket.
    #[error("invalid address \"{text}\": missing ']'")]
    MissingBracket {
        /// The address as written.
        text: String,
    },
    /// A port that is not a number in 0-65535 (or `[v6]` followed by other than `:port`).
    #[error("invalid port in \"{text}\"")]
    Port {
        /// The address as written.
        text: String,
        /// Why the port does not parse; `None` when no `:port` follows `]`.
        #[source]
        source: Option<ParseIntError>,
    },
    /// `:port` with no host.
    #[error("invalid address \"{text}\": empty host")]
    EmptyHost {
        /// The address as written.
        text: String,
    },
    /// The resolver failed for a hostname.
    #[error("host not found in upstream \"{text}\": {source}")]
    HostNotFound {
        /// The address as written.
        text: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The resolver answered with no address.
    #[error("host not found in upstream \"{text}\"")]
    NoAddress {
        /// The address as written.
        text: String,
    },
    /// A `server` string with no address.
    #[error("empty server entry")]
    EmptyServer,
    /// `weight=0`.
    #[error("invalid parameter \"weight=0\": weight must be at least 1")]
    ZeroWeight,
    /// `weight`, `max_fails` or `max_conns` without a value that is a `u32`.
    #[error("invalid parameter \"{key}={value}\"")]
    Number {
        /// The parameter's name.
        key: String,
        /// Its value as written (empty when there is none).
        value: String,
        /// Why the value does not parse; `None` when there is no value.
        #[source]
        source: Option<ParseIntError>,
    },
    /// A parameter nginx's `server` does not have, or a flag given a value (or the
    /// reverse).
    #[error("invalid parameter \"{key}{}\"", .value.as_ref().map_or(String::new(), |v| format!("={v}")))]
    UnknownParameter {
        /// The parameter's name.
        key: String,
        /// Its value, for `key=value`.
        value: Option<String>,
    },
    /// A `server` inline table without a string `addr`.
    #[error("server table needs addr = \"host:port\"")]
    ServerTableAddr,
    /// A `server` inline table key whose value is neither a string, an integer nor
    /// (for `backup` and `down`) a boolean.
    #[error("invalid type for server key \"{key}\"")]
    ServerKeyType {
        /// The key.
        key: String,
    },
    /// A `server` that is neither a string nor an inline table.
    #[error("a server is a string or an inline table")]
    ServerType,
    /// An `expect_status` code that is not a number in 100-599.
    #[error("invalid status \"{text}\" in expect_status (expected 100-599)")]
    Status {
        /// The code as written.
        text: String,
        /// Why the number does not parse; `None` when it is out of range.
        #[source]
        source: Option<ParseIntError>,
    },
    /// An `expect_status` range whose low end is above its high end.
    #[error("empty status range \"{text}\" in expect_status")]
    EmptyStatusRange {
        /// The range as written.
        text: String,
    },
    /// An `expect_status` item that is neither a code nor a string.
    #[error("invalid expect_status item {value} (expected a code or \"lo-hi\")")]
    StatusType {
        /// The TOML value, as TOML writes it.
        value: String,
    },
}

/// Parses a duration with a unit: "250ms", "5s", "1m", "1h30m" (nginx also accepts
/// a bare number of seconds; so do we).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValueError::EmptyDuration);
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|source| {
            ValueError::DurationSeconds {
                text: s.to_string(),
                source,
            }
        });
    }
    humantime::parse_duration(t).map_err(|source| ValueError::Duration {
        text: s.to_string(),
        source,
    })
}

/// Parses a size: an integer byte count, or a number with `k`, `m` or `g` (powers of 1024).
pub fn parse_size_str(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1024u64),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1024 * 1024),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let bad = |source| ValueError::Size {
        text: s.to_string(),
        source,
    };
    num.parse::<u64>()
        .map_err(|e| bad(Some(e)))?
        .checked_mul(mult)
        .ok_or_else(|| bad(None))
}

/// Parses a listen address: "addr:port", `[v6]:port`, or a bare port ("8080" = 0.0.0.0:8080).
pub fn parse_listen(s: &str) -> Result<SocketAddr, ValueError> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(port) = s.strip_prefix("*:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }
    s.parse::<SocketAddr>()
        .map_err(|source| ValueError::Listen {
            text: s.to_string(),
            source,
        })
}

/// Splits `host[:port]` into host and optional port, accepting `[v6]:port`.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), ValueError> {
    let bad_port = |source| ValueError::Port {
        text: s.to_string(),
        source,
    };
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| ValueError::MissingBracket {
            text: s.to_string(),
        })?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if after.is_empty() {
            return Ok((host, None));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad_port(None))?
            .parse::<u16>()
            .map_err(|e| bad_port(Some(e)))?;
        return Ok((host, Some(port)));
    }
    match s.rfind(':') {
        // A bare IPv6 address without brackets has several colons: no port.
        Some(i) if s[..i].contains(':') => Ok((s, None)),
        Some(i) => {
            let port = s[i + 1..].parse::<u16>().map_err(|e| bad_port(Some(e)))?;
            Ok((&s[..i], Some(port)))
        }
        None => Ok((s, None)),
    }
}

/// Resolves `host[:port]` to every address it names (a hostname may give several,
/// which become several servers, as in nginx).
pub fn resolve(s: &str, default_port: u16) -> Result<Vec<SocketAddr>, ValueError> {
    let (host, port) = split_host_port(s)?;
    if host.is_empty() {
        return Err(ValueError::EmptyHost {
            text: s.to_string(),
        });
    }
    let port = port.unwrap_or(default_port);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut out: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| ValueError::HostNotFound {
            text: s.to_string(),
            source,
        })?
        .collect();
    // The resolver may list an address once per socket type; keep the first of each.
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    if out.is_empty() {
        return Err(ValueError::NoAddress {
            text: s.to_string(),
        });
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
    /// `service=NAME`: an SRV lookup (needs `resolve = true`).
    pub service: Option<String>,
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
            service: None,
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
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), ValueError> {
        let num = |v: Option<&str>| -> Result<u32, ValueError> {
            let bad = |source| ValueError::Number {
                key: key.to_string(),
                value: v.unwrap_or("").to_string(),
                source,
            };
            v.ok_or_else(|| bad(None))?
                .parse::<u32>()
                .map_err(|e| bad(Some(e)))
        };
        match (key, value) {
            ("weight", v) => {
                self.weight = num(v)?;
                if self.weight == 0 {
                    return Err(ValueError::ZeroWeight);
                }
            }
            ("max_fails", v) => self.max_fails = num(v)?,
            ("max_conns", v) => self.max_conns = num(v)?,
            ("fail_timeout", Some(v)) => self.fail_timeout = parse_duration(v)?,
            ("backup", None) => self.backup = true,
            ("down", None) => self.down = true,
            ("service", Some(v)) if !v.is_empty() => self.service = Some(v.to_string()),
            (k, v) => {
                return Err(ValueError::UnknownParameter {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                })
            }
        }
        Ok(())
    }

    /// Parses `host[:port] [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down]`.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let mut words = s.split_ascii_whitespace();
        let addr = words.next().ok_or(ValueError::EmptyServer)?;
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
    fn duration_errors_keep_their_source() {
        use std::error::Error as _;
        use std::num::IntErrorKind;
        let e = parse_duration("5 parsecs").unwrap_err();
        assert!(matches!(&e, ValueError::Duration { text, .. } if text == "5 parsecs"));
        assert!(e
            .source()
            .is_some_and(|s| s.is::<humantime::DurationError>()));
        assert!(e.to_string().starts_with(
            "invalid duration \"5 parsecs\": unknown time unit \"parsecs\", supported units:"
        ));
        let e = parse_duration("99999999999999999999").unwrap_err();
        match &e {
            ValueError::DurationSeconds { text, source } => {
                assert_eq!(text, "99999999999999999999");
                assert_eq!(source.kind(), &IntErrorKind::PosOverflow);
            }
            other => panic!("expected DurationSeconds, got {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "invalid duration \"99999999999999999999\": number too large to fit in target type"
        );
        let e = parse_duration(" ").unwrap_err();
        assert!(matches!(e, ValueError::EmptyDuration));
        assert!(e.source().is_none());
    }

    #[test]
    fn server_parameter_errors() {
        use std::error::Error as _;
        let e = ServerParams::parse("a weight=x").unwrap_err();
        match &e {
            ValueError::Number { key, value, source } => {
                assert_eq!((key.as_str(), value.as_str()), ("weight", "x"));
                assert!(source.is_some());
            }
            other => panic!("expected Number, got {other:?}"),
        }
        assert!(e
            .source()
            .is_some_and(|s| s.is::<std::num::ParseIntError>()));
        assert_eq!(e.to_string(), "invalid parameter \"weight=x\"");
        let e = ServerParams::parse("a max_fails").unwrap_err();
        assert!(matches!(&e, ValueError::Number { source: None, .. }));
        assert_eq!(e.to_string(), "invalid parameter \"max_fails=\"");
        let e = ServerParams::parse("a sticky").unwrap_err();
        assert!(matches!(&e, ValueError::UnknownParameter { key, value: None } if key == "sticky"));
        assert!(e.source().is_none());
        assert_eq!(e.to_string(), "invalid parameter \"sticky\"");
        let e = ServerParams::parse("a route=x").unwrap_err();
        assert_eq!(e.to_string(), "invalid parameter \"route=x\"");
        let e = ServerParams::parse("a weight=0").unwrap_err();
        assert!(matches!(e, ValueError::ZeroWeight));
        let e = ServerParams::parse("a fail_timeout=abc").unwrap_err();
        assert!(matches!(e, ValueError::Duration { .. }));
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
