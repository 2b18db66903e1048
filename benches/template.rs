//! Render cost of common templates against a realistic request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fulcrum::route::template::{RequestId, RequestVars, Template};
use http::{HeaderMap, HeaderValue, Method};

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let pairs = [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-forwarded-for", "203.0.113.10, 198.51.100.7"),
        ("x-user", "user-48213"),
        ("cookie", "_ga=GA1.2.123456789.1700000000; theme=dark; sid=8f14e45fceea167a5a36dedd4bea2543; lang=en"),
        ("referer", "https://shop.example.com/cart"),
    ];
    for (name, value) in pairs {
        h.append(name, HeaderValue::from_static(value));
    }
    h
}

fn bench(c: &mut Criterion) {
    let headers = headers();
    let method = Method::GET;
    let request_id = RequestId::new();
    let vars = RequestVars {
        method: &method,
        raw_target: "/products/42?color=red&size=m",
        uri: "/products/42",
        headers: &headers,
        host: "shop.example.com",
        hostname: "lb-1",
        remote: "192.0.2.77:53122".parse().expect("addr"),
        local: "10.0.0.5:443".parse().expect("addr"),
        scheme: "https",
        proxy_host: "backend",
        request_id: &request_id,
        ssl: Default::default(),
    };

    let mut group = c.benchmark_group("render");
    for src in [
        "$host",
        "$proxy_add_x_forwarded_for",
        "$http_x_user$cookie_sid",
    ] {
        let template = Template::compile(src).expect("template");
        let mut out = Vec::with_capacity(256);
        group.bench_function(src, |b| {
            b.iter(|| {
                out.clear();
                template.render_into(black_box(&vars), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
