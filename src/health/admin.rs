//! Admin handlers for servers: `GET /status`, `POST /upstream/NAME/server/ADDR/drain`
//! and `.../enable`, and the bearer-token check of mutating endpoints.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::runtime::Shared;
use crate::upstream::{now_secs, Peer};

/// One server in `/status`.
#[derive(Debug, Serialize)]
pub struct ServerStatus {
    /// Resolved address.
    pub addr: String,
    /// Backup server.
    pub backup: bool,
    /// Weight.
    pub weight: u32,
    /// "up", "down", "unhealthy", "failed" or "draining".
    pub state: &'static str,
    /// Attempts in flight.
    pub active_requests: u32,
    /// Attempts started.
    pub requests: u64,
    /// Attempts failed.
    pub failures: u64,
    /// The name it came from: the hostname or address as written, or the SRV name
    /// (`resolve` pools).
    pub origin: String,
}

/// One upstream in `/status`.
#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    /// Pool name.
    pub name: String,
    /// Whether active health checks run for it.
    pub health_check: bool,
    /// Primaries, then backups, in config order.
    pub servers: Vec<ServerStatus>,
}

/// The body of `/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Every pool of the running config, implicit ones (literal proxy_pass) included.
    pub upstreams: Vec<UpstreamStatus>,
}

fn server_status(p: &Peer, now: u64) -> ServerStatus {
    let s = &p.state;
    ServerStatus {
        addr: p.conf.addr.to_string(),
        origin: p.origin.to_string(),
        backup: p.conf.backup,
        weight: p.conf.weight,
        state: p.state_name(now),
        active_requests: s.conns.load(Ordering::Relaxed),
        requests: s.requests.load(Ordering::Relaxed),
        failures: s.failures.load(Ordering::Relaxed),
    }
}

/// The current status of every pool.
pub fn status(shared: &Shared) -> Status {
    let snap = shared.snapshot.load();
    let now = now_secs();
    Status {
        upstreams: snap
            .upstreams
            .iter()
            .map(|up| UpstreamStatus {
                name: up.conf.name.clone(),
                health_check: up.conf.health_check.is_some(),
                servers: up.peers().map(|p| server_status(p, now)).collect(),
            })
            .collect(),
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize admin answer");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `GET /status`.
pub fn status_json(shared: &Shared) -> Response<Full<Bytes>> {
    json(StatusCode::OK, &status(shared))
}

/// Whether a mutating request may proceed: always without a token, else only with
/// `Authorization: Bearer TOKEN`, compared in constant time.
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    constant_time_eq(token.as_bytes(), given)
}

/// `401` for a mutating request without the right token.
pub fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Compares in time that depends only on `expected`'s length, never on where the
/// first difference is.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

/// `POST /upstream/NAME/server/ADDR/{drain,enable}`; `None` if `path` has another shape.
pub fn server_control(shared: &Shared, path: &str) -> Option<Response<Full<Bytes>>> {
    let rest = path.strip_prefix("/upstream/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [name, "server", addr, action] = parts.as_slice() else {
        return None;
    };
    let drain = match *action {
        "drain" => true,
        "enable" => false,
        _ => return None,
    };
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let addr = percent_encoding::percent_decode_str(addr).decode_utf8_lossy();
    Some(set_draining(shared, &name, &addr, drain))
}

/// Drains (`drain = true`) or enables every server of pool `upstream` whose address
/// (or name as written in the config) is `addr`. The flag lives in the server's
/// live state, so it holds across reloads while the server stays in the pool.
pub fn set_draining(
    shared: &Shared,
    upstream: &str,
    addr: &str,
    drain: bool,
) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load();
    let Some(up) = snap
        .upstreams
        .iter()
        .find(|u| u.conf.name.eq_ignore_ascii_case(upstream))
    else {
        return text(StatusCode::NOT_FOUND, "404 unknown upstream\n");
    };
    let now = now_secs();
    let mut changed: Vec<Arc<crate::upstream::PeerState>> = Vec::new();
    let mut out = Vec::new();
    for p in up
        .peers()
        .filter(|p| p.conf.addr.to_string() == addr || p.conf.name == addr)
    {
        // A server listed as primary and backup shares one state: flip it once.
        if !changed.iter().any(|s| Arc::ptr_eq(s, &p.state)) {
            let old = p.state_name(now);
            if p.state.set_draining(drain) != drain {
                let reason = if drain { "admin drain" } else { "admin enable" };
                super::log_change(&up.conf.name, p.conf.addr, old, p.state_name(now), reason);
            }
            changed.push(p.state.clone());
        }
        out.push(server_status(p, now));
    }
    if out.is_empty() {
        return text(StatusCode::NOT_FOUND, "404 unknown server\n");
    }
    json(
        StatusCode::OK,
        &UpstreamStatus {
            name: up.conf.name.clone(),
            health_check: up.conf.health_check.is_some(),
            servers: out,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3crett"));
        assert!(!constant_time_eq(b"s3cret", b""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_token_required_when_set() {
        let mut h = HeaderMap::new();
        assert!(authorized(None, &h));
        assert!(!authorized(Some("t0k"), &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0k"),
        );
        assert!(authorized(Some("t0k"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(!authorized(Some("t0k"), &h));
    }
}
