//! The byte streams fulcrum's HTTP/1 server runs over: a [`Transport`] splits into a
//! read side ([`ReadSide`], which travels with a request body) and a write side
//! ([`WriteSide`], which the connection keeps). Both are concrete types, so the
//! request body and an upgraded connection stay one type whatever the stream.
//!
//! - A `TcpStream` splits into its owned halves: no lock, each half is the socket.
//!   A client that leaves while its request waits is seen with a one-byte `peek`,
//!   which costs no system call while the socket is quiet (readiness is cached).
//! - Any other stream (TLS, an in-memory pipe) goes through [`AnyStream`] or
//!   [`split_any`]: `tokio::io::split` (a lock per poll, which such a stream's
//!   shared state needs anyway) and one allocation per connection for each side.
//!   There is no `peek`, so the watch reads ahead into the connection's buffer
//!   instead: bytes that arrive are the next pipelined request, which the
//!   connection parses after this one, and an end of stream or an error is a client
//!   that left, as with TCP.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::h1::poll_fill;

/// A client connection fulcrum's HTTP/1 server can serve.
pub trait Transport: Send + 'static {
    /// The read and write sides of the connection.
    fn split(self) -> (ReadSide, WriteSide);
}

impl Transport for TcpStream {
    fn split(self) -> (ReadSide, WriteSide) {
        let (r, w) = self.into_split();
        (
            ReadSide(Read::Tcp(r)),
            WriteSide(Write::Tcp(w, Nagle::Fresh)),
        )
    }
}

/// Any byte stream as a [`Transport`] (split with [`split_any`]).
pub struct AnyStream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for AnyStream<S> {
    fn split(self) -> (ReadSide, WriteSide) {
        split_any(self.0)
    }
}

/// Splits any byte stream with `tokio::io::split`: what a [`Transport`] that is not
/// a `TcpStream` does.
pub fn split_any<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
) -> (ReadSide, WriteSide) {
    let (r, w) = tokio::io::split(stream);
    (
        ReadSide(Read::Any(Box::new(r))),
        WriteSide(Write::Any(Box::new(w))),
    )
}

/// The read side of a client connection.
pub struct ReadSide(Read);

enum Read {
    Tcp(OwnedReadHalf),
    Any(Box<dyn AsyncRead + Send + Unpin>),
}

impl ReadSide {
    /// Watches a quiet connection while its request waits: `Ready(true)` once the
    /// client closed or the connection failed, `Ready(false)` when bytes arrived (a
    /// pipelined request; a stream other than TCP has read them into `buf`).
    pub(super) fn poll_left(&mut self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<bool> {
        let n = match &mut self.0 {
            Read::Tcp(r) => {
                let mut one = [MaybeUninit::uninit()];
                let mut b = ReadBuf::uninit(&mut one);
                ready!(r.poll_peek(cx, &mut b))
            }
            Read::Any(r) => ready!(poll_fill(r, buf, cx)),
        };
        Poll::Ready(!matches!(n, Ok(1..)))
    }
}

impl AsyncRead for ReadSide {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Read::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Read::Any(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write side of a client connection.
pub struct WriteSide(Write);

enum Write {
    Tcp(OwnedWriteHalf, Nagle),
    Any(Box<dyn AsyncWrite + Send + Unpin>),
}

/// Where a TCP connection is with `TCP_NODELAY`, which is set before its second
/// write, as nginx sets it when a connection turns keep-alive: Nagle's algorithm
/// holds back a small segment only while data is unacknowledged, which is never
/// the case for a connection's first write, so a connection that closes after one
/// response in one write never needs the option (one system call fewer).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nagle {
    /// Nothing written yet.
    Fresh,
    /// One write gone, the option not set.
    Wrote,
    /// `TCP_NODELAY` is set.
    Off,
}

/// The largest first write left to Nagle's algorithm: within one segment of a
/// typical path (MSS 1448 over Ethernet with timestamps, 1428 for IPv6), so that
/// none of it waits for an acknowledgement.
const ONE_SEGMENT: usize = 1400;

/// Before a write of `len` bytes: sets `TCP_NODELAY` unless this is the
/// connection's first write and fits one segment.
#[inline]
fn before_write(w: &OwnedWriteHalf, nagle: &mut Nagle, len: usize) {
    match *nagle {
        Nagle::Off => {}
        Nagle::Fresh if len <= ONE_SEGMENT => *nagle = Nagle::Wrote,
        _ => {
            let _ = w.as_ref().set_nodelay(true);
            *nagle = Nagle::Off;
        }
    }
}

impl WriteSide {
    /// Ends a TCP write side without a `shutdown`: closing the socket (when the read
    /// side goes) sends the same FIN, one system call fewer per connection. Any other
    /// stream is handed back, because its end is a message of its own (TLS
    /// `close_notify`) that only `shutdown` writes.
    pub(super) fn close_tcp(self) -> Option<WriteSide> {
        match self.0 {
            Write::Tcp(w, _) => {
                w.forget();
                None
            }
            other => Some(WriteSide(other)),
        }
    }
}

impl AsyncWrite for WriteSide {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Write::Tcp(w, nagle) => {
                before_write(w, nagle, buf.len());
                Pin::new(w).poll_write(cx, buf)
            }
            Write::Any(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Write::Tcp(w, nagle) => {
                before_write(w, nagle, bufs.iter().map(|b| b.len()).sum());
                Pin::new(w).poll_write_vectored(cx, bufs)
            }
            Write::Any(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Write::Tcp(w, _) => w.is_write_vectored(),
            Write::Any(w) => w.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Write::Tcp(w, _) => Pin::new(w).poll_flush(cx),
            Write::Any(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Write::Tcp(w, _) => Pin::new(w).poll_shutdown(cx),
            Write::Any(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
