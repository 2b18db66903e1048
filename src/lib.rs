//! fulcrum: a Layer-7 HTTP reverse-proxy load balancer with nginx-compatible
//! balancing, active health checks, Prometheus metrics and hot reload.
//!
//! The modules are layers, each using only those below it (`docs/architecture.md`
//! has the table; `tests/layers.rs` enforces it): `clock`, `route` and `metrics` at
//! the bottom; `config` parses and validates the file into a [`config::Config`];
//! `upstream` holds pools and per-server live state, `balance` the algorithms;
//! `state` compiles a config into the immutable [`state::Snapshot`] each request
//! reads; `proxy` is the request path (its module page walks it); `runtime` owns the
//! listeners and the life cycle; `reload`, `health`, `discovery` and `admin` drive it.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod convert;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod state;
pub mod tls;
pub mod upstream;
