//! A real gRPC backend for the tests: tonic's server-side machinery
//! (`tonic::server::Grpc` with `ProstCodec`) over hyper's HTTP/2 server, so each
//! connection can be counted, shut down gracefully (GOAWAY) or cut. The messages
//! are hand-written prost structs: no protoc here, so no tonic-build.
//!
//! Served by hyper directly rather than `tonic::transport::Server`, whose
//! `grpc-timeout` layer would race fulcrum's own deadline in the deadline test.

// tonic's `Status` is large; its own generated code allows this too.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Bytes to echo (the 4 MiB case).
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// A number: how many messages to stream back, or a sequence number.
    #[prost(uint32, tag = "2")]
    pub n: u32,
    /// Text: the backend's name in answers.
    #[prost(string, tag = "3")]
    pub text: String,
}

/// Message size limit on both sides (tonic's default is 4 MiB, payload included).
pub const MAX_MSG: usize = 16 * 1024 * 1024;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type MsgStream = Pin<Box<dyn futures_util::Stream<Item = Result<Msg, Status>> + Send>>;

/// The service: `/test.Echo/{Unary,ServerStream,ClientStream,Bidi,Slow,Fail,Endless}`
/// and, when it has one, tonic-health's `grpc.health.v1.Health`.
#[derive(Clone)]
pub struct Echo {
    name: Arc<str>,
    calls: Arc<AtomicUsize>,
    delay: Duration,
    health: Option<tonic_health::pb::health_server::HealthServer<HealthSvc>>,
}

/// tonic-health's service type (an `impl Health` named through the reporter).
pub type HealthSvc = tonic_health::server::HealthService;

impl Echo {
    fn answer(&self, mut m: Msg) -> Msg {
        m.text = self.name.to_string();
        m
    }

    /// Unary: the message back with the backend's name, `x-echo` = the client's
    /// `x-req`, and `x-backend` in the headers.
    async fn unary(self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let echo = req.metadata().get("x-req").cloned();
        if self.delay > Duration::ZERO {
            tokio::time::sleep(self.delay).await;
        }
        let mut resp = Response::new(self.answer(req.into_inner()));
        if let Some(v) = echo {
            resp.metadata_mut().insert("x-echo", v);
        }
        if let Ok(v) = MetadataValue::try_from(&*self.name) {
            resp.metadata_mut().insert("x-backend", v);
        }
        Ok(resp)
    }

    /// `n` messages numbered 0.., then, when `text` is "fail", an error status
    /// with metadata: it goes out in the trailers.
    fn server_stream(self, req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let m = req.into_inner();
        let name = self.name.to_string();
        let fail = m.text == "fail";
        let s = futures_util::stream::iter(0..m.n).map(move |i| {
            Ok(Msg {
                payload: Vec::new(),
                n: i,
                text: name.clone(),
            })
        });
        let tail = futures_util::stream::iter(fail.then(|| {
            let mut st = Status::new(Code::FailedPrecondition, "stream ran out 100%");
            st.metadata_mut()
                .insert("x-trailer", MetadataValue::from_static("t-value"));
            Err(st)
        }));
        Ok(Response::new(Box::pin(s.chain(tail))))
    }

    /// The count of messages and of payload bytes received.
    async fn client_stream(self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut s = req.into_inner();
        let (mut n, mut bytes) = (0u32, 0usize);
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            bytes += m.payload.len();
        }
        Ok(Response::new(Msg {
            payload: Vec::new(),
            n,
            text: format!("{bytes}"),
        }))
    }

    /// Each message back as it arrives.
    fn bidi(self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let s = req.into_inner().map(move |m| m.map(|m| self.answer(m)));
        Ok(Response::new(Box::pin(s)))
    }

    /// A message every 10 ms, forever (until the connection goes).
    fn endless(self) -> Result<Response<MsgStream>, Status> {
        let name = self.name.to_string();
        let s = futures_util::stream::unfold(0u32, move |i| {
            let name = name.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let m = Msg {
                    payload: Vec::new(),
                    n: i,
                    text: name,
                };
                Some((Ok(m), i + 1))
            }
        });
        Ok(Response::new(Box::pin(s)))
    }
}

fn grpc() -> tonic::server::Grpc<ProstCodec<Msg, Msg>> {
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG)
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/grpc.health.v1.Health/") {
                if let Some(mut h) = this.health.clone() {
                    return tower::Service::call(&mut h, req).await;
                }
            }
            this.calls.fetch_add(1, Ordering::SeqCst);
            let mut g = grpc();
            let t = this.clone();
            Ok(match path.as_str() {
                "/test.Echo/Unary" => {
                    let f = tower::service_fn(move |r| t.clone().unary(r));
                    g.unary(f, req).await
                }
                "/test.Echo/Fail" => {
                    let f = tower::service_fn(|_r: Request<Msg>| async {
                        let mut st = Status::new(Code::NotFound, "backend says: no such thing");
                        st.metadata_mut()
                            .insert("x-why", MetadataValue::from_static("because"));
                        Err::<Response<Msg>, _>(st)
                    });
                    g.unary(f, req).await
                }
                "/test.Echo/ServerStream" => {
                    let f =
                        tower::service_fn(move |r| std::future::ready(t.clone().server_stream(r)));
                    g.server_streaming(f, req).await
                }
                "/test.Echo/Endless" => {
                    let f = tower::service_fn(move |_r: Request<Msg>| {
                        std::future::ready(t.clone().endless())
                    });
                    g.server_streaming(f, req).await
                }
                "/test.Echo/ClientStream" => {
                    let f = tower::service_fn(move |r| t.clone().client_stream(r));
                    g.client_streaming(f, req).await
                }
                "/test.Echo/Bidi" => {
                    let f = tower::service_fn(move |r| std::future::ready(t.clone().bidi(r)));
                    g.streaming(f, req).await
                }
                _ => Status::unimplemented(path).into_http(),
            })
        })
    }
}

/// A running backend on its own runtime.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    /// Calls of the test service it served (health checks not counted).
    pub calls: Arc<AtomicUsize>,
    /// TCP connections it accepted.
    pub connections: Arc<AtomicUsize>,
    /// tonic-health's reporter, when it serves the health service.
    #[allow(dead_code)]
    pub health: Option<tonic_health::server::HealthReporter>,
    stop: Mutex<Option<oneshot::Sender<Stop>>>,
    stopped: Arc<Notify>,
    pub rt: tokio::runtime::Runtime,
}

/// How a backend goes away.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Stop accepting; GOAWAY on every connection; calls in flight finish.
    Graceful,
    /// Stop accepting and drop every connection at once (a killed process).
    Kill,
}

/// Options of a backend.
#[derive(Default, Clone, Copy)]
pub struct Opts {
    /// Unary calls answer after this long.
    pub delay: Duration,
    /// Serve tonic-health too.
    pub health: bool,
}

impl GrpcBackend {
    pub fn start(name: &str, opts: Opts) -> GrpcBackend {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, health) = if opts.health {
            let r = tonic_health::server::HealthReporter::new();
            let svc = HealthSvc::from_health_reporter(r.clone());
            (
                Some(r),
                Some(tonic_health::pb::health_server::HealthServer::new(svc)),
            )
        } else {
            (None, None)
        };
        let echo = Echo {
            name: name.into(),
            calls: Arc::new(AtomicUsize::new(0)),
            delay: opts.delay,
            health,
        };
        let calls = echo.calls.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel();
        let stopped = Arc::new(Notify::new());
        rt.spawn(accept(
            listener,
            echo,
            connections.clone(),
            rx,
            stopped.clone(),
        ));
        GrpcBackend {
            addr,
            calls,
            connections,
            health: reporter,
            stop: Mutex::new(Some(tx)),
            stopped,
            rt,
        }
    }

    /// Stops the backend (see [`Stop`]); returns once every connection is gone.
    pub fn stop(&self, how: Stop) {
        let tx = self.stop.lock().unwrap().take();
        if let Some(tx) = tx {
            let done = self.stopped.clone();
            let waited = done.notified();
            let _ = tx.send(how);
            self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), waited)
                    .await
                    .expect("backend stopped in time")
            });
        }
    }

    /// Calls of the test service served so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    echo: Echo,
    connections: Arc<AtomicUsize>,
    mut stop: oneshot::Receiver<Stop>,
    stopped: Arc<Notify>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let how = loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((tcp, _)) = r else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let svc = TowerToHyperService::new(echo.clone());
                let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    let _ = conn.await;
                });
            }
            how = &mut stop => break how.unwrap_or(Stop::Kill),
        }
    };
    drop(listener);
    match how {
        Stop::Graceful => graceful.shutdown().await,
        Stop::Kill => {
            drop(graceful);
            conns.abort_all();
        }
    }
    while conns.join_next().await.is_some() {}
    // The notified future was created before the stop was sent.
    stopped.notify_waiters();
}
