//! Cost of one pick (`Upstream::select` + `Upstream::finish`, which every request
//! pays, and for peak_ewma its response-time report) per algorithm and pool size, single-threaded and with two threads picking
//! from the same pool at once (the shared counters' contention).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum::config::{Balance, ServerConf, Upstream as UpConf};
use fulcrum::route::template::Template;
use fulcrum::upstream::{Registry, Selection, Upstream};

const ALGORITHMS: [(&str, Balance, bool); 8] = [
    ("round_robin", Balance::RoundRobin, false),
    ("least_conn", Balance::LeastConn, false),
    ("ip_hash", Balance::IpHash, false),
    ("hash", Balance::Hash, false),
    ("hash_consistent", Balance::Hash, true),
    ("random", Balance::Random, false),
    ("random_two_least_conn", Balance::RandomTwoLeastConn, false),
    ("peak_ewma", Balance::PeakEwma, false),
];

const SIZES: [usize; 3] = [3, 100, 10_000];

fn pool(balance: Balance, consistent: bool, n: usize) -> Upstream {
    let servers = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080));
            ServerConf {
                weight: 1 + (i % 3) as u32,
                ..ServerConf::new(addr)
            }
        })
        .collect();
    let mut conf = UpConf::new("bench", servers, balance);
    if balance == Balance::Hash {
        conf.hash_key = Some(Template::compile("$request_uri").expect("template"));
        conf.consistent = consistent;
    }
    let up = Upstream::new(conf, &Registry::default(), fulcrum::balance::build);
    if balance == Balance::PeakEwma {
        let now = fulcrum::clock::coarse_nanos();
        for (i, p) in up.primary.peers.iter().enumerate() {
            p.state
                .ewma
                .observe(1_000_000 + (i as u64 % 7) * 100_000, now);
        }
    }
    up
}

/// Request inputs that vary (hash keys, client addresses), precomputed.
struct Inputs {
    keys: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Inputs {
    fn new() -> Inputs {
        Inputs {
            keys: (0..1024).map(|i| format!("/products/{i}?page=2")).collect(),
            ips: (0..1024u32)
                .map(|i| IpAddr::from([198, (i >> 8) as u8 + 18, i as u8, 7]))
                .collect(),
        }
    }

    /// One request's balancing work: the pick, the response-time report when the
    /// algorithm wants it (peak_ewma), the end of the attempt.
    #[inline]
    fn pick(&self, up: &Upstream, n: usize) {
        let i = n & 1023;
        let mut sel = Selection::default();
        let p = up.select(&mut sel, Some(self.keys[i].as_bytes()), Some(self.ips[i]));
        if let Some(p) = black_box(p) {
            if up.wants_rtt() {
                up.observe_rtt(p, Duration::from_micros(1_000 + (i as u64 & 7) * 100));
            }
            up.finish(p, false);
        }
    }
}

fn bench(c: &mut Criterion) {
    let inputs = Inputs::new();
    for (name, balance, consistent) in ALGORITHMS {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in SIZES {
            let up = pool(balance, consistent, n);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("1thread", n), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    inputs.pick(&up, i);
                })
            });
            group.bench_function(BenchmarkId::new("2threads", n), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..2 {
                            let (up, inputs) = (&up, &inputs);
                            s.spawn(move || {
                                for k in 0..iters as usize {
                                    inputs.pick(up, k * 2 + t);
                                }
                            });
                        }
                    });
                    // Wall time per pick each thread made while both ran.
                    start.elapsed()
                })
            });
        }
        if balance == Balance::LeastConn {
            // Requests overlap (16 in flight): each start and end refiles its server
            // in least_conn's index, which back-to-back requests never need.
            for n in SIZES {
                let up = pool(balance, consistent, n);
                let mut ring = std::collections::VecDeque::with_capacity(16);
                let mut i = 0usize;
                group.bench_function(BenchmarkId::new("1thread_16_in_flight", n), |b| {
                    b.iter(|| {
                        i = i.wrapping_add(1);
                        let p = up.select(&mut Selection::default(), None, None);
                        ring.extend(black_box(p));
                        if ring.len() >= 16 {
                            if let Some(old) = ring.pop_front() {
                                up.finish(old, false);
                            }
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
