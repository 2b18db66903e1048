//! The answers fulcrum gives itself for a [`ProxyError`], as [`rescue`] maps it: a
//! short plain-text page, or, to a gRPC request, what a gRPC server would answer
//! (HTTP 200, trailers-only, `grpc-status` and `grpc-message`), so client libraries
//! see UNAVAILABLE or DEADLINE_EXCEEDED and retry as they do for their servers.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS};

use super::answer::error_response;
use super::body::ProxyBody;
use super::error::{grpc_message, rescue, ProxyError};

/// What gRPC's `grpc-message` percent-encodes: every byte outside `0x20..=0x7E`,
/// and `%` itself (the non-ASCII bytes are always encoded).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether a request is a gRPC call: `content-type` `application/grpc`, or one
/// of its `+proto`/`+json` forms or with parameters, as Envoy tells them. gRPC-Web
/// (`application/grpc-web*`) is not: its clients read the status from the body.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let prefix = b"application/grpc";
    ct.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && matches!(ct.get(prefix.len()), None | Some(b'+') | Some(b';'))
}

/// The answer to an error, and the status the access log and metrics record for
/// it. After an error that must close (bad framing, say: the rest of the stream
/// cannot be trusted) the connection is closed. A gRPC request gets HTTP 200 on
/// the wire, but the log and metrics keep the status a plain request gets (502,
/// 504, ...), so error rates count gRPC failures too.
pub fn rescue_response(e: &ProxyError, grpc: bool) -> (Response<ProxyBody>, StatusCode) {
    let r = rescue(e);
    let mut resp = if grpc {
        trailers_only(r.grpc_status, &grpc_message(e))
    } else {
        error_response(r.status)
    };
    if r.close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    (resp, r.status)
}

/// A gRPC trailers-only response: HTTP 200 whose one header block carries the
/// status and message, and no body.
pub fn trailers_only(code: u8, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    if let Ok(v) = HeaderValue::try_from(encoded) {
        h.insert("grpc-message", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error::ConnectError;

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&ct(yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "text/plain",
        ] {
            assert!(!is_grpc(&ct(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    /// A failed gRPC call is a 200 with the status in its only header block; the
    /// message is percent-encoded; the log keeps 502.
    #[test]
    fn a_failed_grpc_call_is_answered_trailers_only() {
        let e = ProxyError::from(ConnectError::Io(std::io::Error::other("refused 100% é")));
        let (resp, logged) = rescue_response(&e, true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(logged, StatusCode::BAD_GATEWAY);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(
            h["grpc-message"],
            "upstream attempt failed: connect() failed: refused 100%25 %C3%A9"
        );
        assert!(http_body::Body::is_end_stream(resp.body()));
        let (resp, logged) = rescue_response(&e, false);
        assert_eq!(
            (resp.status(), logged),
            (StatusCode::BAD_GATEWAY, StatusCode::BAD_GATEWAY)
        );
        assert_eq!(resp.headers()["content-type"], "text/plain");
    }
}
