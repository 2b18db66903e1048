//! nginx's `proxy_next_upstream`: whether a request whose try failed, or was
//! answered with a listed status, goes to the next server.

use http::Method;
use tokio::time::Instant;

use super::error::FailureKind;
use crate::config::PassOpts;
use crate::upstream::Upstream;

/// The retry budget and rules of one request.
pub struct Retry<'a> {
    up: &'a Upstream,
    /// The location's `next_upstream*` (the pool's unless it overrides them).
    opts: &'a PassOpts,
    budget: u32,
    tries_left: u32,
    /// POST, LOCK and PATCH are retried only with `non_idempotent`, once sent.
    method_retryable: bool,
    has_body: bool,
    /// Only a `next_upstream_timeout` needs the start time.
    started: Option<Instant>,
}

impl<'a> Retry<'a> {
    /// The rules `opts` gives for a `method` request to `up`, with or without a body.
    /// nginx's budget: every server not marked `down`, capped by `next_upstream_tries`.
    pub fn new(up: &'a Upstream, opts: &'a PassOpts, method: &Method, has_body: bool) -> Self {
        let mut budget = up.servers_up;
        if opts.next_upstream_tries > 0 {
            budget = budget.min(opts.next_upstream_tries);
        }
        let budget = budget.max(1);
        Retry {
            up,
            opts,
            budget,
            tries_left: budget,
            method_retryable: opts.next_upstream.non_idempotent
                || !matches!(method.as_str(), "POST" | "LOCK" | "PATCH"),
            has_body,
            started: (!opts.next_upstream_timeout.is_zero()).then(Instant::now),
        }
    }

    /// Takes one try from the budget; every try after the first counts as a retry.
    pub fn take_try(&mut self) {
        if self.tries_left < self.budget {
            self.up.metrics.retries.inc();
        }
        self.tries_left = self.tries_left.saturating_sub(1);
    }

    /// Whether `next_upstream` lists this kind of failure.
    pub fn listed(&self, kind: FailureKind) -> bool {
        let next = &self.opts.next_upstream;
        match kind {
            FailureKind::Timeout => next.timeout,
            FailureKind::InvalidHeader => next.invalid_header,
            FailureKind::Connect | FailureKind::Reset => next.error,
        }
    }

    /// Whether `next_upstream` lists this response status.
    pub fn status_listed(&self, code: u16) -> bool {
        self.opts.next_upstream.statuses.contains(code)
    }

    /// Whether the next server gets the request: tries are left, the failure is
    /// listed, the request may be re-sent (`sent`: it partly left), its body is
    /// still whole (`body_left`), and `next_upstream_timeout` has not passed.
    pub fn can_retry(&self, listed: bool, sent: bool, body_left: bool) -> bool {
        let timeout = self.opts.next_upstream_timeout;
        self.tries_left > 0
            && listed
            && (!sent || self.method_retryable)
            && (body_left || !self.has_body)
            && (timeout.is_zero() || self.started.is_some_and(|t| t.elapsed() < timeout))
    }
}
