//! The HTTP/2 connections a server's live state keeps (so they outlive config
//! snapshots, like the HTTP/1 idle pool in [`super::conn`]): a few connections per
//! server, each carrying streams up to the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.
//! Speaking HTTP/2 over them is the proxy's (`proxy::h2client`); this file only
//! keeps them and counts their streams.
//!
//! The pool's lock is per server and held for a scan of its few connections and
//! one clone of a sender (an `Arc` increment): no await, no global lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http2::SendRequest;

/// The request body type of upstream HTTP/2 streams.
pub type H2Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A sender of requests on one HTTP/2 connection.
pub type H2Sender = SendRequest<H2Body>;

/// Until the peer's SETTINGS arrive, a connection is taken to allow this many
/// streams (RFC 9113 §6.5.2 recommends no less than 100; hyper assumes the same).
pub const DEFAULT_MAX_STREAMS: usize = 100;

/// What the connection's driver task and the pool share about one connection.
#[derive(Debug)]
pub struct H2Shared {
    /// Streams open on it (requests sent and not yet ended).
    active: AtomicUsize,
    /// The peer's current `SETTINGS_MAX_CONCURRENT_STREAMS`.
    max_streams: AtomicUsize,
    /// Set once the connection cannot take new streams (GOAWAY, error, closed).
    closed: AtomicBool,
}

impl Default for H2Shared {
    fn default() -> Self {
        H2Shared {
            active: AtomicUsize::new(0),
            max_streams: AtomicUsize::new(DEFAULT_MAX_STREAMS),
            closed: AtomicBool::new(false),
        }
    }
}

impl H2Shared {
    /// Notes the peer's stream limit (the driver reads it after each poll).
    pub fn set_max_streams(&self, n: usize) {
        self.max_streams.store(n.max(1), Ordering::Relaxed);
    }

    /// Marks the connection as taking no new streams.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether the connection takes no new streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// One pooled HTTP/2 connection.
#[derive(Debug)]
pub struct H2Conn {
    /// Sends requests over it (cloned per stream).
    pub sender: H2Sender,
    /// Shared with its driver task.
    pub shared: Arc<H2Shared>,
}

/// A stream counted on its connection until dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<H2Shared>);

impl StreamSlot {
    /// The connection the stream runs on (to mark it closed after an error).
    pub fn conn(&self) -> &H2Shared {
        &self.0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 connections of one server.
#[derive(Default)]
pub struct H2Pool {
    conns: Mutex<Vec<H2Conn>>,
    /// Held while a connection is being opened, so that a burst of requests to a
    /// server with no room opens one connection rather than one each.
    pub connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H2Pool")
    }
}

impl H2Pool {
    /// A sender on a connection with room for one more stream, the stream counted;
    /// connections found closed are dropped on the way. The least busy connection
    /// with room is taken, so load spreads once there are several.
    pub fn take(&self) -> Option<(H2Sender, StreamSlot)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.shared.is_closed() && !c.sender.is_closed());
        let c = conns
            .iter()
            .filter(|c| c.shared.active() < c.shared.max_streams.load(Ordering::Relaxed))
            .min_by_key(|c| c.shared.active())?;
        c.shared.active.fetch_add(1, Ordering::Relaxed);
        Some((c.sender.clone(), StreamSlot(c.shared.clone())))
    }

    /// Adds a new connection and takes one stream on it.
    pub fn add(&self, conn: H2Conn) -> (H2Sender, StreamSlot) {
        conn.shared.active.fetch_add(1, Ordering::Relaxed);
        let taken = (conn.sender.clone(), StreamSlot(conn.shared.clone()));
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.push(conn);
        taken
    }

    /// Drops every connection (streams in flight finish on theirs).
    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Connections kept (open or not yet found closed).
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
