//! `location` patterns and nginx's precedence (NGINX_COMPAT §8,
//! `ngx_http_core_find_location`, `ngx_http_core_find_static_location`).
//!
//! For a normalized path: an `=` location equal to it wins; else the longest matching prefix
//! L (case-sensitive); if L is `^~` it wins; else the first matching regex in config order;
//! else L; else nothing (404).
//!
//! The 301 exception (`auto_redirect`): nginx sets it on a location whose name ends in `/` and
//! that has `proxy_pass`, exact or prefix alike (`ngx_http_proxy_pass`), and the static tree
//! walk answers 301 to `path + "/"` when the path is that name minus its `/`, unless an `=` or
//! prefix location named exactly like the path exists. It is decided before any regex, so
//! `^~` and regexes never prevent it. We apply that rule as stated. (nginx's binary-tree walk
//! can miss the redirect when a sibling location continues the path with a byte below `/`,
//! e.g. `/api-x` next to `/api/`, depending on the tree's shape; we do not copy that.)

use std::collections::HashMap;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// Why a location `path` does not parse (nginx's wording).
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// An exact or prefix location not starting with `/`.
    #[error("location path must start with \"/\": \"{path}\"")]
    NotAbsolute {
        /// The `path` as written.
        path: String,
    },
    /// `~` or `~*` without a pattern.
    #[error("empty regex in location \"{path}\"")]
    EmptyRegex {
        /// The `path` as written.
        path: String,
    },
    /// The regex does not compile.
    #[error("invalid regex \"{pattern}\": {error}")]
    Regex {
        /// The pattern, without the modifier.
        pattern: String,
        /// Why.
        #[source]
        error: regex::Error,
    },
    /// `@name`.
    #[error("named locations are not supported: \"{path}\"")]
    Named {
        /// The `path` as written.
        path: String,
    },
}

/// A parsed `path` value of a `[[server.location]]`: `"/prefix"`, `"= /exact"`,
/// `"^~ /prefix"`, `"~ regex"`, `"~* regex"`.
#[derive(Debug, Clone)]
pub enum LocationPattern {
    /// `= /path`: only this exact path.
    Exact(String),
    /// `/path` or `^~ /path` (`no_regex`: a longest match here skips the regexes).
    Prefix {
        /// The literal prefix, compared case-sensitively.
        path: String,
        /// Set by `^~`.
        no_regex: bool,
    },
    /// `~ regex` or `~* regex`, searched (unanchored) in the normalized path.
    Regex {
        /// The pattern as written, without the modifier.
        source: String,
        /// The compiled pattern.
        re: Regex,
        /// Set by `~*`.
        case_insensitive: bool,
    },
}

impl LocationPattern {
    /// Parse a location `path`. As in nginx, the modifier may be glued to the name
    /// (`=/x`, `~*\.png$`). Named locations (`@x`) are not supported.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        let literal = |path: &str| -> Result<String, PatternError> {
            if path.starts_with('/') {
                Ok(path.to_owned())
            } else {
                Err(PatternError::NotAbsolute { path: s.to_owned() })
            }
        };
        if let Some(rest) = s.strip_prefix("^~") {
            let path = literal(rest.trim_start())?;
            Ok(Self::Prefix {
                path,
                no_regex: true,
            })
        } else if let Some(rest) = s.strip_prefix('~') {
            let (case_insensitive, source) = match rest.strip_prefix('*') {
                Some(r) => (true, r.trim_start()),
                None => (false, rest.trim_start()),
            };
            if source.is_empty() {
                return Err(PatternError::EmptyRegex { path: s.to_owned() });
            }
            let re = RegexBuilder::new(source)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|error| PatternError::Regex {
                    pattern: source.to_owned(),
                    error,
                })?;
            Ok(Self::Regex {
                source: source.to_owned(),
                re,
                case_insensitive,
            })
        } else if let Some(rest) = s.strip_prefix('=') {
            Ok(Self::Exact(literal(rest.trim_start())?))
        } else if s.starts_with('@') {
            Err(PatternError::Named { path: s.to_owned() })
        } else {
            Ok(Self::Prefix {
                path: literal(s)?,
                no_regex: false,
            })
        }
    }

    /// True for `~` and `~*` locations.
    pub fn is_regex(&self) -> bool {
        matches!(self, Self::Regex { .. })
    }

    /// The literal path of an exact or prefix location; `None` for a regex.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Self::Exact(path) | Self::Prefix { path, .. } => Some(path),
            Self::Regex { .. } => None,
        }
    }
}

impl fmt::Display for LocationPattern {
    /// The nginx spelling: `= /x`, `^~ /x`, `/x`, `~ re`, `~* re`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => write!(f, "= {p}"),
            Self::Prefix {
                path,
                no_regex: true,
            } => write!(f, "^~ {path}"),
            Self::Prefix { path, .. } => f.write_str(path),
            Self::Regex {
                source,
                case_insensitive,
                ..
            } => write!(f, "{} {source}", if *case_insensitive { "~*" } else { "~" }),
        }
    }
}

/// Result of matching a request path against a [`LocationTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationMatch {
    /// Index of the chosen location in the list given to [`LocationTable::new`].
    Found(usize),
    /// nginx answers 301 with `Location: path + "/"` (plus `?args`); the index is the
    /// location named `path + "/"` (the exact one when both `=` and prefix exist, as nginx).
    RedirectSlash(usize),
    /// No location matches: 404.
    NotFound,
}

#[derive(Debug, Clone)]
struct PrefixEntry {
    path: String,
    index: usize,
    no_regex: bool,
}

/// The locations of one virtual server, prepared for per-request matching.
#[derive(Debug, Clone)]
pub struct LocationTable {
    patterns: Vec<LocationPattern>,
    /// `=` locations by path; the first of duplicates wins.
    exact: HashMap<String, usize>,
    /// Prefix locations, longest first (config order among equal lengths).
    prefixes: Vec<PrefixEntry>,
    /// Regex locations in config order.
    regexes: Vec<(Regex, usize)>,
    /// Names ending in `/` with `auto_redirect`, and the index to report.
    redirects: Vec<(String, usize)>,
}

impl LocationTable {
    /// Build the table. `locs[i] = (pattern, is_proxy_pass)`; `is_proxy_pass` enables the 301
    /// exception for exact and prefix locations whose name ends in `/`.
    pub fn new(locs: Vec<(LocationPattern, bool)>) -> Self {
        let mut exact = HashMap::new();
        let mut prefix_names: HashMap<&str, usize> = HashMap::new();
        let mut prefixes = Vec::new();
        let mut regexes = Vec::new();
        for (index, (pattern, _)) in locs.iter().enumerate() {
            match pattern {
                LocationPattern::Exact(path) => {
                    exact.entry(path.clone()).or_insert(index);
                }
                LocationPattern::Prefix { path, no_regex } => {
                    prefix_names.entry(path.as_str()).or_insert(index);
                    prefixes.push(PrefixEntry {
                        path: path.clone(),
                        index,
                        no_regex: *no_regex,
                    });
                }
                LocationPattern::Regex { re, .. } => regexes.push((re.clone(), index)),
            }
        }
        // Stable: equal lengths keep config order, so the first duplicate wins.
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.path.len()));

        let mut redirects: Vec<(String, usize)> = Vec::new();
        for (index, (pattern, proxy_pass)) in locs.iter().enumerate() {
            let Some(name) = pattern.prefix() else {
                continue;
            };
            if !proxy_pass || !name.ends_with('/') || redirects.iter().any(|(n, _)| n == name) {
                continue;
            }
            // nginx keeps one tree node per name and reports the exact location's config.
            let report = exact
                .get(name)
                .or_else(|| prefix_names.get(name))
                .copied()
                .unwrap_or(index);
            redirects.push((name.to_owned(), report));
        }

        Self {
            patterns: locs.into_iter().map(|(p, _)| p).collect(),
            exact,
            prefixes,
            regexes,
            redirects,
        }
    }

    /// Choose the location for a normalized path (see [`super::uri::normalize_path`]).
    /// Allocation-free: a hash lookup, a scan of the prefixes, then the regexes.
    pub fn find(&self, path: &str) -> LocationMatch {
        if let Some(&i) = self.exact.get(path) {
            return LocationMatch::Found(i);
        }
        let longest = self
            .prefixes
            .iter()
            .find(|p| path.starts_with(p.path.as_str()));
        // A prefix named exactly like the path stops nginx's walk before the redirect node.
        if !matches!(longest, Some(p) if p.path.len() == path.len()) {
            for (name, i) in &self.redirects {
                if name.len() == path.len() + 1 && name.starts_with(path) {
                    return LocationMatch::RedirectSlash(*i);
                }
            }
        }
        if let Some(p) = longest {
            if p.no_regex {
                return LocationMatch::Found(p.index);
            }
        }
        for (re, i) in &self.regexes {
            if re.is_match(path) {
                return LocationMatch::Found(*i);
            }
        }
        longest.map_or(LocationMatch::NotFound, |p| LocationMatch::Found(p.index))
    }

    /// Pairs `(first, later)` of locations nginx rejects as `duplicate location`: the same
    /// path, both `=`, or both prefix (`/x` and `^~ /x` clash; `= /x` and `/x` do not).
    /// Regex locations are never duplicates.
    pub fn duplicates(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in self.patterns.iter().enumerate() {
            let first = self.patterns[..j]
                .iter()
                .position(|earlier| match (earlier, later) {
                    (LocationPattern::Exact(a), LocationPattern::Exact(b)) => a == b,
                    (
                        LocationPattern::Prefix { path: a, .. },
                        LocationPattern::Prefix { path: b, .. },
                    ) => a == b,
                    _ => false,
                });
            if let Some(i) = first {
                out.push((i, j));
            }
        }
        out
    }

    /// The pattern at `index` (as given to [`LocationTable::new`]).
    pub fn get(&self, index: usize) -> Option<&LocationPattern> {
        self.patterns.get(index)
    }

    /// Number of locations.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when there are no locations (every request is a 404).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LocationMatch::{Found, NotFound, RedirectSlash};

    fn table(locs: &[&str]) -> LocationTable {
        LocationTable::new(
            locs.iter()
                .map(|s| (LocationPattern::parse(s).unwrap(), false))
                .collect(),
        )
    }

    fn proxied(locs: &[(&str, bool)]) -> LocationTable {
        LocationTable::new(
            locs.iter()
                .map(|(s, p)| (LocationPattern::parse(s).unwrap(), *p))
                .collect(),
        )
    }

    #[test]
    fn parse_forms() {
        assert!(matches!(LocationPattern::parse("/a").unwrap(),
            LocationPattern::Prefix { path, no_regex: false } if path == "/a"));
        assert!(matches!(LocationPattern::parse("^~ /a").unwrap(),
            LocationPattern::Prefix { path, no_regex: true } if path == "/a"));
        assert!(matches!(LocationPattern::parse("^~/a").unwrap(),
            LocationPattern::Prefix { path, no_regex: true } if path == "/a"));
        assert!(matches!(LocationPattern::parse("= /a").unwrap(),
            LocationPattern::Exact(p) if p == "/a"));
        assert!(matches!(LocationPattern::parse("=/a").unwrap(),
            LocationPattern::Exact(p) if p == "/a"));
        assert!(matches!(LocationPattern::parse("~ \\.php$").unwrap(),
            LocationPattern::Regex { source, case_insensitive: false, .. } if source == "\\.php$"));
        assert!(matches!(LocationPattern::parse("~*\\.PNG$").unwrap(),
            LocationPattern::Regex { source, case_insensitive: true, .. } if source == "\\.PNG$"));
        let p = LocationPattern::parse("  /x  ").unwrap();
        assert_eq!(p.prefix(), Some("/x"));
        assert!(!p.is_regex());
        assert!(LocationPattern::parse("~ a").unwrap().is_regex());
        assert_eq!(LocationPattern::parse("~ a").unwrap().prefix(), None);
        assert_eq!(LocationPattern::parse("= /e").unwrap().prefix(), Some("/e"));
    }

    #[test]
    fn parse_errors() {
        let e = LocationPattern::parse("~ (").unwrap_err().to_string();
        assert!(e.starts_with("invalid regex \"(\": "), "{e}");
        for bad in ["api", "", "= api", "=", "^~ x", "@named"] {
            assert!(LocationPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(LocationPattern::parse("api")
            .unwrap_err()
            .to_string()
            .contains("location path must start with \"/\""));
        assert!(LocationPattern::parse("~*")
            .unwrap_err()
            .to_string()
            .contains("empty regex"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["= /a", "^~ /a", "/a", "~ x$", "~* x$"] {
            let p = LocationPattern::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(
                LocationPattern::parse(&p.to_string()).unwrap().to_string(),
                s
            );
        }
    }

    #[test]
    fn exact_beats_everything() {
        let t = table(&["/", "^~ /a", "~ ^/a$", "= /a", "/a"]);
        assert_eq!(t.find("/a"), Found(3));
        // "=" is not a prefix
        assert_eq!(t.find("/a/b"), Found(1));
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&["/", "/a/b/", "/a/"]);
        assert_eq!(t.find("/a/b/c"), Found(1));
        assert_eq!(t.find("/a/x"), Found(2));
        assert_eq!(t.find("/b"), Found(0));
        // prefixes are byte prefixes, not segment prefixes
        let t = table(&["/ab", "/a"]);
        assert_eq!(t.find("/abc"), Found(0));
        assert_eq!(t.find("/ac"), Found(1));
    }

    #[test]
    fn prefixes_are_case_sensitive() {
        let t = table(&["/API/", "/"]);
        assert_eq!(t.find("/api/x"), Found(1));
        assert_eq!(t.find("/API/x"), Found(0));
    }

    #[test]
    fn no_regex_prefix_stops_regex_search() {
        let t = table(&["~ \\.png$", "^~ /static/", "/"]);
        assert_eq!(t.find("/static/a.png"), Found(1));
        assert_eq!(t.find("/other/a.png"), Found(0));
    }

    #[test]
    fn only_the_longest_prefix_flag_counts() {
        // "^~ /a/" is shorter than "/a/b/", which has no "^~": regexes run
        let t = table(&["^~ /a/", "/a/b/", "~ \\.png$"]);
        assert_eq!(t.find("/a/b/x.png"), Found(2));
        assert_eq!(t.find("/a/x.png"), Found(0));
    }

    #[test]
    fn regex_beats_plain_prefix_in_config_order() {
        let t = table(&["/img/", "~ ^/img/.*\\.png$", "~ \\.png$", "~ ^/img/"]);
        assert_eq!(t.find("/img/a.png"), Found(1));
        assert_eq!(t.find("/x/a.png"), Found(2));
        assert_eq!(t.find("/img/a.gif"), Found(3));
    }

    #[test]
    fn regex_case_sensitivity() {
        let t = table(&["~ \\.png$", "~* \\.jpg$", "/"]);
        assert_eq!(t.find("/a.png"), Found(0));
        assert_eq!(t.find("/a.PNG"), Found(2));
        assert_eq!(t.find("/a.jpg"), Found(1));
        assert_eq!(t.find("/a.JpG"), Found(1));
    }

    #[test]
    fn falls_back_to_longest_prefix_or_not_found() {
        let t = table(&["/a/", "/a/b", "~ \\.php$"]);
        assert_eq!(t.find("/a/bc"), Found(1));
        assert_eq!(t.find("/c"), NotFound);
        assert_eq!(t.find("/c/x.php"), Found(2));
        assert_eq!(table(&[]).find("/"), NotFound);
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn redirect_slash_for_proxy_pass_location() {
        let t = proxied(&[("/", false), ("/api/", true), ("~ ^/api", false)]);
        // before any regex
        assert_eq!(t.find("/api"), RedirectSlash(1));
        // past the redirect, the regex still beats the plain prefix
        assert_eq!(t.find("/api/"), Found(2));
        assert_eq!(t.find("/apix"), Found(2));
        assert_eq!(t.find("/ap"), Found(0));
        // no proxy_pass: no redirect
        let t = proxied(&[("/", false), ("/api/", false)]);
        assert_eq!(t.find("/api"), Found(0));
        // the name must end with '/'
        let t = proxied(&[("/", false), ("/api", true)]);
        assert_eq!(t.find("/ap"), Found(0));
        // ^~ and nested names alike
        let t = proxied(&[("^~ /api/", true), ("/api/v1/", true)]);
        assert_eq!(t.find("/api/v1"), RedirectSlash(1));
        assert_eq!(t.find("/api"), RedirectSlash(0));
        // works without any other location matching
        let t = proxied(&[("/api/", true)]);
        assert_eq!(t.find("/api"), RedirectSlash(0));
        assert_eq!(t.find("/ap"), NotFound);
    }

    #[test]
    fn no_redirect_when_a_location_names_the_path() {
        let t = proxied(&[("/api", false), ("/api/", true)]);
        assert_eq!(t.find("/api"), Found(0));
        let t = proxied(&[("^~ /api", false), ("/api/", true)]);
        assert_eq!(t.find("/api"), Found(0));
        let t = proxied(&[("/api/", true), ("= /api", false)]);
        assert_eq!(t.find("/api"), Found(1));
        // a shorter prefix does not prevent it
        let t = proxied(&[("/ap", false), ("/api/", true)]);
        assert_eq!(t.find("/api"), RedirectSlash(1));
    }

    #[test]
    fn redirect_for_exact_proxy_pass_location() {
        // nginx sets auto_redirect on any proxy_pass location ending in '/'
        let t = proxied(&[("= /api/", true), ("/", false)]);
        assert_eq!(t.find("/api"), RedirectSlash(0));
        // one node per name: the exact location is reported
        let t = proxied(&[("/api/", true), ("= /api/", false)]);
        assert_eq!(t.find("/api"), RedirectSlash(1));
        assert_eq!(t.find("/api/"), Found(1));
        assert_eq!(t.find("/api/x"), Found(0));
    }

    #[test]
    fn matches_the_normalized_path() {
        use crate::route::uri::normalize_path;
        let t = table(&["/", "^~ /static/", "= /secret", "~* \\.php$"]);
        let find = |raw: &str| t.find(&normalize_path(raw).unwrap());
        // decoding and dot segments happen before matching, as in nginx
        assert_eq!(find("/static/..%2Fsecret"), Found(2));
        assert_eq!(find("/static%2Fa.php"), Found(1));
        assert_eq!(find("//static//a.php"), Found(1));
        assert_eq!(find("/x/%2E%2E/a.PHP?x"), Found(3));
    }

    #[test]
    fn duplicates_follow_nginx() {
        let t = table(&["/a", "= /a", "^~ /a", "= /a", "~ /a", "~ /a", "/b", "/a"]);
        assert_eq!(t.duplicates(), vec![(0, 2), (1, 3), (0, 7)]);
        // the first duplicate wins when matching: plain "/a", so the regex applies
        assert_eq!(t.find("/a/x"), Found(4));
        assert_eq!(t.find("/a"), Found(1));
        assert_eq!(t.len(), 8);
        assert!(t.get(4).is_some_and(LocationPattern::is_regex));
        assert!(t.get(8).is_none());
    }
}
