//! What the tower `Service` adds to a request over fulcrum's HTTP/1 server's direct
//! call of `proxy::service::handle`. The request is answered by a `return` location,
//! so the figure is the request path's fixed cost (route, the exchange, metrics)
//! without any network; the difference between the cases is the wrapper's.
//!
//! - `direct`: `handle(&cell, meta, req)`, as fulcrum's HTTP/1 server calls it.
//! - `service`: `Proxy::call` with a `ReqBody` (not boxed): the boxed future, two
//!   `Arc` clones, the upstream-header move.
//! - `hyper_adapter`: through `TowerToHyperService`, as the h2c listeners serve (one
//!   more clone of the `Proxy` per request, and `Oneshot`'s ready check).
//! - `boxed_body`: `Proxy::call` with an `http_body_util::Empty` body, which is boxed.
//!
//! `cargo bench --bench tower_service` runs criterion. `LOOP=CASE:N` instead runs `N`
//! requests of one case and exits, for `valgrind --tool=callgrind` (instructions do
//! not depend on the machine's load): see docs/performance.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::Criterion;
use fulcrum::proxy::body::ReqBody;
use fulcrum::proxy::conn::ConnMeta;
use fulcrum::proxy::service::handle;
use fulcrum::proxy::tower_service::Proxy;
use fulcrum::state::Snapshot;
use http::Request;
use tokio::runtime::Runtime;
// `Proxy` is always ready: `call` without `poll_ready` is what it allows.
use tower::Service as _;

const KEY: &str = "127.0.0.1:8080";

struct Setup {
    cell: Arc<ArcSwap<Snapshot>>,
    meta: Arc<ConnMeta>,
    rt: Runtime,
}

fn setup() -> Setup {
    let toml = format!(
        r#"
[admin]
listen = "off"
[[server]]
listen = ["{KEY}"]
[[server.location]]
path = "/"
return = {{ status = 200, body = "ok" }}
"#
    );
    let config = fulcrum::config::parse(Path::new("bench.toml"), &toml).expect("config");
    let snap = Snapshot::build(config, &fulcrum::upstream::Registry::default()).expect("snapshot");
    let key = KEY.parse().expect("address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    Setup {
        cell: Arc::new(ArcSwap::from_pointee(snap)),
        meta: Arc::new(ConnMeta::new(key, key, key, "http")),
        rt,
    }
}

fn req<B>(body: B) -> Request<B> {
    let mut r = Request::new(body);
    r.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("localhost"),
    );
    r
}

/// One request of `case`; returns the status.
fn one(s: &Setup, svc: &mut Proxy, case: &str) -> u16 {
    let resp = s.rt.block_on(async {
        match case {
            "direct" => {
                let Ok(r) = handle(&s.cell, s.meta.clone(), req(ReqBody::Empty)).await;
                Ok(r)
            }
            "service" => svc.call(req(ReqBody::Empty)).await,
            "hyper_adapter" => {
                let h = hyper_util::service::TowerToHyperService::new(svc.clone());
                hyper::service::Service::call(&h, req(ReqBody::Empty)).await
            }
            "boxed_body" => svc.call(req(http_body_util::Empty::<Bytes>::new())).await,
            _ => panic!("no case {case}"),
        }
    });
    // The bench config has no `return 444`: every call answers.
    resp.map_or(0, |r| r.status().as_u16())
}

const CASES: [&str; 4] = ["direct", "service", "hyper_adapter", "boxed_body"];

fn main() {
    let s = setup();
    let mut svc = Proxy::new(s.cell.clone(), s.meta.clone());
    if let Ok(spec) = std::env::var("LOOP") {
        let (case, n) = spec.split_once(':').expect("LOOP=CASE:N");
        let n: u64 = n.parse().expect("N is a number");
        for _ in 0..n {
            black_box(one(&s, &mut svc, case));
        }
        return;
    }
    let fut = handle(&s.cell, s.meta.clone(), req(ReqBody::Empty));
    eprintln!("handle's future: {} bytes", std::mem::size_of_val(&fut));
    drop(fut);
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("tower_service");
    for case in CASES {
        g.bench_function(case, |b| b.iter(|| one(&s, &mut svc, case)));
    }
    g.finish();
    c.final_summary();
}
