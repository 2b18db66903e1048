//! Test harness: real fulcrum processes and real backends on 127.0.0.1 ephemeral
//! ports. Backends are bound before use and report their address; fulcrum reports
//! its bound addresses on stderr, which the harness reads as its readiness signal.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a backend answers; gets the request head and the whole body.
pub type Handler =
    Arc<dyn Fn(&http::request::Parts, &Bytes) -> Response<Full<Bytes>> + Send + Sync>;

/// A real HTTP backend on 127.0.0.1:0 that counts requests and records the last
/// request head it saw.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub last: Arc<Mutex<Option<http::request::Parts>>>,
    _rt: Option<tokio::runtime::Runtime>,
}

impl Backend {
    /// A backend answering `200` with body = its own name.
    pub fn named(name: &str) -> Backend {
        let name = name.to_string();
        Backend::with(Arc::new(move |_, _| {
            Response::new(Full::new(Bytes::from(name.clone())))
        }))
    }

    /// A backend with a custom handler, served on its own runtime thread.
    pub fn with(handler: Handler) -> Backend {
        let hits = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(None));
        let (h2, l2) = (hits.clone(), last.clone());
        let (addr, rt) = serve(move |req: Request<Incoming>| {
            let (handler, hits, last) = (handler.clone(), h2.clone(), l2.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                hits.fetch_add(1, Ordering::SeqCst);
                let resp = handler(&parts, &body);
                *last.lock().unwrap() = Some(parts);
                resp
            }
        });
        Backend {
            addr,
            hits,
            last,
            _rt: Some(rt),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A backend answering `METHOD TARGET\n` followed by the request body it received,
/// and recording every body.
pub fn echo() -> (Backend, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b2 = bodies.clone();
    let b = Backend::with(Arc::new(move |parts, body| {
        b2.lock().unwrap().push(body.to_vec());
        let mut out = format!("{} {}\n", parts.method, parts.uri).into_bytes();
        out.extend_from_slice(body);
        Response::new(Full::new(Bytes::from(out)))
    }));
    (b, bodies)
}

/// A one-thread runtime of a test backend's own, and a listener on 127.0.0.1:0 bound
/// in it.
pub fn backend_runtime() -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    (rt, listener, addr)
}

/// Serves `handler` (HTTP/1 with upgrades, and h2c) on 127.0.0.1:0 from a runtime of
/// its own; the server lives as long as the returned runtime.
pub fn serve<F, Fut>(handler: F) -> (SocketAddr, tokio::runtime::Runtime)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let (rt, listener, addr) = backend_runtime();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rt)
}

/// A backend that reads each connection to its end, answering nothing, and hands
/// over the bytes it got: shows what an aborted upload left the backend with.
pub fn recording_backend() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                let _ = tx.send(got);
            });
        }
    });
    (addr, rx)
}

/// Asserts that the one connection a [`recording_backend`] got began with `head`
/// and ended before the `body_len` bytes of its body: an upload cut short.
pub fn assert_cut_short(got: &mpsc::Receiver<Vec<u8>>, head: &str, body_len: usize) {
    let seen = got
        .recv_timeout(Duration::from_secs(10))
        .expect("a connection");
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with(head), "{text}");
    let head_end = text.find("\r\n\r\n").map(|i| i + 4).expect("a whole head");
    assert!(
        seen.len() - head_end < body_len,
        "the whole body reached the backend: {text}"
    );
}

/// An address where nothing listens: connect is refused. The port stays bound (never
/// listening, without `SO_REUSEADDR`) for the life of the test process, so a listener
/// another test binds to port 0 cannot be handed the same port and bring it to life.
pub fn dead_addr() -> SocketAddr {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    s.bind(&any.into()).expect("bind");
    let addr = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("addr");
    std::mem::forget(s);
    addr
}

/// A fulcrum process started from config text.
pub struct Fulcrum {
    pub child: Child,
    /// Bound listener addresses in config order of first appearance (by listen key).
    pub listeners: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fulcrum"))
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    line[i..].split_whitespace().next()
}

impl Fulcrum {
    /// Writes `config` to a temp file and starts fulcrum on it; returns once it logged
    /// "fulcrum ready" (panics with its stderr if it exits or takes over 20 s).
    pub fn start(config: &str) -> Fulcrum {
        Fulcrum::start_env(config, &[])
    }

    pub fn start_env(config: &str, env: &[(&str, &str)]) -> Fulcrum {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn fulcrum");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let all2 = all.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                all2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut listeners = Vec::new();
        let mut admin = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    if line.contains("admin listening") {
                        admin = field(&line, "addr=").and_then(|a| a.parse().ok());
                    } else if line.contains(" listening ") {
                        if let Some(a) = field(&line, "addr=").and_then(|a| a.parse().ok()) {
                            listeners.push(a);
                        }
                    } else if line.contains("fulcrum ready") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("fulcrum did not start:\n{}", all.lock().unwrap().join("\n"));
                }
            }
        }
        Fulcrum {
            child,
            listeners,
            admin,
            config: path,
            dir,
            stderr: all,
            lines: rx,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Waits for a stderr line containing `needle` (up to `secs`).
    pub fn wait_log(&self, needle: &str, secs: u64) -> Option<String> {
        if let Some(l) = self
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
        {
            return Some(l.clone());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit (up to `secs`), returning its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Open descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response from the raw client.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
}

/// A config with an admin listener, one pool `b` of `backends`, and one server whose
/// `/` location proxies to it; the `extra_*` lines go into the pool's and the server's
/// tables. It ends inside the `/` location: appended lines add to that location, and
/// appended `[[server.location]]` tables add locations.
pub fn proxy_config(backends: &[SocketAddr], extra_upstream: &str, extra_server: &str) -> String {
    let servers = backends
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = [{servers}]
{extra_upstream}
[[server]]
listen = ["127.0.0.1:0"]
{extra_server}
[[server.location]]
path = "/"
proxy_pass = "http://b"
"#
    )
}

/// A request carrying both `Content-Length` and `Transfer-Encoding`, with a second
/// request hidden in its body: what request smuggling looks like (answered 400).
pub const SMUGGLING: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends raw bytes on a new connection and reads one response (Connection: close
/// style: reads until EOF or the framed body is complete).
pub fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    read_response(&mut s)
}

/// Reads one HTTP/1.1 response from a stream (Content-Length, chunked, or to EOF).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before response head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = buf[head_end..].to_vec();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while body.len() < len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
        body.truncate(len);
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            if let Some(decoded) = dechunk(&body) {
                body = decoded;
                break;
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    } else if status >= 200 && status != 204 && status != 304 {
        loop {
            let n = s.read(&mut tmp).unwrap_or_default();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Decodes a complete chunked body, or None if more bytes are needed.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = find(b, b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..i]).ok()?.split(';').next()?.trim(),
            16,
        )
        .ok()?;
        b = &b[i + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// GET `path` with `Host: host` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    get_host(addr, path, "localhost")
}

pub fn get_host(addr: SocketAddr, path: &str, host: &str) -> Resp {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("request")
}

/// A keep-alive client connection for several requests in a row.
pub struct Conn {
    pub s: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        Conn { s }
    }
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
    }
    pub fn send(&mut self, req: &[u8]) -> Resp {
        self.s.write_all(req).expect("write");
        read_response(&mut self.s).expect("response")
    }
}

/// Polls `f` every 20 ms until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `promtool ARGS` (with `stdin` piped in, if any) and asserts it succeeds.
/// Returns false, after a note, when promtool is missing and FULCRUM_REQUIRE_TOOLS
/// is unset (the check is skipped); with it set a missing promtool fails the test.
#[allow(dead_code)]
pub fn promtool(args: &[&str], stdin: Option<&[u8]>) -> bool {
    let child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_none(),
                "promtool is required (FULCRUM_REQUIRE_TOOLS) but cannot run: {e}"
            );
            eprintln!(
                "note: promtool not found, skipping `promtool {}`",
                args.join(" ")
            );
            return false;
        }
    };
    let mut input = child.stdin.take().expect("promtool stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// The nginx binary for the differential tests, or `None` (after printing why)
/// when they should be skipped: without nginx on PATH (or in /usr/sbin) they pass
/// with a note, unless FULCRUM_REQUIRE_NGINX=1 (CI), where they fail.
pub fn nginx_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("FULCRUM_REQUIRE_NGINX").as_deref() != Ok("1"),
            "nginx not found and FULCRUM_REQUIRE_NGINX=1"
        );
        eprintln!("note: nginx not found; skipping the nginx differential test");
    }
    found
}

/// A free port on 127.0.0.1 (bound, then released for a server to take), below
/// the kernel's ephemeral range (32768+): a port chosen there could be handed to
/// another test's `bind(0)` between its release and its use, and a server (nginx)
/// that then fails to bind would seem up, answering as the other test's server.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start where the process id points, so test binaries running at once spread out.
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..10_000 {
        let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(97));
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `fulcrum check` on config text written to `f.toml`: its exit code and its
/// output (stderr, then stdout).
pub fn check_config(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run fulcrum check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text)
}
