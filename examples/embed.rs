//! Embedding fulcrum's routing and balancing in another hyper program: the config is
//! a TOML string, fulcrum's [`Proxy`] is wrapped in a tower layer that adds a request
//! header, and hyper serves the stack on 127.0.0.1:0. One request goes through it and
//! the answer is printed; then the program exits.
//!
//! Run it with `cargo run --example embed`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;

use fulcrum::proxy::conn::ConnMeta;
use fulcrum::proxy::tower_service::Proxy;
use fulcrum::state::Snapshot;
use fulcrum::upstream::Registry;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The `listen` address whose virtual servers route the embedded proxy's requests.
/// fulcrum does not bind it: this program accepts the connections itself.
const LISTEN_KEY: &str = "127.0.0.1:8080";

fn config(backend: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "off"

[upstream.backend]
server = ["{backend}"]

[[server]]
listen = ["{LISTEN_KEY}"]

[[server.location]]
path = "/"
proxy_pass = "http://backend"
proxy_set_header = {{ Host = "$host", X-Real-IP = "$remote_addr" }}
"#
    )
}

/// The snapshot cell fulcrum's requests read (a reload would swap it).
fn snapshots(toml: &str) -> Result<Arc<ArcSwap<Snapshot>>, Error> {
    let config = fulcrum::config::parse(Path::new("embed.toml"), toml)?;
    let snap = Snapshot::build(config, &Registry::default())?;
    Ok(Arc::new(ArcSwap::from_pointee(snap)))
}

/// Accepts connections and serves each through the tower stack: a layer of this
/// program's own, then fulcrum.
async fn serve(listener: TcpListener, snapshots: Arc<ArcSwap<Snapshot>>, key: SocketAddr) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let local = stream.local_addr().unwrap_or(key);
        let meta = Arc::new(ConnMeta::new(remote, local, key, "http"));
        let svc = ServiceBuilder::new()
            .layer(MapRequestLayer::new(|mut req: Request<_>| {
                req.headers_mut().insert(
                    "x-embedded-by",
                    HeaderValue::from_static("examples/embed.rs"),
                );
                req
            }))
            .service(Proxy::new(snapshots.clone(), meta));
        tokio::spawn(async move {
            let conn = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await
            {
                eprintln!("connection ended with error: {e}");
            }
        });
    }
}

/// One `GET /` through the embedding server; prints what came back.
async fn one_request(addr: SocketAddr) -> Result<(), Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/hello")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let backend = resp.headers().get("x-demo-backend").cloned();
    let body = resp.into_body().collect().await?.to_bytes();
    println!("status: {status}");
    println!("x-demo-backend: {backend:?}");
    print!("body: {}", String::from_utf8_lossy(&body));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // A demo backend (the one `[demo] backends` starts) to balance to.
    let backends = fulcrum::demo::start(&["127.0.0.1:0".parse()?]).await?;
    let backend = *backends.first().ok_or("no demo backend")?;
    let snapshots = snapshots(&config(backend))?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, snapshots, LISTEN_KEY.parse()?));

    one_request(addr).await?;
    Ok::<(), Error>(())
}
