//! `/metrics` after known traffic against real backends: every SPEC §5 family with its
//! labels, exact counter deltas (a retry on connect, a 502, a 504, a retried 503, a
//! `return`, a 404, a health flip), `promtool check metrics`, connections per
//! listener, reload counters, and series of removed servers vanishing after a reload.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

type Labels = BTreeMap<String, String>;

/// A parsed text exposition: samples by name, and `# TYPE` lines.
#[derive(Debug, Default)]
struct Scrape {
    samples: HashMap<String, Vec<(Labels, f64)>>,
    types: HashMap<String, String>,
    text: String,
}

fn parse_labels(s: &str) -> Labels {
    // Values here never contain `"` (names, addresses, classes, numbers).
    let mut out = Labels::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',');
        let after = &rest[eq + 2..];
        let end = after.find('"').expect("closing quote");
        out.insert(key.to_string(), after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE line");
                s.types.insert(name.to_string(), ty.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (series, Labels::new()),
            };
            s.samples
                .entry(name.to_string())
                .or_default()
                .push((labels, value));
        }
        s.text = text;
        s
    }

    /// The value of the one sample of `name` whose labels include `want` (0 if none).
    fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(matching.len() <= 1, "{name} {want:?} matches {matching:?}");
        matching.first().copied().unwrap_or(0.0)
    }

    fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.samples.get(name).into_iter().flatten().any(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Label names of every sample of `name`.
    fn label_names(&self, name: &str) -> Vec<Vec<String>> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .map(|(l, _)| l.keys().cloned().collect())
            .collect()
    }
}

fn scrape(f: &Fulcrum) -> Scrape {
    let r = get(f.admin.expect("admin"), "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    Scrape::parse(r.text())
}

/// A backend answering `status` to everything but `/health`, which answers the
/// switchable `health` status.
fn backend(status: u16, health: Arc<AtomicU16>) -> Backend {
    Backend::with(Arc::new(move |parts, _| {
        let code = if parts.uri.path() == "/health" {
            health.load(Ordering::SeqCst)
        } else {
            status
        };
        let mut r = http::Response::new(Full::new(Bytes::from_static(b"hello")));
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
        r
    }))
}

fn slow_backend(delay: Duration) -> Backend {
    Backend::with(Arc::new(move |_, _| {
        std::thread::sleep(delay);
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    }))
}

fn known_config(
    ok: SocketAddr,
    dead: SocketAddr,
    slow: SocketAddr,
    b503: SocketAddr,
    checked: SocketAddr,
) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[upstream.app]
server = ["{dead}", "{ok}"]

[upstream.broken]
server = ["{dead}"]

[upstream.slow]
server = ["{slow}"]
read_timeout = "300ms"

[upstream.flaky]
server = ["{b503}", "{ok}"]
next_upstream = ["error", "http_503"]

[upstream.checked]
server = ["{checked}"]
[upstream.checked.health_check]
path = "/health"
interval = "100ms"
timeout = "1s"
rise = 1
fall = 1

[[server]]
listen = ["127.0.0.1:0"]
server_name = ["metrics.test"]
[[server.location]]
path = "/app/"
proxy_pass = "http://app"
[[server.location]]
path = "/broken/"
proxy_pass = "http://broken"
[[server.location]]
path = "/slow/"
proxy_pass = "http://slow"
[[server.location]]
path = "/flaky/"
proxy_pass = "http://flaky"
[[server.location]]
path = "/checked/"
proxy_pass = "http://checked"
[[server.location]]
path = "= /ret"
return = {{ status = 204 }}
"#
    )
}

const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "fulcrum_http_requests_total",
        "counter",
        &["code", "server", "upstream"],
    ),
    (
        "fulcrum_http_request_duration_seconds",
        "histogram",
        &["upstream"],
    ),
    (
        "fulcrum_upstream_requests_total",
        "counter",
        &["code", "server", "upstream"],
    ),
    (
        "fulcrum_upstream_response_duration_seconds",
        "histogram",
        &["server", "upstream"],
    ),
    (
        "fulcrum_upstream_failures_total",
        "counter",
        &["reason", "server", "upstream"],
    ),
    ("fulcrum_upstream_retries_total", "counter", &["upstream"]),
    (
        "fulcrum_upstream_server_up",
        "gauge",
        &["backup", "server", "upstream"],
    ),
    (
        "fulcrum_upstream_active_requests",
        "gauge",
        &["server", "upstream"],
    ),
    (
        "fulcrum_health_checks_total",
        "counter",
        &["result", "server", "upstream"],
    ),
    (
        "fulcrum_downstream_connections_active",
        "gauge",
        &["listener"],
    ),
    (
        "fulcrum_downstream_connections_total",
        "counter",
        &["listener"],
    ),
    ("fulcrum_config_reloads_total", "counter", &["result"]),
    (
        "fulcrum_config_last_reload_success_timestamp_seconds",
        "gauge",
        &[],
    ),
    ("fulcrum_build_info", "gauge", &["version"]),
];

fn sample_name(family: &str, ty: &str) -> String {
    if ty == "histogram" {
        format!("{family}_count")
    } else {
        family.to_string()
    }
}

fn total_requests(s: &Scrape) -> f64 {
    s.samples
        .get("fulcrum_http_requests_total")
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn known_traffic_moves_every_family_by_exact_amounts() {
    let up = Arc::new(AtomicU16::new(200));
    let ok = backend(200, up.clone());
    let b503 = backend(503, up.clone());
    let health = Arc::new(AtomicU16::new(200));
    let checked = backend(200, health.clone());
    let slow = slow_backend(Duration::from_secs(2));
    let dead = dead_addr();
    let f = Fulcrum::start(&known_config(
        ok.addr,
        dead,
        slow.addr,
        b503.addr,
        checked.addr,
    ));
    let listener = f.listeners[0];
    // The health checker passed the checked server at least once.
    assert!(eventually(10, || scrape(&f).get(
        "fulcrum_health_checks_total",
        &[("upstream", "checked"), ("result", "pass")]
    ) >= 1.0));
    let before = scrape(&f);

    let host = "metrics.test";
    // app: the first pick is the dead server (connect refused), retried on ok.
    assert_eq!(get_host(listener, "/app/a", host).status, 200);
    // The dead server is now out for fail_timeout: straight to ok.
    assert_eq!(get_host(listener, "/app/b", host).status, 200);
    // broken: its only server refuses: 502, no retry.
    assert_eq!(get_host(listener, "/broken/", host).status, 502);
    // slow: read_timeout passes: 504.
    assert_eq!(get_host(listener, "/slow/", host).status, 504);
    // flaky: 503 from the first server is retried on ok.
    assert_eq!(get_host(listener, "/flaky/", host).status, 200);
    assert_eq!(get_host(listener, "/checked/", host).status, 200);
    assert_eq!(get_host(listener, "/ret", host).status, 204);
    assert_eq!(get_host(listener, "/nothing", host).status, 404);
    // The last request is counted when its response ends: wait for all eight.
    assert!(eventually(10, || total_requests(&scrape(&f))
        - total_requests(&before)
        == 8.0));
    // Health flip: the checked server goes down after one failed probe.
    health.store(503, Ordering::SeqCst);
    assert!(eventually(10, || scrape(&f)
        .get("fulcrum_upstream_server_up", &[("upstream", "checked")])
        == 0.0));
    let after = scrape(&f);
    promtool(&["check", "metrics"], Some(after.text.as_bytes()));

    // Every family with its type and exactly its labels.
    for (family, ty, labels) in FAMILIES {
        assert_eq!(
            after.types.get(*family).map(String::as_str),
            Some(*ty),
            "type of {family}"
        );
        let names = after.label_names(&sample_name(family, ty));
        assert!(!names.is_empty(), "{family} has no samples");
        for n in names {
            assert_eq!(n, labels.to_vec(), "labels of {family}");
        }
    }
    assert!(after.samples.contains_key("process_resident_memory_bytes"));
    assert_eq!(
        after.get(
            "fulcrum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let d = |name: &str, want: &[(&str, &str)]| after.get(name, want) - before.get(name, want);
    let srv = |a: SocketAddr| a.to_string();
    let (ok_s, dead_s, slow_s, b503_s) = (srv(ok.addr), srv(dead), srv(slow.addr), srv(b503.addr));
    let http = "fulcrum_http_requests_total";
    let vs = ("server", "metrics.test");
    assert_eq!(d(http, &[vs, ("upstream", "app"), ("code", "2xx")]), 2.0);
    assert_eq!(d(http, &[vs, ("upstream", "broken"), ("code", "5xx")]), 1.0);
    assert_eq!(d(http, &[vs, ("upstream", "slow"), ("code", "5xx")]), 1.0);
    assert_eq!(d(http, &[vs, ("upstream", "flaky"), ("code", "2xx")]), 1.0);
    assert_eq!(d(http, &[vs, ("upstream", "flaky"), ("code", "5xx")]), 0.0);
    assert_eq!(
        d(http, &[vs, ("upstream", "checked"), ("code", "2xx")]),
        1.0
    );
    assert_eq!(d(http, &[vs, ("upstream", ""), ("code", "2xx")]), 1.0);
    assert_eq!(d(http, &[vs, ("upstream", ""), ("code", "4xx")]), 1.0);
    let dur = "fulcrum_http_request_duration_seconds_count";
    assert_eq!(d(dur, &[("upstream", "app")]), 2.0);
    assert_eq!(d(dur, &[("upstream", "")]), 2.0);
    // The 504 waited for the 300 ms read timeout.
    assert!(
        d(
            "fulcrum_http_request_duration_seconds_sum",
            &[("upstream", "slow")]
        ) >= 0.29
    );

    let ureq = "fulcrum_upstream_requests_total";
    assert_eq!(
        d(
            ureq,
            &[("upstream", "app"), ("server", &ok_s), ("code", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        d(
            ureq,
            &[("upstream", "flaky"), ("server", &b503_s), ("code", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        d(
            ureq,
            &[("upstream", "flaky"), ("server", &ok_s), ("code", "2xx")]
        ),
        1.0
    );
    // No response at all from the dead and the slow server.
    for (up, s) in [("app", &dead_s), ("broken", &dead_s), ("slow", &slow_s)] {
        for code in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            assert_eq!(
                d(ureq, &[("upstream", up), ("server", s), ("code", code)]),
                0.0
            );
        }
    }
    let udur = "fulcrum_upstream_response_duration_seconds_count";
    assert_eq!(d(udur, &[("upstream", "app"), ("server", &ok_s)]), 2.0);
    assert_eq!(d(udur, &[("upstream", "flaky"), ("server", &b503_s)]), 1.0);

    let fail = "fulcrum_upstream_failures_total";
    let failures = [
        ("app", &dead_s, "connect", 1.0),
        ("broken", &dead_s, "connect", 1.0),
        ("slow", &slow_s, "timeout", 1.0),
        ("flaky", &b503_s, "status", 1.0),
        ("app", &ok_s, "connect", 0.0),
        ("flaky", &ok_s, "status", 0.0),
        ("slow", &slow_s, "reset", 0.0),
    ];
    for (up, s, reason, n) in failures {
        assert_eq!(
            d(fail, &[("upstream", up), ("server", s), ("reason", reason)]),
            n,
            "{up} {s} {reason}"
        );
    }
    let retries = "fulcrum_upstream_retries_total";
    assert_eq!(d(retries, &[("upstream", "app")]), 1.0);
    assert_eq!(d(retries, &[("upstream", "flaky")]), 1.0);
    assert_eq!(d(retries, &[("upstream", "broken")]), 0.0);
    assert_eq!(d(retries, &[("upstream", "slow")]), 0.0);

    let upg = "fulcrum_upstream_server_up";
    assert_eq!(
        after.get(
            upg,
            &[("upstream", "app"), ("server", &ok_s), ("backup", "false")]
        ),
        1.0
    );
    // Failed out by max_fails=1 within fail_timeout.
    assert_eq!(
        after.get(upg, &[("upstream", "app"), ("server", &dead_s)]),
        0.0
    );
    assert!(
        d(
            "fulcrum_health_checks_total",
            &[("upstream", "checked"), ("result", "fail")]
        ) >= 1.0
    );
    assert_eq!(
        after.get(
            "fulcrum_upstream_active_requests",
            &[("upstream", "app"), ("server", &ok_s)]
        ),
        0.0
    );

    let l = listener.to_string();
    // Requests sent with Connection: close, one connection each (the configured
    // listen address is 127.0.0.1:0).
    let conns = "fulcrum_downstream_connections_total";
    let key = [("listener", "127.0.0.1:0")];
    assert_eq!(d(conns, &key), 8.0, "listener {l}");
    assert!(eventually(10, || scrape(&f)
        .get("fulcrum_downstream_connections_active", &key)
        == 0.0));
    drop(slow);
}

#[test]
fn active_requests_and_connections_are_live() {
    let slow = slow_backend(Duration::from_millis(1500));
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://app"
"#,
        slow.addr
    ));
    let addr = f.addr();
    let idle = Conn::open(addr);
    let t = std::thread::spawn(move || get(addr, "/").status);
    let s = slow.addr.to_string();
    let key = [("listener", "127.0.0.1:0")];
    assert!(eventually(10, || {
        let m = scrape(&f);
        m.get(
            "fulcrum_upstream_active_requests",
            &[("upstream", "app"), ("server", &s)],
        ) == 1.0
            && m.get("fulcrum_downstream_connections_active", &key) == 2.0
    }));
    assert_eq!(t.join().unwrap(), 200);
    drop(idle);
    assert!(eventually(10, || {
        let m = scrape(&f);
        m.get(
            "fulcrum_upstream_active_requests",
            &[("upstream", "app"), ("server", &s)],
        ) == 0.0
            && m.get("fulcrum_downstream_connections_active", &key) == 0.0
            && m.get("fulcrum_downstream_connections_total", &key) == 2.0
    }));
}

fn post_reload(f: &Fulcrum) -> Resp {
    raw(
        f.admin.expect("admin"),
        b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .expect("POST /reload")
}

fn two_pools(servers: &str, extra_pool: bool) -> String {
    let extra = if extra_pool {
        "[upstream.extra]\nserver = [\"127.0.0.1:9\"]\n"
    } else {
        ""
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
server = [{servers}]
{extra}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["reload.test"]
[[server.location]]
path = "/"
proxy_pass = "http://app"
"#
    )
}

#[test]
fn series_of_removed_servers_vanish_after_reload() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let (sa, sb) = (a.addr.to_string(), b.addr.to_string());
    let f = Fulcrum::start(&two_pools(&format!("\"{sa}\", \"{sb}\""), true));
    for _ in 0..4 {
        assert_eq!(get(f.addr(), "/").status, 200);
    }
    let ureq = "fulcrum_upstream_requests_total";
    fn two(s: &str) -> [(&str, &str); 3] {
        [("upstream", "app"), ("server", s), ("code", "2xx")]
    }
    assert!(eventually(10, || {
        let m = scrape(&f);
        m.get(ureq, &two(&sa)) == 2.0 && m.get(ureq, &two(&sb)) == 2.0
    }));
    let before = scrape(&f);
    assert!(before.has("fulcrum_upstream_retries_total", &[("upstream", "extra")]));
    let stamp = before.get("fulcrum_config_last_reload_success_timestamp_seconds", &[]);
    assert!(stamp > 1.6e9, "timestamp {stamp}");

    // A rejected reload changes nothing but the failure count.
    std::fs::write(&f.config, "[[server]]\nlisten = [\"nonsense\"]\n").unwrap();
    assert_eq!(post_reload(&f).status, 400);
    // Server b and pool extra go away.
    std::fs::write(&f.config, two_pools(&format!("\"{sa}\""), false)).unwrap();
    assert_eq!(post_reload(&f).status, 200);
    let after = scrape(&f);
    promtool(&["check", "metrics"], Some(after.text.as_bytes()));
    assert_eq!(
        after.get("fulcrum_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        after.get("fulcrum_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert!(after.get("fulcrum_config_last_reload_success_timestamp_seconds", &[]) >= stamp);
    for family in [
        "fulcrum_upstream_requests_total",
        "fulcrum_upstream_response_duration_seconds_count",
        "fulcrum_upstream_failures_total",
        "fulcrum_upstream_server_up",
        "fulcrum_upstream_active_requests",
    ] {
        assert!(
            !after.has(family, &[("server", &sb)]),
            "{family} still has {sb}"
        );
        assert!(after.has(family, &[("server", &sa)]), "{family} lost {sa}");
    }
    assert!(!after.has("fulcrum_upstream_retries_total", &[("upstream", "extra")]));
    assert!(
        !after.text.contains("127.0.0.1:9\""),
        "extra pool's server remains"
    );
    // The server that stayed kept its counts.
    assert_eq!(after.get(ureq, &two(&sa)), 2.0);
    assert_eq!(get(f.addr(), "/").text(), "a");
    assert!(eventually(10, || scrape(&f).get(ureq, &two(&sa)) == 3.0));
}
