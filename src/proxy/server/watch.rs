//! A request run while the connection watches its client: a client that leaves
//! ends the request (499), and the `100 Continue` its body asks for is written.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use tokio::io::AsyncWrite;

use crate::proxy::exchange::Tracked;
use crate::proxy::reader::{lock, Continue, Home, Reader, CONTINUE};
use crate::proxy::transport::WriteSide;

/// Runs the request while watching the client socket: `None` if the client left
/// first (the request is dropped, and its exchange logs 499, as nginx does).
/// Pipelined bytes stop the watch; so does a reader that is away with the request
/// body, until the body, read to its end, hands it back.
pub(super) async fn watched(
    mut request: Pin<
        &mut impl Future<Output = Result<Response<Tracked>, std::convert::Infallible>>,
    >,
    reader: &mut Option<Reader>,
    home: Option<&Home>,
    wr: &mut WriteSide,
    cont: &mut Option<usize>,
) -> Option<Response<Tracked>> {
    let mut watch = reader.as_ref().is_none_or(|r| r.buf.is_empty());
    poll_fn(|cx| {
        if let Poll::Ready(Ok(r)) = request.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if let (Some(_), Some(h)) = (&cont, home) {
            poll_continue(wr, h, cont, cx);
        }
        if let (true, None, Some(h)) = (watch, reader.as_ref(), home) {
            let mut slot = lock(h);
            if matches!(slot.back, Some((_, true))) {
                *reader = slot.back.take().map(|(r, _)| r);
                watch = reader.as_ref().is_some_and(|r| r.buf.is_empty());
            }
        }
        if let (true, Some(r)) = (watch, reader.as_mut()) {
            match r.io.poll_left(&mut r.buf, cx) {
                Poll::Ready(true) => return Poll::Ready(None),
                // A pipelined request: it is read after this one.
                Poll::Ready(false) => watch = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes `100 Continue` once the request's body asks for it, then wakes the body;
/// `sent`: the bytes written so far, `None` once nothing more is to be done.
fn poll_continue(wr: &mut WriteSide, home: &Home, sent: &mut Option<usize>, cx: &mut Context<'_>) {
    let Some(n) = sent.as_mut() else { return };
    let mut slot = lock(home);
    if !matches!(slot.cont, Continue::Wanted(_)) {
        return;
    }
    let ok = loop {
        let r = if *n < CONTINUE.len() {
            Pin::new(&mut *wr).poll_write(cx, &CONTINUE[*n..])
        } else {
            Pin::new(&mut *wr).poll_flush(cx).map_ok(|()| 0)
        };
        match r {
            Poll::Pending => return,
            Poll::Ready(Ok(0)) if *n >= CONTINUE.len() => break true,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break false,
            Poll::Ready(Ok(k)) => *n += k,
        }
    };
    let now = if ok { Continue::Sent } else { Continue::Failed };
    if let Continue::Wanted(w) = std::mem::replace(&mut slot.cont, now) {
        w.wake();
    }
    *sent = None;
}
