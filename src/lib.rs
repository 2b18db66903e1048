//! fulcrum: a Layer-7 HTTP reverse-proxy load balancer with nginx-compatible
//! balancing, active health checks, Prometheus metrics and hot reload.
//!
//! `config` parses and validates the file into a runtime [`config::Config`];
//! `state` compiles it into the immutable [`state::Snapshot`] each request reads;
//! `upstream` and `balance` pick servers; `proxy` forwards; `runtime` owns the
//! listeners and the life cycle.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod state;
pub mod upstream;
