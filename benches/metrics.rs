//! Per-request cost of metrics and the access log: what the request path pays (metric
//! adds through pre-resolved handles; building and queueing a log entry) and what the
//! writer thread pays per line (formatting).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use fulcrum::access_log::{AccessLog, Entry, Field, Formatter, RequestLine, RequestText, Try};
use fulcrum::config::{AccessLogFormat, AccessLogTarget};
use fulcrum::metrics::{PeerMetrics, RequestMetrics};
use http::{Method, Version};

fn entry() -> Entry {
    Entry {
        time: Some(SystemTime::now()),
        remote: "192.0.2.77:53122".parse().expect("addr"),
        remote_user: None,
        request: Some(RequestLine {
            method: Method::GET,
            version: Version::HTTP_11,
        }),
        text: RequestText::new(
            &[b"/products/42?color=red&size=m"],
            Some(b"shop.example.com"),
            Some(b"https://shop.example.com/cart"),
            Some(b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ),
        status: 200,
        body_bytes_sent: 1024,
        request_time: Duration::from_micros(1830),
        tries: smallvec::smallvec![Try {
            addr: "10.0.0.7:8080".parse().expect("addr"),
            status: 200,
            time: Duration::from_micros(1650),
        }],
        ssl_protocol: "",
        ssl_server_name: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let req = RequestMetrics::new("shop.example.com", "backend");
    let peer = PeerMetrics::new("backend", "10.0.0.7:8080".parse().expect("addr"));
    let d = Duration::from_micros(1830);
    let mut g = c.benchmark_group("metrics");
    g.bench_function("request_record", |b| {
        b.iter(|| req.record(black_box(200), black_box(d)))
    });
    // Includes the clock read that ends the try.
    let started = std::time::Instant::now();
    g.bench_function("peer_response", |b| {
        b.iter(|| peer.response(black_box(200), black_box(started)))
    });
    g.finish();

    let mut g = c.benchmark_group("access_log");
    let e = entry();
    let mut line = Vec::with_capacity(512);
    let mut combined = Formatter::new(AccessLogFormat::Combined);
    g.bench_function("format_combined", |b| {
        b.iter(|| {
            line.clear();
            combined.line(black_box(&e), &mut line);
            black_box(line.len())
        })
    });
    let mut json = Formatter::new(AccessLogFormat::Json);
    g.bench_function("format_json", |b| {
        b.iter(|| {
            line.clear();
            json.line(black_box(&e), &mut line);
            black_box(line.len())
        })
    });
    // The request path's share: build the entry, format it into this thread's shard;
    // the writer thread writes the shards out to /dev/null.
    let log = AccessLog::open(
        &AccessLogTarget::Path("/dev/null".into()),
        AccessLogFormat::Combined,
    )
    .expect("open /dev/null")
    .expect("a log");
    let proto = entry();
    g.bench_function("build_format_and_buffer", |b| {
        b.iter(|| {
            let e = Entry {
                time: None,
                remote: proto.remote,
                remote_user: None,
                request: proto.request.clone(),
                text: RequestText::new(
                    &[proto.text.get(Field::Target).unwrap_or(b"/")],
                    proto.text.get(Field::Host),
                    proto.text.get(Field::Referer),
                    proto.text.get(Field::UserAgent),
                ),
                status: 200,
                body_bytes_sent: 1024,
                request_time: d,
                tries: proto.tries.clone(),
                ssl_protocol: "",
                ssl_server_name: String::new(),
            };
            log.log(&e);
        })
    });
    g.finish();
    log.flush(Duration::from_secs(5));
}

criterion_group!(benches, bench);
criterion_main!(benches);
