//! nginx variable templates (`"$host:$server_port"`, `"${http_x_user}$cookie_sid"`).
//!
//! A [`Template`] is compiled once at config load and rendered per request into a
//! byte buffer. Compilation follows `ngx_http_script_compile`: `$name` or `${name}`,
//! names are `[A-Za-z0-9_]+` and case-insensitive, a `$` without a name is an error,
//! and there is no escape for a literal `$` (nginx has none either).
//!
//! Rendering semantics follow nginx 1.22 with the exceptions documented on each
//! variable in [`Template::compile`].

mod addr_text;

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http::header::{HeaderName, COOKIE};
use http::HeaderMap;

use addr_text::{push_dec, push_ip};

/// `X-Forwarded-For`, which `http` has no constant for.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Error from [`Template::compile`]. `Display` uses nginx's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `$` at the end, or followed by neither a name character nor `{`, or `${}`.
    #[error("invalid variable name")]
    InvalidName {
        /// Byte offset of the `$` in the source.
        offset: usize,
    },
    /// `${name` without the closing `}`.
    #[error("the closing bracket in \"{name}\" variable is missing")]
    MissingBracket {
        /// The (lowercased) name read so far.
        name: String,
        /// Byte offset of the `$` in the source.
        offset: usize,
    },
    /// A well-formed name that is not a supported variable.
    #[error("unknown \"{name}\" variable")]
    Unknown {
        /// The lowercased variable name, as nginx prints it.
        name: String,
        /// Byte offset of the `$` in the source.
        offset: usize,
    },
    /// `$1`..`$9`: regex captures, which fulcrum does not provide.
    #[error("regex capture \"${digit}\" is not supported")]
    Capture {
        /// The capture digit.
        digit: char,
        /// Byte offset of the `$` in the source.
        offset: usize,
    },
}

impl TemplateError {
    /// Byte offset in the template source of the `$` that starts the bad variable.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::InvalidName { offset }
            | TemplateError::MissingBracket { offset, .. }
            | TemplateError::Unknown { offset, .. }
            | TemplateError::Capture { offset, .. } => *offset,
        }
    }
}

/// Generates a fresh `$request_id`: 16 random bytes as 32 lowercase hex digits (nginx).
pub fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let raw: [u8; 16] = rand::random();
    let mut id = [0u8; 32];
    for (i, b) in raw.iter().enumerate() {
        id[2 * i] = HEX[usize::from(b >> 4)];
        id[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    id
}

/// The per-request `$request_id`, generated on first use.
///
/// Keep one per request and lend it to every [`RequestVars`] built for that request,
/// so all templates (and logs) see the same value while requests whose templates do
/// not use `$request_id` never pay for the random generation.
#[derive(Debug, Default)]
pub struct RequestId(OnceLock<[u8; 32]>);

impl RequestId {
    /// An id that is generated lazily by [`RequestId::get`].
    pub const fn new() -> Self {
        RequestId(OnceLock::new())
    }

    /// An id with a fixed value (e.g. propagated from elsewhere).
    /// Returns `None` unless `id` is 32 ASCII hex digits.
    pub fn with_value(id: [u8; 32]) -> Option<Self> {
        if !id.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let cell = OnceLock::new();
        let _ = cell.set(id);
        Some(RequestId(cell))
    }

    /// The id as bytes, generating it now if it was not yet.
    pub fn get(&self) -> &[u8; 32] {
        self.0.get_or_init(new_request_id)
    }

    /// The id as a string, generating it now if it was not yet.
    pub fn as_str(&self) -> &str {
        // Always hex by construction, so the fallback is unreachable.
        std::str::from_utf8(self.get()).unwrap_or_default()
    }

    /// The id if some template (or caller) already generated it.
    pub fn peek(&self) -> Option<&[u8; 32]> {
        self.0.get()
    }
}

/// Per-request inputs to [`Template::render_into`]. All borrowed: building one
/// does not allocate.
#[derive(Debug, Clone, Copy)]
pub struct RequestVars<'a> {
    /// `$request_method`.
    pub method: &'a http::Method,
    /// The request-target as received, in origin form: path plus optional `?query`.
    /// `$request_uri` is this verbatim; `$args` and `$arg_NAME` come from the part
    /// after the first `?`.
    pub raw_target: &'a str,
    /// `$uri`: the normalized path.
    pub uri: &'a str,
    /// Client request headers, for `$http_NAME`, `$cookie_NAME` and
    /// `$proxy_add_x_forwarded_for`.
    pub headers: &'a HeaderMap,
    /// `$host`: normalized host (lowercase, no port).
    pub host: &'a str,
    /// `$hostname`: this machine's host name.
    pub hostname: &'a str,
    /// Client address: `$remote_addr`, `$remote_port`.
    pub remote: SocketAddr,
    /// Local address the connection was accepted on: `$server_addr`, `$server_port`.
    pub local: SocketAddr,
    /// `$scheme`: `"http"` or `"https"`.
    pub scheme: &'a str,
    /// `$proxy_host`: upstream name or `host[:port]` of `proxy_pass`.
    pub proxy_host: &'a str,
    /// `$request_id`, shared by all templates of one request, generated lazily.
    pub request_id: &'a RequestId,
    /// `$ssl_*`: empty on cleartext connections, as nginx renders them.
    pub ssl: SslVars<'a>,
}

/// The `$ssl_*` variables of a TLS connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct SslVars<'a> {
    /// `$ssl_protocol`: "TLSv1.3" or "TLSv1.2".
    pub protocol: &'a str,
    /// `$ssl_server_name`: the SNI name.
    pub server_name: &'a str,
    /// `$ssl_client_verify`: "SUCCESS", "NONE" (or "FAILED:reason").
    pub client_verify: &'a str,
    /// `$ssl_client_s_dn`: the client certificate's subject, RFC 2253.
    pub client_s_dn: &'a str,
}

impl RequestVars<'_> {
    /// The query string without `?`, empty if none (nginx `r->args`).
    fn args(&self) -> &str {
        match self.raw_target.split_once('?') {
            Some((_, args)) => args,
            None => "",
        }
    }
}

/// One compiled variable reference.
#[derive(Debug, Clone)]
enum Var {
    Host,
    Hostname,
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerPort,
    Scheme,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    IsArgs,
    ProxyHost,
    ProxyAddXForwardedFor,
    RequestId,
    SslProtocol,
    SslServerName,
    SslClientVerify,
    SslClientSDn,
    /// `$arg_NAME`; the lowercased name.
    Arg(Box<[u8]>),
    /// `$cookie_NAME`; the lowercased name.
    Cookie(Box<[u8]>),
    /// `$http_NAME`; `None` for the empty name `$http_`, which never matches.
    Http {
        name: Option<HeaderName>,
        sep: &'static [u8],
    },
}

/// A piece of a template: literal bytes of the source, or a variable.
#[derive(Debug, Clone)]
enum Part {
    Lit { start: usize, end: usize },
    Var(Var),
}

/// A compiled nginx variable template.
#[derive(Debug, Clone)]
pub struct Template {
    src: Box<str>,
    parts: Box<[Part]>,
    uses_request_id: bool,
    /// Capacity hint for [`Template::render`].
    size_hint: usize,
}

impl Template {
    /// Compiles `src` as `ngx_http_script_compile` does.
    ///
    /// Supported variables (names are case-insensitive, as in nginx):
    /// `$host $hostname $remote_addr $remote_port $server_addr $server_port $scheme
    /// $request_method $request_uri $uri $args $is_args $proxy_host
    /// $proxy_add_x_forwarded_for $request_id $ssl_protocol $ssl_server_name
    /// $ssl_client_verify $ssl_client_s_dn`, and the prefixes `$arg_NAME`,
    /// `$http_NAME`, `$cookie_NAME`.
    ///
    /// Differences from nginx 1.22, by design:
    /// - `$http_NAME` with several header lines joins them with `", "` (nginx ≥ 1.23;
    ///   1.22 takes the first except for `X-Forwarded-For`). `$http_cookie` joins
    ///   with `"; "`, as every nginx version does.
    /// - `$1`..`$9` (regex captures) are a compile error instead of rendering empty.
    pub fn compile(src: &str) -> Result<Template, TemplateError> {
        let bytes = src.as_bytes();
        let mut parts = Vec::new();
        let mut uses_request_id = false;
        let mut size_hint = 0;
        let mut lit_start = 0;
        let mut i = 0;

        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            let dollar = i;
            if lit_start < dollar {
                parts.push(Part::Lit {
                    start: lit_start,
                    end: dollar,
                });
                size_hint += dollar - lit_start;
            }
            let (var, end) = read_var(src, dollar)?;
            i = end;
            uses_request_id |= matches!(var, Var::RequestId);
            size_hint += 32;
            parts.push(Part::Var(var));
            lit_start = i;
        }
        if lit_start < bytes.len() {
            parts.push(Part::Lit {
                start: lit_start,
                end: bytes.len(),
            });
            size_hint += bytes.len() - lit_start;
        }

        Ok(Template {
            src: src.into(),
            parts: parts.into_boxed_slice(),
            uses_request_id,
            size_hint,
        })
    }

    /// True if the template has no variables, so its value is [`Template::source`]
    /// and can be precomputed (e.g. as a `HeaderValue`).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit { .. }))
    }

    /// The constant value of a template without variables.
    pub fn literal(&self) -> Option<&str> {
        self.is_literal().then_some(&*self.src)
    }

    /// True if rendering reads `$request_id` (and so generates it if needed).
    pub fn uses_request_id(&self) -> bool {
        self.uses_request_id
    }

    /// The source text the template was compiled from.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Renders the template, appending to `out`. Allocates only to grow `out`.
    pub fn render_into(&self, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        for part in self.parts.iter() {
            match part {
                Part::Lit { start, end } => {
                    out.extend_from_slice(&self.src.as_bytes()[*start..*end]);
                }
                Part::Var(var) => render_var(var, vars, out),
            }
        }
    }

    /// Renders the template into a new buffer.
    pub fn render(&self, vars: &RequestVars<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint);
        self.render_into(vars, &mut out);
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

/// Reads the variable reference whose `$` is at `dollar` in `src`: the variable, and
/// the offset just past it (past the `}` of `${name}`).
fn read_var(src: &str, dollar: usize) -> Result<(Var, usize), TemplateError> {
    let bytes = src.as_bytes();
    let mut i = dollar + 1;
    let Some(&first) = bytes.get(i) else {
        return Err(TemplateError::InvalidName { offset: dollar });
    };
    if (b'1'..=b'9').contains(&first) {
        return Err(TemplateError::Capture {
            digit: char::from(first),
            offset: dollar,
        });
    }
    let mut bracket = first == b'{';
    if bracket {
        i += 1;
        if i == bytes.len() {
            return Err(TemplateError::InvalidName { offset: dollar });
        }
    }
    let name_start = i;
    let mut name_end = i;
    while i < bytes.len() {
        let ch = bytes[i];
        if ch == b'}' && bracket {
            i += 1;
            bracket = false;
            break;
        }
        if !(ch.is_ascii_alphanumeric() || ch == b'_') {
            break;
        }
        i += 1;
        name_end = i;
    }
    // Names are ASCII, so lowercasing keeps the byte offsets.
    let name = src[name_start..name_end].to_ascii_lowercase();
    if bracket {
        return Err(TemplateError::MissingBracket {
            name,
            offset: dollar,
        });
    }
    if name.is_empty() {
        return Err(TemplateError::InvalidName { offset: dollar });
    }
    let var = lookup(&name).ok_or(TemplateError::Unknown {
        name,
        offset: dollar,
    })?;
    Ok((var, i))
}

/// Resolves a lowercased, non-empty variable name.
fn lookup(name: &str) -> Option<Var> {
    let var = match name {
        "host" => Var::Host,
        "hostname" => Var::Hostname,
        "remote_addr" => Var::RemoteAddr,
        "remote_port" => Var::RemotePort,
        "server_addr" => Var::ServerAddr,
        "server_port" => Var::ServerPort,
        "scheme" => Var::Scheme,
        "request_method" => Var::RequestMethod,
        "request_uri" => Var::RequestUri,
        "uri" => Var::Uri,
        "args" => Var::Args,
        "is_args" => Var::IsArgs,
        "proxy_host" => Var::ProxyHost,
        "proxy_add_x_forwarded_for" => Var::ProxyAddXForwardedFor,
        "request_id" => Var::RequestId,
        "ssl_protocol" => Var::SslProtocol,
        "ssl_server_name" => Var::SslServerName,
        "ssl_client_verify" => Var::SslClientVerify,
        "ssl_client_s_dn" => Var::SslClientSDn,
        _ => {
            if let Some(arg) = name.strip_prefix("arg_") {
                Var::Arg(arg.as_bytes().into())
            } else if let Some(cookie) = name.strip_prefix("cookie_") {
                Var::Cookie(cookie.as_bytes().into())
            } else if let Some(header) = name.strip_prefix("http_") {
                // nginx matches header names with `-` read as `_`; headers that really
                // contain `_` are dropped by nginx by default (underscores_in_headers off).
                let dashed = header.replace('_', "-");
                let sep: &'static [u8] = if dashed == "cookie" { b"; " } else { b", " };
                Var::Http {
                    name: HeaderName::from_bytes(dashed.as_bytes()).ok(),
                    sep,
                }
            } else {
                return None;
            }
        }
    };
    Some(var)
}

fn render_var(var: &Var, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
    match var {
        Var::Host => out.extend_from_slice(vars.host.as_bytes()),
        Var::Hostname => out.extend_from_slice(vars.hostname.as_bytes()),
        Var::RemoteAddr => push_ip(out, vars.remote.ip()),
        // Port 0: a realip address given without one, which nginx renders empty.
        Var::RemotePort if vars.remote.port() == 0 => {}
        Var::RemotePort => push_dec(out, vars.remote.port()),
        Var::ServerAddr => push_ip(out, vars.local.ip()),
        Var::ServerPort => push_dec(out, vars.local.port()),
        Var::Scheme => out.extend_from_slice(vars.scheme.as_bytes()),
        Var::RequestMethod => out.extend_from_slice(vars.method.as_str().as_bytes()),
        Var::RequestUri => out.extend_from_slice(vars.raw_target.as_bytes()),
        Var::Uri => out.extend_from_slice(vars.uri.as_bytes()),
        Var::Args => out.extend_from_slice(vars.args().as_bytes()),
        Var::IsArgs => {
            if !vars.args().is_empty() {
                out.push(b'?');
            }
        }
        Var::ProxyHost => out.extend_from_slice(vars.proxy_host.as_bytes()),
        Var::ProxyAddXForwardedFor => {
            // ngx_http_proxy_add_x_forwarded_for_variable: every XFF line, even an
            // empty one, is followed by ", ".
            for value in vars.headers.get_all(X_FORWARDED_FOR) {
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b", ");
            }
            push_ip(out, vars.remote.ip());
        }
        Var::RequestId => out.extend_from_slice(vars.request_id.get()),
        Var::SslProtocol => out.extend_from_slice(vars.ssl.protocol.as_bytes()),
        Var::SslServerName => out.extend_from_slice(vars.ssl.server_name.as_bytes()),
        Var::SslClientVerify => out.extend_from_slice(vars.ssl.client_verify.as_bytes()),
        Var::SslClientSDn => out.extend_from_slice(vars.ssl.client_s_dn.as_bytes()),
        Var::Arg(name) => {
            if let Some(value) = find_arg(vars.args().as_bytes(), name) {
                out.extend_from_slice(value);
            }
        }
        Var::Cookie(name) => {
            for line in vars.headers.get_all(COOKIE) {
                if let Some(value) = find_cookie(line.as_bytes(), name) {
                    out.extend_from_slice(value);
                    break;
                }
            }
        }
        Var::Http { name, sep } => {
            let Some(name) = name else { return };
            for (n, value) in vars.headers.get_all(name).iter().enumerate() {
                if n > 0 {
                    out.extend_from_slice(sep);
                }
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
}

/// `ngx_http_arg`: the raw value of the first `name=value` in `args` whose name
/// equals `name` case-insensitively and starts the string or follows `&`.
/// An argument without `=` does not match.
fn find_arg<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() {
        return None;
    }
    args.split(|&b| b == b'&').find_map(|pair| {
        let (key, rest) = pair.split_at_checked(name.len())?;
        match rest.split_first() {
            Some((b'=', value)) if key.eq_ignore_ascii_case(name) => Some(value),
            _ => None,
        }
    })
}

/// `ngx_http_parse_multi_header_lines` (1.22) on one Cookie line: pairs are
/// separated by `;` or `,` plus optional spaces; the name matches case-insensitively,
/// spaces may surround `=`, and the value runs to the next `;` (a `,` does not end it).
fn find_cookie<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let end = line.len();
    let mut start = 0;
    while start < end {
        let matched = line
            .get(start..start + name.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(name));
        if matched {
            let mut p = start + name.len();
            while p < end && line[p] == b' ' {
                p += 1;
            }
            if p < end && line[p] == b'=' {
                p += 1;
                while p < end && line[p] == b' ' {
                    p += 1;
                }
                let value_end = line[p..]
                    .iter()
                    .position(|&b| b == b';')
                    .map_or(end, |n| p + n);
                return Some(&line[p..value_end]);
            }
            start = p;
        }
        // Skip to after the next separator, then past spaces.
        while start < end {
            let ch = line[start];
            start += 1;
            if ch == b';' || ch == b',' {
                break;
            }
        }
        while start < end && line[start] == b' ' {
            start += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};

    struct Req {
        method: Method,
        raw_target: String,
        uri: String,
        headers: HeaderMap,
        remote: SocketAddr,
        local: SocketAddr,
        request_id: RequestId,
    }

    impl Req {
        fn new(raw_target: &str) -> Req {
            Req {
                method: Method::GET,
                raw_target: raw_target.to_owned(),
                uri: raw_target.split('?').next().unwrap().to_owned(),
                headers: HeaderMap::new(),
                remote: "192.0.2.7:51234".parse().unwrap(),
                local: "10.0.0.1:8080".parse().unwrap(),
                request_id: RequestId::new(),
            }
        }

        fn header(mut self, name: &'static str, value: &str) -> Req {
            self.headers
                .append(name, HeaderValue::from_str(value).unwrap());
            self
        }

        fn vars(&self) -> RequestVars<'_> {
            RequestVars {
                method: &self.method,
                raw_target: &self.raw_target,
                uri: &self.uri,
                headers: &self.headers,
                host: "example.com",
                hostname: "lb1",
                remote: self.remote,
                local: self.local,
                scheme: "https",
                proxy_host: "backend",
                request_id: &self.request_id,
                ssl: SslVars {
                    protocol: "TLSv1.3",
                    server_name: "example.com",
                    client_verify: "SUCCESS",
                    client_s_dn: "CN=client,O=Acme",
                },
            }
        }

        fn render(&self, src: &str) -> String {
            let t = Template::compile(src).unwrap();
            String::from_utf8(t.render(&self.vars())).unwrap()
        }
    }

    fn err(src: &str) -> TemplateError {
        Template::compile(src).unwrap_err()
    }

    #[test]
    fn simple_variables() {
        let mut req = Req::new("/a%20b/c?x=1&y=2").header("x-user", "alice");
        req.method = Method::POST;
        req.uri = "/a b/c".to_owned();
        assert_eq!(req.render("$host"), "example.com");
        assert_eq!(req.render("$hostname"), "lb1");
        assert_eq!(req.render("$remote_addr"), "192.0.2.7");
        assert_eq!(req.render("$remote_port"), "51234");
        assert_eq!(req.render("$server_addr"), "10.0.0.1");
        assert_eq!(req.render("$server_port"), "8080");
        assert_eq!(req.render("$scheme"), "https");
        assert_eq!(
            req.render("$ssl_protocol $ssl_server_name $ssl_client_verify [$ssl_client_s_dn]"),
            "TLSv1.3 example.com SUCCESS [CN=client,O=Acme]"
        );
        assert_eq!(req.render("$request_method"), "POST");
        assert_eq!(req.render("$request_uri"), "/a%20b/c?x=1&y=2");
        assert_eq!(req.render("$uri"), "/a b/c");
        assert_eq!(req.render("$args"), "x=1&y=2");
        assert_eq!(req.render("$is_args"), "?");
        assert_eq!(req.render("$proxy_host"), "backend");
        assert_eq!(req.render("$http_x_user"), "alice");
    }

    #[test]
    fn mixed_text_and_forms() {
        let req = Req::new("/p?q=1");
        assert_eq!(
            req.render("https://$host$request_uri"),
            "https://example.com/p?q=1"
        );
        assert_eq!(req.render("${host}x"), "example.comx");
        assert_eq!(
            req.render("${scheme}://${host}:${server_port}"),
            "https://example.com:8080"
        );
        assert_eq!(req.render("$host:$server_port/"), "example.com:8080/");
        // Names are case-insensitive, as in nginx.
        assert_eq!(req.render("$HOST ${Scheme}"), "example.com https");
    }

    #[test]
    fn hostx_is_unknown() {
        // `$hostx` reads the longest name, like nginx.
        assert_eq!(
            err("$hostx-"),
            TemplateError::Unknown {
                name: "hostx".into(),
                offset: 0
            }
        );
    }

    #[test]
    fn no_args() {
        let req = Req::new("/p");
        assert_eq!(req.render("[$args][$is_args][$arg_x]"), "[][][]");
        let req = Req::new("/p?");
        assert_eq!(req.render("[$args][$is_args][$request_uri]"), "[][][/p?]");
    }

    #[test]
    fn adjacent_variables() {
        let req = Req::new("/")
            .header("x-user", "bob")
            .header("cookie", "sid=s123");
        assert_eq!(req.render("$http_x_user$cookie_sid"), "bobs123");
        assert_eq!(req.render("${http_x_user}${cookie_sid}"), "bobs123");
        let req = Req::new("/");
        assert_eq!(req.render("$http_x_user$cookie_sid"), "");
    }

    #[test]
    fn literal_only() {
        let t = Template::compile("no variables here {}").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.literal(), Some("no variables here {}"));
        assert!(!t.uses_request_id());
        assert_eq!(t.source(), "no variables here {}");
        assert_eq!(t.render(&Req::new("/").vars()), b"no variables here {}");

        let empty = Template::compile("").unwrap();
        assert!(empty.is_literal());
        assert_eq!(empty.literal(), Some(""));
        assert!(empty.render(&Req::new("/").vars()).is_empty());

        let t = Template::compile("a$host").unwrap();
        assert!(!t.is_literal());
        assert_eq!(t.literal(), None);
        assert_eq!(t.source(), "a$host");
        assert_eq!(t.to_string(), "a$host");
    }

    #[test]
    fn render_into_appends() {
        let req = Req::new("/");
        let t = Template::compile("-$host").unwrap();
        let mut out = b"x".to_vec();
        t.render_into(&req.vars(), &mut out);
        assert_eq!(out, b"x-example.com");
    }

    #[test]
    fn unknown_variable() {
        let e = err("abc $foo_bar");
        assert_eq!(e.to_string(), "unknown \"foo_bar\" variable");
        assert_eq!(e.offset(), 4);
        // nginx prints the lowercased name.
        let e = err("é${Nope}");
        assert_eq!(e.to_string(), "unknown \"nope\" variable");
        assert_eq!(e.offset(), 2);
        assert_eq!(err("$0").to_string(), "unknown \"0\" variable");
        assert_eq!(err("$sent_http_x").offset(), 0);
    }

    #[test]
    fn invalid_names() {
        for (src, offset) in [
            ("$", 0),
            ("ab$", 2),
            ("a $ b", 2),
            ("$-x", 0),
            ("${}", 0),
            ("${", 0),
            ("$$host", 0),
        ] {
            let e = err(src);
            assert_eq!(e, TemplateError::InvalidName { offset }, "{src}");
            assert_eq!(e.to_string(), "invalid variable name");
        }
    }

    #[test]
    fn missing_bracket() {
        let e = err("x${host");
        assert_eq!(
            e.to_string(),
            "the closing bracket in \"host\" variable is missing"
        );
        assert_eq!(e.offset(), 1);
        let e = err("${host-x}");
        assert_eq!(
            e.to_string(),
            "the closing bracket in \"host\" variable is missing"
        );
    }

    #[test]
    fn captures_rejected() {
        let e = err("/x/$1");
        assert_eq!(e.offset(), 3);
        assert_eq!(e.to_string(), "regex capture \"$1\" is not supported");
    }

    #[test]
    fn http_headers() {
        let req = Req::new("/")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("user-agent", "curl/8")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2");
        assert_eq!(req.render("$http_x_multi"), "a, b");
        assert_eq!(req.render("$HTTP_USER_AGENT"), "curl/8");
        assert_eq!(req.render("$http_cookie"), "a=1; b=2");
        assert_eq!(req.render("$http_x_forwarded_for"), "1.1.1.1, 2.2.2.2");
        assert_eq!(req.render("[$http_missing][$http_]"), "[][]");
    }

    #[test]
    fn header_bytes_pass_through() {
        let mut req = Req::new("/");
        req.headers
            .insert("x-raw", HeaderValue::from_bytes(b"\xffok").unwrap());
        let t = Template::compile("$http_x_raw").unwrap();
        assert_eq!(t.render(&req.vars()), b"\xffok");
    }

    #[test]
    fn cookies() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["sid=abc"], "sid", "abc"),
            (&["a=1; sid=abc; b=2"], "sid", "abc"),
            (&["a=1;sid=abc"], "sid", "abc"),
            (&["a=1,sid=abc"], "sid", "abc"),
            (&["a=1,  sid=abc"], "sid", "abc"),
            // Spaces around `=` are skipped; trailing spaces are kept.
            (&["sid = abc ;x=1"], "sid", "abc "),
            // A comma does not end the value.
            (&["sid=a,b; c=d"], "sid", "a,b"),
            // Name is a prefix of another cookie: no match there.
            (&["sidx=1; sid=2"], "sid", "2"),
            (&["xsid=1"], "sid", ""),
            // Case-insensitive name.
            (&["SID=up"], "sid", "up"),
            // First occurrence wins, across lines too.
            (&["sid=1; sid=2"], "sid", "1"),
            (&["a=1", "sid=2"], "sid", "2"),
            (&["sid=1", "sid=2"], "sid", "1"),
            // Empty value, missing `=`.
            (&["sid=; a=1"], "sid", ""),
            (&["sid; a=1"], "sid", ""),
            (&["sid"], "sid", ""),
            (&[""], "sid", ""),
            (&["a=\"q;x\"; sid=z"], "sid", "z"),
        ];
        for (lines, name, want) in cases {
            let mut req = Req::new("/");
            for line in *lines {
                req = req.header("cookie", line);
            }
            assert_eq!(req.render(&format!("$cookie_{name}")), *want, "{lines:?}");
        }
        let req = Req::new("/");
        assert_eq!(req.render("$cookie_sid"), "");
    }

    #[test]
    fn query_args() {
        let req = Req::new("/p?a=1&A=2&b=%20x&c&d=&aa=3&x.a=4&e=5=6");
        assert_eq!(req.render("$arg_a"), "1");
        // Case-insensitive name, first occurrence.
        assert_eq!(req.render("$arg_A"), "1");
        // Raw, not decoded.
        assert_eq!(req.render("$arg_b"), "%20x");
        // No `=`: not found. Empty value: empty.
        assert_eq!(req.render("[$arg_c][$arg_d]"), "[][]");
        assert_eq!(req.render("$arg_aa"), "3");
        assert_eq!(req.render("$arg_e"), "5=6");
        assert_eq!(req.render("[$arg_missing][$arg_]"), "[][]");

        let req = Req::new("/p?xa=1&a=2");
        assert_eq!(req.render("$arg_a"), "2");
        let req = Req::new("/p?A=Up");
        assert_eq!(req.render("$arg_a"), "Up");
        // `;` is not a separator in nginx.
        let req = Req::new("/p?x=1;a=2");
        assert_eq!(req.render("$arg_a"), "");
    }

    #[test]
    fn proxy_add_x_forwarded_for() {
        let req = Req::new("/");
        assert_eq!(req.render("$proxy_add_x_forwarded_for"), "192.0.2.7");

        let req = Req::new("/").header("x-forwarded-for", "203.0.113.1");
        assert_eq!(
            req.render("$proxy_add_x_forwarded_for"),
            "203.0.113.1, 192.0.2.7"
        );

        let req = Req::new("/")
            .header("X-Forwarded-For", "203.0.113.1, 198.51.100.2")
            .header("x-forwarded-for", "203.0.113.9");
        assert_eq!(
            req.render("$proxy_add_x_forwarded_for"),
            "203.0.113.1, 198.51.100.2, 203.0.113.9, 192.0.2.7"
        );

        // nginx appends ", " after every line, even an empty one.
        let req = Req::new("/").header("x-forwarded-for", "");
        assert_eq!(req.render("$proxy_add_x_forwarded_for"), ", 192.0.2.7");
    }

    #[test]
    fn request_id_shared_within_request() {
        let a = Template::compile("$request_id").unwrap();
        let b = Template::compile("id=${request_id}").unwrap();
        assert!(a.uses_request_id() && b.uses_request_id());
        assert!(!Template::compile("$host").unwrap().uses_request_id());

        let req1 = Req::new("/");
        assert!(req1.request_id.peek().is_none());
        let id1 = a.render(&req1.vars());
        assert_eq!(id1.len(), 32);
        assert!(id1
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        let mut with_prefix = b"id=".to_vec();
        with_prefix.extend_from_slice(&id1);
        assert_eq!(b.render(&req1.vars()), with_prefix);
        assert_eq!(req1.request_id.as_str().as_bytes(), &id1[..]);

        let req2 = Req::new("/");
        assert_ne!(a.render(&req2.vars()), id1);
    }

    #[test]
    fn request_id_not_generated_when_unused() {
        let req = Req::new("/");
        Template::compile("$host$uri").unwrap().render(&req.vars());
        assert!(req.request_id.peek().is_none());
    }

    #[test]
    fn request_id_preset() {
        let id = *b"0123456789abcdef0123456789abcdef";
        let mut req = Req::new("/");
        req.request_id = RequestId::with_value(id).unwrap();
        assert_eq!(
            req.render("$request_id"),
            "0123456789abcdef0123456789abcdef"
        );
        assert!(RequestId::with_value([b'z'; 32]).is_none());
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn ipv6_addresses() {
        let mut req = Req::new("/");
        req.remote = "[2001:db8::1]:443".parse().unwrap();
        req.local = "[::1]:8443".parse().unwrap();
        assert_eq!(
            req.render("$remote_addr $remote_port $server_addr $server_port"),
            "2001:db8::1 443 ::1 8443"
        );
        req.headers
            .insert("x-forwarded-for", HeaderValue::from_static("198.51.100.2"));
        assert_eq!(
            req.render("$proxy_add_x_forwarded_for"),
            "198.51.100.2, 2001:db8::1"
        );
    }
}
