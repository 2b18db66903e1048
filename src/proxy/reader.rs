//! The client side of an HTTP/1 connection while a request is read: the read half
//! and its buffer ([`Reader`]), and the request body decoded from it as the upstream
//! pulls it ([`H1Body`]), which hands the reader back to the connection when it ends.
//! `Expect: 100-continue` is answered when the body is first read: the body asks, and
//! the connection, which holds the write side and runs the request, writes it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::error::BoxError;
use super::h1::BodyDecoder;
use super::transport::ReadSide;

/// The interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The read side of a client connection: the stream and bytes read but not used yet.
pub struct Reader {
    pub(super) io: ReadSide,
    pub(super) buf: BytesMut,
}

/// What a connection shares with its request bodies (one per connection, made with
/// its first body).
pub(super) type Home = Arc<Mutex<Slot>>;

/// See [`Home`].
#[derive(Default)]
pub(super) struct Slot {
    /// Where a request body hands the reader back when it is dropped, and whether
    /// the body had been read to its end (only then can the connection carry on).
    pub(super) back: Option<(Reader, bool)>,
    /// The interim `100 Continue` between the body and the connection.
    pub(super) cont: Continue,
}

/// Where a request's `100 Continue` is: the body asks for it when first read, the
/// connection writes it and wakes the body.
#[derive(Default)]
pub(super) enum Continue {
    /// Nobody asked.
    #[default]
    Idle,
    /// The body waits for it.
    Wanted(Waker),
    /// Written.
    Sent,
    /// Writing it failed.
    Failed,
}

pub(super) fn lock(h: &Home) -> std::sync::MutexGuard<'_, Slot> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body read from the client connection as the upstream side pulls it.
pub struct H1Body {
    /// Taken from the connection for the body's lifetime; handed back on drop.
    pub(super) reader: Option<Reader>,
    pub(super) decoder: BodyDecoder,
    pub(super) home: Home,
    /// The client sent `Expect: 100-continue` and has not been answered yet.
    pub(super) cont: bool,
}

impl H1Body {
    /// Waits, before the first read, for the connection to write `100 Continue`
    /// (it does so while it runs the request, which is when a body is read).
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slot = lock(&self.home);
        match &mut slot.cont {
            Continue::Sent => {}
            Continue::Failed => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "writing 100 Continue failed",
                )))
            }
            Continue::Wanted(w) if w.will_wake(cx.waker()) => return Poll::Pending,
            c => {
                *c = Continue::Wanted(cx.waker().clone());
                return Poll::Pending;
            }
        }
        slot.cont = Continue::Idle;
        self.cont = false;
        Poll::Ready(Ok(()))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cont && this.reader.is_some() {
            if let Err(e) = ready!(this.poll_continue(cx)) {
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        }
        let Some(r) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(this.decoder.poll_data(&mut r.io, &mut r.buf, cx)) {
            None => None,
            Some(Ok(data)) => Some(Ok(Frame::data(data))),
            Some(Err(e)) => Some(Err(Box::new(e) as BoxError)),
        };
        if this.decoder.is_done() {
            // Read to the end: the connection may watch its socket again.
            this.go_home();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl H1Body {
    fn go_home(&mut self) {
        if let Some(r) = self.reader.take() {
            let mut slot = lock(&self.home);
            slot.back = Some((r, self.decoder.is_done()));
            // A body dropped unread leaves no request for the next one to answer.
            slot.cont = Continue::Idle;
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.go_home();
    }
}
