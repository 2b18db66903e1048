//! Body types on both sides of the proxy. Concrete enums rather than boxed trait
//! objects: no allocation per request, and the pool can name its connection type.
//! Only a request body of a type fulcrum does not know (an embedding program's) is
//! boxed.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::attempt::Attempt;
use super::error::BoxError;
use super::h1::{BodyDecoder, BodyFraming, PassHeaders};
use super::h2body::H2UpBody;
use super::read_timer::ReadTimer;
use super::reader::H1Body;
use crate::clock;
use crate::upstream::conn::LazyTimer;

pub use super::error::{BodyTooLarge, ClientBodyTimeout};

/// Reading the client's body failed.
#[derive(Debug, thiserror::Error)]
#[error("client body read failed: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// A request body as the downstream server hands it over.
pub enum ReqBody {
    /// None (no `Content-Length` or `Transfer-Encoding`, or a length of 0).
    Empty,
    /// From hyper's server (h2c listeners).
    Hyper(Incoming),
    /// From fulcrum's HTTP/1 server.
    H1(Box<H1Body>),
    /// Any other body (from a program that embeds fulcrum's tower `Service`), boxed.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ReqBody {
    /// The request body for any `B`: hyper's [`Incoming`] and a `ReqBody` as they
    /// are (no allocation: the type check is resolved at compile time), anything
    /// else boxed.
    pub fn from_body<B>(body: B) -> ReqBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        let any: &mut dyn Any = &mut slot;
        if let Some(b) = any.downcast_mut::<Option<Incoming>>() {
            if let Some(b) = b.take() {
                return ReqBody::Hyper(b);
            }
        }
        if let Some(b) = any.downcast_mut::<Option<ReqBody>>() {
            if let Some(b) = b.take() {
                return b;
            }
        }
        match slot {
            Some(b) => ReqBody::Boxed(UnsyncBoxBody::new(b.map_err(Into::into))),
            None => ReqBody::Empty,
        }
    }
}

impl std::fmt::Debug for ReqBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReqBody::Empty => "ReqBody::Empty",
            ReqBody::Hyper(_) => "ReqBody::Hyper",
            ReqBody::H1(_) => "ReqBody::H1",
            ReqBody::Boxed(_) => "ReqBody::Boxed",
        })
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::H1(b) => Pin::new(&mut **b).poll_frame(cx),
            ReqBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::H1(b) => b.is_end_stream(),
            ReqBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::H1(b) => b.size_hint(),
            ReqBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// The request body sent upstream.
#[derive(Debug)]
pub enum UpBody {
    /// No body.
    Empty,
    /// The client's body, streamed, with the bytes still allowed.
    Stream {
        /// The client body.
        inner: ReqBody,
        /// Bytes left under `client_max_body_size` (u64::MAX = no limit).
        left: u64,
        /// `client_body_timeout` between two reads.
        gap: ReadGap,
    },
}

impl UpBody {
    /// The client's body streamed up, under `client_max_body_size` (`left` bytes,
    /// u64::MAX = no limit) and `client_body_timeout` (`timeout`).
    pub fn stream(inner: ReqBody, left: u64, timeout: Duration) -> UpBody {
        UpBody::Stream {
            inner,
            left,
            gap: ReadGap::new(timeout),
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let UpBody::Stream { inner, left, gap } = self.get_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) else {
            return match gap.poll_waiting(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ClientBodyTimeout)))),
                Poll::Pending => Poll::Pending,
            };
        };
        gap.progress();
        match frame {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > *left {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    *left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// nginx's `client_body_timeout` on a request body: the longest the upstream side
/// waits for the client's next data, not for the whole body. A read that completes
/// at once costs one store; the first read that has to wait notes the time on the
/// coarse clock, and the body's one timer is registered the first time any read
/// waits. It is not re-armed per read: it fires at the deadline of the wait that
/// armed it and is moved on then if data came in between ([`LazyTimer`]), so a
/// steady upload moves it about once per timeout.
#[derive(Debug)]
pub struct ReadGap {
    timeout_ns: u64,
    /// Coarse time the current wait began, or [`ReadGap::READING`].
    since: u64,
    timer: LazyTimer,
}

impl ReadGap {
    /// Not waiting: the last read gave something.
    const READING: u64 = u64::MAX;

    /// A gap of at most `timeout` between two reads.
    pub fn new(timeout: Duration) -> ReadGap {
        ReadGap {
            timeout_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            since: Self::READING,
            timer: LazyTimer::default(),
        }
    }

    /// A read gave data (or the end).
    #[inline]
    fn progress(&mut self) {
        self.since = Self::READING;
    }

    /// A read has to wait: ready once it has waited `timeout`.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.since == Self::READING {
            self.since = clock::coarse_nanos();
        }
        let deadline = self.since.saturating_add(self.timeout_ns);
        self.timer.poll_expired(cx, deadline)
    }
}

/// The response body sent to the client.
pub enum ProxyBody {
    /// A body produced by fulcrum itself.
    Full(Option<Bytes>),
    /// An upstream body, streamed with the read timeout between frames.
    Upstream(Box<UpstreamBody>),
    /// An HTTP/2 upstream's body (trailers included).
    H2(Box<H2UpBody>),
}

/// An upstream response: its headers to pass on, its body decoded from the
/// attempt's connection as the client reads it, and what must happen when it ends.
pub struct UpstreamBody {
    /// The upstream's header lines for the client (fulcrum's HTTP/1 server writes
    /// them as they are; see [`PassHeaders`]).
    pub headers: PassHeaders,
    /// Holds the connection; `None` once the body ended.
    attempt: Option<Attempt>,
    decoder: BodyDecoder,
    keep_alive: bool,
    timer: ReadTimer,
}

impl UpstreamBody {
    /// Streams the body framed by `framing` from the attempt's connection, ending
    /// the attempt when the body ends or is dropped. `keep_alive`: the connection
    /// may be pooled once the body is complete.
    pub fn new(
        headers: PassHeaders,
        attempt: Attempt,
        framing: BodyFraming,
        keep_alive: bool,
        read_timeout: Duration,
    ) -> Self {
        UpstreamBody {
            headers,
            attempt: Some(attempt),
            decoder: BodyDecoder::new(framing),
            keep_alive,
            timer: ReadTimer::new(read_timeout),
        }
    }

    /// A response without a body (or whose connection went to a tunnel): only its
    /// headers.
    pub fn headers_only(headers: PassHeaders) -> Self {
        UpstreamBody {
            headers,
            attempt: None,
            decoder: BodyDecoder::new(BodyFraming::Empty),
            keep_alive: false,
            timer: ReadTimer::new(Duration::ZERO),
        }
    }

    /// Ends the attempt; the connection is pooled only after a clean, complete body.
    fn finish(&mut self, clean: bool) {
        if let Some(mut a) = self.attempt.take() {
            a.reusable =
                clean && self.keep_alive && a.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.attempt.as_mut().and_then(|a| a.conn.as_mut()) else {
            return Poll::Ready(None);
        };
        match self.decoder.poll_data(&mut conn.io, &mut conn.buf, cx) {
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(data))) => {
                self.timer.progress();
                if self.decoder.is_done() {
                    self.finish(true);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                // Mid-body failure: the client's response is cut short and the
                // peer freed as a success, as nginx does.
                self.finish(false);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if self.timer.expired(cx) {
                    self.finish(false);
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                }
                Poll::Pending
            }
        }
    }
}

pub use super::error::BodyReadTimeout;

impl ProxyBody {
    /// A body of fixed bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// The upstream's headers, for an upstream response.
    pub fn pass_headers(&self) -> Option<&PassHeaders> {
        match self {
            ProxyBody::Upstream(u) => Some(&u.headers),
            ProxyBody::Full(_) | ProxyBody::H2(_) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => u.poll_body(cx),
            ProxyBody::H2(u) => u.poll_body(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.attempt.is_none() || u.decoder.is_done(),
            ProxyBody::H2(u) => u.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => match u.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            ProxyBody::H2(u) => u.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    /// A client body of `n` one-byte frames, each after `every`.
    fn trickle(n: usize, every: Duration) -> ReqBody {
        let frames = futures_util::stream::unfold(n, move |left| async move {
            if left == 0 {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))),
                left - 1,
            ))
        });
        ReqBody::Boxed(UnsyncBoxBody::new(StreamBody::new(frames)))
    }

    /// A client that stops sending: the upstream side gets [`ClientBodyTimeout`]
    /// once it has waited the timeout for the next data.
    #[tokio::test]
    async fn a_stalled_body_times_out_between_reads() {
        let started = Instant::now();
        let body = UpBody::stream(
            trickle(2, Duration::from_secs(30)),
            u64::MAX,
            Duration::from_millis(100),
        );
        let Err(err) = body.collect().await else {
            panic!("the stalled body was read to its end")
        };
        assert!(err.is::<ClientBodyTimeout>(), "{err}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }

    /// The timeout is between two reads, not for the whole body: data every 40 ms
    /// under a 150 ms timeout goes through although it takes longer than that.
    #[tokio::test]
    async fn a_steady_body_longer_than_the_timeout_passes() {
        let started = Instant::now();
        let body = UpBody::stream(
            trickle(8, Duration::from_millis(40)),
            u64::MAX,
            Duration::from_millis(150),
        );
        let got = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(got.as_deref(), Some(&b"xxxxxxxx"[..]));
        assert!(started.elapsed() > Duration::from_millis(150));
    }
}
