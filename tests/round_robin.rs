//! Round-robin over real backends: nginx's smooth weighted order, backups,
//! passive failure accounting and retries.

mod common;
use common::*;

fn config(servers: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.backend]
server = [{servers}]
{extra}
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    )
}

#[test]
fn smooth_weighted_sequence_matches_nginx() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let f = Fulcrum::start(&config(
        &format!(r#""{} weight=5", "{}", "{}""#, a.addr, b.addr, c.addr),
        "",
    ));
    let mut conn = Conn::open(f.addr());
    let seq: Vec<String> = (0..14).map(|_| conn.get("/").text()).collect();
    // nginx: weights 5,1,1 give a a b a c a a, twice.
    assert_eq!(seq.join(" "), "a a b a c a a a a b a c a a");
}

#[test]
fn backup_only_when_all_primaries_out_and_abandoned_after_recovery() {
    let a = Backend::named("a");
    let bk = Backend::named("backup");
    let dead = dead_addr();
    let f = Fulcrum::start(&config(
        &format!(
            r#""{} fail_timeout=1s", "{dead} fail_timeout=1s", "{} backup""#,
            a.addr, bk.addr
        ),
        "",
    ));
    // One primary alive: the backup never serves, and the dead one costs no error.
    for _ in 0..10 {
        let r = get(f.addr(), "/");
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
    }
    assert_eq!(bk.hits(), 0);
    drop(a);
    // Every primary out: the backup serves.
    let r = get(f.addr(), "/");
    assert_eq!((r.status, r.text().as_str()), (200, "backup"));
    for _ in 0..5 {
        assert_eq!(get(f.addr(), "/").text(), "backup");
    }
}

#[test]
fn primaries_return_after_fail_timeout() {
    // A primary that comes back on the same port is used again once fail_timeout passes.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let bk = Backend::named("backup");
    let f = Fulcrum::start(&config(
        &format!(r#""{addr} fail_timeout=1s", "{} backup""#, bk.addr),
        "",
    ));
    assert_eq!(get(f.addr(), "/").text(), "backup");
    // Bring the primary up on its address.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_r| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("primary")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    assert!(
        eventually(10, || get(f.addr(), "/").text() == "primary"),
        "primary never came back"
    );
    let before = bk.hits();
    for _ in 0..5 {
        assert_eq!(get(f.addr(), "/").text(), "primary");
    }
    assert_eq!(
        bk.hits(),
        before,
        "backup must be abandoned once a primary is back"
    );
}

#[test]
fn dead_primary_never_costs_a_get_an_error() {
    let a = Backend::named("a");
    let dead = dead_addr();
    let f = Fulcrum::start(&config(&format!(r#""{dead}", "{}""#, a.addr), ""));
    for _ in 0..20 {
        let r = get(f.addr(), "/");
        assert_eq!(r.status, 200);
    }
    assert_eq!(a.hits(), 20);
}

#[test]
fn all_down_gives_502() {
    let (d1, d2) = (dead_addr(), dead_addr());
    let f = Fulcrum::start(&config(&format!(r#""{d1}", "{d2}""#), ""));
    assert_eq!(get(f.addr(), "/").status, 502);
    // Both now failed out: no live upstreams, still 502, and the log says so.
    assert_eq!(get(f.addr(), "/").status, 502);
    assert!(f.wait_log("no live upstreams", 5).is_some());
}

#[test]
fn down_server_gets_nothing() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let f = Fulcrum::start(&config(&format!(r#""{}", "{} down""#, a.addr, b.addr), ""));
    for _ in 0..6 {
        assert_eq!(get(f.addr(), "/").text(), "a");
    }
    assert_eq!(b.hits(), 0);
}
