//! Forwarding requests upstream: the service, bodies, headers, connections.

pub mod body;
pub mod client;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod framing;
pub mod h1;
pub mod server;
pub mod service;
pub mod upgrade;
