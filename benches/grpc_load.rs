//! A small gRPC load tool for `benches/grpc.sh` (`ghz` is not packaged here): a
//! tonic backend, and a load client that runs unary calls over a few channels for a
//! while and prints calls/s, p50/p99 latency and the CPU time per call of a process
//! (the proxy under test).
//!
//! `grpc_load backend FILE` serves `/test.Echo/Unary` on 127.0.0.1:0 and writes
//! its address to FILE; `grpc_load load ADDR CONCURRENCY SECONDS PID` loads ADDR.

#[path = "../tests/grpc/backend.rs"]
#[allow(dead_code)]
mod backend;

use std::time::{Duration, Instant};

use backend::{GrpcBackend, Msg, Opts};
use http::uri::PathAndQuery;
use tonic::codec::ProstCodec;
use tonic::Request;

/// Channels (HTTP/2 connections) the load is spread over.
const CHANNELS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("backend") => {
            let b = GrpcBackend::start("bench", Opts::default());
            std::fs::write(&args[1], b.addr.to_string()).expect("write address");
            loop {
                std::thread::park();
            }
        }
        Some("load") => load(&args[1], parse(&args[2]), parse(&args[3]), parse(&args[4])),
        // `cargo bench` runs every bench target with `--bench`: nothing to do alone.
        _ => eprintln!("usage: grpc_load backend FILE | load ADDR CONCURRENCY SECONDS PID"),
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

fn load(addr: &str, conc: usize, secs: u64, pid: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (lat, wall, cpu) = rt.block_on(async {
        let mut chans = Vec::new();
        for _ in 0..CHANNELS {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            chans.push(tonic::client::Grpc::new(ch));
        }
        // Warm up: connections to the backends, pools.
        run(&chans, conc, Duration::from_millis(500)).await;
        let cpu0 = cpu_secs(pid);
        let t0 = Instant::now();
        let lat = run(&chans, conc, Duration::from_secs(secs)).await;
        (lat, t0.elapsed(), cpu_secs(pid) - cpu0)
    });
    let mut lat = lat;
    lat.sort_unstable();
    let n = lat.len().max(1);
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)] as f64 / 1000.0;
    println!(
        "calls={} calls_per_s={:.0} p50_ms={:.3} p99_ms={:.3} cpu_us_per_call={:.1}",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / n as f64
    );
}

/// `conc` callers, spread over the channels, calling until `dur` passes; the
/// latency of each successful call in µs.
async fn run(
    chans: &[tonic::client::Grpc<tonic::transport::Channel>],
    conc: usize,
    dur: Duration,
) -> Vec<u64> {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for i in 0..conc {
        let mut c = chans[i % chans.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let msg = Msg {
                payload: vec![7; 100],
                n: 1,
                text: String::new(),
            };
            while Instant::now() < end {
                let t = Instant::now();
                if c.ready().await.is_err() {
                    continue;
                }
                let path = PathAndQuery::from_static("/test.Echo/Unary");
                let r = c
                    .unary::<_, Msg, _>(Request::new(msg.clone()), path, ProstCodec::default())
                    .await;
                if r.is_ok() {
                    lat.push(t.elapsed().as_micros() as u64);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}
