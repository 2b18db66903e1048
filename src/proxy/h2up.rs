//! The request body as it goes up an HTTP/2 stream, watched for two things
//! hyper's client does not report:
//!
//! - why the body failed: hyper turns a body error into a stream reset and
//!   reports only the reset, but a body over `client_max_body_size` is the
//!   client's 413, not the server's failure;
//! - what of it was read when hyper drops it with a stream the server never
//!   processed (refused, or above a GOAWAY's last stream id, or rejected on a
//!   connection that just got a GOAWAY): the body's first [`REPLAY_MAX`] bytes
//!   are kept while no response head has come, so such a request goes to another
//!   connection instead of failing (Envoy buffers request bodies for retries the
//!   same way). A longer body, or one still going after the head, is not kept.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::oneshot;

use super::body::{BodyTooLarge, ClientBodyTimeout, ReqBody, UpBody};
use super::error::{BoxError, ExchangeError};
use crate::upstream::h2::H2Body;

/// How long a body dropped by hyper's connection task may take to come back (it
/// is dropped right after the failure is reported, in the same poll).
const RETURN_WAIT: Duration = Duration::from_secs(1);
/// The most of a request body kept for sending it again: a gRPC unary call or a
/// small POST, not an upload.
pub const REPLAY_MAX: usize = 64 * 1024;

/// What an [`Upload`] and its watched body share.
#[derive(Debug, Default)]
struct Shared {
    /// The error the body failed with, as the client's body gave it.
    fault: Mutex<Option<BoxError>>,
    /// Set once a response head came (or the tries are over): nothing more is
    /// kept.
    settled: AtomicBool,
}

/// The body of one request over its tries on HTTP/2 connections.
#[derive(Debug, Default)]
pub struct Upload {
    shared: Arc<Shared>,
    /// The body back (what was read of it, then the rest), when hyper drops it
    /// while it can still be sent again.
    back: Option<oneshot::Receiver<UpBody>>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.shared.settled.store(true, Ordering::Relaxed);
    }
}

impl Upload {
    /// `body` as hyper takes it, watched.
    pub fn wrap(&mut self, body: UpBody) -> H2Body {
        let (tx, rx) = oneshot::channel();
        self.back = Some(rx);
        UnsyncBoxBody::new(Watched {
            inner: Some(body),
            shared: self.shared.clone(),
            kept: Some(Vec::new()),
            kept_bytes: 0,
            back: Some(tx),
        })
    }

    /// The client's side of a failed send, if its body is what failed.
    pub fn client_fault(&self) -> Option<ExchangeError> {
        let e = self
            .shared
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(if e.is::<BodyTooLarge>() {
            BodyTooLarge.into()
        } else if e.is::<ClientBodyTimeout>() {
            ClientBodyTimeout.into()
        } else {
            ExchangeError::Client(e)
        })
    }

    /// The body whole again, if hyper dropped it while it could be sent again.
    pub async fn take_back(&mut self) -> Option<UpBody> {
        let rx = self.back.take()?;
        tokio::time::timeout(RETURN_WAIT, rx).await.ok()?.ok()
    }
}

/// The body of a request hyper handed back unsent, to send again (its limits
/// still apply inside it).
pub fn resumed(unsent: Request<H2Body>, body_timeout: Duration) -> UpBody {
    UpBody::stream(ReqBody::Boxed(unsent.into_body()), u64::MAX, body_timeout)
}

/// What hyper is told when the request body fails (the cause is in [`Upload`]).
#[derive(Debug, thiserror::Error)]
#[error("request body failed")]
struct BodyFailed;

/// A request body that notes its error and keeps what was read of it.
struct Watched {
    /// `None` once it ended.
    inner: Option<UpBody>,
    shared: Arc<Shared>,
    /// The frames read so far; `None` once it cannot be sent again.
    kept: Option<Vec<Frame<Bytes>>>,
    kept_bytes: usize,
    back: Option<oneshot::Sender<UpBody>>,
}

impl Watched {
    /// Keeps a copy of `frame`, or gives up keeping.
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(kept) = &mut self.kept else { return };
        let copy = if let Some(d) = frame.data_ref() {
            self.kept_bytes += d.len();
            Frame::data(d.clone())
        } else if let Some(t) = frame.trailers_ref() {
            Frame::trailers(t.clone())
        } else {
            self.kept = None;
            return;
        };
        if self.kept_bytes > REPLAY_MAX || self.shared.settled.load(Ordering::Relaxed) {
            self.kept = None;
        } else {
            kept.push(copy);
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.shared.settled.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(kept), Some(tx)) = (self.kept.take(), self.back.take()) {
            let again = Replay {
                kept: kept.into(),
                rest: self.inner.take(),
            };
            let again = UnsyncBoxBody::new(again);
            let _ = tx.send(UpBody::stream(
                ReqBody::Boxed(again),
                u64::MAX,
                Duration::MAX,
            ));
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.keep(&frame);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.kept = None;
                let mut slot = this.shared.fault.lock().unwrap_or_else(|e| e.into_inner());
                // A body sent again keeps the first cause.
                if slot.is_none() && !e.is::<BodyFailed>() {
                    *slot = Some(e);
                }
                Poll::Ready(Some(Err(Box::new(BodyFailed))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// A body sent again: the frames read the first time, then the rest.
struct Replay {
    kept: VecDeque<Frame<Bytes>>,
    rest: Option<UpBody>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.kept.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match this.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.kept.is_empty() && self.rest.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(chunks: &[&'static [u8]]) -> UpBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        let s = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        UpBody::stream(
            ReqBody::Boxed(UnsyncBoxBody::new(s)),
            u64::MAX,
            Duration::MAX,
        )
    }

    async fn read_one(b: &mut H2Body) -> Bytes {
        let f = std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx)).await;
        f.and_then(|f| f.ok()?.into_data().ok()).unwrap_or_default()
    }

    /// A body dropped part read comes back whole: what was read, then the rest.
    #[tokio::test]
    async fn a_body_dropped_part_read_comes_back_whole() {
        let mut up = Upload::default();
        let mut b = up.wrap(body(&[b"ab", b"cd", b"ef"]));
        assert_eq!(read_one(&mut b).await, "ab");
        drop(b);
        let again = up.take_back().await.expect("back");
        let all = again.collect().await.expect("body").to_bytes();
        assert_eq!(all, "abcdef");
        assert!(up.client_fault().is_none());
    }

    /// Nothing comes back once a response head came, nor past the size kept.
    #[tokio::test]
    async fn nothing_comes_back_once_settled_or_too_long() {
        let up = Upload::default();
        let mut up2 = Upload {
            shared: up.shared.clone(),
            back: None,
        };
        let b = up2.wrap(body(&[b"x"]));
        drop(up);
        drop(b);
        assert!(up2.take_back().await.is_none());
        let mut up = Upload::default();
        let big: &'static [u8] = Box::leak(vec![0u8; REPLAY_MAX + 1].into_boxed_slice());
        let mut b = up.wrap(body(&[big]));
        assert_eq!(read_one(&mut b).await.len(), REPLAY_MAX + 1);
        drop(b);
        assert!(up.take_back().await.is_none());
    }
}
