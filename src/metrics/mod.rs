//! Prometheus metrics (SPEC §5), served on the admin listener at `GET /metrics`.
//!
//! Two kinds of series:
//! - **Counters and histograms moved by traffic** live in one process-wide
//!   [`prometheus::Registry`] ([`global`]). Their label handles are resolved when a
//!   snapshot is built ([`RequestMetrics`] per location, [`PeerMetrics`] per server,
//!   [`UpstreamMetrics`] per pool), so a request only does atomic adds: no lookup, no
//!   lock, no allocation. After a reload, [`retain`] removes the label sets the new
//!   snapshot no longer has, so removed servers, pools and virtual servers vanish.
//! - **Live state** (server up, active requests, reloads) is read at scrape time from
//!   the current snapshot and the runtime's shared state, which the admin API hands
//!   to [`render`] as `live` families: nothing per request, and a
//!   removed server disappears with the snapshot that held it.
//!
//! The registry is process-wide because the handles are resolved while snapshots are
//! built (on a blocking thread during reloads), far from any per-instance state, and
//! one process serves one exposition.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Histogram buckets for proxy latencies, in seconds: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status classes, the `code` label values.
pub const CODES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CODES`] of a status code (anything out of range counts as 5xx).
#[inline]
pub fn class(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// The `reason` of `fulcrum_upstream_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Connect refused or failed, or the connection broke before the request left.
    Connect,
    /// Connect or read timeout.
    Timeout,
    /// The connection broke, or the answer was not valid HTTP.
    Reset,
    /// A response status listed in `next_upstream` that led to a retry.
    Status,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 4] = [
        Reason::Connect,
        Reason::Timeout,
        Reason::Reset,
        Reason::Status,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Timeout => "timeout",
            Reason::Reset => "reset",
            Reason::Status => "status",
        }
    }
}

/// The process-wide metric families moved by traffic.
pub struct Metrics {
    /// Everything registered, process collector included.
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_failures: IntCounterVec,
    upstream_retries: IntCounterVec,
    health_checks: IntCounterVec,
    conns_active: IntGaugeVec,
    conns_total: IntCounterVec,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, c.clone());
    c
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, v.clone());
    v
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, v.clone());
    v
}

fn histogram_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let v = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, v.clone());
    v
}

// The definitions are constants: a failure here is a bug, found by any test.
fn register(reg: &Registry, c: impl Collector + 'static) {
    if let Err(e) = reg.register(Box::new(c)) {
        panic!("registering a metric: {e}");
    }
}

impl Metrics {
    fn new() -> Metrics {
        let reg = Registry::new();
        #[cfg(target_os = "linux")]
        register(
            &reg,
            prometheus::process_collector::ProcessCollector::for_self(),
        );
        gauge_vec(
            &reg,
            "fulcrum_build_info",
            "fulcrum build; always 1.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let access_log_dropped = counter(
            &reg,
            "fulcrum_access_log_dropped_total",
            "Access log lines dropped because the log writer fell behind.",
        );
        Metrics {
            http_requests: counter_vec(
                &reg,
                "fulcrum_http_requests_total",
                "Requests answered to clients, by virtual server, upstream and status class.",
                &["server", "upstream", "code"],
            ),
            http_duration: histogram_vec(
                &reg,
                "fulcrum_http_request_duration_seconds",
                "Time from reading the request head to the end of the response body.",
                &["upstream"],
            ),
            upstream_requests: counter_vec(
                &reg,
                "fulcrum_upstream_requests_total",
                "Responses received from upstream servers, by status class.",
                &["upstream", "server", "code"],
            ),
            upstream_duration: histogram_vec(
                &reg,
                "fulcrum_upstream_response_duration_seconds",
                "Time from starting a try on a server to the end of its response body.",
                &["upstream", "server"],
            ),
            upstream_failures: counter_vec(
                &reg,
                "fulcrum_upstream_failures_total",
                "Failed tries on upstream servers, by reason.",
                &["upstream", "server", "reason"],
            ),
            upstream_retries: counter_vec(
                &reg,
                "fulcrum_upstream_retries_total",
                "Tries beyond the first of a request.",
                &["upstream"],
            ),
            health_checks: counter_vec(
                &reg,
                "fulcrum_health_checks_total",
                "Active health check probes, by result.",
                &["upstream", "server", "result"],
            ),
            conns_active: gauge_vec(
                &reg,
                "fulcrum_downstream_connections_active",
                "Open client connections per listener.",
                &["listener"],
            ),
            conns_total: counter_vec(
                &reg,
                "fulcrum_downstream_connections_total",
                "Client connections accepted per listener.",
                &["listener"],
            ),
            access_log_dropped,
            registry: reg,
        }
    }
}

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Whether requests and tries are counted (see [`set_recording`]).
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns per-request counting on or off for the process. The binary turns it off when
/// the admin API is (`[admin] listen = "off"`): nothing could scrape the figures, so
/// requests skip the counter and histogram updates (atomic operations on shared cache
/// lines). Health, reload and connection figures are kept either way.
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Whether requests and tries are counted.
#[inline]
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Handles of `fulcrum_http_requests_total` and `fulcrum_http_request_duration_seconds`
/// for one (virtual server, upstream) pair; `upstream` is "" for answers fulcrum gives
/// itself (`return`, 404, bad requests).
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    upstream: String,
    codes: [IntCounter; 5],
    duration: Histogram,
}

impl RequestMetrics {
    /// Resolves the handles for `server` (the virtual server's label) and `upstream`.
    pub fn new(server: &str, upstream: &str) -> RequestMetrics {
        let m = global();
        RequestMetrics {
            upstream: upstream.to_string(),
            codes: std::array::from_fn(|i| {
                m.http_requests
                    .with_label_values(&[server, upstream, CODES[i]])
            }),
            duration: m.http_duration.with_label_values(&[upstream]),
        }
    }

    /// The `upstream` label.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Counts one answered request.
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        if !recording() {
            return;
        }
        self.codes[class(status)].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Handles of the per-server upstream families for one server of one pool.
#[derive(Debug, Clone)]
pub struct PeerMetrics {
    codes: [IntCounter; 5],
    duration: Histogram,
    failures: [IntCounter; 4],
}

impl PeerMetrics {
    /// Resolves the handles for server `addr` of pool `upstream`.
    pub fn new(upstream: &str, addr: SocketAddr) -> PeerMetrics {
        let m = global();
        let server = addr.to_string();
        PeerMetrics {
            codes: std::array::from_fn(|i| {
                m.upstream_requests
                    .with_label_values(&[upstream, &server, CODES[i]])
            }),
            duration: m.upstream_duration.with_label_values(&[upstream, &server]),
            failures: Reason::ALL.map(|r| {
                m.upstream_failures
                    .with_label_values(&[upstream, &server, r.as_str()])
            }),
        }
    }

    /// Counts a response received from the server and the time since its try
    /// `started` (the clock is read only while counting).
    #[inline]
    pub fn response(&self, status: u16, started: std::time::Instant) {
        if !recording() {
            return;
        }
        self.codes[class(status)].inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }

    /// Counts a failed try.
    #[inline]
    pub fn failure(&self, reason: Reason) {
        self.failures[reason as usize].inc();
    }
}

/// Handles of the per-pool families.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// `fulcrum_upstream_retries_total`.
    pub retries: IntCounter,
}

impl UpstreamMetrics {
    /// Resolves the handles of pool `upstream`.
    pub fn new(upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            retries: global().upstream_retries.with_label_values(&[upstream]),
        }
    }
}

/// Handles of `fulcrum_dns_lookups_total` for one `resolve` pool.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    /// `result="success"`: an answer, empty ones included.
    pub success: IntCounter,
    /// `result="failure"`: a timeout or an error answer; the last good set stays.
    pub failure: IntCounter,
}

/// `fulcrum_dns_lookups_total`, registered with the first `resolve` pool.
fn dns_lookups() -> &'static IntCounterVec {
    static FAMILY: OnceLock<IntCounterVec> = OnceLock::new();
    FAMILY.get_or_init(|| {
        counter_vec(
            &global().registry,
            "fulcrum_dns_lookups_total",
            "DNS lookups of resolve pools, by result.",
            &["upstream", "result"],
        )
    })
}

impl DnsMetrics {
    /// Resolves the handles of pool `upstream`.
    pub fn new(upstream: &str) -> DnsMetrics {
        let m = dns_lookups();
        DnsMetrics {
            success: m.with_label_values(&[upstream, "success"]),
            failure: m.with_label_values(&[upstream, "failure"]),
        }
    }
}

/// `fulcrum_tls_handshakes_total`, registered with the first TLS listener.
fn tls_handshakes() -> &'static IntCounterVec {
    static FAMILY: OnceLock<IntCounterVec> = OnceLock::new();
    FAMILY.get_or_init(|| {
        counter_vec(
            &global().registry,
            "fulcrum_tls_handshakes_total",
            "TLS handshakes on downstream listeners, by result.",
            &["listener", "result"],
        )
    })
}

/// Handles of `fulcrum_tls_handshakes_total` for one listener, resolved when it
/// first accepts TLS (a cleartext listener has no series); clones share them.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    key: SocketAddr,
    handles: std::sync::Arc<OnceLock<(IntCounter, IntCounter)>>,
}

impl TlsMetrics {
    /// The (unresolved) handles of listener `key` (its configured address).
    pub fn new(key: SocketAddr) -> TlsMetrics {
        TlsMetrics {
            key,
            handles: std::sync::Arc::default(),
        }
    }

    fn handles(&self) -> &(IntCounter, IntCounter) {
        self.handles.get_or_init(|| {
            let m = tls_handshakes();
            let l = self.key.to_string();
            (
                m.with_label_values(&[&l, "success"]),
                m.with_label_values(&[&l, "failure"]),
            )
        })
    }

    /// Counts a finished handshake (the failure series appears with it, at 0).
    pub fn success(&self) {
        self.handles().0.inc();
    }

    /// Counts a failed one.
    pub fn failure(&self) {
        self.handles().1.inc();
    }
}

/// Handles of `fulcrum_health_checks_total` for one checked server.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    pass: IntCounter,
    fail: IntCounter,
}

impl HealthMetrics {
    /// Resolves the handles for server `addr` of pool `upstream`.
    pub fn new(upstream: &str, addr: SocketAddr) -> HealthMetrics {
        let m = global();
        let server = addr.to_string();
        HealthMetrics {
            pass: m
                .health_checks
                .with_label_values(&[upstream, &server, "pass"]),
            fail: m
                .health_checks
                .with_label_values(&[upstream, &server, "fail"]),
        }
    }

    /// Counts one probe.
    pub fn record(&self, passed: bool) {
        if passed {
            self.pass.inc();
        } else {
            self.fail.inc();
        }
    }
}

/// Handles of the downstream connection families for one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    /// Open connections.
    pub active: IntGauge,
    /// Accepted connections.
    pub total: IntCounter,
}

impl ListenerMetrics {
    /// Resolves the handles of listener `key` (its configured address).
    pub fn new(key: SocketAddr) -> ListenerMetrics {
        let m = global();
        let l = key.to_string();
        ListenerMetrics {
            active: m.conns_active.with_label_values(&[&l]),
            total: m.conns_total.with_label_values(&[&l]),
        }
    }

    /// Removes the series of a listener that stopped accepting. Its draining
    /// connections keep their (now detached) handles.
    pub fn forget(key: SocketAddr) {
        let m = global();
        let l = key.to_string();
        let _ = m.conns_active.remove_label_values(&[&l]);
        let _ = m.conns_total.remove_label_values(&[&l]);
        for result in ["success", "failure"] {
            let _ = tls_handshakes().remove_label_values(&[&l, result]);
        }
    }
}

/// Removes every series of `vec` whose labels `keep` rejects. `names` are all of the
/// vec's label names in its order (removal needs every value); `keep` gets the values
/// in that order.
fn prune<T: MetricVecBuilder>(vec: &MetricVec<T>, names: &[&str], keep: impl Fn(&[&str]) -> bool) {
    let mut doomed: Vec<Vec<String>> = Vec::new();
    for fam in vec.collect() {
        for m in fam.get_metric() {
            let vals: Vec<&str> = names
                .iter()
                .map(|n| {
                    m.get_label()
                        .iter()
                        .find(|l| l.get_name() == *n)
                        .map_or("", |l| l.get_value())
                })
                .collect();
            if !keep(&vals) {
                doomed.push(vals.iter().map(|s| s.to_string()).collect());
            }
        }
    }
    for vals in doomed {
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let _ = vec.remove_label_values(&refs);
    }
}

/// The label values a config snapshot has series for, handed to [`retain`] after a
/// reload (built by whoever holds the snapshot, so metrics needs no config types).
#[derive(Debug, Default)]
pub struct LabelSets {
    /// `(server, upstream)` pairs of `fulcrum_http_requests_total`.
    pub routes: HashSet<(String, String)>,
    /// Pool names.
    pub pools: HashSet<String>,
    /// `(upstream, server address)` pairs.
    pub servers: HashSet<(String, String)>,
}

/// After a reload: drops the series of virtual servers, pools and servers that `keep`
/// (the new snapshot's label sets) no longer has. In-flight requests of the old
/// snapshot that end later add to detached handles, which no scrape shows. The
/// empty labels (answers fulcrum gives itself) are always kept.
pub fn retain(keep: &LabelSets) {
    let m = global();
    let route = |v: &[&str]| {
        (v[0].is_empty() && v[1].is_empty())
            || keep.routes.contains(&(v[0].to_string(), v[1].to_string()))
    };
    let pool = |v: &[&str]| v[0].is_empty() || keep.pools.contains(v[0]);
    let has_server = |v: &[&str]| keep.servers.contains(&(v[0].to_string(), v[1].to_string()));
    prune(&m.http_requests, &["server", "upstream", "code"], route);
    prune(&m.http_duration, &["upstream"], pool);
    prune(&m.upstream_retries, &["upstream"], pool);
    prune(dns_lookups(), &["upstream", "result"], pool);
    prune(
        &m.upstream_requests,
        &["upstream", "server", "code"],
        has_server,
    );
    prune(&m.upstream_duration, &["upstream", "server"], has_server);
    prune(
        &m.upstream_failures,
        &["upstream", "server", "reason"],
        has_server,
    );
    prune(
        &m.health_checks,
        &["upstream", "server", "result"],
        has_server,
    );
}

/// The text exposition of every family: the process-wide ones and `live`, the
/// families the caller computed from live state at scrape time.
pub fn render(live: Vec<MetricFamily>) -> Result<Vec<u8>, prometheus::Error> {
    let mut families = global().registry.gather();
    families.extend(live);
    families.sort_by(|a, b| a.get_name().cmp(b.get_name()));
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&families, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(CODES[class(101)], "1xx");
        assert_eq!(CODES[class(200)], "2xx");
        assert_eq!(CODES[class(304)], "3xx");
        assert_eq!(CODES[class(499)], "4xx");
        assert_eq!(CODES[class(504)], "5xx");
        assert_eq!(CODES[class(999)], "5xx");
        assert_eq!(CODES[class(0)], "5xx");
    }

    #[test]
    fn reasons_index_their_label() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn buckets_rise() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(LATENCY_BUCKETS[0], 0.0005);
        assert_eq!(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1], 30.0);
    }

    #[test]
    fn nothing_is_counted_while_recording_is_off() {
        // No other unit test records requests, so toggling the process-wide switch
        // here cannot disturb them.
        let req = RequestMetrics::new("recording.test", "rec-pool");
        let peer = PeerMetrics::new("rec-pool", "10.9.9.9:1".parse().expect("addr"));
        let m = global();
        let served = || {
            m.http_requests
                .with_label_values(&["recording.test", "rec-pool", "2xx"])
                .get()
        };
        let tried = || {
            m.upstream_requests
                .with_label_values(&["rec-pool", "10.9.9.9:1", "2xx"])
                .get()
        };
        set_recording(false);
        req.record(200, Duration::from_millis(1));
        peer.response(200, std::time::Instant::now());
        set_recording(true);
        assert_eq!((served(), tried()), (0, 0));
        req.record(200, Duration::from_millis(1));
        peer.response(200, std::time::Instant::now());
        assert_eq!((served(), tried()), (1, 1));
    }

    #[test]
    fn prune_removes_only_rejected_label_sets() {
        let m = global();
        let names = ["upstream", "server", "reason"];
        let a = m
            .upstream_failures
            .with_label_values(&["prune-a", "1.2.3.4:1", "connect"]);
        let b = m
            .upstream_failures
            .with_label_values(&["prune-b", "1.2.3.4:1", "connect"]);
        a.inc();
        b.inc_by(2);
        prune(&m.upstream_failures, &names, |v| v[0] != "prune-a");
        let pools: Vec<String> = m
            .upstream_failures
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|x| x.get_label().iter())
            .filter(|l| l.get_name() == "upstream")
            .map(|l| l.get_value().to_string())
            .collect();
        assert!(!pools.contains(&"prune-a".to_string()));
        assert!(pools.contains(&"prune-b".to_string()));
        // A fresh handle for the removed set starts from zero; the kept one is intact.
        let fresh = m
            .upstream_failures
            .with_label_values(&["prune-a", "1.2.3.4:1", "connect"]);
        assert_eq!(fresh.get(), 0);
        assert_eq!(b.get(), 2);
    }
}
