//! gRPC through fulcrum (issue 14): real tonic clients on one h2c channel to fulcrum,
//! real tonic server machinery behind it (`protocol = "h2"`). Unary and streaming
//! calls both ways, metadata and trailers, fulcrum's own gRPC answers (UNAVAILABLE,
//! DEADLINE_EXCEEDED), per-call balancing, gRPC health checks, GOAWAY and a backend
//! killed mid-stream.

mod common;
use common::*;

#[path = "grpc/backend.rs"]
mod backend;
use backend::{GrpcBackend, Msg, Opts, Stop, MAX_MSG};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Generous bound for any one call on a loaded machine.
const CALL: Duration = Duration::from_secs(30);

/// A config: pool `b` of `servers` (nginx syntax, weights and all) with
/// `protocol = "h2"` and `extra` lines, and an h2c listener proxying to it.
fn config(servers: &[String], extra: &str) -> String {
    config_with(servers, extra, "")
}

/// [`config`] with `server_extra` lines in the `[[server]]` table.
fn config_with(servers: &[String], extra: &str, server_extra: &str) -> String {
    let servers = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = [{servers}]
protocol = "h2"
{extra}
[[server]]
listen = ["127.0.0.1:0"]
http2 = true
{server_extra}
[[server.location]]
path = "/"
proxy_pass = "http://b"
"#
    )
}

fn addrs(backends: &[&GrpcBackend]) -> Vec<String> {
    backends.iter().map(|b| b.addr.to_string()).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One client channel (one HTTP/2 connection) to fulcrum.
#[derive(Clone)]
struct Client(tonic::client::Grpc<Channel>);

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to fulcrum");
        Client(
            tonic::client::Grpc::new(ch)
                .max_decoding_message_size(MAX_MSG)
                .max_encoding_message_size(MAX_MSG),
        )
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))
    }

    async fn unary(
        &mut self,
        path: &'static str,
        req: Request<Msg>,
    ) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        let call = self
            .0
            .unary(req, PathAndQuery::from_static(path), ProstCodec::default());
        tokio::time::timeout(CALL, call)
            .await
            .expect("call in time")
    }

    async fn server_stream(
        &mut self,
        path: &'static str,
        m: Msg,
    ) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let call = self.0.server_streaming(
            Request::new(m),
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        );
        Ok(tokio::time::timeout(CALL, call)
            .await
            .expect("call in time")?
            .into_inner())
    }

    async fn streaming<S>(&mut self, path: &'static str, s: S) -> Result<Streaming<Msg>, Status>
    where
        S: futures_util::Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        let call = self.0.streaming(
            Request::new(s),
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        );
        Ok(tokio::time::timeout(CALL, call)
            .await
            .expect("call in time")?
            .into_inner())
    }
}

/// A tonic client over a bare hyper HTTP/2 connection: unlike tonic's `Channel` it
/// does not enforce a call's deadline itself, so whatever answers is fulcrum.
type Bare = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<hyper::body::Incoming>,
    hyper::Error,
>;

async fn bare_client(addr: SocketAddr) -> tonic::client::Grpc<Bare> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut send = send.clone();
        async move { send.send_request(req).await }
    });
    let origin = http::Uri::try_from(format!("http://{addr}")).expect("origin");
    tonic::client::Grpc::with_origin(Bare::new(svc), origin)
}

fn msg(n: u32) -> Msg {
    Msg {
        payload: Vec::new(),
        n,
        text: String::new(),
    }
}

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

/// Runs `n` unary calls on one channel, `conc` at a time, and returns how many
/// failed (each failure printed).
async fn load(c: &Client, n: u32, conc: usize) -> usize {
    let calls = futures_util::stream::iter(0..n).map(|i| {
        let mut c = c.clone();
        async move { c.unary("/test.Echo/Unary", Request::new(msg(i))).await }
    });
    let results: Vec<_> = calls.buffer_unordered(conc).collect().await;
    results
        .iter()
        .filter(|r| match r {
            Ok(_) => false,
            Err(st) => {
                eprintln!("failed call: {st:?}");
                true
            }
        })
        .count()
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
