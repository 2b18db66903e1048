//! The answers fulcrum gives itself rather than an upstream: short plain-text error
//! responses, nginx `return` (with 444, which closes the connection without a
//! response), the slash redirect of a prefix location, and nginx's `add_header`
//! applied to whatever answer a location gives.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::conn::ConnMeta;
use super::error::body_for;
use crate::config::{AddHeader, Return};
use crate::route::template::RequestVars;

/// The mark of a response that must not be written: the connection closes instead
/// (nginx `return 444`). fulcrum's HTTP/1 server closes on it; through
/// [`super::tower_service::Proxy`] it is the service's error, so hyper closes an
/// HTTP/1 connection and resets an HTTP/2 stream.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("closed without a response (return 444)")]
pub struct NoResponse;

/// Whether `resp` carries [`NoResponse`].
pub fn is_no_response<B>(resp: &Response<B>) -> bool {
    resp.extensions().get::<NoResponse>().is_some()
}

/// A short plain-text error response.
pub fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body_for(status)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// nginx `return`: the status with its rendered body and `Location`; 444 is an
/// empty response marked [`NoResponse`].
pub fn answer_return(ret: &Return, vars: &RequestVars<'_>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(ret.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if ret.status == 444 {
        let mut r = Response::new(ProxyBody::empty());
        *r.status_mut() = status;
        r.extensions_mut().insert(NoResponse);
        return r;
    }
    let body = ret
        .body
        .as_ref()
        .map(|b| b.render(vars))
        .unwrap_or_default();
    let mut r = Response::new(if body.is_empty() {
        ProxyBody::empty()
    } else {
        ProxyBody::full(body)
    });
    *r.status_mut() = status;
    if let Some(loc) = &ret.location {
        if let Ok(v) = HeaderValue::from_bytes(&loc.render(vars)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
    }
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The `301` to `path/` nginx sends for a request to a prefix location's name
/// without its trailing slash.
pub fn redirect_slash(
    meta: &ConnMeta,
    raw_host: &str,
    path: &str,
    query: Option<&str>,
) -> Response<ProxyBody> {
    let host = if raw_host.is_empty() {
        meta.local.to_string()
    } else {
        raw_host.to_string()
    };
    let mut loc = format!("{}://{}{}/", meta.scheme, host, path);
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    let mut r = error_response(StatusCode::MOVED_PERMANENTLY);
    *r.body_mut() = ProxyBody::full("301 Moved Permanently\n");
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Adds a location's `add_header` entries that apply to the response's status, in
/// order, after the headers it has (nginx appends them too); a value that renders
/// empty or invalid adds nothing.
pub fn add_headers<B>(list: &[AddHeader], vars: &RequestVars<'_>, resp: &mut Response<B>) {
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    for h in list.iter().filter(|h| h.applies(status)) {
        buf.clear();
        h.value.render_into(vars, &mut buf);
        if buf.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_bytes(&buf) {
            resp.headers_mut().append(h.name.clone(), v);
        }
    }
}
