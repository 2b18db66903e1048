//! The client side of an HTTP/1 connection while a request is read: the read half
//! and its buffer ([`Reader`]), and the request body decoded from it as the upstream
//! pulls it ([`H1Body`]), which hands the reader back to the connection when it ends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::error::BoxError;
use super::h1::{self, BodyDecoder};

/// The interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The read side of a client connection: the socket and bytes read but not used yet.
pub struct Reader {
    pub(super) io: OwnedReadHalf,
    pub(super) buf: BytesMut,
}

/// Where a request body hands the reader back when it is dropped, and whether the
/// body had been read to its end (only then can the connection carry on).
pub(super) type Home = Arc<Mutex<Option<(Reader, bool)>>>;

pub(super) fn lock(h: &Home) -> std::sync::MutexGuard<'_, Option<(Reader, bool)>> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body read from the client connection as the upstream side pulls it.
pub struct H1Body {
    /// Taken from the connection for the body's lifetime; handed back on drop.
    pub(super) reader: Option<Reader>,
    pub(super) decoder: BodyDecoder,
    pub(super) home: Home,
    /// Bytes of the `100 Continue` interim response written so far (all of it when
    /// none was asked for).
    pub(super) cont: usize,
}

impl H1Body {
    /// Answers `Expect: 100-continue` before the first read. The connection's
    /// writer is idle until the response, so the socket is written through the
    /// read half's handle.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(r) = self.reader.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        let tcp: &TcpStream = r.io.as_ref();
        while self.cont < CONTINUE.len() {
            ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write(&CONTINUE[self.cont..]) {
                Ok(n) => self.cont += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
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
        if this.cont < CONTINUE.len() {
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
            Some(Err(e)) => Some(Err(Box::new(h1::client_side(e)) as BoxError)),
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
            *lock(&self.home) = Some((r, self.decoder.is_done()));
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.go_home();
    }
}
