//! Bodies stream both ways without being held in memory; WebSocket passes through.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MB: usize = 1024 * 1024;

/// A raw backend: answers `GET` with a 50 MB body written in pieces, and `POST` by
/// counting the uploaded bytes and returning the count.
fn big_backend() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve_big(s));
        }
    });
    addr
}

fn serve_big(mut s: TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    if head.starts_with("post") {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < len {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let body = got.to_string();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            body
        );
    } else {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 50 * MB);
        let chunk = vec![b'd'; 64 * 1024];
        for _ in 0..(50 * MB / chunk.len()) {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    }
}

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.big]
server = ["{addr}"]
[[server]]
listen = ["127.0.0.1:0"]
client_max_body_size = 0
[[server.location]]
path = "/"
proxy_pass = "http://big"
"#
    )
}

#[test]
fn fifty_megabytes_each_way_stream_through() {
    let f = Fulcrum::start(&config(big_backend()));
    let base_kib = f.peak_rss_kib();
    // Download, read slowly at first so backpressure has to hold the upstream back.
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("download failed after {total} bytes: {e}"),
        }
    }
    assert!(total > 50 * MB, "got {total} bytes");
    // Upload.
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        50 * MB
    )
    .unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..(50 * MB / chunk.len()) {
        s.write_all(&chunk).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.status, r.text()), (200, (50 * MB).to_string()));
    // Neither direction was buffered: peak RSS grew by far less than one body.
    let grown = f.peak_rss_kib().saturating_sub(base_kib);
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB while streaming 2 x 50 MB"
    );
}

#[test]
fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A real WebSocket echo server.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let ws_addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    let f = Fulcrum::start(&config(ws_addr));
    let url = format!("ws://{}/chat", f.addr());
    rt.block_on(async move {
        let (mut ws, resp) = tokio_tungstenite::connect_async(url)
            .await
            .expect("handshake through fulcrum");
        assert_eq!(resp.status(), 101);
        for i in 0..5 {
            ws.send(Message::text(format!("hello {i}"))).await.unwrap();
            let m = ws.next().await.unwrap().unwrap();
            assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
        }
        ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.into_data().len(), 100_000);
    });
}
