//! The request head encoder: written straight from the parts the proxy already
//! holds, with no `http::Request` built in between.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri};

/// Writes a request head: the request line, the headers the caller emits through
/// [`HeadWriter::header`], and `Transfer-Encoding: chunked` when the body streams
/// without a `Content-Length`. Returns whether the body must be chunk-encoded.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &Uri,
    streamed_body: bool,
    headers: impl FnOnce(&mut HeadWriter<'_>),
) -> bool {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match target.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        // CONNECT's authority form.
        None => match target.authority() {
            Some(a) => out.extend_from_slice(a.as_str().as_bytes()),
            None => out.push(b'/'),
        },
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut w = HeadWriter {
        out,
        has_length: false,
    };
    headers(&mut w);
    let chunked = streamed_body && !w.has_length;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Appends header lines to a request head.
pub struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
    has_length: bool,
}

impl HeadWriter<'_> {
    /// Appends `name: value`.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.has_length |= name == header::CONTENT_LENGTH;
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_request_head() {
        let mut out = Vec::new();
        let uri: Uri = "/p?q=1".parse().unwrap();
        let chunked = encode_head(&mut out, &Method::POST, &uri, true, |w| {
            w.header(&header::HOST, &HeaderValue::from_static("b"));
            w.header(
                &HeaderName::from_static("x-a"),
                &HeaderValue::from_static("1"),
            );
        });
        assert!(chunked);
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nhost: b\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let chunked = encode_head(&mut out, &Method::PUT, &uri, true, |w| {
            w.header(&header::CONTENT_LENGTH, &HeaderValue::from_static("3"));
        });
        assert!(!chunked);
        assert_eq!(out, b"PUT /p?q=1 HTTP/1.1\r\ncontent-length: 3\r\n\r\n");
    }
}
