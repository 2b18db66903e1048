//! `read_timeout` between two reads of an upstream response body (nginx's
//! `proxy_read_timeout`), for HTTP/1 and HTTP/2 bodies alike: one timer per body,
//! armed when a read has to wait, dropped when data comes.

use std::future::Future as _;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::Sleep;

/// The read timeout of one response body.
#[derive(Debug)]
pub struct ReadTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ReadTimer {
    /// A wait of at most `timeout` between two reads.
    pub fn new(timeout: Duration) -> ReadTimer {
        ReadTimer {
            timeout,
            sleep: None,
        }
    }

    /// Data came: the next wait starts afresh.
    pub fn progress(&mut self) {
        self.sleep = None;
    }

    /// A read has to wait: whether it has now waited `timeout` (else `cx` is woken
    /// when it has).
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let t = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
        sleep.as_mut().poll(cx).is_ready()
    }
}
