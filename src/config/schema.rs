//! The serde mirror of the TOML file. Unknown keys are rejected so that typos fail
//! `fulcrum check`; values that need more than a type check (durations, sizes,
//! addresses, templates) stay spanned strings here and are validated in `validate`.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;

/// A string or an integer, kept with its position (sizes accept both).
pub type SpannedValue = Spanned<toml::Value>;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[global]`.
    #[serde(default)]
    pub global: GlobalSection,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[upstream.NAME]` tables.
    #[serde(default)]
    pub upstream: BTreeMap<Spanned<String>, UpstreamSection>,
    /// `[[server]]` blocks.
    #[serde(default)]
    pub server: Vec<ServerSection>,
    /// `[demo]`: local demo backends started by fulcrum itself.
    pub demo: Option<Spanned<DemoSection>>,
}

/// `[global]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    /// Runtime worker threads; 0 = one per core.
    pub worker_threads: Option<Spanned<i64>>,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Option<Spanned<String>>,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: Option<Spanned<String>>,
    /// "off" | "stdout" | "stderr" | a path.
    pub access_log: Option<Spanned<String>>,
    /// "combined" | "json".
    pub access_log_format: Option<Spanned<String>>,
    /// Downstream connection cap; 0 = unlimited.
    pub max_connections: Option<Spanned<i64>>,
    /// DNS servers for `resolve` pools (`addr[:port]`).
    pub resolver: Option<Spanned<Vec<Spanned<String>>>>,
    /// Time a DNS query may take.
    pub resolver_timeout: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin listener address, or "off".
    pub listen: Option<Spanned<String>>,
    /// Bearer token required by mutating endpoints.
    pub token: Option<Spanned<String>>,
}

/// `[demo]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    /// Addresses of the demo backends to start.
    pub backends: Vec<Spanned<String>>,
    /// Requests fulcrum sends through its own first listener once ready, logging
    /// which backend answered each (shows the balancing at start).
    #[serde(default)]
    pub requests: u32,
}

/// `[upstream.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Servers: nginx-syntax strings or inline tables.
    pub server: Spanned<Vec<SpannedValue>>,
    /// Balancing algorithm.
    pub balance: Option<Spanned<String>>,
    /// Key template for "hash".
    pub hash_key: Option<Spanned<String>>,
    /// Ketama consistent hashing for "hash".
    pub consistent: Option<Spanned<bool>>,
    /// Idle pooled connections kept.
    pub keepalive: Option<Spanned<i64>>,
    /// Idle pooled connection lifetime.
    pub keepalive_timeout: Option<Spanned<String>>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Option<Spanned<String>>,
    /// `proxy_send_timeout`.
    pub send_timeout: Option<Spanned<String>>,
    /// `proxy_read_timeout`.
    pub read_timeout: Option<Spanned<String>>,
    /// `proxy_next_upstream`.
    pub next_upstream: Option<Spanned<Vec<Spanned<String>>>>,
    /// `proxy_next_upstream_tries`.
    pub next_upstream_tries: Option<Spanned<i64>>,
    /// `proxy_next_upstream_timeout`.
    pub next_upstream_timeout: Option<Spanned<String>>,
    /// "http1" | "h2".
    pub protocol: Option<Spanned<String>>,
    /// Upstream TLS.
    pub tls: Option<SpannedValue>,
    /// Periodic re-resolution of hostnames.
    pub resolve: Option<Spanned<bool>>,
    /// Re-resolution period.
    pub resolve_interval: Option<Spanned<String>>,
    /// Active health checks.
    pub health_check: Option<Spanned<HealthCheckSection>>,
}

/// `[upstream.NAME.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// "http" | "tcp" | "grpc".
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// The service a gRPC check asks about ("" = the server as a whole).
    pub grpc_service: Option<Spanned<String>>,
    /// Request path for HTTP checks.
    pub path: Option<Spanned<String>>,
    /// Time between checks.
    pub interval: Option<Spanned<String>>,
    /// Time one check may take.
    pub timeout: Option<Spanned<String>>,
    /// Consecutive passes to turn healthy.
    pub rise: Option<Spanned<i64>>,
    /// Consecutive failures to turn unhealthy.
    pub fall: Option<Spanned<i64>>,
    /// Codes and ranges that pass: "200-399" or a list.
    pub expect_status: Option<SpannedValue>,
    /// Host header for HTTP checks.
    pub host: Option<Spanned<String>>,
    /// Port to check instead of the traffic port.
    pub port: Option<Spanned<i64>>,
    /// Servers start unhealthy until their first pass.
    pub mandatory: Option<Spanned<bool>>,
}

/// `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listen addresses.
    pub listen: Spanned<Vec<Spanned<String>>>,
    /// Names matched against Host.
    #[serde(default)]
    pub server_name: Vec<Spanned<String>>,
    /// TLS termination.
    pub tls: Option<Spanned<ServerTlsSection>>,
    /// Request body limit.
    pub client_max_body_size: Option<SpannedValue>,
    /// Time to receive the request head.
    pub client_header_timeout: Option<Spanned<String>>,
    /// Longest wait between two reads of the request body.
    pub client_body_timeout: Option<Spanned<String>>,
    /// Idle keep-alive connection lifetime.
    pub keepalive_timeout: Option<Spanned<String>>,
    /// h2c with prior knowledge on cleartext listeners.
    pub http2: Option<Spanned<bool>>,
    /// Response headers added for nginx's success and redirect statuses.
    pub add_header: Option<HeaderTemplates>,
    /// Response headers added for every status.
    pub add_header_always: Option<HeaderTemplates>,
    /// Every connection starts with a PROXY protocol v1 or v2 header.
    pub proxy_protocol: Option<Spanned<bool>>,
    /// Trusted addresses (CIDRs) whose `real_ip_header` is believed.
    pub real_ip_from: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where the client address of a trusted connection is read.
    pub real_ip_header: Option<Spanned<String>>,
    /// Skip trusted addresses in the header, right to left.
    pub real_ip_recursive: Option<Spanned<bool>>,
    /// `[[server.location]]` blocks.
    #[serde(default)]
    pub location: Vec<LocationSection>,
}

/// `[[server]] tls = { cert, key, client_ca, client_auth }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key of the leaf.
    pub key: Spanned<String>,
    /// PEM CA bundle client certificates are verified against.
    pub client_ca: Option<Spanned<String>>,
    /// "off" | "optional" | "required".
    pub client_auth: Option<Spanned<String>>,
}

/// `[upstream.NAME] tls = { verify, ca, server_name, cert, key }` (or `tls = true`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// Verify the servers' certificates (default true).
    pub verify: Option<bool>,
    /// PEM CA bundle to verify them against instead of the built-in roots.
    pub ca: Option<String>,
    /// Name to verify and send as SNI instead of each server's host.
    pub server_name: Option<String>,
    /// PEM client certificate chain.
    pub cert: Option<String>,
    /// PEM key of the client certificate.
    pub key: Option<String>,
}

/// `[[server.location]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSection {
    /// "/prefix", "= /exact", "^~ /prefix", "~ regex", "~* regex".
    pub path: Spanned<String>,
    /// "http://UPSTREAM[/uri]" or "http://host:port[/uri]".
    pub proxy_pass: Option<Spanned<String>>,
    /// Header name → template ("" removes the header).
    pub proxy_set_header: Option<HeaderTemplates>,
    /// nginx `return`.
    #[serde(rename = "return")]
    pub return_: Option<Spanned<ReturnSection>>,
    /// Accepted for nginx users; bodies always stream.
    pub proxy_buffering: Option<Spanned<bool>>,
    /// Response headers added for nginx's success and redirect statuses.
    pub add_header: Option<HeaderTemplates>,
    /// Response headers added for every status.
    pub add_header_always: Option<HeaderTemplates>,
    /// Overrides the pool's `connect_timeout`.
    pub connect_timeout: Option<Spanned<String>>,
    /// Overrides the pool's `send_timeout`.
    pub send_timeout: Option<Spanned<String>>,
    /// Overrides the pool's `read_timeout`.
    pub read_timeout: Option<Spanned<String>>,
    /// Overrides the pool's `next_upstream`.
    pub next_upstream: Option<Spanned<Vec<Spanned<String>>>>,
    /// Overrides the pool's `next_upstream_tries`.
    pub next_upstream_tries: Option<Spanned<i64>>,
    /// Overrides the pool's `next_upstream_timeout`.
    pub next_upstream_timeout: Option<Spanned<String>>,
    /// Overrides the server's `client_max_body_size`.
    pub client_max_body_size: Option<SpannedValue>,
}

/// Header name → template, in file order (nginx sends them so).
pub type HeaderTemplates = Spanned<indexmap::IndexMap<String, Spanned<String>>>;

/// `return = { status, body, location }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnSection {
    /// Status code.
    pub status: Spanned<i64>,
    /// Body template.
    pub body: Option<Spanned<String>>,
    /// Location header template (for redirects).
    pub location: Option<Spanned<String>>,
}
