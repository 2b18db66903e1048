//! The access log: one line per request; its disk writes happen off the request path.
//!
//! A request copies what its line needs into a small [`Entry`] when it starts (only
//! with a log configured) and, when its response is done, formats the line into one
//! of a few in-memory shards of the [`AccessLog`] (picked per thread). A dedicated
//! thread swaps the shards out and writes them, every [`BATCH`] under load and at once
//! for the first line after a quiet spell. A slow disk therefore only lets lines pile
//! up in memory; past [`SHARD_LIMIT`] they are dropped and counted in
//! `fulcrum_access_log_dropped_total`, and the request never waits. With
//! `access_log = "off"` no log exists and requests build no entry.
//!
//! Formats (see docs/logging.md): `combined` is nginx's `combined` plus
//! `"$upstream_addr" "$upstream_status" $request_time "$upstream_response_time"`;
//! `json` is one object per line with the same fields.

mod entry;
mod format;
mod line;
mod writer;

pub use entry::{basic_user, Entry, Field, RequestLine, RequestText, Try};
pub use format::Formatter;
pub use writer::{AccessLog, OpenError, BATCH, SHARD_LIMIT};
