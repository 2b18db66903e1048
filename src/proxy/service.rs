//! The request path: route, pick a server, forward, retry as nginx's
//! `proxy_next_upstream`, stream the answer back.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::time::Instant;

pub use super::answer::error_response;
use super::answer::{add_headers, answer_return, redirect_slash};
use super::attempt::Attempt;
use super::body::{ProxyBody, ReqBody, UpBody, UpstreamBody};
use super::client::{self, Outgoing};
use super::conn::{ConnMeta, IN_FLIGHT};
use super::error::{rescue, ExchangeError, Level, ProxyError};
use super::exchange::{Exchange, ReqInfo, Tracked};
use super::forward;
use super::guard::guard_head;
use super::h1::{BodyFraming, HeadWriter, ResponseHead};
use super::h2client::{self, H2Head, H2Headers, H2Outgoing};
use super::local::{is_grpc, rescue_response};
use super::retry::Retry;
use super::upgrade::ClientUpgrade;
use crate::config::{Action, AddHeader, Location, PassOpts, Protocol, ProxyPass};
use crate::metrics::Reason;
use crate::route::location::LocationMatch;
use crate::route::server_name::normalize_host;
use crate::route::template::{RequestId, RequestVars, SslVars};
use crate::route::uri::{normalize_path, proxy_pass_target};
use crate::state::{Site, Snapshot, VServer};
use crate::upstream::{Pick, Selection, Upstream};

type Answer = Result<Response<ProxyBody>, ProxyError>;

/// Serves one request against the current snapshot. Never fails: every error
/// becomes a response.
pub async fn handle(
    snapshots: &ArcSwap<Snapshot>,
    meta: Arc<ConnMeta>,
    req: Request<ReqBody>,
) -> Result<Response<Tracked>, Infallible> {
    meta.waiting_since.store(IN_FLIGHT, Relaxed);
    let grpc = is_grpc(req.headers());
    let mut ex = Exchange::start(snapshots.load_full(), meta, &req);
    let (snap, meta, info) = ex.parts();
    Ok(match route(snap, meta, req, info).await {
        Ok(resp) => match resp.extensions().get::<Logged>() {
            Some(&Logged(logged)) => ex.respond_logged(resp, logged),
            None => ex.respond(resp),
        },
        Err(e) => {
            let (resp, logged) = rescue_response(&e, grpc);
            ex.respond_logged(resp, logged)
        }
    })
}

/// The status the log and metrics record for an answer made from an error before
/// `handle` saw it (one that got `add_header`), when it differs from the one on the
/// wire (a failed gRPC call is a 200).
#[derive(Debug, Clone, Copy)]
struct Logged(StatusCode);

/// Checks the head, then finds the virtual server and the location.
async fn route(
    snap: &Snapshot,
    meta: &ConnMeta,
    req: Request<ReqBody>,
    info: &mut ReqInfo,
) -> Answer {
    let (mut parts, body) = req.into_parts();
    let h1 = guard_head(&parts, &body, meta)?;
    let (raw_host, host) = host(&parts.uri, &parts.headers, parts.version)?;
    let vs_idx = virtual_server(snap, meta, &host)?;
    let vs = &snap.servers[vs_idx];
    info.site = Site::Server(vs_idx);
    // The client as the server's `real_ip_*` say (the access log records it too).
    let real = super::real_ip::of_server(vs.conf.real_ip.as_ref(), meta, &parts.headers);
    let remote = info.client(real, meta.remote);
    // Taken before the URI is borrowed below.
    let on_upgrade = take_upgrade(h1, &parts.headers, &mut parts.extensions);
    let raw_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let norm = normalize_path(parts.uri.path()).map_err(ProxyError::BadPath)?;
    let request_id = RequestId::new();
    let mut vars = RequestVars {
        method: &parts.method,
        raw_target,
        uri: &norm,
        headers: &parts.headers,
        host: &host,
        hostname: &snap.hostname,
        remote,
        local: meta.local,
        scheme: meta.scheme,
        proxy_host: "",
        request_id: &request_id,
        ssl: ssl_vars(meta),
    };
    let loc_idx = match vs.locations.find(&norm) {
        LocationMatch::Found(i) => i,
        LocationMatch::RedirectSlash(_) => {
            let host = raw_host.unwrap_or("");
            let resp = redirect_slash(meta, host, &norm, parts.uri.query());
            return with_added(&vs.conf.add_headers, &vars, Ok(resp));
        }
        LocationMatch::NotFound => {
            return with_added(&vs.conf.add_headers, &vars, Err(ProxyError::NoLocation))
        }
    };
    let loc = &vs.conf.locations[loc_idx];
    info.site = Site::Location(vs_idx, loc_idx);
    let pp = match &loc.action {
        Action::Return(ret) => {
            return with_added(&loc.add_headers, &vars, Ok(answer_return(ret, &vars)))
        }
        Action::Proxy(pp) => pp,
    };
    vars.proxy_host = &pp.proxy_host;
    let target = proxy_target(pp, loc, &parts.uri, raw_target, &norm)?;
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
        opts: &pp.opts,
        max_body: loc.client_max_body_size,
        upgrade: on_upgrade.is_some(),
        client_ip: remote.ip(),
        hash_key,
        on_upgrade,
    };
    let answer = forward_request(up, fwd, body, info).await;
    with_added(&loc.add_headers, &vars, answer)
}

/// The client's side of an HTTP/1 upgrade; only upgrade requests carry it.
fn take_upgrade(
    h1: bool,
    headers: &http::HeaderMap,
    extensions: &mut http::Extensions,
) -> Option<ClientUpgrade> {
    if h1 && forward::is_upgrade(headers) {
        ClientUpgrade::take(extensions)
    } else {
        None
    }
}

/// The answer with `add_header` applied: fulcrum's own error answers (404, 502, 504,
/// ...) become responses here so that `add_header_always` reaches them too.
fn with_added(list: &[AddHeader], vars: &RequestVars<'_>, answer: Answer) -> Answer {
    if list.is_empty() {
        return answer;
    }
    let mut resp = match answer {
        Ok(resp) => resp,
        Err(e) => {
            let (mut resp, logged) = rescue_response(&e, is_grpc(vars.headers));
            if logged != resp.status() {
                resp.extensions_mut().insert(Logged(logged));
            }
            resp
        }
    };
    add_headers(list, vars, &mut resp);
    Ok(resp)
}

/// The host as the client sent it (the absolute URI's authority, else `Host`; only
/// HTTP/1.0 may go without) and normalized.
fn host<'a>(
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
    version: Version,
) -> Result<(Option<&'a str>, Cow<'a, str>), ProxyError> {
    let raw_host = match uri.authority() {
        Some(a) => Some(a.as_str()),
        None => match headers.get(header::HOST) {
            Some(h) => Some(h.to_str().map_err(ProxyError::HostNotText)?),
            None => None,
        },
    };
    if raw_host.is_none() && version == Version::HTTP_11 {
        return Err(ProxyError::MissingHost);
    }
    let host = match normalize_host(raw_host.unwrap_or("")) {
        Ok(h) => h,
        Err(_) if raw_host.is_none() => "".into(),
        Err(e) => return Err(ProxyError::InvalidHost(e)),
    };
    Ok((raw_host, host))
}

/// The virtual server for `host` on the connection's listener.
fn virtual_server(snap: &Snapshot, meta: &ConnMeta, host: &str) -> Result<usize, ProxyError> {
    // The listener was removed by a reload while this connection stayed open.
    let routes = snap
        .listeners
        .get(&meta.listen_key)
        .ok_or(ProxyError::ListenerRemoved)?;
    Ok(routes.servers[routes.names.find(host)])
}

/// The upstream request target: the client's origin-form target unchanged in the
/// common case, else as `proxy_pass` with a URI part rewrites it.
fn proxy_target<'a>(
    pp: &ProxyPass,
    loc: &Location,
    uri: &'a http::Uri,
    raw_target: &str,
    norm: &str,
) -> Result<Cow<'a, http::Uri>, ProxyError> {
    if pp.uri_part.is_none() && uri.scheme().is_none() {
        return Ok(Cow::Borrowed(uri));
    }
    let t = proxy_pass_target(
        pp.uri_part.as_deref(),
        loc.pattern.prefix().unwrap_or(""),
        raw_target,
        norm,
    );
    match http::Uri::try_from(t.as_ref()) {
        Ok(u) => Ok(Cow::Owned(u)),
        Err(e) => Err(ProxyError::BadTarget(e)),
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

/// Everything about the request that each try re-sends.
struct Forward<'a> {
    vs: &'a VServer,
    method: &'a Method,
    /// Borrowed in the common case: cloning a `Uri` costs two atomic operations.
    target: Cow<'a, http::Uri>,
    client_headers: &'a http::HeaderMap,
    set: Vec<(HeaderName, HeaderValue)>,
    suppressed: Vec<HeaderName>,
    proxy_host: &'a HeaderValue,
    /// The location's timeouts and retry rules.
    opts: &'a PassOpts,
    /// The location's `client_max_body_size`; 0 = off.
    max_body: u64,
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

    /// The same headers for an HTTP/2 stream, plus `te: trailers` when the client
    /// asked for it (gRPC needs it; every other hop-by-hop header stays behind).
    fn h2_headers(&self) -> H2Headers {
        let mut w = H2Headers::default();
        let (c, set, sup) = (self.client_headers, &self.set, &self.suppressed);
        forward::for_each_upstream_header(c, set, sup, self.proxy_host, false, |n, v| {
            w.header(n, v)
        });
        if h2client::wants_trailers(c) {
            w.map
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        w
    }
}

/// A response head from either protocol.
enum Head {
    H1(ResponseHead),
    H2(H2Head),
}

impl Head {
    fn status(&self) -> StatusCode {
        match self {
            Head::H1(h) => h.status,
            Head::H2(h) => h.response.status(),
        }
    }
}

/// The body as it goes up: a declared `Content-Length` over `client_max_body_size`
/// is refused at once; a streamed body is counted against it as it goes.
fn limit_body(fwd: &Forward<'_>, body: ReqBody) -> Result<UpBody, ProxyError> {
    let max = fwd.max_body;
    if max > 0 {
        let declared = fwd
            .client_headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&n| n > max) {
            return Err(ProxyError::DeclaredTooLarge { declared });
        }
    }
    Ok(if body.is_end_stream() {
        UpBody::Empty
    } else {
        let left = if max == 0 { u64::MAX } else { max };
        UpBody::stream(body, left, fwd.vs.conf.client_body_timeout)
    })
}

/// Writes the log line [`rescue`] gives for a failure at `upstream` (`server`: the
/// peer tried, if any).
fn log_failure(e: &ProxyError, upstream: &str, server: Option<std::net::SocketAddr>) {
    let r = rescue(e);
    let Some((level, msg)) = r.log else {
        return;
    };
    let reason = r.reason.map_or("", |r| r.as_str());
    match (level, server) {
        (Level::Error, _) => tracing::error!(upstream = %upstream, "{msg}"),
        (Level::Warn, Some(server)) => match e {
            // The cause (refused, reset, the TLS alert) is what an operator needs.
            ProxyError::Upstream(cause) => {
                tracing::warn!(upstream = %upstream, server = %server, reason, error = %cause, "{msg}")
            }
            _ => tracing::warn!(upstream = %upstream, server = %server, reason, "{msg}"),
        },
        (Level::Warn, None) => tracing::warn!(upstream = %upstream, reason, "{msg}"),
    }
}

/// A new try on `pick`, started on the request's clock.
fn start_attempt(up: &Arc<Upstream>, pick: Pick, info: &mut ReqInfo) -> Attempt {
    let attempt = Attempt {
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
    info.try_start(up.peer(pick).conf.addr, attempt.started);
    attempt
}

async fn forward_request(
    up: &Arc<Upstream>,
    mut fwd: Forward<'_>,
    body: ReqBody,
    info: &mut ReqInfo,
) -> Answer {
    let body = limit_body(&fwd, body)?;
    let mut retry = Retry::new(up, fwd.opts, fwd.method, !matches!(body, UpBody::Empty));
    let mut body = Some(body);
    let mut sel = Selection::default();
    loop {
        let Some(pick) = up.select(&mut sel, fwd.hash_key.as_deref(), Some(fwd.client_ip)) else {
            let e = ProxyError::NoLiveUpstreams {
                upstream: up.conf.name.clone(),
            };
            log_failure(&e, &up.conf.name, None);
            return Err(e);
        };
        retry.take_try();
        let mut attempt = start_attempt(up, pick, info);
        let peer = up.peer(pick);
        let try_started = up.wants_rtt().then(Instant::now);
        let err = match send_once(up, &mut attempt, &mut fwd, &mut body).await {
            Ok(head) => {
                if let Some(t) = try_started {
                    up.observe_rtt(pick, t.elapsed());
                }
                let code = head.status().as_u16();
                attempt.status = code;
                if retry.status_listed(code) && retry.can_retry(true, true, body.is_some()) {
                    // Counted as a failure only because a retry follows (nginx).
                    attempt.failed = true;
                    peer.metrics.failure(Reason::Status);
                    info.try_end(code);
                    drop(attempt);
                    continue;
                }
                info.try_answered(code);
                return Ok(match head {
                    Head::H1(head) => respond(attempt, head, fwd.on_upgrade.take(), fwd.opts),
                    Head::H2(head) => h2client::respond(attempt, head, fwd.opts.read_timeout),
                });
            }
            Err(e) => e,
        };
        let r = rescue(&err);
        info.try_end(r.status.as_u16());
        // Only an upstream failure counts against the peer and may be retried.
        let ProxyError::Upstream(failure) = &err else {
            return Err(err);
        };
        attempt.failed = true;
        if let Some(reason) = r.reason {
            peer.metrics.failure(reason);
        }
        log_failure(&err, &up.conf.name, Some(peer.conf.addr));
        drop(attempt);
        if !retry.can_retry(retry.listed(failure.kind()), failure.sent(), body.is_some()) {
            return Err(err);
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
) -> Result<Head, ProxyError> {
    if up.conf.protocol == Protocol::H2 {
        let grpc = h2client::grpc_timeout(fwd.client_headers);
        let out = H2Outgoing {
            method: fwd.method,
            target: &fwd.target,
            read_timeout: grpc.map_or(fwd.opts.read_timeout, |g| g.min(fwd.opts.read_timeout)),
            body_timeout: fwd.vs.conf.client_body_timeout,
        };
        let headers = || fwd.h2_headers();
        let head = h2client::send(up, attempt.pick, &out, &headers, body).await?;
        return Ok(Head::H2(head));
    }
    loop {
        let (mut conn, fresh) = client::obtain(up, attempt.pick, fwd.opts).await?;
        let req = Outgoing {
            method: fwd.method,
            target: &fwd.target,
            upgrade: fwd.upgrade,
            read_timeout: fwd.opts.read_timeout,
        };
        let exchange = conn.exchange(&req, |w| fwd.write_headers(w), body, fresh);
        match exchange.await {
            Ok(head) => {
                attempt.conn = Some(conn);
                return Ok(Head::H1(head));
            }
            // The server closed an idle keep-alive connection as we used it.
            Err(ExchangeError::Closed { body_sent: false }) if !fresh => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn respond(
    mut attempt: Attempt,
    head: ResponseHead,
    on_upgrade: Option<ClientUpgrade>,
    opts: &PassOpts,
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
        UpstreamBody::new(headers, attempt, framing, keep_alive, opts.read_timeout)
    };
    let mut resp = Response::new(ProxyBody::Upstream(Box::new(body)));
    *resp.status_mut() = status;
    resp
}

/// The `$ssl_*` variables of the connection (empty on cleartext).
fn ssl_vars(meta: &ConnMeta) -> SslVars<'_> {
    match &meta.tls {
        Some(t) => SslVars {
            protocol: t.protocol,
            server_name: &t.server_name,
            client_verify: t.client_verify,
            client_s_dn: &t.client_s_dn,
        },
        None => SslVars::default(),
    }
}
