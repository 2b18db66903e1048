//! An idle keep-alive connection, parked: it keeps its socket and nothing else.
//!
//! nginx frees a keep-alive connection's request buffers when it goes idle and keeps
//! a small connection structure; so does this server, after a grace time. A busy
//! connection (its loop, the request's future, its read and write buffers, its
//! header-name cache: several KiB) lives in one allocation, made when the client
//! sends a request and freed once the connection has waited [`RELEASE_AFTER`] for
//! the next one. Parked, it waits with no buffer at all: a read into a few bytes
//! of stack (over TCP no system call until the socket is readable), handed to the
//! new buffer; a client that closes a parked connection costs no allocation. (The
//! first read after parking is then split in two `recv`s: once per wake-up, not
//! per request.)
//!
//! Why a grace time and not at once, as nginx does: a keep-alive client usually
//! sends its next request within microseconds of reading the response, and parking
//! after every response would allocate and copy the busy state (and rebuild the
//! name cache) per request, about 1,000 instructions of a 15,000-instruction
//! request. Within the grace time the busy state is reused; one lazy timer per busy
//! period (re-armed when it fires, not per request) ends it.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use crate::proxy::conn::ConnMeta;
use crate::proxy::h1::poll_fill;
use crate::proxy::transport::ReadSide;

/// How long a connection waits for its next request before its buffers go.
pub(super) const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Bytes read onto the stack while parked, on streams without readiness.
const EARLY: usize = 64;

/// Waits, holding no buffer, until the client sends again; then the connection's
/// new read buffer (`capacity` bytes, with what was read already). `None`: the
/// client closed, or the connection is shutting down.
pub(super) async fn park(
    rd: &mut ReadSide,
    meta: &ConnMeta,
    capacity: usize,
) -> io::Result<Option<BytesMut>> {
    poll_fn(|cx| {
        // Shutting down: an idle connection closes at once.
        if meta.closing.load(Relaxed) {
            return Poll::Ready(Ok(None));
        }
        let mut early = [MaybeUninit::<u8>::uninit(); EARLY];
        let mut early = ReadBuf::uninit(&mut early);
        match Pin::new(&mut *rd).poll_read(cx, &mut early) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => {}
            // A reset while idle is a client that left, not an error.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Poll::Ready(Ok(None))
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        }
        // A client that closes a parked connection costs no buffer.
        if early.filled().is_empty() {
            return Poll::Ready(Ok(None));
        }
        // The first bytes of a head: `client_header_timeout` runs from now.
        if meta.idle.swap(false, Relaxed) {
            meta.waiting_since
                .store(crate::clock::coarse_nanos(), Relaxed);
        }
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(early.filled());
        // More may have come with it: read now, so that the head is parsed with all
        // that arrived with it (what of a chunked body came along is checked before
        // the head goes upstream), as it was before the connection parked.
        if buf.len() == EARLY {
            if let Poll::Ready(Err(e)) = poll_fill(rd, &mut buf, cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(Some(buf)))
    })
    .await
}

/// Whether a busy connection waiting for its next head has waited long enough to
/// park (polled only while its buffer is empty). The timer is re-armed when it
/// fires early, to the idle start plus [`RELEASE_AFTER`].
pub(super) fn poll_release(
    grace: &mut Pin<&mut Sleep>,
    meta: &ConnMeta,
    cx: &mut Context<'_>,
) -> bool {
    while grace.as_mut().poll(cx).is_ready() {
        let now = crate::clock::coarse_nanos();
        let since = meta.waiting_since.load(Relaxed);
        let idle_for = now.saturating_sub(since);
        let release = RELEASE_AFTER.as_nanos() as u64;
        if idle_for >= release {
            return true;
        }
        // Past a tick of the coarse clock, so that the next firing sees it due.
        let left = Duration::from_nanos(release - idle_for.min(release));
        let at = tokio::time::Instant::now() + left + Duration::from_millis(10);
        grace.as_mut().reset(at);
    }
    false
}
