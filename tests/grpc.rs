//! gRPC through fulcrum (issue 14): real tonic clients on one h2c channel to fulcrum,
//! real tonic server machinery behind it (`protocol = "h2"`). Unary and streaming
//! calls both ways, metadata and trailers, fulcrum's own gRPC answers (UNAVAILABLE,
//! DEADLINE_EXCEEDED), per-call balancing, gRPC health checks, GOAWAY and a backend
//! killed mid-stream.

mod common;
use common::*;

#[path = "grpc/backend.rs"]
mod backend;
#[path = "grpc/client.rs"]
mod client;
use backend::{GrpcBackend, Msg, Opts, Stop};
use client::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tonic::codec::ProstCodec;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

/// Unary calls pass with their metadata both ways: the client's `x-req` reaches
/// the backend, the backend's headers reach the client.
#[test]
fn unary_calls_pass_with_metadata_both_ways() {
    let b = GrpcBackend::start("one", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        for i in 0..20 {
            let mut req = Request::new(msg(i));
            req.metadata_mut()
                .insert("x-req", MetadataValue::try_from(format!("v{i}")).unwrap());
            let resp = c.unary("/test.Echo/Unary", req).await.expect("unary call");
            assert_eq!(resp.metadata().get("x-echo").unwrap(), &format!("v{i}"));
            assert_eq!(resp.metadata().get("x-backend").unwrap(), "one");
            let m = resp.into_inner();
            assert_eq!((m.n, m.text.as_str()), (i, "one"));
        }
    });
    assert_eq!(b.calls(), 20);
}

/// Server streaming: 1,000 messages in order; then a stream ending in an error
/// status carries its code, message and metadata in the trailers.
#[test]
fn server_streaming_passes_1000_messages_and_trailers() {
    let b = GrpcBackend::start("s", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let mut s = c
            .server_stream("/test.Echo/ServerStream", msg(1000))
            .await
            .expect("stream");
        let mut got = 0;
        while let Some(m) = tokio::time::timeout(CALL, s.next()).await.expect("in time") {
            assert_eq!(m.expect("message").n, got);
            got += 1;
        }
        assert_eq!(got, 1000);
        let mut m = msg(3);
        m.text = "fail".into();
        let mut s = c
            .server_stream("/test.Echo/ServerStream", m)
            .await
            .expect("stream");
        for i in 0..3 {
            assert_eq!(s.next().await.expect("message").expect("ok").n, i);
        }
        let st = s
            .next()
            .await
            .expect("the status")
            .expect_err("an error status");
        assert_eq!(st.code(), Code::FailedPrecondition);
        assert_eq!(st.message(), "stream ran out 100%");
        assert_eq!(st.metadata().get("x-trailer").unwrap(), "t-value");
    });
}

/// Client streaming: 100 messages of 1 KiB up, one answer counting them.
#[test]
fn client_streaming_counts_every_message() {
    let b = GrpcBackend::start("c", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let up = futures_util::stream::iter((0..100).map(|i| Msg {
            payload: vec![b'x'; 1024],
            n: i,
            text: String::new(),
        }));
        let mut s = c
            .streaming("/test.Echo/ClientStream", up)
            .await
            .expect("call");
        let m = s.next().await.expect("answer").expect("ok");
        assert_eq!((m.n, m.text.as_str()), (100, "102400"));
    });
}

/// Bidi streaming, ping-pong: each message is sent only after the previous answer
/// came back, which only works if neither direction is buffered whole.
#[test]
fn bidi_streaming_ping_pongs_without_buffering() {
    let b = GrpcBackend::start("bidi", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
        let up = tokio_stream::wrappers::ReceiverStream::new(rx);
        tx.send(msg(0)).await.expect("first message");
        let mut s = c.streaming("/test.Echo/Bidi", up).await.expect("call");
        for i in 0..50 {
            let m = tokio::time::timeout(CALL, s.next())
                .await
                .expect("answer in time")
                .expect("answer")
                .expect("ok");
            assert_eq!((m.n, m.text.as_str()), (i, "bidi"));
            if i < 49 {
                tx.send(msg(i + 1)).await.expect("next message");
            }
        }
        drop(tx);
        assert!(
            s.next().await.is_none(),
            "the stream ends after the client's end"
        );
    });
}

/// A 4 MiB message each way.
#[test]
fn a_4_mib_message_passes_both_ways() {
    let b = GrpcBackend::start("big", Opts::default());
    let f = Fulcrum::start(&config_with(
        &addrs(&[&b]),
        "",
        "client_max_body_size = \"16m\"",
    ));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let m = Msg {
            payload: payload.clone(),
            n: 7,
            text: String::new(),
        };
        let r = c
            .unary("/test.Echo/Unary", Request::new(m))
            .await
            .expect("call");
        let r = r.into_inner();
        assert_eq!(r.n, 7);
        assert!(r.payload == payload, "the payload came back intact");
    });
}

/// A message over `client_max_body_size` (nginx's 1m by default, as for
/// `grpc_pass`) is the client's fault: RESOURCE_EXHAUSTED, and the backend
/// server is not marked failed.
#[test]
fn a_message_over_client_max_body_size_is_resource_exhausted() {
    let b = GrpcBackend::start("big", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let m = Msg {
            payload: vec![1; 2 * 1024 * 1024],
            n: 0,
            text: String::new(),
        };
        let st = c
            .unary("/test.Echo/Unary", Request::new(m))
            .await
            .expect_err("too large");
        assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
        assert!(st.message().contains("too large"), "{st:?}");
        // The server stays in rotation: the next call passes.
        c.unary("/test.Echo/Unary", Request::new(msg(1)))
            .await
            .expect("a small call after");
    });
}

/// The backend's status, message and metadata reach the client unchanged.
#[test]
fn the_backends_status_and_message_are_preserved() {
    let b = GrpcBackend::start("no", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&b]), ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let st = c
            .unary("/test.Echo/Fail", Request::new(msg(0)))
            .await
            .expect_err("an error status");
        assert_eq!(st.code(), Code::NotFound);
        assert_eq!(st.message(), "backend says: no such thing");
        assert_eq!(st.metadata().get("x-why").unwrap(), "because");
    });
}

/// A deadline shorter than the backend takes: fulcrum's `grpc-timeout` cap answers
/// DEADLINE_EXCEEDED itself, near the deadline, though `read_timeout` is long.
#[test]
fn a_deadline_shorter_than_the_backend_is_deadline_exceeded() {
    let b = GrpcBackend::start(
        "slow",
        Opts {
            delay: Duration::from_secs(5),
            ..Opts::default()
        },
    );
    let f = Fulcrum::start(&config(&addrs(&[&b]), "read_timeout = \"60s\""));
    runtime().block_on(async {
        let mut c = bare_client(f.addr()).await;
        let mut req = Request::new(msg(0));
        req.set_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let path = PathAndQuery::from_static("/test.Echo/Unary");
        let call = c.unary(req, path, ProstCodec::<Msg, Msg>::default());
        let st = tokio::time::timeout(CALL, call)
            .await
            .expect("in time")
            .expect_err("deadline");
        assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
        assert!(
            st.message().contains("timed out"),
            "fulcrum's message: {st:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    });
}

/// No server listening: UNAVAILABLE with fulcrum's message, on HTTP 200; the
/// metrics still count a 5xx.
#[test]
fn no_server_is_unavailable_with_fulcrums_message() {
    let f = Fulcrum::start(&config(&[dead_addr().to_string()], ""));
    runtime().block_on(async {
        let mut c = Client::connect(f.addr()).await;
        for _ in 0..3 {
            let st = c
                .unary("/test.Echo/Unary", Request::new(msg(0)))
                .await
                .expect_err("unavailable");
            assert_eq!(st.code(), Code::Unavailable, "{st:?}");
            let m = st.message();
            assert!(
                m.contains("connect() failed") || m.contains("no live upstreams"),
                "{m}"
            );
        }
    });
    let admin = f.admin.expect("admin");
    let metrics = get(admin, "/metrics").text();
    let count = |code: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("fulcrum_http_requests_total{"))
            .filter(|l| l.contains(&format!("code=\"{code}\"")) && l.contains("upstream=\"b\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(count("5xx"), 3, "{metrics}");
    assert_eq!(count("2xx"), 0, "the failures are not counted as 2xx");
}

/// One client channel, 300 calls, 3 backends: each call is balanced, not the
/// connection. round_robin gives each a third (within 10%); weights 5,1,1 give
/// nginx's smooth weighted shares exactly (214, 43, 43: 42 rounds of 7 and the
/// first six picks of the next, a a b a c a).
#[test]
fn one_channel_spreads_its_calls_over_every_backend() {
    let bs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| GrpcBackend::start(n, Opts::default()))
        .collect();
    let f = Fulcrum::start(&config(&addrs(&[&bs[0], &bs[1], &bs[2]]), ""));
    runtime().block_on(async {
        let c = Client::connect(f.addr()).await;
        assert_eq!(load(&c, 300, 8).await, 0);
    });
    for b in &bs {
        assert!((90..=110).contains(&b.calls()), "{}", b.calls());
        // Streams multiplexed: a connection or two per backend, not one per call.
        let conns = b.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=3).contains(&conns),
            "{conns} connections for ~100 calls"
        );
    }
    let ws: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| GrpcBackend::start(n, Opts::default()))
        .collect();
    let servers = vec![
        format!("{} weight=5", ws[0].addr),
        ws[1].addr.to_string(),
        ws[2].addr.to_string(),
    ];
    let f = Fulcrum::start(&config(&servers, ""));
    runtime().block_on(async {
        let c = Client::connect(f.addr()).await;
        assert_eq!(load(&c, 300, 8).await, 0);
    });
    let got: Vec<_> = ws.iter().map(|b| b.calls()).collect();
    assert_eq!(got, [214, 43, 43]);
}

/// A backend shut down gracefully (GOAWAY, listener closed) while calls run: the
/// calls in flight on it finish, new ones go to the other backend; none is lost.
#[test]
fn goaway_from_a_backend_mid_load_loses_no_call() {
    let slow = Opts {
        delay: Duration::from_millis(20),
        ..Opts::default()
    };
    let a = GrpcBackend::start("a", slow);
    let b = GrpcBackend::start("b", slow);
    let f = Fulcrum::start(&config(&addrs(&[&a, &b]), ""));
    let rt = runtime();
    let c = rt.block_on(Client::connect(f.addr()));
    let c2 = c.clone();
    let running = rt.spawn(async move { load(&c2, 400, 16).await });
    assert!(
        eventually(60, || a.calls() >= 50),
        "calls reached a: {}",
        a.calls()
    );
    a.stop(Stop::Graceful);
    let served_by_a = a.calls();
    let failed = rt.block_on(running).expect("load task");
    assert_eq!(failed, 0, "calls lost");
    assert_eq!(a.calls() + b.calls(), 400);
    assert_eq!(
        a.calls(),
        served_by_a,
        "nothing reached a after it went away"
    );
    assert!(b.calls() > 0);
}

/// An h2 backend killed mid-stream: the client's stream ends with an error, in
/// time; it does not hang.
#[test]
fn a_backend_killed_mid_stream_errors_the_call_and_never_hangs() {
    let a = GrpcBackend::start("a", Opts::default());
    let f = Fulcrum::start(&config(&addrs(&[&a]), ""));
    let rt = runtime();
    let mut s = rt.block_on(async {
        let mut c = Client::connect(f.addr()).await;
        let mut s = c
            .server_stream("/test.Echo/Endless", msg(0))
            .await
            .expect("stream");
        for i in 0..5 {
            let m = tokio::time::timeout(CALL, s.next()).await.expect("in time");
            assert_eq!(m.expect("message").expect("ok").n, i);
        }
        s
    });
    a.stop(Stop::Kill);
    let end = rt.block_on(async {
        tokio::time::timeout(CALL, async {
            loop {
                match s.next().await {
                    Some(Ok(_)) => continue,
                    other => break other,
                }
            }
        })
        .await
        .expect("the stream ended in time, not hung")
    });
    let st = end
        .expect("an error, not a clean end")
        .expect_err("an error");
    assert_ne!(st.code(), Code::Ok, "{st:?}");
}

/// Waits for fulcrum's log to say `server` turned `new` ("up", "unhealthy").
fn wait_state(f: &Fulcrum, server: SocketAddr, new: &str, after: usize) -> bool {
    let (srv, new) = (format!("server={server} "), format!("new=\"{new}\""));
    eventually(30, || {
        let log = f.log_text();
        log.lines()
            .skip(after)
            .any(|l| l.contains("server state changed") && l.contains(&srv) && l.contains(&new))
    })
}

/// `type = "grpc"` health checks: a backend whose health service turns
/// NOT_SERVING for `grpc_service` leaves the rotation, and comes back when it
/// reports SERVING again; a backend without the health service (UNIMPLEMENTED)
/// never gets a call.
#[test]
fn grpc_health_checks_flip_a_backend_out_and_back() {
    use tonic_health::ServingStatus;
    let with_health = Opts {
        health: true,
        ..Opts::default()
    };
    let a = GrpcBackend::start("a", with_health);
    let b = GrpcBackend::start("b", with_health);
    let none = GrpcBackend::start("none", Opts::default());
    a.set_health(ServingStatus::Serving);
    b.set_health(ServingStatus::Serving);
    let check = r#"
[upstream.b.health_check]
type = "grpc"
grpc_service = "test.Echo"
interval = "100ms"
timeout = "5s"
rise = 1
fall = 1"#;
    let f = Fulcrum::start(&config(&addrs(&[&a, &b, &none]), check));
    assert!(
        wait_state(&f, none.addr, "unhealthy", 0),
        "{}",
        f.log_text()
    );
    let rt = runtime();
    let c = rt.block_on(Client::connect(f.addr()));
    let calls = |n| rt.block_on(load(&c, n, 4));
    assert_eq!(calls(20), 0);
    assert!(
        a.calls() > 0 && b.calls() > 0,
        "{} {}",
        a.calls(),
        b.calls()
    );
    let seen = f.log_text().lines().count();
    a.set_health(ServingStatus::NotServing);
    assert!(
        wait_state(&f, a.addr, "unhealthy", seen),
        "{}",
        f.log_text()
    );
    let on_a = a.calls();
    assert_eq!(calls(20), 0);
    assert_eq!(
        a.calls(),
        on_a,
        "no call reached a while it was not serving"
    );
    let seen = f.log_text().lines().count();
    a.set_health(ServingStatus::Serving);
    assert!(wait_state(&f, a.addr, "up", seen), "{}", f.log_text());
    assert_eq!(calls(20), 0);
    assert!(a.calls() > on_a, "a is back in rotation");
    assert_eq!(none.calls(), 0);
}

/// `fulcrum check`: `type = "grpc"` with `grpc_service` is valid; `grpc_service`
/// on another type is an error at its position.
#[test]
fn check_accepts_grpc_checks_and_places_a_stray_grpc_service() {
    let dir = tempfile::tempdir().unwrap();
    let run = |check: &str| {
        let path = dir.path().join("f.toml");
        let text = config(&["127.0.0.1:1".to_string()], check);
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.code(), path.display().to_string(), text)
    };
    let (code, _, out) =
        run("[upstream.b.health_check]\ntype = \"grpc\"\ngrpc_service = \"test.Echo\"");
    assert_eq!(code, Some(0), "{out}");
    let (code, path, out) =
        run("[upstream.b.health_check]\ntype = \"tcp\"\ngrpc_service = \"test.Echo\"");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{path}:"))
            && l.contains("grpc_service is only for health_check type = \"grpc\"")),
        "{out}"
    );
}
