//! One try of a request on one server, from the pick to the end of its response:
//! dropping an [`Attempt`] ends it (in-flight count, failure accounting, response
//! metrics) and returns a cleanly finished connection to the server's pool.

use std::sync::Arc;

use crate::upstream::conn::Conn;
use crate::upstream::{Pick, Upstream};

/// An attempt in flight: ends the attempt (in-flight count, failure accounting) and
/// returns the connection to the pool when dropped.
pub struct Attempt {
    /// The pool.
    pub upstream: Arc<Upstream>,
    /// The peer.
    pub pick: Pick,
    /// The connection, returned to the pool if the exchange completed.
    pub conn: Option<Conn>,
    /// Whether the response completed cleanly (the connection may be reused).
    pub reusable: bool,
    /// Whether this attempt counts as a failure.
    pub failed: bool,
    /// When the try started.
    pub started: std::time::Instant,
    /// The upstream's response status; 0 until a response head arrived.
    pub status: u16,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let peer = self.upstream.peer(self.pick);
        if self.status != 0 {
            peer.metrics.response(self.status, self.started);
        }
        if self.reusable {
            if let Some(c) = self.conn.take() {
                peer.state.idle.put(c, self.upstream.conf.keepalive);
            }
        }
        self.upstream.finish(self.pick, self.failed);
    }
}
