//! Differential tests against a real nginx: the same upstream in nginx and in
//! fulcrum, in front of the same real backends, the same request sequence to each;
//! the backend chosen for every request must be the same. nginx's answer is computed
//! at run time. Each scenario starts a fresh nginx (`worker_processes 1`, so its
//! per-worker balancer state starts at zero like fulcrum's) and a fresh fulcrum.
//!
//! Without nginx on PATH (or in /usr/sbin) the tests print a note and pass, unless
//! FULCRUM_REQUIRE_NGINX=1 (CI), where they fail.

mod common;
#[path = "common/nginx.rs"]
mod nginx;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, nginx_bin, read_response, serve, Fulcrum};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use nginx::Nginx;

/// A backend answering its own name; a request for `/hold/G/...` is held until
/// generation `G` is released. Records every path it receives.
struct Backend {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<String>>>,
    release: tokio::sync::watch::Sender<u64>,
    _rt: tokio::runtime::Runtime,
}

impl Backend {
    fn start(name: &str) -> Backend {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (release, watch) = tokio::sync::watch::channel(0u64);
        let (name, arr) = (Bytes::from(name.to_string()), arrivals.clone());
        let (addr, rt) = serve(move |req: Request<Incoming>| {
            let (name, arr, mut watch) = (name.clone(), arr.clone(), watch.clone());
            async move {
                let path = req.uri().path().to_string();
                arr.lock().unwrap().push(path.clone());
                if let Some(rest) = path.strip_prefix("/hold/") {
                    let generation: u64 = rest
                        .split('/')
                        .next()
                        .and_then(|g| g.parse().ok())
                        .unwrap_or(0);
                    let _ = watch.wait_for(|g| *g >= generation).await;
                }
                Response::new(Full::new(name))
            }
        });
        Backend {
            addr,
            arrivals,
            release,
            _rt: rt,
        }
    }
}

/// GET `path` on a new connection from local address `from`; returns the body.
fn get_from(proxy: SocketAddr, from: Ipv4Addr, path: &str) -> String {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
        .expect("bind client address");
    sock.connect(&proxy.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write");
    let r = read_response(&mut s).expect("response");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

fn get(proxy: SocketAddr, path: &str) -> String {
    get_from(proxy, Ipv4Addr::LOCALHOST, path)
}

/// One step of a request sequence.
#[derive(Clone, Copy)]
enum Step {
    /// A request answered at once, from the given client address.
    Quick(Ipv4Addr),
    /// A request the backend holds open until the end of the sequence.
    Hold,
}

/// Runs `steps` against `proxy`; returns the backend chosen for each step.
/// `generation` distinguishes the holds of this run from earlier runs'.
fn run(
    proxy: SocketAddr,
    backends: &[(&str, Backend)],
    steps: &[Step],
    generation: u64,
) -> Vec<String> {
    let mut chosen = Vec::new();
    let mut held = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match *step {
            Step::Quick(from) => chosen.push(get_from(proxy, from, &format!("/q/{n}?k={n}"))),
            Step::Hold => {
                let path = format!("/hold/{generation}/{n}");
                let p = path.clone();
                held.push(std::thread::spawn(move || get(proxy, &p)));
                // Readiness: the request has reached a backend (so it is in flight).
                let mut who = None;
                let arrived = eventually(20, || {
                    who = backends
                        .iter()
                        .find(|(_, b)| b.arrivals.lock().unwrap().contains(&path))
                        .map(|(name, _)| name.to_string());
                    who.is_some()
                });
                assert!(arrived, "held request {path} never reached a backend");
                chosen.push(who.unwrap_or_default());
            }
        }
    }
    for (_, b) in backends {
        b.release.send_replace(generation);
    }
    for h in held {
        h.join().expect("held request");
    }
    chosen
}

/// Runs the same sequence through nginx (upstream body `nginx_upstream`) and fulcrum
/// (upstream table `fulcrum_upstream`), fresh processes each, and compares.
fn differential(
    bin: &PathBuf,
    backends: &[(&str, Backend)],
    nginx_upstream: &str,
    fulcrum_upstream: &str,
    steps: &[Step],
) -> Vec<String> {
    let nginx = Nginx::start(bin, nginx_upstream);
    let expected = run(nginx.addr, backends, steps, 1);
    drop(nginx);
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "off"
[upstream.backend]
{fulcrum_upstream}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    ));
    let got = run(f.addr(), backends, steps, 2);
    assert_eq!(
        got, expected,
        "fulcrum (left) and nginx (right) chose different backends\nnginx upstream:\n{nginx_upstream}"
    );
    got
}

fn backends(n: usize) -> Vec<(&'static str, Backend)> {
    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"][..n]
        .iter()
        .map(|name| (*name, Backend::start(name)))
        .collect()
}

/// nginx `server` lines and fulcrum `server = [...]` for `backends` with `params`.
fn servers(backends: &[(&str, Backend)], params: &[&str]) -> (String, String) {
    let nginx = backends
        .iter()
        .zip(params)
        .map(|((_, b), p)| format!("        server {} {p};\n", b.addr))
        .collect();
    let fulcrum = backends
        .iter()
        .zip(params)
        .map(|((_, b), p)| format!("\"{} {p}\"", b.addr))
        .collect::<Vec<_>>()
        .join(", ");
    (nginx, format!("server = [{fulcrum}]"))
}

fn quick(n: usize) -> Vec<Step> {
    vec![Step::Quick(Ipv4Addr::LOCALHOST); n]
}

#[test]
fn weighted_round_robin_matches_nginx() {
    let Some(bin) = nginx_bin() else { return };
    for weights in [&[5, 1, 1][..], &[3, 2], &[1, 1, 1, 1]] {
        let b = backends(weights.len());
        let params: Vec<String> = weights.iter().map(|w| format!("weight={w}")).collect();
        let params: Vec<&str> = params.iter().map(|s| s.as_str()).collect();
        let (ngx, ful) = servers(&b, &params);
        let total: usize = weights.iter().sum();
        let seq = differential(&bin, &b, &ngx, &ful, &quick(3 * total + 2));
        println!("weights {weights:?}: {}", seq.join(" "));
    }
}

#[test]
fn round_robin_through_a_failure_matches_nginx() {
    let Some(bin) = nginx_bin() else { return };
    let b = backends(3);
    let (ngx, ful) = servers(&b, &["weight=5", "", "weight=2"]);
    // A fourth server that refuses connections: its first pick fails over to the
    // next peer and takes it out for fail_timeout; the order around it must match.
    let dead = common::dead_addr();
    let ngx = format!("{ngx}        server {dead} weight=3;\n");
    let ful = ful.replace(']', &format!(", \"{dead} weight=3\"]"));
    let seq = differential(&bin, &b, &ngx, &ful, &quick(40));
    println!("with a dead server: {}", seq.join(" "));
}

#[test]
fn ip_hash_matches_nginx() {
    let Some(bin) = nginx_bin() else { return };
    let b = backends(5);
    let (ngx, ful) = servers(&b, &["", "weight=2", "", "", "weight=3"]);
    // 120 client addresses differing in the three octets ip_hash reads, some twice.
    let steps: Vec<Step> = (0..160u32)
        .map(|i| {
            let k = i % 120;
            Step::Quick(Ipv4Addr::new(
                127,
                (k % 13) as u8 + 1,
                (k * 37 % 251) as u8,
                9,
            ))
        })
        .collect();
    let seq = differential(
        &bin,
        &b,
        &format!("        ip_hash;\n{ngx}"),
        &format!("balance = \"ip_hash\"\n{ful}"),
        &steps,
    );
    let distinct: std::collections::HashSet<&String> = seq.iter().collect();
    assert_eq!(distinct.len(), 5, "every backend chosen for some client");
}

#[test]
fn hash_request_uri_matches_nginx() {
    let Some(bin) = nginx_bin() else { return };
    let b = backends(4);
    let (ngx, ful) = servers(&b, &["", "weight=3", "", "weight=2"]);
    differential(
        &bin,
        &b,
        &format!("        hash $request_uri;\n{ngx}"),
        &format!("balance = \"hash\"\nhash_key = \"$request_uri\"\n{ful}"),
        &quick(240),
    );
}

#[test]
fn consistent_hash_request_uri_matches_nginx() {
    let Some(bin) = nginx_bin() else { return };
    let b = backends(5);
    // The second set has a down server: its keys go to the next points' servers, as
    // nginx.
    for params in [
        ["", "weight=2", "", "", ""],
        ["", "weight=2", "down", "", ""],
    ] {
        let (ngx, ful) = servers(&b, &params);
        differential(
            &bin,
            &b,
            &format!("        hash $request_uri consistent;\n{ngx}"),
            &format!("balance = \"hash\"\nhash_key = \"$request_uri\"\nconsistent = true\n{ful}"),
            &quick(240),
        );
    }
}

/// least_conn over servers with `weights`, driven through `steps` (quick requests
/// and requests held open), picks as nginx does.
fn least_conn_matches_nginx(weights: &[&str], steps: &[Step]) {
    let Some(bin) = nginx_bin() else { return };
    let b = backends(weights.len());
    let (ngx, ful) = servers(&b, weights);
    let seq = differential(
        &bin,
        &b,
        &format!("        least_conn;\n{ngx}"),
        &format!("balance = \"least_conn\"\n{ful}"),
        steps,
    );
    println!("least_conn ({} servers): {}", weights.len(), seq.join(" "));
}

#[test]
fn least_conn_with_held_requests_matches_nginx() {
    let q = Step::Quick(Ipv4Addr::LOCALHOST);
    let h = Step::Hold;
    least_conn_matches_nginx(
        &["", "weight=2", "", "weight=3"],
        &[
            q, q, q, q, h, q, q, h, h, q, q, q, h, q, h, h, q, q, q, q, h, h, h, q, q, q, q, q, h,
            q, q, q,
        ],
    );
}

/// Twelve servers: enough for fulcrum's indexed least_conn (classes of tied
/// servers, lazy round-robin weights), still nginx's picks.
#[test]
fn least_conn_indexed_pool_with_held_requests_matches_nginx() {
    let q = Step::Quick(Ipv4Addr::LOCALHOST);
    let h = Step::Hold;
    least_conn_matches_nginx(
        &[
            "", "weight=2", "", "weight=3", "weight=2", "", "weight=5", "", "weight=2", "", "",
            "weight=3",
        ],
        &[
            q, q, h, q, h, h, q, q, h, q, h, h, h, q, q, q, h, q, h, q, q, h, h, q, q, q, h, q, q,
            h, q, h, q, q, q, h, h, q, q, q,
        ],
    );
}
