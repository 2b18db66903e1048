//! The body of a response from an HTTP/2 upstream: hyper's stream body passed on
//! frame by frame (data and trailers, with the stream's own flow control as the
//! backpressure), ending the attempt and freeing the stream's slot on its
//! connection when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::attempt::Attempt;
use super::error::{BodyReadTimeout, BoxError};
use super::read_timer::ReadTimer;
use crate::metrics::Reason;
use crate::upstream::h2::StreamSlot;

/// A response body streamed from an upstream HTTP/2 stream.
pub struct H2UpBody {
    inner: Incoming,
    /// The attempt and the stream's slot; `None` once the body ended.
    end: Option<(Attempt, StreamSlot)>,
    timer: ReadTimer,
}

impl H2UpBody {
    /// Streams `inner`, ending `attempt` and freeing `slot` with its end.
    pub fn new(
        inner: Incoming,
        attempt: Attempt,
        slot: StreamSlot,
        read_timeout: Duration,
    ) -> Self {
        H2UpBody {
            inner,
            end: Some((attempt, slot)),
            timer: ReadTimer::new(read_timeout),
        }
    }

    /// Whether nothing more will come.
    pub fn is_end_stream(&self) -> bool {
        self.end.is_none() || self.inner.is_end_stream()
    }

    /// The body's size, when the upstream declared it.
    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }

    /// Ends the attempt. A stream or connection broken mid-body counts as the
    /// server's failure (an HTTP/2 reset is the server's word, unlike a cut TCP
    /// stream), and a connection that broke takes no more streams.
    fn finish(&mut self, failed: bool) {
        if let Some((mut attempt, slot)) = self.end.take() {
            if failed {
                attempt.failed = true;
                attempt
                    .upstream
                    .peer(attempt.pick)
                    .metrics
                    .failure(Reason::Reset);
            }
            drop(slot);
        }
    }

    /// The next frame: data or trailers as the upstream sent them.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.end.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish(false);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.progress();
                if self.inner.is_end_stream() {
                    self.finish(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "upstream h2 stream broke off");
                self.finish(true);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if self.timer.expired(cx) {
                    self.finish(true);
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                }
                Poll::Pending
            }
        }
    }
}
