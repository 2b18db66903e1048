//! Request path normalization and the `proxy_pass` request-target (NGINX_COMPAT §8, §9).
//!
//! [`normalize_path`] follows `ngx_http_parse_complex_uri` (`src/http/ngx_http_parse.c`) with
//! `merge_slashes on`:
//! - `%XX` is decoded; a decoded `/` or `.` then acts like the raw byte, so `%2F` merges with a
//!   neighbouring `/` and `%2E%2E` is a `..` segment. A decoded `%`, `#` or `?` is plain data.
//! - An invalid or truncated escape (`%zz`, `%4`) and `%00` are errors: nginx returns
//!   `NGX_HTTP_PARSE_INVALID_REQUEST` for them, i.e. 400.
//! - `//` collapses to `/`; `.` segments vanish; `..` removes the previous segment, and a `..`
//!   above the root is an error (400), as nginx's backtracking loop does.
//! - The path ends at the first raw `?` or `#`.
//!
//! One deliberate difference: nginx keeps decoded bytes that are not UTF-8 (`/caf%E9`); we
//! work on `str` and reject them ([`BadPath::NotUtf8`], answered 400).

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS};

/// Why a request path cannot be normalized; every variant is answered 400 as nginx does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// The path does not start with `/` (nginx rejects `*` and relative targets).
    #[error("request path does not start with \"/\"")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape in request path")]
    BadEscape,
    /// `%00`.
    #[error("percent-encoded NUL in request path")]
    Nul,
    /// A `..` segment that would climb above `/`.
    #[error("\"..\" above the root in request path")]
    AboveRoot,
    /// Percent-decoding produced bytes that are not UTF-8 (nginx would keep them).
    #[error("request path is not UTF-8 after percent-decoding")]
    NotUtf8,
}

/// Normalize the path of a request-target as nginx does (see the module doc).
///
/// `path` starts with `/`; anything from the first `?` or `#` on is ignored. Returns
/// `Cow::Borrowed` (a prefix of `path`) when there is nothing to decode, merge or resolve,
/// which is the common case: only a scan, no allocation.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(BadPath::NotAbsolute);
    }
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'?' | b'#' => {
                end = i;
                break;
            }
            b'%' => return normalize_slow(bytes).map(Cow::Owned),
            b'/' if needs_merge_or_dots(&bytes[i + 1..]) => {
                return normalize_slow(bytes).map(Cow::Owned)
            }
            _ => {}
        }
    }
    Ok(Cow::Borrowed(&path[..end]))
}

/// After a `/`: is the next byte another `/`, or does a `.`/`..` segment start here?
fn needs_merge_or_dots(rest: &[u8]) -> bool {
    let segment_end = |b: Option<&u8>| matches!(b, None | Some(b'/' | b'?' | b'#'));
    match rest {
        [b'/', ..] => true,
        [b'.', b'.', tail @ ..] => segment_end(tail.first()),
        [b'.', tail @ ..] => segment_end(tail.first()),
        _ => false,
    }
}

/// States of `ngx_http_parse_complex_uri` that matter once escapes are decoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Usual,
    Slash,
    Dot,
    DotDot,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Remove the last segment for a `..` (the output ends with "/.."); error above the root.
fn pop_segment(out: &mut Vec<u8>) -> Result<(), BadPath> {
    // Drop "/..", then everything after the previous '/', keeping that '/'.
    out.truncate(out.len().saturating_sub(3));
    match out.iter().rposition(|&b| b == b'/') {
        Some(slash) => {
            out.truncate(slash + 1);
            Ok(())
        }
        None => Err(BadPath::AboveRoot),
    }
}

/// The full state machine; `bytes` starts with '/'.
fn normalize_slow(bytes: &[u8]) -> Result<String, BadPath> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut state = State::Usual;
    let mut i = 0;
    while i < bytes.len() {
        let raw = bytes[i];
        let (ch, literal) = match raw {
            b'?' | b'#' => break,
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(BadPath::BadEscape);
                };
                i += 3;
                let decoded = (hi << 4) | lo;
                match decoded {
                    0 => return Err(BadPath::Nul),
                    // nginx copies these through without re-parsing them
                    b'%' | b'#' | b'?' => (decoded, true),
                    _ => (decoded, false),
                }
            }
            _ => {
                i += 1;
                (raw, false)
            }
        };
        if literal {
            out.push(ch);
            state = State::Usual;
            continue;
        }
        state = match (state, ch) {
            (State::Usual, b'/') => {
                out.push(ch);
                State::Slash
            }
            (State::Usual, _) => {
                out.push(ch);
                State::Usual
            }
            // merge_slashes: drop the second '/'
            (State::Slash, b'/') => State::Slash,
            (State::Slash, b'.') => {
                out.push(ch);
                State::Dot
            }
            (State::Dot, b'/') => {
                out.pop();
                State::Slash
            }
            (State::Dot, b'.') => {
                out.push(ch);
                State::DotDot
            }
            (State::DotDot, b'/') => {
                pop_segment(&mut out)?;
                State::Slash
            }
            (_, _) => {
                out.push(ch);
                State::Usual
            }
        };
    }
    match state {
        State::Dot => {
            out.pop();
        }
        State::DotDot => pop_segment(&mut out)?,
        State::Usual | State::Slash => {}
    }
    String::from_utf8(out).map_err(|_| BadPath::NotUtf8)
}

/// `NGX_ESCAPE_URI` from `ngx_escape_uri` (`src/core/ngx_string.c`): controls, space,
/// `" # % < > ? \ ^` backquote `{ | }`, DEL; `percent_encoding` also escapes every byte
/// >= 0x80, as nginx does.
const NGX_ESCAPE_URI: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Build the upstream request-target for `proxy_pass` (NGINX_COMPAT §9,
/// `ngx_http_proxy_create_request`).
///
/// - `uri_part`: `None` when proxy_pass has no URI part (`http://backend`), `Some("/v2/")`
///   when it has one, even `Some("/")`.
/// - `location_prefix`: the literal path of the matched exact or prefix location.
/// - `raw_target`: the client's origin-form request-target (path and optional `?query`;
///   a `#fragment`, which clients should not send, is dropped).
/// - `normalized`: [`normalize_path`] of `raw_target`; it starts with `location_prefix`.
///
/// Without a URI part the raw target passes unchanged (borrowed). With one:
/// `uri_part + normalized[location_prefix.len()..]`, the remainder re-escaped with
/// `NGX_ESCAPE_URI` when the client path contained `%` (nginx's `r->quoted_uri`), then
/// `?args` when the query is non-empty (a bare trailing `?` is dropped, as nginx does).
pub fn proxy_pass_target<'a>(
    uri_part: Option<&str>,
    location_prefix: &str,
    raw_target: &'a str,
    normalized: &str,
) -> Cow<'a, str> {
    let Some(uri_part) = uri_part else {
        return Cow::Borrowed(raw_target);
    };
    // As nginx's parser: a '#' ends the target, and a '?' after it is not a query.
    let target = raw_target.split_once('#').map_or(raw_target, |(t, _)| t);
    let (raw_path, args) = target.split_once('?').unwrap_or((target, ""));
    // nginx cuts by length (loc_len); the location matched, so this is its prefix.
    let rest = normalized.get(location_prefix.len()..).unwrap_or("");
    let mut out = String::with_capacity(uri_part.len() + rest.len() + args.len() + 1);
    out.push_str(uri_part);
    if raw_path.contains('%') {
        out.extend(percent_encoding::utf8_percent_encode(rest, NGX_ESCAPE_URI));
    } else {
        out.push_str(rest);
    }
    if !args.is_empty() {
        out.push('?');
        out.push_str(args);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, BadPath> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn simple_paths_are_borrowed() {
        for p in [
            "/",
            "/a/b",
            "/a.b/c.",
            "/.well-known/x",
            "/a/..b",
            "/a/b..",
            "/a/...",
            "/~x",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(s)) if s == p),
                "{p}"
            );
        }
        assert!(matches!(
            normalize_path("/a/b?x=%20//"),
            Ok(Cow::Borrowed("/a/b"))
        ));
        assert!(matches!(normalize_path("/a#frag"), Ok(Cow::Borrowed("/a"))));
    }

    #[test]
    fn merges_slashes() {
        assert_eq!(norm("//").unwrap(), "/");
        assert_eq!(norm("//a///b//").unwrap(), "/a/b/");
        // a decoded '/' merges too
        assert_eq!(norm("/a%2F%2fb").unwrap(), "/a/b");
        assert_eq!(norm("/a/%2Fb").unwrap(), "/a/b");
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(norm("/./a").unwrap(), "/a");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/../b").unwrap(), "/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/../..").unwrap(), "/");
        assert_eq!(norm("/a//../b").unwrap(), "/b");
        assert_eq!(norm("/a/b/./../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/..?x").unwrap(), "/");
        assert_eq!(norm("/a/.?x").unwrap(), "/a/");
        // escaped dots are dots
        assert_eq!(norm("/a/%2e%2E/b").unwrap(), "/b");
        assert_eq!(norm("/a/.%2e").unwrap(), "/");
        // not dot segments
        assert_eq!(norm("/a/..b/%41").unwrap(), "/a/..b/A");
        assert_eq!(norm("/a/.../%41").unwrap(), "/a/.../A");
    }

    #[test]
    fn dot_dot_above_root_is_an_error() {
        for p in [
            "/..",
            "/../",
            "/../a",
            "/a/../..",
            "//..",
            "/%2e%2e",
            "/a/%2E%2E/%2e%2e/b",
        ] {
            assert_eq!(norm(p), Err(BadPath::AboveRoot), "{p}");
        }
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(norm("/a%20b").unwrap(), "/a b");
        assert_eq!(norm("/%41%62").unwrap(), "/Ab");
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/café");
        // decoded '%', '#', '?' are data, not escapes, fragments or queries
        assert_eq!(norm("/a%2541").unwrap(), "/a%41");
        assert_eq!(norm("/a%3Fb%23c").unwrap(), "/a?b#c");
        // a decoded '%' or '?' directly after '/' is not a dot segment either
        assert_eq!(norm("/%25/..").unwrap(), "/");
        assert_eq!(norm("/a+b").unwrap(), "/a+b");
    }

    #[test]
    fn bad_escapes_are_errors() {
        // nginx: sw_quoted / sw_quoted_second return NGX_HTTP_PARSE_INVALID_REQUEST
        for p in ["/%zz", "/%4", "/%", "/a%g1", "/a%1g/"] {
            assert_eq!(norm(p), Err(BadPath::BadEscape), "{p}");
        }
        assert_eq!(norm("/a%00b"), Err(BadPath::Nul));
        assert_eq!(norm("/caf%E9"), Err(BadPath::NotUtf8));
        assert_eq!(norm("*"), Err(BadPath::NotAbsolute));
        assert_eq!(norm(""), Err(BadPath::NotAbsolute));
        assert_eq!(norm("a/b"), Err(BadPath::NotAbsolute));
    }

    #[test]
    fn query_and_fragment_end_the_path() {
        assert_eq!(norm("/a//b?c//d").unwrap(), "/a/b");
        assert_eq!(norm("/a/%41#x/../..").unwrap(), "/a/A");
        // an invalid escape in the query is not our business
        assert_eq!(norm("/a?%zz").unwrap(), "/a");
    }

    fn target(uri: Option<&str>, loc: &str, raw: &str) -> String {
        let (path, _) = raw.split_once('?').unwrap_or((raw, ""));
        let normalized = normalize_path(path).unwrap();
        proxy_pass_target(uri, loc, raw, &normalized).into_owned()
    }

    #[test]
    fn proxy_pass_nginx_examples() {
        // location /api/ { proxy_pass http://b/v2/; }
        assert_eq!(
            target(Some("/v2/"), "/api/", "/api/a%20b//c/../d?x=1"),
            "/v2/a%20b/d?x=1"
        );
        // location /api { proxy_pass http://b/; }
        assert_eq!(target(Some("/"), "/api", "/api/x"), "//x");
    }

    #[test]
    fn proxy_pass_without_uri_part_passes_raw_target() {
        let raw = "/api/a%20b//c/../d?x=1";
        let out = proxy_pass_target(None, "/api/", raw, "/api/a b/d");
        assert!(matches!(out, Cow::Borrowed(s) if s == raw));
        assert_eq!(target(None, "/", "/x?"), "/x?");
    }

    #[test]
    fn proxy_pass_with_uri_part() {
        assert_eq!(target(Some("/v2/"), "/api/", "/api/"), "/v2/");
        assert_eq!(
            target(Some("/v2"), "/api/", "/api/x/y?a=1&b"),
            "/v2x/y?a=1&b"
        );
        assert_eq!(target(Some("/"), "/", "/a//b"), "/a/b");
        // an empty query is dropped
        assert_eq!(target(Some("/v2/"), "/api/", "/api/x?"), "/v2/x");
        // exact location: nothing remains after the name
        assert_eq!(target(Some("/other"), "/exact", "/exact?q"), "/other?q");
        // a fragment is dropped, and a '?' inside it is not a query
        assert_eq!(target(Some("/v2/"), "/api/", "/api/x?a=1#f"), "/v2/x?a=1");
        assert_eq!(target(Some("/v2/"), "/api/", "/api/x#f?a=1"), "/v2/x");
        // the query is passed raw, never re-escaped
        assert_eq!(
            target(Some("/v2/"), "/api/", "/api/%41?q=%20 x"),
            "/v2/A?q=%20 x"
        );
    }

    #[test]
    fn proxy_pass_re_escapes_only_when_client_used_percent() {
        // decoded specials and non-ASCII come back escaped, upper-case hex
        assert_eq!(
            target(
                Some("/v2/"),
                "/api/",
                "/api/%3F%23%25%22%3C%3E%5C%5E%60%7B%7C%7D%7F"
            ),
            "/v2/%3F%23%25%22%3C%3E%5C%5E%60%7B%7C%7D%7F"
        );
        assert_eq!(
            target(Some("/v2/"), "/api/", "/api/caf%c3%a9"),
            "/v2/caf%C3%A9"
        );
        // kept: unreserved and sub-delims nginx does not escape
        assert_eq!(
            target(
                Some("/v2/"),
                "/api/",
                "/api/%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40%7E%5B%5D"
            ),
            "/v2/!$&'()*+,;=:@~[]"
        );
        // no '%' in the client path: the remainder is copied as is
        assert_eq!(target(Some("/v2/"), "/api/", "/api/a|b"), "/v2/a|b");
        // a '%' only in the query does not trigger escaping
        assert_eq!(target(Some("/v2/"), "/api/", "/api/a|b?%20"), "/v2/a|b?%20");
    }
}
