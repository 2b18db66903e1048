//! The checks of an HTTP/1 request head that its parser could not make alone (the
//! flags `proxy::framing` raised on the bytes going into hyper, the duplicates hyper
//! lets through), made before anything is forwarded.

use std::sync::atomic::Ordering::Relaxed;

use http::{header, Version};

use super::body::ReqBody;
use super::conn::ConnMeta;
use super::error::ProxyError;

/// The checks of an HTTP/1 head the parser could not make alone; says whether the
/// request is HTTP/1.
pub fn guard_head(
    parts: &http::request::Parts,
    body: &ReqBody,
    meta: &ConnMeta,
) -> Result<bool, ProxyError> {
    let h1 = parts.version <= Version::HTTP_11;
    if h1 {
        guard_framing(&parts.headers, meta)?;
        if matches!(body, ReqBody::Hyper(_)) {
            guard_duplicates(&parts.headers)?;
        }
    }
    Ok(h1)
}

/// HTTP/1 request smuggling guard: both framings present is never forwarded; nor
/// is a head over the limit.
fn guard_framing(headers: &http::HeaderMap, meta: &ConnMeta) -> Result<(), ProxyError> {
    if headers.contains_key(header::TRANSFER_ENCODING) && meta.head_guard.conflict.load(Relaxed) {
        return Err(ProxyError::ConflictingFraming);
    }
    if meta.head_guard.too_large.load(Relaxed) {
        return Err(ProxyError::HeadTooLarge);
    }
    if meta.head_guard.bad_body.load(Relaxed) {
        return Err(ProxyError::InvalidChunkedBody);
    }
    if meta.head_guard.two_lengths.load(Relaxed) {
        return Err(ProxyError::DuplicateHeader("Content-Length"));
    }
    Ok(())
}

/// A second `Host` line, which hyper's HTTP/1 server (h2c listeners) lets through,
/// is refused as fulcrum's own head parser refuses it (RFC 9110 §7.2, nginx: 400).
/// (hyper keeps one of equal `Content-Length` lines: the backend gets one.) Only
/// hyper's requests are looked at here: the own server has checked in the loop that
/// parsed the head.
/// So is `chunked` applied twice (`chunked, chunked` or two such lines), which
/// hyper reads as one chunked body while a backend may decode it twice (the own
/// parser refuses it in `FramingHeaders::transfer_encoding`; nginx: 400).
fn guard_duplicates(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(ProxyError::DuplicateHeader("Host"));
    }
    let chunked = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count();
    if chunked > 1 {
        return Err(ProxyError::DuplicateHeader("Transfer-Encoding"));
    }
    Ok(())
}
