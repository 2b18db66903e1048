//! Chaos under load (the "Hardening" issue): a bounded keep-alive load of idempotent
//! GETs through a real fulcrum process to three real backends while the test kills
//! and restarts backends, makes one slow, makes one reset its connections (in the
//! response head, which fulcrum retries on another server, and mid-body, which
//! can only be cut short), and reloads the config (file written, SIGHUP).
//!
//! Asserted: no request fails while a server lives (every answer is a 200 or, for
//! a mid-body reset, a response cut short), no response is ever delivered complete
//! with a body other than the one the backend sent (each path has its own body,
//! which the client knows), and afterwards fulcrum's descriptors and memory are
//! back near where they were.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body every backend sends for `/n`: its length and bytes follow from `n`, so
/// a client can tell a whole body from a cut or mixed-up one.
fn body_for(n: u64) -> Vec<u8> {
    let len = 1_000 + (n * 7_919 % 30_000) as usize;
    (0..len).map(|i| (i as u64 * 31 + n) as u8).collect()
}

/// How a backend behaves.
const NORMAL: u8 = 0;
const SLOW: u8 = 1;
const RESET: u8 = 2;

/// A raw HTTP/1.1 backend on a fixed port that can be killed (every socket closed)
/// and started again, slowed, or made to reset its connections.
struct Chaotic {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Resets done after the response head went out (the client's response is cut).
    body_resets: Arc<AtomicUsize>,
    /// Resets in the middle of the response head (fulcrum tries another server).
    head_resets: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Chaotic {
    fn start() -> Chaotic {
        let mut c = Chaotic {
            addr: "127.0.0.1:0".parse().unwrap(),
            mode: Arc::default(),
            body_resets: Arc::default(),
            head_resets: Arc::default(),
            rt: None,
        };
        c.restart();
        c
    }

    /// Closes the listener and every connection at once.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Listens again on the same port (the first time on a new one).
    fn restart(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap();
        self.addr = l.local_addr().unwrap();
        let (mode, body, head) = (
            self.mode.clone(),
            self.body_resets.clone(),
            self.head_resets.clone(),
        );
        rt.spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (mode, body, head) = (mode.clone(), body.clone(), head.clone());
                tokio::spawn(async move {
                    let _ = serve(s, &mode, &body, &head).await;
                });
            }
        });
        self.rt = Some(rt);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Serves GETs on one connection as the backend's mode says.
async fn serve(
    mut s: tokio::net::TcpStream,
    mode: &AtomicU8,
    body_resets: &AtomicUsize,
    head_resets: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let n: u64 = head
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.trim_start_matches('/').parse().ok())
            .unwrap_or(0);
        let body = body_for(n);
        let mut out =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        let head_len = out.len();
        out.extend_from_slice(&body);
        match mode.load(Ordering::SeqCst) {
            SLOW => tokio::time::sleep(Duration::from_millis(150)).await,
            RESET => {
                // Alternately inside the head and halfway through the body.
                let in_head = (head_resets.load(Ordering::SeqCst)
                    + body_resets.load(Ordering::SeqCst))
                .is_multiple_of(2);
                let cut = if in_head {
                    head_len / 2
                } else {
                    head_len + body.len() / 2
                };
                let counter = if in_head { head_resets } else { body_resets };
                s.write_all(&out[..cut]).await?;
                s.flush().await?;
                counter.fetch_add(1, Ordering::SeqCst);
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            _ => {}
        }
        s.write_all(&out).await?;
    }
}

/// What one request got.
#[derive(Debug)]
enum Outcome {
    /// A whole 200 whose body is the one the backend sent.
    Whole,
    /// A whole response with another status, or a body that is not the one sent.
    Wrong(String),
    /// The connection ended before the response head.
    NoAnswer(std::io::Error),
    /// The response head came, then the connection ended before its body did.
    Cut,
}

/// Sends `GET /n` on `s` and reads the answer.
fn fetch(s: &mut TcpStream, n: u64) -> Outcome {
    if let Err(e) = s.write_all(format!("GET /{n} HTTP/1.1\r\nHost: chaos\r\n\r\n").as_bytes()) {
        return Outcome::NoAnswer(e);
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut read = |buf: &mut Vec<u8>| match s.read(&mut tmp) {
        Ok(0) => Err(std::io::Error::from(ErrorKind::UnexpectedEof)),
        Ok(k) => {
            buf.extend_from_slice(&tmp[..k]);
            Ok(())
        }
        Err(e) => Err(e),
    };
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if let Err(e) = read(&mut buf) {
            return Outcome::NoAnswer(e);
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
    {
        Some(len) => len,
        None => return Outcome::Wrong(format!("no Content-Length: {head}")),
    };
    while buf.len() < end + len {
        if read(&mut buf).is_err() {
            return Outcome::Cut;
        }
    }
    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if status != "200" {
        return Outcome::Wrong(format!("status {status}"));
    }
    match buf[end..] == body_for(n)[..] {
        true => Outcome::Whole,
        false => Outcome::Wrong(format!(
            "/{n}: a body of {} bytes that is not the one sent",
            buf.len() - end
        )),
    }
}

/// A failed server is out for a second (passive health as nginx's): the schedule
/// leaves more than that between a restart and the next kill, so a server that
/// lives is never still out for having been dead.
const FAIL: &str = "max_fails=1 fail_timeout=1s";

/// Idle connections fulcrum may keep per backend (`keepalive`).
const POOL: usize = 4;

/// The config: the three backends, the first with `weight`, listening on `port`
/// (fixed, so that a reload keeps the listener).
fn config(b: &[Chaotic], weight: u32, port: u16) -> String {
    let servers: Vec<String> = b.iter().map(|b| b.addr.to_string()).collect();
    proxy_config(
        &[],
        &format!(
            "server = [\"{} weight={weight} {FAIL}\", \"{} {FAIL}\", \"{} {FAIL}\"]\nkeepalive = {POOL}",
            servers[0], servers[1], servers[2]
        ),
        "",
    )
    .replace("server = []\n", "")
    .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"127.0.0.1:{port}\"]"))
}

/// What the test does to the backends and the config, one step every 600 ms.
#[derive(Clone, Copy)]
enum Act {
    Mode(usize, u8),
    Kill(usize),
    Restart(usize),
    /// Writes the config with this weight for the first server, then SIGHUP.
    Reload(u32),
}

/// At most one server is down or resetting at a time (a slow one answers), and a
/// restarted server has had its `fail_timeout` before another is killed.
const SCHEDULE: &[&[Act]] = &[
    &[Act::Mode(0, SLOW)],
    &[Act::Mode(1, RESET)],
    &[Act::Mode(1, NORMAL), Act::Kill(2)],
    &[Act::Reload(3)],
    &[Act::Restart(2)],
    &[Act::Reload(1)],
    &[Act::Kill(0)],
    &[Act::Reload(2)],
    &[Act::Restart(0), Act::Mode(1, RESET)],
    &[Act::Mode(2, SLOW)],
    &[Act::Mode(1, NORMAL)],
    &[Act::Mode(2, NORMAL)],
    &[Act::Kill(1)],
    &[Act::Restart(1)],
];

/// Tallies of the load.
#[derive(Default, Debug)]
struct Tally {
    whole: AtomicUsize,
    cut: AtomicUsize,
    wrong: Mutex<Vec<String>>,
}

/// One client: keep-alive requests until `stop`, a new connection after any end.
fn client(addr: SocketAddr, id: u64, stop: &AtomicBool, tally: &Tally) {
    let mut seq = 0u64;
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::SeqCst) {
        let s = conn.get_or_insert_with(|| {
            let s = TcpStream::connect(addr).expect("connect to fulcrum");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        });
        seq += 1;
        let n = id * 1_000_000 + seq;
        match fetch(s, n) {
            Outcome::Whole => {
                tally.whole.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Outcome::Cut => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Wrong(w) => tally.wrong.lock().unwrap().push(w),
            Outcome::NoAnswer(e) => tally
                .wrong
                .lock()
                .unwrap()
                .push(format!("/{n}: no answer: {e}")),
        }
        conn = None;
    }
}

#[test]
fn chaos_under_keep_alive_load() {
    let mut b: Vec<Chaotic> = (0..3).map(|_| Chaotic::start()).collect();
    let port = free_port();
    let f = Fulcrum::start(&config(&b, 1, port));
    let (fds_before, rss_before) = (f.fds(), f.rss_kib());
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let addr = f.addr();
    std::thread::scope(|scope| {
        for id in 1..=4 {
            let (stop, tally) = (&stop, &tally);
            scope.spawn(move || client(addr, id, stop, tally));
        }
        let mut reloaded = 0;
        for acts in SCHEDULE {
            std::thread::sleep(Duration::from_millis(600));
            for &act in *acts {
                match act {
                    Act::Mode(i, mode) => b[i].set(mode),
                    Act::Kill(i) => b[i].kill(),
                    Act::Restart(i) => b[i].restart(),
                    Act::Reload(weight) => {
                        std::fs::write(&f.config, config(&b, weight, port)).unwrap();
                        f.signal("HUP");
                        reloaded += 1;
                        let log = || f.log_text().matches("configuration reloaded").count();
                        assert!(eventually(10, || log() >= reloaded), "reload {reloaded}");
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(600));
        stop.store(true, Ordering::SeqCst);
    });
    let whole = tally.whole.load(Ordering::Relaxed);
    let cut = tally.cut.load(Ordering::Relaxed);
    let body_resets: usize = b.iter().map(|b| b.body_resets.load(Ordering::SeqCst)).sum();
    let head_resets: usize = b.iter().map(|b| b.head_resets.load(Ordering::SeqCst)).sum();
    eprintln!(
        "chaos: {whole} whole responses, {cut} cut short, {head_resets} resets in a head \
         (retried), {body_resets} mid-body; fds {fds_before}, rss {rss_before} KiB before"
    );
    let wrong = tally.wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} requests failed or were wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(whole > 100, "too little load went through: {whole}");
    assert!(
        cut <= body_resets,
        "{cut} responses cut short, only {body_resets} mid-body resets"
    );
    assert!(
        head_resets > 0,
        "no reset in a response head: the retry was never tried"
    );
    // The clients have closed their connections: what is left is at most the idle
    // pool of each backend.
    let slack = 3 * POOL + 2;
    let settled = eventually(10, || f.fds() <= fds_before + slack);
    let (fds_after, rss_after) = (f.fds(), f.rss_kib());
    eprintln!("chaos: fds {fds_after}, rss {rss_after} KiB after");
    assert!(
        settled,
        "descriptors: {fds_before} before, {fds_after} after (slack {slack})"
    );
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "resident memory: {rss_before} KiB before, {rss_after} KiB after"
    );
}
