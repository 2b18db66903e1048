//! Virtual server selection by `Host` (NGINX_COMPAT §8; `ngx_http_validate_host`,
//! `ngx_http_find_virtual_server`, `ngx_hash_add_key`, `ngx_hash_find_combined`).
//!
//! Lookup order: exact name; longest leading wildcard (`*.a.b` matches hosts ending in
//! `.a.b`, `.a.b` also matches `a.b`); longest trailing wildcard (`www.a.*`); regexes in
//! config order (case-insensitive, as nginx compiles them); else the default server, index 0.
//! An empty host (HTTP/1.0 without `Host`) is only looked up among exact names, as nginx.
//!
//! Conflicts follow `ngx_hash_add_key`: the first name wins and a later equal one is ignored
//! (nginx warns `conflicting server name`). `.a.b` claims the exact name `a.b` and the
//! wildcard suffix `a.b`, so it conflicts with `a.b` and with `*.a.b`; when it loses on the
//! wildcard side nginx has already claimed `a.b`, so neither it nor a later exact `a.b` serves
//! `a.b`. We reproduce that order.

use std::borrow::Cow;
use std::collections::HashSet;

// The tables are built from the config; looking up a client's Host cannot grow them,
// so a fast non-keyed hash is safe here.
use rustc_hash::FxHashMap as HashMap;

use regex::{Regex, RegexBuilder};

/// A `Host` value nginx rejects with 400 (`client sent invalid host header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid host")]
pub struct InvalidHost;

/// Normalize a `Host` value (or the authority of an absolute request-target) as
/// `ngx_http_validate_host`: strip `:port` (after `]` for `[v6]`), strip one trailing dot,
/// lowercase ASCII. Rejected: `..`, `/`, NUL, controls, space, DEL, and an empty result.
/// Bytes >= 0x80 are kept. Borrowed unless ASCII uppercase forces a lowercased copy.
///
/// Like nginx, the port part is not checked to be numeric, and an unclosed `[` is accepted
/// as part of the name (it then simply matches no `server_name`).
///
/// One deliberate difference: nginx 1.22 accepts spaces and control bytes in `Host` (only
/// NUL, `/` and `..` are refused); later nginx releases refuse `<= 0x20` and DEL, and so do we.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, InvalidHost> {
    #[derive(PartialEq)]
    enum State {
        Usual,
        Literal,
        Rest,
    }
    let bytes = raw.as_bytes();
    let mut last_dot: Option<usize> = None;
    let mut host_len = bytes.len();
    let mut state = State::Usual;
    for (i, &ch) in bytes.iter().enumerate() {
        match ch {
            b'.' => {
                if last_dot.is_some_and(|d| d + 1 == i) {
                    return Err(InvalidHost);
                }
                last_dot = Some(i);
            }
            b':' if state == State::Usual => {
                host_len = i;
                state = State::Rest;
            }
            b'[' if i == 0 => state = State::Literal,
            b']' if state == State::Literal => {
                host_len = i + 1;
                state = State::Rest;
            }
            b'/' => return Err(InvalidHost),
            // covers NUL too
            c if c <= 0x20 || c == 0x7f => return Err(InvalidHost),
            _ => {}
        }
    }
    // nginx compares with the last dot anywhere, so "a.:80" loses its dot too.
    if host_len > 0 && last_dot == Some(host_len - 1) {
        host_len -= 1;
    }
    if host_len == 0 {
        return Err(InvalidHost);
    }
    // Cut positions are ASCII bytes, so char boundaries.
    let host = &raw[..host_len];
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

/// The `server_name` table for one listen address: the candidates are the virtual servers on
/// that address, in config order; index 0 is the default server.
#[derive(Debug, Clone, Default)]
pub struct ServerNameTable {
    /// Exact names, plus `a.b` for each `.a.b`.
    exact: HashMap<String, usize>,
    /// `*.S` and `.S`, keyed by `S`.
    head: HashMap<String, usize>,
    /// `P.*`, keyed by `P`.
    tail: HashMap<String, usize>,
    /// `~regex` names in config order.
    regexes: Vec<(Regex, usize)>,
    /// Names ignored as `conflicting server name`, as written.
    conflicts: Vec<String>,
    /// One server on the address: it answers every Host, no lookup needed.
    single: bool,
}

impl ServerNameTable {
    /// Build the table. `servers[i]` lists the `server_name` entries of the i-th server on
    /// this address; an empty list means the single name `""`. Entries: exact `a.b`, `*.a.b`,
    /// `.a.b`, `www.a.*`, `~regex`. Names are lowercased; regexes are case-insensitive.
    /// Errors, in nginx's wording: `server name "*" is invalid`, `invalid server name or
    /// wildcard "a.*.b"`, `empty regex in server name "~"`, or an invalid regex.
    pub fn new(servers: &[Vec<String>]) -> Result<Self, NameError> {
        let mut table = Self {
            single: servers.len() == 1,
            ..Self::default()
        };
        // ngx_hash_add_key's conflict sets, kept apart from what lookups use.
        let mut claimed_exact: HashSet<String> = HashSet::new();
        let mut claimed_head: HashSet<String> = HashSet::new();
        const IMPLICIT: &[String] = &[String::new()];
        for (index, names) in servers.iter().enumerate() {
            let names = if names.is_empty() {
                IMPLICIT
            } else {
                names.as_slice()
            };
            for raw in names {
                if let Some(source) = raw.strip_prefix('~') {
                    table.regexes.push((compile_regex(raw, source)?, index));
                    continue;
                }
                let name = raw.to_ascii_lowercase();
                match classify(&name, raw)? {
                    Kind::Exact => {
                        if claimed_exact.insert(name.clone()) {
                            table.exact.insert(name, index);
                        } else {
                            table.conflicts.push(raw.clone());
                        }
                    }
                    Kind::Dot => {
                        let suffix = &name[1..];
                        if !claimed_exact.insert(suffix.to_owned()) {
                            table.conflicts.push(raw.clone());
                        } else if !claimed_head.insert(suffix.to_owned()) {
                            // nginx has already claimed the exact name at this point
                            table.conflicts.push(raw.clone());
                        } else {
                            table.exact.insert(suffix.to_owned(), index);
                            table.head.insert(suffix.to_owned(), index);
                        }
                    }
                    Kind::Star => {
                        let suffix = &name[2..];
                        if claimed_head.insert(suffix.to_owned()) {
                            table.head.insert(suffix.to_owned(), index);
                        } else {
                            table.conflicts.push(raw.clone());
                        }
                    }
                    Kind::Tail => {
                        let prefix = &name[..name.len() - 2];
                        if table.tail.contains_key(prefix) {
                            table.conflicts.push(raw.clone());
                        } else {
                            table.tail.insert(prefix.to_owned(), index);
                        }
                    }
                }
            }
        }
        Ok(table)
    }

    /// Index of the server for a normalized host (see [`normalize_host`]); `""` for HTTP/1.0
    /// without `Host`. Allocation-free.
    pub fn find(&self, host: &str) -> usize {
        if self.single {
            return 0;
        }
        if let Some(&i) = self.exact.get(host) {
            return i;
        }
        // nginx skips wildcards and regexes for an empty host
        if host.is_empty() {
            return 0;
        }
        if !self.head.is_empty() {
            // Suffixes after each '.', longest first.
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(&s) = self.head.get(&host[i + 1..]) {
                        return s;
                    }
                }
            }
        }
        if !self.tail.is_empty() {
            // Prefixes before each '.', longest first; something must follow the '.'.
            for (i, b) in host.bytes().enumerate().rev() {
                if b == b'.' && i + 1 < host.len() {
                    if let Some(&s) = self.tail.get(&host[..i]) {
                        return s;
                    }
                }
            }
        }
        self.regexes
            .iter()
            .find(|(re, _)| re.is_match(host))
            .map_or(0, |&(_, s)| s)
    }

    /// Names ignored because an earlier server (or the same one) already has them; nginx
    /// logs `conflicting server name "X" on ADDR, ignored` for each.
    pub fn conflicts(&self) -> &[String] {
        &self.conflicts
    }
}

enum Kind {
    Exact,
    /// `.a.b`
    Dot,
    /// `*.a.b`
    Star,
    /// `www.a.*`
    Tail,
}

/// nginx's checks from `ngx_http_core_server_name` then `ngx_hash_add_key`, in that order.
/// `raw` is the name as written, for messages.
fn classify(name: &str, raw: &str) -> Result<Kind, NameError> {
    let b = name.as_bytes();
    if (b.first() == Some(&b'*') && (b.len() < 3 || b[1] != b'.'))
        || (b.first() == Some(&b'.') && b.len() < 2)
    {
        return Err(NameError::Invalid {
            name: raw.to_owned(),
        });
    }
    let wildcard = || NameError::Wildcard {
        name: raw.to_owned(),
    };
    let stars = b.iter().filter(|&&c| c == b'*').count();
    if stars > 1 || name.contains("..") || b.contains(&0) {
        return Err(wildcard());
    }
    if b.len() > 1 && b[0] == b'.' {
        Ok(Kind::Dot)
    } else if b.len() > 2 && b.starts_with(b"*.") {
        Ok(Kind::Star)
    } else if b.len() > 2 && b.ends_with(b".*") {
        Ok(Kind::Tail)
    } else if stars > 0 {
        Err(wildcard())
    } else {
        Ok(Kind::Exact)
    }
}

fn compile_regex(raw: &str, source: &str) -> Result<Regex, NameError> {
    if source.is_empty() {
        return Err(NameError::EmptyRegex {
            name: raw.to_owned(),
        });
    }
    // NGX_REGEX_CASELESS, as ngx_http_core_server_name compiles them
    RegexBuilder::new(source)
        .case_insensitive(true)
        .build()
        .map_err(|error| NameError::Regex {
            pattern: source.to_owned(),
            error,
        })
}

/// Why a `server_name` entry is rejected (nginx's wording).
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// `*`, `*x`, `.`: nginx's `server name "..." is invalid`.
    #[error("server name \"{name}\" is invalid")]
    Invalid {
        /// The name as written.
        name: String,
    },
    /// A star anywhere but a whole first or last label, `..`, or a NUL.
    #[error("invalid server name or wildcard \"{name}\"")]
    Wildcard {
        /// The name as written.
        name: String,
    },
    /// `~` alone.
    #[error("empty regex in server name \"{name}\"")]
    EmptyRegex {
        /// The name as written.
        name: String,
    },
    /// The regex does not compile.
    #[error("invalid regex \"{pattern}\" in server name: {error}")]
    Regex {
        /// The pattern, without the `~`.
        pattern: String,
        /// Why.
        #[source]
        error: regex::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Result<String, InvalidHost> {
        normalize_host(raw).map(Cow::into_owned)
    }

    fn table(servers: &[&[&str]]) -> ServerNameTable {
        let servers: Vec<Vec<String>> = servers
            .iter()
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .collect();
        ServerNameTable::new(&servers).unwrap()
    }

    fn build_err(names: &[&str]) -> String {
        let servers = vec![names.iter().map(|n| n.to_string()).collect()];
        ServerNameTable::new(&servers).unwrap_err().to_string()
    }

    #[test]
    fn host_normalization() {
        assert!(matches!(
            normalize_host("example.com"),
            Ok(Cow::Borrowed("example.com"))
        ));
        assert!(matches!(
            normalize_host("a.b:8080"),
            Ok(Cow::Borrowed("a.b"))
        ));
        assert_eq!(host("Example.COM").unwrap(), "example.com");
        assert_eq!(host("example.com.").unwrap(), "example.com");
        assert_eq!(host("Example.com.:80").unwrap(), "example.com");
        assert_eq!(host("a:").unwrap(), "a");
        assert_eq!(host("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(host("[::1]").unwrap(), "[::1]");
        assert_eq!(host("[FE80::1]").unwrap(), "[fe80::1]");
        assert_eq!(host("_x-y.b").unwrap(), "_x-y.b");
        assert_eq!(host("bücher.DE").unwrap(), "bücher.de");
        // nginx accepts a leading dot, an unclosed '[' and a non-numeric port
        assert_eq!(host(".a.b").unwrap(), ".a.b");
        assert_eq!(host("[::1").unwrap(), "[::1");
        assert_eq!(host("a.b:x").unwrap(), "a.b");
    }

    #[test]
    fn invalid_hosts() {
        for raw in [
            "", ".", ":80", "a..b", "a..", "a/b", "a\\", "a b", "a\tb", "a\0b", "a\x7f", "..",
            "a:1..2", "[::1]/x",
        ] {
            if raw == "a\\" {
                // '\\' is a path separator only on Windows builds of nginx
                assert!(host(raw).is_ok());
                continue;
            }
            assert_eq!(host(raw), Err(InvalidHost), "{raw:?}");
        }
    }

    #[test]
    fn exact_and_default() {
        let t = table(&[&["a.com"], &["b.com", "www.b.com"], &["c.com"]]);
        assert_eq!(t.find("a.com"), 0);
        assert_eq!(t.find("www.b.com"), 1);
        assert_eq!(t.find("c.com"), 2);
        assert_eq!(t.find("unknown.com"), 0);
        assert_eq!(t.find(""), 0);
    }

    #[test]
    fn names_are_lowercased() {
        let t = table(&[&["a.com"], &["WWW.Example.COM", "*.Wild.ORG", "Tail.*"]]);
        assert_eq!(t.find("www.example.com"), 1);
        assert_eq!(t.find("x.wild.org"), 1);
        assert_eq!(t.find("tail.io"), 1);
    }

    #[test]
    fn empty_host_uses_implicit_or_explicit_empty_name() {
        let t = table(&[&["a.com"], &[], &["~.*"]]);
        assert_eq!(t.find(""), 1);
        let t = table(&[&["a.com"], &["b.com", ""]]);
        assert_eq!(t.find(""), 1);
        // no wildcard or regex for an empty host
        let t = table(&[&["a.com"], &["~.*"]]);
        assert_eq!(t.find(""), 0);
        assert_eq!(t.find("x"), 1);
    }

    #[test]
    fn leading_wildcards() {
        let t = table(&[
            &["default"],
            &["*.example.com"],
            &["*.a.example.com"],
            &[".b.org"],
        ]);
        assert_eq!(t.find("x.example.com"), 1);
        assert_eq!(t.find("x.y.example.com"), 1);
        assert_eq!(t.find("example.com"), 0);
        // longest wins
        assert_eq!(t.find("x.a.example.com"), 2);
        assert_eq!(t.find("a.example.com"), 1);
        // ".b.org" covers b.org and *.b.org
        assert_eq!(t.find("b.org"), 3);
        assert_eq!(t.find("x.y.b.org"), 3);
        assert_eq!(t.find("xb.org"), 0);
        // empty first label, as nginx's label walk allows
        assert_eq!(t.find(".example.com"), 1);
    }

    #[test]
    fn trailing_wildcards() {
        let t = table(&[&["default"], &["www.*"], &["www.example.*"]]);
        assert_eq!(t.find("www.foo.com"), 1);
        assert_eq!(t.find("www.example.com"), 2);
        assert_eq!(t.find("www.example.co.uk"), 2);
        assert_eq!(t.find("www.example"), 1);
        assert_eq!(t.find("www"), 0);
        assert_eq!(t.find("wwwx.com"), 0);
    }

    #[test]
    fn precedence_between_kinds() {
        let t = table(&[
            &["default"],
            &["~^www\\.example\\.com$"],
            &["www.example.*"],
            &["*.example.com"],
            &["www.example.com"],
        ]);
        assert_eq!(t.find("www.example.com"), 4);
        // leading beats trailing
        let t = table(&[&["default"], &["www.example.*"], &["*.example.com"]]);
        assert_eq!(t.find("www.example.com"), 2);
        // trailing beats regex
        let t = table(&[&["default"], &["~www"], &["www.example.*"]]);
        assert_eq!(t.find("www.example.com"), 2);
        assert_eq!(t.find("www"), 1);
    }

    #[test]
    fn regexes_in_config_order_case_insensitive() {
        let t = table(&[&["default"], &["~^API\\d+\\."], &["~^api"], &["~\\.net$"]]);
        assert_eq!(t.find("api1.example.com"), 1);
        assert_eq!(t.find("apix.example.com"), 2);
        assert_eq!(t.find("www.example.net"), 3);
        assert_eq!(t.find("api2.example.net"), 1);
    }

    #[test]
    fn duplicate_names_first_wins() {
        let t = table(&[
            &["a.com"],
            &["b.com", "A.com"],
            &["b.com", "*.b.com"],
            &["*.B.com"],
        ]);
        assert_eq!(t.find("a.com"), 0);
        assert_eq!(t.find("b.com"), 1);
        assert_eq!(t.find("x.b.com"), 2);
        assert_eq!(t.conflicts(), ["A.com", "b.com", "*.B.com"]);
        let t = table(&[&["x"], &["x"]]);
        assert_eq!(t.find("x"), 0);
        // implicit "" names: the first server without server_name wins
        let t = table(&[&["a"], &[], &[]]);
        assert_eq!(t.find(""), 1);
    }

    #[test]
    fn dot_wildcard_conflicts() {
        // ".a.b" after exact "a.b": ignored entirely
        let t = table(&[&["d"], &["a.b"], &[".a.b"]]);
        assert_eq!((t.find("a.b"), t.find("x.a.b")), (1, 0));
        // exact "a.b" after ".a.b": ignored
        let t = table(&[&["d"], &[".a.b"], &["a.b"]]);
        assert_eq!((t.find("a.b"), t.find("x.a.b")), (1, 1));
        // ".a.b" after "*.a.b": the wildcard part conflicts, "a.b" stays claimed
        let t = table(&[&["d"], &["*.a.b"], &[".a.b"], &["a.b"]]);
        assert_eq!((t.find("a.b"), t.find("x.a.b")), (0, 1));
        assert_eq!(t.conflicts(), [".a.b", "a.b"]);
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "*", "*.", "*a.com", ".", "a.*.com", "*.a.*", "a*", "a..b", "**.a",
        ] {
            let e = build_err(&[bad]);
            assert!(e.contains(&format!("\"{bad}\"")), "{bad}: {e}");
        }
        assert_eq!(build_err(&["*"]), "server name \"*\" is invalid");
        assert_eq!(
            build_err(&["a.*.b"]),
            "invalid server name or wildcard \"a.*.b\""
        );
        assert_eq!(build_err(&["~"]), "empty regex in server name \"~\"");
        assert!(build_err(&["~("]).starts_with("invalid regex \"(\""));
    }

    #[test]
    fn single_server_and_odd_hosts() {
        let t = table(&[&[]]);
        for h in ["", "a", "a.b", ".", "..", "x.", "[::1]"] {
            assert_eq!(t.find(h), 0);
        }
        // lookups never panic on hosts that skipped normalize_host
        let t = table(&[&["d"], &["*.a"], &["a.*"], &["~^$"]]);
        for h in [".", "..", "a.", ".a", "*.a", "a.*", "é.a", "a.é"] {
            let _ = t.find(h);
        }
        assert_eq!(t.find("é.a"), 1);
        assert_eq!(t.find("a.é"), 2);
    }

    #[test]
    fn normalize_then_find() {
        let t = table(&[&["default"], &["example.com", "*.example.com"]]);
        let find = |raw: &str| normalize_host(raw).map(|h| t.find(&h));
        assert_eq!(find("EXAMPLE.com.:8080"), Ok(1));
        assert_eq!(find("WWW.Example.Com"), Ok(1));
        assert_eq!(find("other:80"), Ok(0));
        assert_eq!(find("a..example.com"), Err(InvalidHost));
    }

    #[test]
    fn single_label_wildcards_are_valid() {
        let t = table(&[&["d"], &["*.a"], &["b.*"], &[".c"]]);
        assert_eq!(t.find("x.a"), 1);
        assert_eq!(t.find("b.x"), 2);
        assert_eq!(t.find("c"), 3);
        assert_eq!(t.find("y.c"), 3);
    }
}
