//! The request path: route, pick a server, forward, retry as nginx's
//! `proxy_next_upstream`, stream the answer back.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::time::Instant;

use super::attempt::Attempt;
use super::body::{ProxyBody, ReqBody, UpBody, UpstreamBody};
use super::client::{self, ExchangeError, Outgoing};
use super::conn::{ConnMeta, IN_FLIGHT};
use super::error::{body_for, AttemptError};
use super::exchange::{Exchange, ReqInfo, Tracked};
use super::forward;
use super::h1::{BodyFraming, HeadWriter, ResponseHead};
use super::upgrade::ClientUpgrade;
use crate::config::{Action, ProxyPass, Return};
use crate::metrics::Reason;
use crate::route::location::LocationMatch;
use crate::route::server_name::normalize_host;
use crate::route::template::{RequestId, RequestVars};
use crate::route::uri::{normalize_path, proxy_pass_target};
use crate::state::{Site, Snapshot, VServer};
use crate::upstream::conn::Conn;
use crate::upstream::{Pick, Selection, Upstream};

/// Serves one request against the current snapshot. Never fails: every error
/// becomes a response.
pub async fn handle(
    snapshots: &ArcSwap<Snapshot>,
    meta: Arc<ConnMeta>,
    req: Request<ReqBody>,
) -> Result<Response<Tracked>, Infallible> {
    meta.waiting_since.store(IN_FLIGHT, Relaxed);
    let mut ex = Exchange::start(snapshots.load_full(), meta, &req);
    let (snap, meta, info) = ex.parts();
    let resp = route(snap, meta, req, info).await;
    Ok(ex.respond(resp))
}

/// A short plain-text error response.
pub fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body_for(status)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// An error response after which the connection is closed (bad framing: the rest
/// of the stream cannot be trusted).
fn close_response(status: StatusCode) -> Response<ProxyBody> {
    let mut r = error_response(status);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn route(
    snap: &Snapshot,
    meta: &ConnMeta,
    req: Request<ReqBody>,
    info: &mut ReqInfo,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let h1 = parts.version <= Version::HTTP_11;
    if h1 {
        // Request smuggling guard: both framings present is never forwarded.
        if parts.headers.contains_key(header::TRANSFER_ENCODING)
            && meta.head_guard.conflict.load(Relaxed)
        {
            return close_response(StatusCode::BAD_REQUEST);
        }
        if meta.head_guard.too_large.load(Relaxed) {
            return close_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
    }
    let raw_host = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => match parts.headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => return close_response(StatusCode::BAD_REQUEST),
            None => None,
        },
    };
    if raw_host.is_none() && parts.version == Version::HTTP_11 {
        return close_response(StatusCode::BAD_REQUEST);
    }
    let host = match normalize_host(raw_host.unwrap_or("")) {
        Ok(h) => h,
        Err(_) if raw_host.is_none() => "".into(),
        Err(_) => return close_response(StatusCode::BAD_REQUEST),
    };
    let Some(routes) = snap.listeners.get(&meta.listen_key) else {
        // The listener was removed by a reload while this connection stayed open.
        return close_response(StatusCode::MISDIRECTED_REQUEST);
    };
    let vs_idx = routes.servers[routes.names.find(&host)];
    let vs = &snap.servers[vs_idx];
    info.site = Site::Server(vs_idx);
    // Taken before the URI is borrowed below; only upgrade requests carry it.
    let on_upgrade = if h1 && forward::is_upgrade(&parts.headers) {
        ClientUpgrade::take(&mut parts.extensions)
    } else {
        None
    };
    let raw_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = parts.uri.path();
    let Ok(norm) = normalize_path(path) else {
        return close_response(StatusCode::BAD_REQUEST);
    };
    let loc_idx = match vs.locations.find(&norm) {
        LocationMatch::Found(i) => i,
        LocationMatch::RedirectSlash(_) => {
            return redirect_slash(meta, raw_host.unwrap_or(""), &norm, parts.uri.query());
        }
        LocationMatch::NotFound => return error_response(StatusCode::NOT_FOUND),
    };
    let loc = &vs.conf.locations[loc_idx];
    info.site = Site::Location(vs_idx, loc_idx);
    let request_id = RequestId::new();
    match &loc.action {
        Action::Return(ret) => {
            let vars = RequestVars {
                method: &parts.method,
                raw_target,
                uri: &norm,
                headers: &parts.headers,
                host: &host,
                hostname: &snap.hostname,
                remote: meta.remote,
                local: meta.local,
                scheme: meta.scheme,
                proxy_host: "",
                request_id: &request_id,
            };
            answer_return(ret, &vars)
        }
        Action::Proxy(pp) => {
            let vars = RequestVars {
                method: &parts.method,
                raw_target,
                uri: &norm,
                headers: &parts.headers,
                host: &host,
                hostname: &snap.hostname,
                remote: meta.remote,
                local: meta.local,
                scheme: meta.scheme,
                proxy_host: &pp.proxy_host,
                request_id: &request_id,
            };
            let target = match (&pp.uri_part, parts.uri.scheme()) {
                // The common case: the client's origin-form target passes unchanged.
                (None, None) => std::borrow::Cow::Borrowed(&parts.uri),
                _ => {
                    let t = proxy_pass_target(
                        pp.uri_part.as_deref(),
                        loc.pattern.prefix().unwrap_or(""),
                        raw_target,
                        &norm,
                    );
                    match http::Uri::try_from(t.as_ref()) {
                        Ok(u) => std::borrow::Cow::Owned(u),
                        Err(_) => return close_response(StatusCode::BAD_REQUEST),
                    }
                }
            };
            let (set, suppressed) = render_set_headers(pp, &vars);
            let up = &snap.upstreams[pp.upstream];
            // The hash key is evaluated once per request; retries reuse it (nginx).
            let hash_key = up.conf.hash_key.as_ref().map(|t| t.render(&vars));
            let fwd = Forward {
                vs,
                method: &parts.method,
                target,
                client_headers: &parts.headers,
                set,
                suppressed,
                proxy_host: &pp.proxy_host_header,
                upgrade: on_upgrade.is_some(),
                client_ip: meta.remote.ip(),
                hash_key,
                on_upgrade,
            };
            forward_request(up, fwd, body, info).await
        }
    }
}

/// Renders `proxy_set_header`: values to set, and names whose value came out empty
/// (nginx then sends nothing and still drops the client's header).
fn render_set_headers(
    pp: &ProxyPass,
    vars: &RequestVars<'_>,
) -> (Vec<(HeaderName, HeaderValue)>, Vec<HeaderName>) {
    let mut set = Vec::with_capacity(pp.set_headers.len());
    let mut suppressed = Vec::new();
    let mut buf = Vec::new();
    for (name, t) in &pp.set_headers {
        buf.clear();
        t.render_into(vars, &mut buf);
        if buf.is_empty() {
            suppressed.push(name.clone());
            continue;
        }
        match HeaderValue::from_bytes(&buf) {
            Ok(v) => set.push((name.clone(), v)),
            Err(_) => suppressed.push(name.clone()),
        }
    }
    (set, suppressed)
}

fn answer_return(ret: &Return, vars: &RequestVars<'_>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(ret.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

fn redirect_slash(
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

/// Everything about the request that each try re-sends.
struct Forward<'a> {
    vs: &'a VServer,
    method: &'a Method,
    /// Borrowed in the common case: cloning a `Uri` costs two atomic operations.
    target: std::borrow::Cow<'a, http::Uri>,
    client_headers: &'a http::HeaderMap,
    set: Vec<(HeaderName, HeaderValue)>,
    suppressed: Vec<HeaderName>,
    proxy_host: &'a HeaderValue,
    upgrade: bool,
    client_ip: std::net::IpAddr,
    /// The evaluated `hash_key`, for "hash" pools.
    hash_key: Option<Vec<u8>>,
    on_upgrade: Option<ClientUpgrade>,
}

impl Forward<'_> {
    /// Writes the upstream request headers, afresh for each try (no copy is kept).
    fn write_headers(&self, w: &mut HeadWriter<'_>) {
        forward::for_each_upstream_header(
            self.client_headers,
            &self.set,
            &self.suppressed,
            self.proxy_host,
            self.upgrade,
            |n, v| w.header(n, v),
        );
    }
}

/// How one try ended without a usable response.
enum TryFailure {
    /// Classified upstream failure; `sent`: the request (partly) left.
    Upstream { err: AttemptError, sent: bool },
    /// The client's body broke the limit: 413.
    TooLarge,
    /// The client's body could not be read.
    Client,
}

impl From<ExchangeError> for TryFailure {
    fn from(e: ExchangeError) -> TryFailure {
        let (err, sent) = match e {
            ExchangeError::TooLarge(_) => return TryFailure::TooLarge,
            ExchangeError::Client => return TryFailure::Client,
            ExchangeError::SendTimeout | ExchangeError::ReadTimeout => {
                (AttemptError::Timeout, true)
            }
            ExchangeError::Invalid(_) => (AttemptError::InvalidHeader, true),
            ExchangeError::Closed { body_sent } => (AttemptError::Reset, body_sent),
            ExchangeError::Io(_) => (AttemptError::Reset, true),
        };
        TryFailure::Upstream { err, sent }
    }
}

/// Gets a connection to the peer: a pooled one if any is still open, else a new one.
/// The flag says whether it is new.
async fn obtain(up: &Upstream, pick: Pick) -> Result<(Conn, bool), AttemptError> {
    let peer = up.peer(pick);
    if let Some(c) = peer.state.idle.take(up.conf.keepalive_timeout) {
        return Ok((c, false));
    }
    match client::connect(
        peer.conf.addr,
        up.conf.connect_timeout,
        up.conf.send_timeout,
    )
    .await
    {
        Ok(c) => Ok((c, true)),
        Err(client::ConnectError::Timeout) => Err(AttemptError::Timeout),
        Err(e) => {
            tracing::debug!(upstream = %up.conf.name, server = %peer.conf.addr, error = %e, "connect failed");
            Err(AttemptError::Connect)
        }
    }
}

async fn forward_request(
    up: &Arc<Upstream>,
    mut fwd: Forward<'_>,
    body: ReqBody,
    info: &mut ReqInfo,
) -> Response<ProxyBody> {
    let max = fwd.vs.conf.client_max_body_size;
    if max > 0 {
        let declared = fwd
            .client_headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return close_response(StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
    let mut body = Some(if body.is_end_stream() {
        UpBody::Empty
    } else {
        UpBody::Stream {
            inner: body,
            left: if max == 0 { u64::MAX } else { max },
        }
    });
    let has_body = !matches!(body, Some(UpBody::Empty));
    let next = up.conf.next_upstream;
    let method_retryable =
        next.non_idempotent || !matches!(fwd.method.as_str(), "POST" | "LOCK" | "PATCH");
    // Only a `next_upstream_timeout` needs the start time.
    let started = (!up.conf.next_upstream_timeout.is_zero()).then(Instant::now);
    let budget = up.tries.max(1);
    let mut tries_left = budget;
    let mut sel = Selection::default();
    loop {
        let Some(pick) = up.select(&mut sel, fwd.hash_key.as_deref(), Some(fwd.client_ip)) else {
            tracing::error!(upstream = %up.conf.name, "no live upstreams while connecting to upstream");
            return error_response(StatusCode::BAD_GATEWAY);
        };
        if tries_left < budget {
            up.metrics.retries.inc();
        }
        tries_left -= 1;
        let mut attempt = Attempt {
            upstream: up.clone(),
            pick,
            conn: None,
            reusable: false,
            failed: false,
            // The first try shares the request's clock read; retries read their own.
            started: match info.started.take() {
                Some(t) => t,
                None => std::time::Instant::now(),
            },
            status: 0,
        };
        let peer = up.peer(pick);
        info.try_start(peer.conf.addr, attempt.started);
        let can_retry = |err_listed: bool, sent: bool, body_left: bool| {
            tries_left > 0
                && err_listed
                && (!sent || method_retryable)
                && (body_left || !has_body)
                && (up.conf.next_upstream_timeout.is_zero()
                    || started.is_some_and(|t| t.elapsed() < up.conf.next_upstream_timeout))
        };
        let listed = |e: AttemptError| match e {
            AttemptError::Timeout => next.timeout,
            AttemptError::InvalidHeader => next.invalid_header,
            AttemptError::Connect | AttemptError::Reset => next.error,
        };
        let try_started = up.wants_rtt().then(Instant::now);
        let result = send_once(up, &mut attempt, &mut fwd, &mut body).await;
        let failure = match result {
            Ok(head) => {
                if let Some(t) = try_started {
                    up.observe_rtt(pick, t.elapsed());
                }
                let code = head.status.as_u16();
                attempt.status = code;
                if next.statuses.contains(code) && can_retry(true, true, body.is_some()) {
                    // Counted as a failure only because a retry follows (nginx).
                    attempt.failed = true;
                    peer.metrics.failure(Reason::Status);
                    info.try_end(code);
                    drop(attempt);
                    continue;
                }
                info.try_answered(code);
                return respond(up, attempt, head, fwd.on_upgrade.take());
            }
            Err(f) => f,
        };
        match failure {
            TryFailure::TooLarge => {
                info.try_end(StatusCode::PAYLOAD_TOO_LARGE.as_u16());
                return close_response(StatusCode::PAYLOAD_TOO_LARGE);
            }
            TryFailure::Client => {
                info.try_end(StatusCode::BAD_REQUEST.as_u16());
                return close_response(StatusCode::BAD_REQUEST);
            }
            TryFailure::Upstream { err, sent } => {
                attempt.failed = true;
                peer.metrics.failure(err.reason());
                info.try_end(err.status().as_u16());
                tracing::warn!(
                    upstream = %up.conf.name,
                    server = %peer.conf.addr,
                    reason = err.reason().as_str(),
                    "upstream attempt failed"
                );
                drop(attempt);
                if !can_retry(listed(err), sent, body.is_some()) {
                    return error_response(err.status());
                }
            }
        }
    }
}

/// One try on the picked peer. A pooled connection found closed before it answered
/// anything is replaced by a fresh one without counting a try, as long as the
/// request body is still whole. On success the connection is in `attempt.conn`.
async fn send_once(
    up: &Upstream,
    attempt: &mut Attempt,
    fwd: &mut Forward<'_>,
    body: &mut Option<UpBody>,
) -> Result<ResponseHead, TryFailure> {
    loop {
        let (mut conn, fresh) = obtain(up, attempt.pick)
            .await
            .map_err(|err| TryFailure::Upstream { err, sent: false })?;
        let req = Outgoing {
            method: fwd.method,
            target: &fwd.target,
            upgrade: fwd.upgrade,
            read_timeout: up.conf.read_timeout,
        };
        let exchange = conn.exchange(&req, |w| fwd.write_headers(w), body, fresh);
        match exchange.await {
            Ok(head) => {
                attempt.conn = Some(conn);
                return Ok(head);
            }
            // The server closed an idle keep-alive connection as we used it.
            Err(ExchangeError::Closed { body_sent: false }) if !fresh => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn respond(
    up: &Arc<Upstream>,
    mut attempt: Attempt,
    head: ResponseHead,
    on_upgrade: Option<ClientUpgrade>,
) -> Response<ProxyBody> {
    let ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        ..
    } = head;
    let body = if status == StatusCode::SWITCHING_PROTOCOLS
        && on_upgrade.is_some()
        && attempt.conn.is_some()
    {
        if let (Some(client_side), Some(conn)) = (on_upgrade, attempt.conn.take()) {
            tokio::spawn(super::upgrade::tunnel(client_side, conn, attempt));
        }
        UpstreamBody::headers_only(headers)
    } else if framing == BodyFraming::Empty {
        attempt.reusable = keep_alive && attempt.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        drop(attempt);
        UpstreamBody::headers_only(headers)
    } else {
        UpstreamBody::new(headers, attempt, framing, keep_alive, up.conf.read_timeout)
    };
    let mut resp = Response::new(ProxyBody::Upstream(Box::new(body)));
    *resp.status_mut() = status;
    resp
}
