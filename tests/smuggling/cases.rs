//! The catalogue: each case's raw bytes and what fulcrum (HTTP/1 listener, and an
//! `http2 = true` listener where hyper parses HTTP/1) and nginx 1.22 answer and
//! forward. Where fulcrum and nginx differ, `why` says why fulcrum's answer is the
//! right one (RFC 9112 unless said otherwise).

/// What the backend saw of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing reached it.
    Nothing,
    /// One whole, well-framed request.
    Whole,
    /// A request head and part of its body, then the connection closed (the head
    /// went up before the client's chunk framing broke).
    Cut,
    /// More than one request: a request hidden in the bytes was smuggled through.
    More,
}

/// A status and what the backend saw.
pub type Want = (u16, Seen);

pub const OK: Want = (200, Seen::Whole);
pub const BAD: Want = (400, Seen::Nothing);

/// One catalogue entry.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub raw: Vec<u8>,
    /// fulcrum's own HTTP/1 server.
    pub h1: Want,
    /// fulcrum on an `http2 = true` listener (hyper's HTTP/1).
    pub h2c: Want,
    /// nginx 1.22 proxying to the same kind of backend (it buffers request bodies).
    pub nginx: Want,
    /// Why fulcrum differs from nginx (empty where they agree).
    pub why: &'static str,
}

impl Case {
    /// A case every proxy answers `want`.
    fn new(name: &'static str, raw: impl Into<Vec<u8>>, want: Want) -> Case {
        Case {
            name,
            raw: raw.into(),
            h1: want,
            h2c: want,
            nginx: want,
            why: "",
        }
    }

    /// nginx answers `want`; `why` fulcrum's answer is the right one.
    fn nginx(self, want: Want, why: &'static str) -> Case {
        Case {
            nginx: want,
            why,
            ..self
        }
    }
}

/// A chunked request head: the bodies of [`body_breaks`] follow it.
pub const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunked(body: &[u8]) -> Vec<u8> {
    [CHUNKED, body].concat()
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

const NOT_CHUNKED_LAST: &str = "RFC 9112 §6.3 (4): a request whose last coding is not chunked \
     has no length: 400 and close. nginx's 501 is no worse, but fulcrum says what the RFC says";

const VT: &str = "a control byte in a field value is a malformed head (RFC 9110 §5.5): \
     400, as for NUL or a bare CR; nginx takes the value and refuses the coding (501)";

const CODINGS: &str = "RFC 9112 §6.1 allows any codings with chunked last; fulcrum \
     forwards them for the backend to decode, nginx implements only chunked (501)";

/// Requests that must pass, unchanged by the guards.
pub fn valid() -> Vec<Case> {
    vec![
        Case::new("plain GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", OK),
        Case::new(
            "Content-Length body",
            post("Content-Length: 5\r\n", "hello"),
            OK,
        ),
        Case::new(
            "chunked body with an extension",
            chunked(b"5;a=b\r\nhello\r\n0\r\n\r\n"),
            OK,
        ),
        Case::new(
            "TE: tab before the value (OWS)",
            post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            OK,
        )
        .nginx(
            (501, Seen::Nothing),
            "OWS is SP or HTAB (RFC 9110 §5.6.3): the value is `chunked`; nginx trims only spaces",
        ),
        Case::new(
            "TE: two spaces before the value (OWS)",
            post("Transfer-Encoding:  chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            OK,
        ),
        Case::new(
            "TE: CHUNKED in capitals",
            post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            OK,
        ),
        Case::new(
            "TE: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            OK,
        )
        .nginx((501, Seen::Nothing), CODINGS),
        Case::new(
            "CL: leading zeros",
            post("Content-Length: 005\r\n", "hello"),
            OK,
        ),
        Case::new(
            "0.CL: a GET whose Content-Length body is a request",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            OK,
        ),
        Case::new(
            "pipelined desync: a request inside a chunked body",
            chunked(b"23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"),
            OK,
        ),
        Case::new(
            "chunk extension with a quoted string",
            chunked(b"5;a=\"b c\"\r\nhello\r\n0\r\n\r\n"),
            OK,
        ),
        Case::new(
            "chunk size with leading zeros",
            chunked(b"005\r\nhello\r\n000\r\n\r\n"),
            OK,
        ),
        Case::new(
            "request trailers",
            chunked(b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"),
            OK,
        ),
    ]
}

/// Heads refused before anything is forwarded.
pub fn refused_heads() -> Vec<Case> {
    let te = |name, headers: &str| Case::new(name, post(headers, "0\r\n\r\n"), BAD);
    vec![
        Case::new(
            "CL.TE",
            post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"),
            BAD,
        ),
        Case::new(
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            BAD,
        ),
        te("TE.TE: chunked, identity", "Transfer-Encoding: chunked, identity\r\n")
            .nginx((501, Seen::Nothing), NOT_CHUNKED_LAST),
        te(
            "TE.TE: chunked, then a second TE line",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n",
        ),
        te(
            "TE.TE: two chunked lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        te("TE.TE: space before the colon", "Transfer-Encoding : chunked\r\n"),
        te("TE.TE: xchunked", "Transfer-Encoding: xchunked\r\n")
            .nginx((501, Seen::Nothing), NOT_CHUNKED_LAST),
        te("TE.TE: quoted \"chunked\"", "Transfer-Encoding: \"chunked\"\r\n")
            .nginx((501, Seen::Nothing), NOT_CHUNKED_LAST),
        te("TE: gzip (chunked not last)", "Transfer-Encoding: gzip\r\n")
            .nginx((501, Seen::Nothing), NOT_CHUNKED_LAST),
        te("TE.TE: tab before the colon", "Transfer-Encoding\t: chunked\r\n"),
        te("TE.TE: vertical tab in the value", "Transfer-Encoding: \x0bchunked\r\n")
            .nginx((501, Seen::Nothing), VT),
        te("TE.TE: vertical tab as OWS", "Transfer-Encoding:\x0bchunked\r\n")
            .nginx((501, Seen::Nothing), VT),
        te(
            "TE.TE: obs-fold line",
            "X: y\r\n Transfer-Encoding: chunked\r\n",
        ),
        te(
            "0.CL: chunked with CL 0",
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        ),
        Case::new(
            "HTTP/1.0 with TE: chunked",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            BAD,
        ),
        Case::new(
            "HTTP/1.0 keep-alive with TE: chunked and a smuggled request",
            "POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            BAD,
        ),
        Case::new("CL: two different values", post("Content-Length: 1, 2\r\n", "ab"), BAD),
        Case::new(
            "CL: equal values in one line",
            post("Content-Length: 5, 5\r\n", "hello"),
            BAD,
        ),
        Case::new(
            "CL: two equal lines",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            BAD,
        ),
        Case::new(
            "CL: a second line of 0 (CL.CL)",
            post("Content-Length: 0\r\nContent-Length: 5\r\n", "hello"),
            BAD,
        ),
        Case::new("CL: plus sign", post("Content-Length: +5\r\n", "hello"), BAD),
        Case::new("CL: minus one", post("Content-Length: -1\r\n", "hello"), BAD),
        Case::new("CL: hex", post("Content-Length: 0x5\r\n", "hello"), BAD),
        Case::new("CL: empty", post("Content-Length: \r\n", "hello"), BAD),
        Case::new(
            "CL: over 2^64",
            post("Content-Length: 99999999999999999999\r\n", "hello"),
            BAD,
        ),
        Case::new(
            "CL: huge, over client_max_body_size",
            post("Content-Length: 999999999999\r\n", "hello"),
            (413, Seen::Nothing),
        ),
        Case::new(
            "two Host lines",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: internal\r\n\r\n",
            BAD,
        ),
        Case::new(
            "two equal Host lines, apart",
            "GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nhost: x\r\n\r\n",
            BAD,
        ),
        Case::new("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", BAD),
        Case::new(
            "bare CR in a header value",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            BAD,
        ),
        Case::new(
            "NUL in a header value",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            BAD,
        ),
    ]
}

/// Chunked bodies whose framing breaks: each is answered 400 and closed. Sent with
/// the head, the break is found before anything is forwarded ([`Seen::Nothing`]).
/// Sent after the head went up, the upstream connection that carried it is closed
/// (the backend sees the head and a cut-off body, [`Seen::Cut`], never a complete
/// request) and never reused.
pub const BODY_BREAKS: &[(&str, &[u8], &str)] = &[
    (
        "chunk extension with a bare LF",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        "",
    ),
    (
        "chunk extension with a bare CR",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        "",
    ),
    ("chunk extension with a NUL", b"5;\0\r\nhello\r\n0\r\n\r\n", NUL_EXT),
    ("chunk size 2^64-1", b"ffffffffffffffff\r\nabc", ""),
    (
        "chunk size overflowing 64 bits",
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        "",
    ),
    ("chunk size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n", ""),
    (
        "chunk size with leading garbage",
        b"+5\r\nhello\r\n0\r\n\r\n",
        "",
    ),
    (
        "chunk size with trailing garbage",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        "`5 x` is neither a chunk-size nor one with an extension (that needs `;`, RFC 9112 §7.1.1); \
         a parser that stops at the space and one that skips to the CRLF read different sizes",
    ),
    ("bare LF after the chunk size", b"5\nhello\r\n0\r\n\r\n", BARE_LF),
    ("bare LF after chunk data", b"5\r\nhello\n0\r\n\r\n", BARE_LF),
    (
        "chunk data longer than its size",
        b"3\r\nhello\r\n0\r\n\r\n",
        "",
    ),
    ("trailer line without a colon", b"0\r\nbad\r\n\r\n", TRAILER),
    ("trailer line ending in a bare LF", b"0\r\nX-T: v\n\r\n", TRAILER),
    ("trailer obs-fold line", b"0\r\nX-T: v\r\n w\r\n\r\n", TRAILER),
];

const NUL_EXT: &str = "a chunk extension is token or quoted-string (RFC 9112 §7.1.1); a NUL is \
     neither, and a parser that ends the line there reads the rest as data";

const BARE_LF: &str = "chunk lines end in CRLF (RFC 9112 §7.1); a backend that does not take \
     a bare LF reads another body (the TERM.EXT desync): refused, not guessed";

const TRAILER: &str = "trailers are field lines (RFC 9112 §7.1.2): one without a colon, ended \
     by a bare LF, or folded is bad framing a backend may end the body at differently; \
     nginx skips trailers unchecked";

/// nginx's answer to a body break: refused, or (`why` fulcrum refuses it) taken.
fn nginx_break(why: &'static str) -> Want {
    if why.is_empty() {
        BAD
    } else {
        OK
    }
}

const STREAMED: &str = "fulcrum streams request bodies (nginx buffers them whole): the \
     head has gone up when the break arrives, so the upstream connection is closed \
     mid-body, never completed nor reused; the backend sees a cut request, never a whole one";

/// The [`BODY_BREAKS`] sent after their head has gone up.
pub fn breaks_after_the_head() -> Vec<Case> {
    BODY_BREAKS
        .iter()
        .map(|&(name, body, why)| {
            let nginx = nginx_break(why);
            let why = if why.is_empty() { STREAMED } else { why };
            Case::new(name, chunked(body), (400, Seen::Cut)).nginx(nginx, why)
        })
        .collect()
}

/// Every case sent in one write, with the head.
pub fn catalogue() -> Vec<Case> {
    let breaks = BODY_BREAKS
        .iter()
        .map(|&(name, body, why)| Case::new(name, chunked(body), BAD).nginx(nginx_break(why), why));
    valid()
        .into_iter()
        .chain(refused_heads())
        .chain(breaks)
        .collect()
}
