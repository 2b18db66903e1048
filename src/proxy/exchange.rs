//! One request from head to last byte, for the metrics and the access log.
//!
//! [`Exchange`] starts when the request head is read and rides inside the response
//! body ([`Tracked`]); it ends when that body is done or dropped (the client went
//! away), which is when nginx logs. Ending counts `fulcrum_http_requests_total` and
//! `fulcrum_http_request_duration_seconds` through handles the snapshot resolved, and
//! hands an access log entry to the writer. With the access log off nothing is
//! allocated: the entry and the try list only exist when a log does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};

use super::body::ProxyBody;
use super::conn::ConnMeta;
use super::error::{rescue, BoxError, ProxyError};
use crate::access_log::{basic_user, Entry, RequestLine, RequestText, Try};
use crate::state::{Site, Snapshot};

/// Status logged when the client goes away before a response exists (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// What routing and forwarding learn about a request along the way.
#[derive(Debug, Default)]
pub struct ReqInfo {
    /// How far routing got (selects the metric handles).
    pub site: Site,
    /// When the request head was read; the first try starts its clock from here too
    /// (routing takes microseconds; a precise clock read costs ~45 ns on a VM).
    pub started: Option<Instant>,
    log: Option<Box<Entry>>,
    /// Start of the last try while its time still runs (its response streams).
    open_try: Option<Instant>,
}

impl ReqInfo {
    /// A try on `addr` started at `at`.
    #[inline]
    pub fn try_start(&mut self, addr: SocketAddr, at: Instant) {
        if let Some(e) = &mut self.log {
            e.tries.push(Try {
                addr,
                status: 0,
                time: Default::default(),
            });
            self.open_try = Some(at);
        }
    }

    /// The last try ended without its response reaching the client: `status` is the
    /// upstream's (retried) status or the one a failure maps to.
    #[inline]
    pub fn try_end(&mut self, status: u16) {
        if let (Some(e), Some(at)) = (&mut self.log, self.open_try.take()) {
            if let Some(t) = e.tries.last_mut() {
                t.status = status;
                t.time = at.elapsed();
            }
        }
    }

    /// The last try's response goes to the client; its time runs until the body ends.
    #[inline]
    pub fn try_answered(&mut self, status: u16) {
        if let Some(t) = self.log.as_mut().and_then(|e| e.tries.last_mut()) {
            t.status = status;
        }
    }
}

/// The log entry of a request, its text copied out of the connection's buffers.
fn log_entry<B>(meta: &ConnMeta, req: &Request<B>) -> Box<Entry> {
    let h = req.headers();
    let uri = req.uri();
    let pq = uri.path_and_query().map(|p| p.as_str().as_bytes());
    // One pass over the headers instead of four map lookups; the first of repeated
    // headers is the one nginx logs.
    let (mut host, mut referer, mut ua, mut auth) = (None, None, None, None);
    for (name, value) in h {
        let slot = if name == header::HOST {
            &mut host
        } else if name == header::USER_AGENT {
            &mut ua
        } else if name == header::REFERER {
            &mut referer
        } else if name == header::AUTHORIZATION {
            &mut auth
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    let (host, referer, ua) = (
        host.map(|v| v.as_bytes()),
        referer.map(|v| v.as_bytes()),
        ua.map(|v| v.as_bytes()),
    );
    // The target as the client wrote it: absolute-form and authority-form on HTTP/1,
    // the path on HTTP/2 (which has no request line; nginx logs the path).
    let text = match (
        req.version() < Version::HTTP_2,
        uri.scheme_str(),
        uri.authority(),
        pq,
    ) {
        (true, Some(scheme), Some(a), pq) => RequestText::new(
            &[
                scheme.as_bytes(),
                b"://",
                a.as_str().as_bytes(),
                pq.unwrap_or(b""),
            ],
            host,
            referer,
            ua,
        ),
        (true, None, Some(a), None) => {
            RequestText::new(&[a.as_str().as_bytes()], host, referer, ua)
        }
        (_, _, _, pq) => RequestText::new(&[pq.unwrap_or(b"/")], host, referer, ua),
    };
    Box::new(Entry {
        time: None,
        remote: meta.remote,
        remote_user: auth.and_then(basic_user),
        request: Some(RequestLine {
            method: req.method().clone(),
            version: req.version(),
        }),
        text,
        status: 0,
        body_bytes_sent: 0,
        request_time: Default::default(),
        tries: Default::default(),
        ssl_protocol: meta.tls.as_ref().map_or("", |t| t.protocol),
        ssl_server_name: meta
            .tls
            .as_ref()
            .map_or_else(String::new, |t| t.server_name.clone()),
    })
}

/// A request in progress. Dropping it ends the request (status 499 if it never got
/// a response).
pub struct Exchange {
    snap: Arc<Snapshot>,
    started: Instant,
    meta: Arc<ConnMeta>,
    info: ReqInfo,
    status: u16,
    bytes: u64,
}

impl Exchange {
    /// Starts the bookkeeping of `req`, read on `meta`'s connection, under `snap`.
    pub fn start<B>(snap: Arc<Snapshot>, meta: Arc<ConnMeta>, req: &Request<B>) -> Exchange {
        let log = snap.access_log.as_ref().map(|_| log_entry(&meta, req));
        if let Some(n) = &meta.streams {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        Exchange {
            snap,
            started,
            meta,
            info: ReqInfo {
                log,
                started: Some(started),
                ..ReqInfo::default()
            },
            status: CLIENT_CLOSED,
            bytes: 0,
        }
    }

    /// The snapshot to route with, the connection, and the info to fill in, borrowed
    /// apart.
    pub fn parts(&mut self) -> (&Snapshot, &ConnMeta, &mut ReqInfo) {
        (&self.snap, &self.meta, &mut self.info)
    }

    /// The response goes out; the exchange ends with its body.
    pub fn respond(self, resp: Response<ProxyBody>) -> Response<Tracked> {
        let status = resp.status();
        self.respond_logged(resp, status)
    }

    /// Like [`Exchange::respond`], with the status the log and metrics record
    /// when it is not the one on the wire (a failed gRPC call goes out as 200).
    pub fn respond_logged(
        mut self,
        resp: Response<ProxyBody>,
        logged: http::StatusCode,
    ) -> Response<Tracked> {
        self.status = logged.as_u16();
        resp.map(|body| Tracked { body, ex: self })
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // The connection now waits for its next request head.
        self.meta
            .waiting_since
            .store(crate::clock::coarse_nanos(), Ordering::Relaxed);
        self.meta.idle.store(true, Ordering::Relaxed);
        if let Some(n) = &self.meta.streams {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        if !crate::metrics::recording() && self.snap.access_log.is_none() {
            return;
        }
        // One clock read serves the metrics, the request time and the last try's time.
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(self.started);
        self.snap
            .request_metrics(self.info.site, self.meta.listen_key)
            .record(self.status, elapsed);
        if let (Some(log), Some(mut e)) = (&self.snap.access_log, self.info.log.take()) {
            if let (Some(at), Some(t)) = (self.info.open_try, e.tries.last_mut()) {
                t.time = end.saturating_duration_since(at);
            }
            e.status = self.status;
            e.body_bytes_sent = self.bytes;
            e.request_time = elapsed;
            log.log(&e);
        }
    }
}

/// The response body with its exchange: counts the bytes sent and ends the exchange
/// when dropped (hyper drops it once the body is written, or the client is gone).
pub struct Tracked {
    body: ProxyBody,
    ex: Exchange,
}

impl Tracked {
    /// The upstream's headers, for an upstream response.
    pub fn pass_headers(&self) -> Option<&crate::proxy::h1::PassHeaders> {
        self.body.pass_headers()
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.ex.bytes += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Counts and logs a request that hyper answered itself before the service saw it:
/// 400 for a head it could not parse, 431 for one over the size limit. It counts for
/// the listener's default server with `upstream=""`; its log line has `"-"` for the
/// request, as nginx logs a request it could not read. Other connection errors (the
/// client left, header timeout) sent no response and count nowhere.
pub fn parser_rejected(
    snap: &Snapshot,
    listen_key: SocketAddr,
    remote: SocketAddr,
    err: &(dyn std::error::Error + 'static),
) {
    let mut src = Some(err);
    let hyper_err = loop {
        match src {
            Some(e) => match e.downcast_ref::<hyper::Error>() {
                Some(h) => break h,
                None => src = e.source(),
            },
            None => return,
        }
    };
    let refused = if hyper_err.is_parse_too_large() {
        ProxyError::HeadTooLarge
    } else if hyper_err.is_parse() {
        ProxyError::MalformedHead
    } else {
        return;
    };
    let status = rescue(&refused).status.as_u16();
    rejected(snap, listen_key, remote, status);
}

/// Counts and logs a request answered `status` because its head could not be read
/// (400) or was too large (431): for the listener's default server with
/// `upstream=""`, and with `"-"` for the request in the log, as nginx logs it.
pub fn rejected(snap: &Snapshot, listen_key: SocketAddr, remote: SocketAddr, status: u16) {
    snap.request_metrics(Site::Listener, listen_key)
        .record(status, std::time::Duration::ZERO);
    if let Some(log) = &snap.access_log {
        log.log(&Entry {
            time: None,
            remote,
            remote_user: None,
            request: None,
            text: RequestText::default(),
            status,
            body_bytes_sent: 0,
            request_time: Default::default(),
            tries: Default::default(),
            ssl_protocol: "",
            ssl_server_name: String::new(),
        });
    }
}
