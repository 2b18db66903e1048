//! Forwarding requests upstream. A request's path, top to bottom:
//!
//! 1. [`server`] reads a request head from a client connection (fulcrum's HTTP/1
//!    server; h2c listeners use hyper's, through [`tower_service::Proxy`], which is
//!    also how another program embeds fulcrum) and calls [`service::handle`].
//! 2. [`service`] routes it (server name, location), then picks a server, forwards,
//!    and retries as nginx's `proxy_next_upstream`; [`exchange`] records what the
//!    access log and metrics need as it goes.
//! 3. [`client`] writes the request to a pooled upstream connection
//!    ([`crate::upstream::conn`]) and reads the response head ([`h1`]); each try is an
//!    [`attempt::Attempt`].
//! 4. [`body`] streams the response back as the client reads it; [`upgrade`] joins
//!    both sides after a `101`.
//! 5. [`error`] is the one place a failure becomes a status: every answer fulcrum
//!    gives itself is a [`error::ProxyError`], mapped by [`error::rescue`].
//!
//! Files depend on each other one way, in this order (later ones may use earlier
//! ones): `error`, `h1`, `forward`, `framing`, `conn`, `real_ip`, `transport`, `reader`,
//! `attempt`, `read_timer`, `h2body`, `body`, `answer`, `local`, `client`, `h2up`,
//! `h2client`, `upgrade`, `exchange`, `retry`, `service`, `tower_service`, `server`.
//! `h1` and `server` are directories whose files keep the same rule; their `mod.rs`
//! lists them in order.

pub mod answer;
pub mod attempt;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod framing;
pub mod guard;
pub mod h1;
pub mod h2body;
pub mod h2client;
pub mod h2up;
pub mod local;
pub mod read_timer;
pub mod reader;
pub mod real_ip;
pub mod retry;
pub mod server;
pub mod service;
pub mod tower_service;
pub mod transport;
pub mod upgrade;

/// The most bytes a request or response head may take (SPEC §6: over 64 KiB → 431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
