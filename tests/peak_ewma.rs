//! peak_ewma against round_robin on the same real backends: one of three answers 20×
//! slower; under concurrent load round robin still sends it a third of the requests,
//! peak_ewma almost none.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{serve, Conn, Fulcrum};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// A backend that answers after a delay that can change (without blocking its other
/// requests).
struct Delayed {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl Delayed {
    fn start(delay: Duration) -> Delayed {
        let hits = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let (h, d) = (hits.clone(), delay_ms.clone());
        let (addr, rt) = serve(move |_req: Request<Incoming>| {
            let (h, d) = (h.clone(), d.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                h.fetch_add(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        });
        Delayed {
            addr,
            hits,
            delay_ms,
            _rt: rt,
        }
    }
}

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 60;

/// A fulcrum balancing over `servers` with `balance`.
fn start(balance: &str, servers: [SocketAddr; 3]) -> Fulcrum {
    let [a, b, c] = servers;
    Fulcrum::start(&format!(
        r#"
[admin]
listen = "off"
[upstream.backend]
balance = "{balance}"
server = ["{a}", "{b}", "{c}"]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    ))
}

/// Drives `CLIENTS` keep-alive clients through a fulcrum balancing with `balance`;
/// returns the slow backend's share of the requests and the elapsed time.
fn share_of_slow(balance: &str, fast: &[&Delayed], slow: &Delayed) -> (f64, Duration) {
    let before = slow.hits.load(Ordering::SeqCst);
    let f = start(balance, [fast[0].addr, slow.addr, fast[1].addr]);
    let addr = f.addr();
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..PER_CLIENT {
                    assert_eq!(c.get("/").status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let elapsed = start.elapsed();
    let slow_hits = slow.hits.load(Ordering::SeqCst) - before;
    (slow_hits as f64 / (CLIENTS * PER_CLIENT) as f64, elapsed)
}

#[test]
fn peak_ewma_sheds_a_slow_backend_round_robin_does_not() {
    let fast = [
        Delayed::start(Duration::from_millis(2)),
        Delayed::start(Duration::from_millis(2)),
    ];
    let slow = Delayed::start(Duration::from_millis(40));
    let (rr, rr_time) = share_of_slow("round_robin", &[&fast[0], &fast[1]], &slow);
    let (ewma, ewma_time) = share_of_slow("peak_ewma", &[&fast[0], &fast[1]], &slow);
    println!(
        "slow backend's share of {} requests ({CLIENTS} clients): round_robin {:.1}% in {rr_time:?}, peak_ewma {:.1}% in {ewma_time:?}",
        CLIENTS * PER_CLIENT,
        rr * 100.0,
        ewma * 100.0
    );
    assert!((0.25..=0.42).contains(&rr), "round_robin share {rr}");
    assert!(ewma < 0.10, "peak_ewma share {ewma}");
}

#[test]
fn peak_ewma_sheds_a_backend_within_a_second_of_it_turning_slow() {
    let b: Vec<Delayed> = (0..3)
        .map(|_| Delayed::start(Duration::from_millis(2)))
        .collect();
    let f = start("peak_ewma", [b[0].addr, b[1].addr, b[2].addr]);
    let addr = f.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(c.get("/").status, 200);
                }
            })
        })
        .collect();
    let total = || {
        b.iter()
            .map(|x| x.hits.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    // Warm: every backend fast. Peak EWMA is peak-sensitive by design, so one latency
    // spike on a busy shared machine can keep a backend's share low for seconds; slow
    // down the busiest one, which by construction was getting at least a third.
    std::thread::sleep(Duration::from_millis(500));
    let hits: Vec<usize> = b.iter().map(|x| x.hits.load(Ordering::SeqCst)).collect();
    let busiest = (0..b.len()).max_by_key(|&i| hits[i]).unwrap_or(0);
    let warm = hits[busiest] as f64 / hits.iter().sum::<usize>() as f64;
    // It turns 20x slower; count what it gets during the next second.
    b[busiest].delay_ms.store(40, Ordering::SeqCst);
    let (slow0, all0) = (b[busiest].hits.load(Ordering::SeqCst), total());
    std::thread::sleep(Duration::from_secs(1));
    let (slow1, all1) = (b[busiest].hits.load(Ordering::SeqCst), total());
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let after = (slow1 - slow0) as f64 / (all1 - all0) as f64;
    println!(
        "share of the backend turned slow: {:.1}% before, {:.1}% of {} requests in the second after",
        warm * 100.0,
        after * 100.0,
        all1 - all0
    );
    assert!(after < 0.10, "after: {after}");
}
