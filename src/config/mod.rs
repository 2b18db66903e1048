//! Configuration: `config.toml -> schema::FileConfig -> validate -> Config`.
//!
//! The schema mirrors the file (unknown keys rejected); validation turns it into the
//! runtime [`Config`] with everything pre-parsed (durations, addresses, regexes,
//! templates) and collects every problem it finds as `PATH:LINE:COL: message`.

pub mod diagnostic;
pub mod schema;
mod validate;
pub mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostic::{ConfigError, Diagnostic};

use crate::route::location::LocationPattern;
use crate::route::template::Template;

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }],
    })?;
    parse(path, &src)
}

/// Parses and validates config text read from `path`.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
    validate::validate(path, src)
}

/// The validated runtime configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[global]`.
    pub global: Global,
    /// `[admin]`; `None` when `listen = "off"`.
    pub admin: Option<Admin>,
    /// Pools: the file's `[upstream.NAME]` tables, then one implicit pool per
    /// literal `proxy_pass` address (as nginx creates).
    pub upstreams: Vec<Upstream>,
    /// Virtual servers in file order.
    pub servers: Vec<VirtualServer>,
    /// Demo backends to start.
    pub demo: Vec<SocketAddr>,
    /// Demo requests to send through the first listener once ready.
    pub demo_requests: u32,
    /// What is valid but worth saying (an expired certificate), as `PATH:LINE:COL`:
    /// `fulcrum check` prints them, a start or reload logs them.
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// The files a config depends on: the file itself, then every certificate, key
    /// and CA file it names (a change of any of them reloads, SPEC §3).
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.path.clone()];
        let mut add = |f: &PathBuf| {
            if !paths.contains(f) {
                paths.push(f.clone());
            }
        };
        for t in self.servers.iter().filter_map(|s| s.tls.as_ref()) {
            [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .for_each(&mut add);
        }
        for t in self.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
            let identity = t.identity.as_ref();
            [
                t.ca.as_ref(),
                identity.map(|i| &i.0),
                identity.map(|i| &i.1),
            ]
            .into_iter()
            .flatten()
            .for_each(&mut add);
        }
        paths
    }
}

/// `[global]`.
#[derive(Debug, Clone)]
pub struct Global {
    /// 0 = one per core.
    pub worker_threads: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Default log filter.
    pub log_level: Option<String>,
    /// Downstream connection cap; 0 = unlimited.
    pub max_connections: usize,
    /// Where access log lines go.
    pub access_log: AccessLogTarget,
    /// How access log lines look.
    pub access_log_format: AccessLogFormat,
    /// DNS servers for `resolve` pools; empty: those of `/etc/resolv.conf`.
    pub resolver: Vec<SocketAddr>,
    /// Time a DNS query may take.
    pub resolver_timeout: Duration,
}

/// `access_log`: where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    /// No access log (the default; costs nothing per request).
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, opened for appending (created if missing).
    Path(PathBuf),
}

/// `access_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// nginx's `combined` plus upstream address, status and times.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token for mutating endpoints.
    pub token: Option<String>,
}

/// Balancing algorithm of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// nginx smooth weighted round-robin.
    RoundRobin,
    /// nginx `least_conn`.
    LeastConn,
    /// nginx `ip_hash`.
    IpHash,
    /// nginx `hash KEY` (optionally consistent).
    Hash,
    /// nginx `random`.
    Random,
    /// nginx `random two least_conn`.
    RandomTwoLeastConn,
    /// Power of two choices over peak EWMA latency.
    PeakEwma,
}

/// When to pass a request to the next server (`proxy_next_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextUpstream {
    /// Connect/send/read failure, close before the header.
    pub error: bool,
    /// Connect or read timeout.
    pub timeout: bool,
    /// Invalid response header.
    pub invalid_header: bool,
    /// Statuses to retry on.
    pub statuses: StatusSet,
    /// Retry non-idempotent methods too.
    pub non_idempotent: bool,
}

/// A small set of retryable statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet(u8);

impl StatusSet {
    const CODES: [u16; 5] = [500, 502, 503, 504, 429];

    /// Adds a status if it is one of the retryable ones.
    pub fn insert(&mut self, code: u16) -> bool {
        match Self::CODES.iter().position(|c| *c == code) {
            Some(i) => {
                self.0 |= 1 << i;
                true
            }
            None => false,
        }
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        Self::CODES
            .iter()
            .position(|c| *c == code)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// One `server` of a pool, resolved to one address.
#[derive(Debug, Clone)]
pub struct ServerConf {
    /// The address as written (`host[:port]`): consistent hashing's name.
    pub name: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Weight (≥ 1).
    pub weight: u32,
    /// Failures within `fail_timeout` that take it out; 0 = never.
    pub max_fails: u32,
    /// Failure window and time out.
    pub fail_timeout: Duration,
    /// Concurrent request cap; 0 = unlimited.
    pub max_conns: u32,
    /// Serves only while every primary is unavailable.
    pub backup: bool,
    /// Never gets traffic.
    pub down: bool,
}

impl ServerConf {
    /// A server at `addr` named as its address, with nginx's defaults (weight 1,
    /// max_fails 1, fail_timeout 10s).
    pub fn new(addr: SocketAddr) -> ServerConf {
        values::ServerParams::new(addr.to_string()).server(addr)
    }
}

/// A pool's `resolve = true` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolve {
    /// Longest time between two lookups of one entry (shorter when the TTL is).
    pub interval: Duration,
    /// The `server` entries as written, in config order.
    pub entries: Vec<ResolveEntry>,
}

/// One `server` entry of a `resolve` pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolveEntry {
    /// The parameters as written (`addr` is `host[:port]`).
    pub params: values::ServerParams,
    /// What is looked up: a hostname (A and AAAA) or an SRV name.
    pub lookup: Lookup,
}

/// The DNS question of one [`ResolveEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A and AAAA records of `host`, served on `port`.
    Host {
        /// The name.
        host: String,
        /// The port of every address.
        port: u16,
    },
    /// SRV records of `name` (e.g. `_http._tcp.backend.ns.svc`): each target at its port.
    Srv {
        /// The SRV name.
        name: String,
    },
}

impl Lookup {
    /// The name asked for (what `/status` shows as a server's origin).
    pub fn name(&self) -> &str {
        match self {
            Lookup::Host { host, .. } => host,
            Lookup::Srv { name } => name,
        }
    }
}

/// `[upstream.NAME]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Pool name.
    pub name: String,
    /// Servers in config order, each hostname expanded to its addresses.
    pub servers: Vec<ServerConf>,
    /// Algorithm.
    pub balance: Balance,
    /// Key for "hash".
    pub hash_key: Option<Template>,
    /// Ketama for "hash".
    pub consistent: bool,
    /// Idle pooled connections kept per server.
    pub keepalive: usize,
    /// Idle pooled connection lifetime.
    pub keepalive_timeout: Duration,
    /// Timeouts and retry rules; a location may override them.
    pub pass: PassOpts,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheck>,
    /// `resolve = true`: the entries the discovery re-resolves (`servers` then holds
    /// only what they gave at load, nothing for a hostname or `service=`).
    pub resolve: Option<Resolve>,
    /// What the servers speak.
    pub protocol: Protocol,
    /// TLS to the servers (`tls`, or `https://` in a `proxy_pass` to it).
    pub tls: Option<UpstreamTls>,
}

/// `[upstream.NAME] tls`: the settings as written (paths resolved) and the client
/// config every connection of the pool is made with.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Certificates are verified.
    pub verify: bool,
    /// CA bundle instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// Verification and SNI name instead of each server's host.
    pub server_name: Option<String>,
    /// Client certificate chain and key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The rustls client config (ALPN by the pool's protocol).
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

/// What an upstream's servers speak (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, one exchange per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge: streams multiplexed over few connections.
    H2,
}

impl Upstream {
    /// A pool of `servers` balanced by `balance`, every other setting at its default.
    pub fn new(name: &str, servers: Vec<ServerConf>, balance: Balance) -> Upstream {
        Upstream {
            name: name.to_string(),
            servers,
            balance,
            hash_key: None,
            consistent: false,
            keepalive: 64,
            keepalive_timeout: Duration::from_secs(60),
            pass: PassOpts {
                connect_timeout: Duration::from_secs(5),
                send_timeout: Duration::from_secs(60),
                read_timeout: Duration::from_secs(60),
                next_upstream: NextUpstream {
                    error: true,
                    timeout: true,
                    ..Default::default()
                },
                next_upstream_tries: 0,
                next_upstream_timeout: Duration::ZERO,
            },
            resolve: None,
            health_check: None,
            protocol: Protocol::Http1,
            tls: None,
        }
    }
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path`, pass on an expected status.
    Http,
    /// TCP connect only.
    Tcp,
    /// `grpc.health.v1.Health/Check` over h2c, pass on SERVING.
    Grpc,
}

/// `[upstream.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// HTTP or TCP.
    pub kind: CheckKind,
    /// Request path (HTTP).
    pub path: String,
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Time one check may take before it counts as a failure.
    pub timeout: Duration,
    /// Consecutive passes to turn healthy (≥ 1).
    pub rise: u32,
    /// Consecutive failures to turn unhealthy (≥ 1).
    pub fall: u32,
    /// Inclusive status ranges that pass (HTTP).
    pub expect_status: Vec<(u16, u16)>,
    /// Host header (HTTP); `None`: the server's address.
    pub host: Option<String>,
    /// Port to check instead of the server's.
    pub port: Option<u16>,
    /// Servers start unhealthy until they pass once.
    pub mandatory: bool,
    /// The service a gRPC check asks about ("": the server as a whole).
    pub grpc_service: String,
}

impl HealthCheck {
    /// Whether `status` is an expected one.
    pub fn expects(&self, status: u16) -> bool {
        self.expect_status
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Where a trusted connection's client address is read (`real_ip_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Forwarded-For` (every line, right to left).
    XForwardedFor,
    /// `X-Real-IP` (its first line).
    XRealIp,
    /// The address of the connection's PROXY protocol header.
    ProxyProtocol,
}

/// A server's realip settings (nginx `set_real_ip_from`, `real_ip_header`,
/// `real_ip_recursive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    /// Trusted networks.
    pub from: Vec<ipnet::IpNet>,
    /// Where the client address is read.
    pub header: RealIpHeader,
    /// Skip trusted addresses in the header, right to left.
    pub recursive: bool,
}

/// `[[server]]`.
#[derive(Debug)]
pub struct VirtualServer {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// server_name entries (lowercased).
    pub server_names: Vec<String>,
    /// Body limit; 0 = off.
    pub client_max_body_size: u64,
    /// Time to receive the request head.
    pub client_header_timeout: Duration,
    /// Longest wait between two reads of the request body (nginx
    /// `client_body_timeout`); then 408 and the connection closes.
    pub client_body_timeout: Duration,
    /// Idle keep-alive lifetime.
    pub keepalive_timeout: Duration,
    /// h2c with prior knowledge.
    pub http2: bool,
    /// `add_header`/`add_header_always` at server level: for answers given before a
    /// location is chosen, and inherited by locations without their own.
    pub add_headers: Vec<AddHeader>,
    /// Connections start with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    /// nginx's realip module: `real_ip_from` and its header; `None` without
    /// `real_ip_from`.
    pub real_ip: Option<RealIp>,
    /// TLS termination, its files loaded and checked.
    pub tls: Option<ServerTlsConf>,
    /// Locations in file order.
    pub locations: Vec<Location>,
}

impl VirtualServer {
    /// The `server` label of metrics and logs: the first server_name, else the first listen address.
    pub fn label(&self) -> String {
        match self.server_names.first() {
            Some(n) if !n.is_empty() => n.clone(),
            _ => self
                .listen
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

/// `[[server]] tls`: the files (relative ones resolved against the config file's
/// directory) and what was loaded from them.
#[derive(Debug, Clone)]
pub struct ServerTlsConf {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Client certificate policy.
    pub client_auth: crate::tls::server::ClientAuth,
    /// The rustls config built from them, and the certificate's facts.
    pub loaded: crate::tls::server::ServerTls,
}

/// `[[server.location]]`.
#[derive(Debug)]
pub struct Location {
    /// The path as written.
    pub path: String,
    /// Parsed pattern.
    pub pattern: LocationPattern,
    /// What to do.
    pub action: Action,
    /// `add_header`/`add_header_always`: the location's own, else its server's.
    pub add_headers: Vec<AddHeader>,
    /// Request body limit: the location's own, else its server's; 0 = off.
    pub client_max_body_size: u64,
}

/// What a location does with a request.
#[derive(Debug)]
pub enum Action {
    /// Forward to a pool.
    Proxy(ProxyPass),
    /// Answer directly.
    Return(Return),
}

/// `proxy_pass` and its headers.
#[derive(Debug)]
pub struct ProxyPass {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// `$proxy_host`: the pool name, or `host[:port]` of a literal address.
    pub proxy_host: String,
    /// `proxy_host` as the default `Host` header value, built once.
    pub proxy_host_header: http::HeaderValue,
    /// The URI part, when proxy_pass has one.
    pub uri_part: Option<String>,
    /// `proxy_set_header` in file order; an empty template removes the header.
    pub set_headers: Vec<(http::HeaderName, Template)>,
    /// The pool's timeouts and retry rules as this location overrides them.
    pub opts: PassOpts,
}

/// The settings of a `proxy_pass` a location may override (nginx sets them per
/// location): the pool's, with the location's own where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassOpts {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout between two writes to the upstream.
    pub send_timeout: Duration,
    /// Timeout between two reads from the upstream.
    pub read_timeout: Duration,
    /// Retry conditions.
    pub next_upstream: NextUpstream,
    /// Tries cap; 0 = unlimited.
    pub next_upstream_tries: u32,
    /// Time cap for retries; zero = unlimited.
    pub next_upstream_timeout: Duration,
}

/// One `add_header` (or `add_header_always`) entry.
#[derive(Debug, Clone)]
pub struct AddHeader {
    /// Response header name.
    pub name: http::HeaderName,
    /// Value template; a value that renders empty adds nothing (nginx).
    pub value: Template,
    /// `add_header_always`: every status, not only nginx's success and redirect ones.
    pub always: bool,
}

impl AddHeader {
    /// Whether this entry applies to a response with `status` (nginx's list for
    /// `add_header` without `always`).
    pub fn applies(&self, status: u16) -> bool {
        self.always
            || matches!(
                status,
                200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
            )
    }
}

/// nginx `return`.
#[derive(Debug)]
pub struct Return {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Option<Template>,
    /// Location header.
    pub location: Option<Template>,
}
