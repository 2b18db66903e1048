//! The client side of the gRPC tests: fulcrum's config, a tonic client on one
//! channel, a bare one that enforces no deadline itself, and a load loop.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tonic::codec::{ProstCodec, Streaming};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::backend::{GrpcBackend, Msg, MAX_MSG};

/// Generous bound for any one call on a loaded machine.
pub const CALL: Duration = Duration::from_secs(30);

/// A config: pool `b` of `servers` (nginx syntax, weights and all) with
/// `protocol = "h2"` and `extra` lines, and an h2c listener proxying to it.
pub fn config(servers: &[String], extra: &str) -> String {
    config_with(servers, extra, "")
}

/// [`config`] with `server_extra` lines in the `[[server]]` table.
pub fn config_with(servers: &[String], extra: &str, server_extra: &str) -> String {
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

pub fn addrs(backends: &[&GrpcBackend]) -> Vec<String> {
    backends.iter().map(|b| b.addr.to_string()).collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One client channel (one HTTP/2 connection) to fulcrum.
#[derive(Clone)]
pub struct Client(tonic::client::Grpc<Channel>);

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
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

    pub async fn unary(
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

    pub async fn server_stream(
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

    pub async fn streaming<S>(&mut self, path: &'static str, s: S) -> Result<Streaming<Msg>, Status>
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
pub type Bare = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<hyper::body::Incoming>,
    hyper::Error,
>;

pub async fn bare_client(addr: SocketAddr) -> tonic::client::Grpc<Bare> {
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

pub fn msg(n: u32) -> Msg {
    Msg {
        payload: Vec::new(),
        n,
        text: String::new(),
    }
}

/// Runs `n` unary calls on one channel, `conc` at a time, and returns how many
/// failed (each failure printed).
pub async fn load(c: &Client, n: u32, conc: usize) -> usize {
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
