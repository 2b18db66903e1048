//! The access log: one line per request; its disk writes happen off the request path.
//!
//! A request copies what its line needs into a small [`Entry`] when it starts (only
//! with a log configured) and, when its response is done, formats the line into one
//! of a few in-memory shards of the [`AccessLog`] (picked per thread). A dedicated
//! thread swaps the shards out and writes them, every [`BATCH`] under load and at once
//! for the first line after a quiet spell. A slow disk therefore only lets lines pile
//! up in memory; past [`SHARD_LIMIT`] they are dropped and counted in
//! `fulcrum_access_log_dropped_total`, and the request never waits. With
//! `access_log = "off"` no log exists and requests build no entry.
//!
//! Formats (see docs/logging.md): `combined` is nginx's `combined` plus
//! `"$upstream_addr" "$upstream_status" $request_time "$upstream_response_time"`;
//! `json` is one object per line with the same fields.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Version};
use smallvec::SmallVec;

use crate::config::{AccessLogFormat, AccessLogTarget};

/// One try on an upstream server, as `$upstream_addr`, `$upstream_status` and
/// `$upstream_response_time` list them.
#[derive(Debug, Clone, Copy)]
pub struct Try {
    /// The server.
    pub addr: SocketAddr,
    /// Its status, or the one fulcrum answered for a failed try (502/504); 0: none.
    pub status: u16,
    /// How long the try took (to the end of the response body for the last one).
    pub time: Duration,
}

/// `$request` apart from its target (which is in [`RequestText`]).
#[derive(Debug, Clone)]
pub struct RequestLine {
    /// Method.
    pub method: Method,
    /// Protocol version.
    pub version: Version,
}

/// A text field of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The target as received (for HTTP/2, the path: nginx shows that).
    Target = 0,
    /// `Host`.
    Host = 1,
    /// `Referer`.
    Referer = 2,
    /// `User-Agent`.
    UserAgent = 3,
}

/// The request's text fields, copied out of the connection's buffers into one
/// allocation. Holding the buffers themselves (refcounted `Bytes`) until the writer
/// thread formats the line would keep hyper from reusing its read buffer.
#[derive(Debug, Clone, Default)]
pub struct RequestText {
    /// One exact-size allocation: an inline array would make every entry a few
    /// hundred bytes to zero and move.
    buf: Vec<u8>,
    /// End offset of each field in `buf`; `u32::MAX` marks an absent field.
    ends: [u32; 4],
}

impl RequestText {
    /// Copies the target (given in pieces, concatenated) and three headers.
    pub fn new(
        target: &[&[u8]],
        host: Option<&[u8]>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
    ) -> RequestText {
        let headers = [host, referer, user_agent];
        let target_len = target.iter().map(|p| p.len()).sum::<usize>();
        let len = target_len + headers.iter().flatten().map(|h| h.len()).sum::<usize>();
        let mut buf = Vec::with_capacity(len);
        for p in target {
            buf.extend_from_slice(p);
        }
        let mut ends = [u32::MAX; 4];
        ends[0] = target_len as u32;
        for (i, h) in headers.iter().enumerate() {
            if let Some(h) = h {
                buf.extend_from_slice(h);
                ends[i + 1] = buf.len() as u32;
            }
        }
        RequestText { buf, ends }
    }

    /// A field's bytes, `None` if absent.
    pub fn get(&self, f: Field) -> Option<&[u8]> {
        let i = f as usize;
        let end = self.ends[i];
        if end == u32::MAX {
            return None;
        }
        // It starts where the closest present field before it ends.
        let start = self.ends[..i]
            .iter()
            .rev()
            .find(|&&e| e != u32::MAX)
            .copied()
            .unwrap_or(0);
        self.buf.get(start as usize..end as usize)
    }
}

/// What one log line says, collected by the request and formatted by the writer.
#[derive(Debug)]
pub struct Entry {
    /// When the response ended; `None`: now.
    pub time: Option<SystemTime>,
    /// Client address.
    pub remote: SocketAddr,
    /// The Basic-auth user name, if the client sent one.
    pub remote_user: Option<String>,
    /// The request line; `None` when the head could not be parsed (logged as "-").
    pub request: Option<RequestLine>,
    /// Target, `Host`, `Referer`, `User-Agent`.
    pub text: RequestText,
    /// Status sent (499: the client went away before the response head).
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    /// From reading the request head to the end of the response.
    pub request_time: Duration,
    /// Upstream tries, in order (two fit without an allocation).
    pub tries: SmallVec<[Try; 2]>,
}

enum Msg {
    /// Lines are waiting in a shard that was empty.
    Ring,
    /// Write out everything waiting, then answer.
    Flush(SyncSender<()>),
}

/// Formatted lines waiting for the writer, and the formatter that made them.
struct Shard {
    buf: Vec<u8>,
    fmt: Formatter,
}

/// A running access log. Each request formats its line into one of a few shards
/// (picked per thread, so a worker finds its own shard uncontended) and only rings
/// the writer thread when that shard was empty. The writer swaps the shards' buffers
/// out every [`BATCH`] and writes them. Dropping the log lets the thread write what
/// waits, flush and exit.
pub struct AccessLog {
    shards: Arc<[Mutex<Shard>]>,
    bell: SyncSender<Msg>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Bytes a shard may hold before its new lines are dropped (the writer is stuck).
pub const SHARD_LIMIT: usize = 4 << 20;

/// This thread's shard index (threads are numbered on first use).
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while formatting leaves at worst a partial line behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open access_log \"{path}\": {source}")]
pub struct OpenError {
    /// The path.
    pub path: String,
    /// Why.
    #[source]
    pub source: io::Error,
}

impl AccessLog {
    /// Opens `target` (`None` for "off") and starts its writer thread.
    pub fn open(
        target: &AccessLogTarget,
        format: AccessLogFormat,
    ) -> Result<Option<AccessLog>, OpenError> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::Stderr => Box::new(io::stderr()),
            AccessLogTarget::Path(p) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| OpenError {
                        path: p.display().to_string(),
                        source,
                    })?,
            ),
        };
        let n = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let shards: Arc<[Mutex<Shard>]> = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    buf: Vec::new(),
                    fmt: Formatter::new(format),
                })
            })
            .collect();
        let (bell, rx) = mpsc::sync_channel(64);
        let for_writer = shards.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, for_writer, out))
            .map_err(|source| OpenError {
                path: "(writer thread)".into(),
                source,
            })?;
        Ok(Some(AccessLog { shards, bell }))
    }

    /// Formats the line of `entry` into this thread's shard; never waits on I/O. When
    /// the writer has fallen `SHARD_LIMIT` behind, the line is dropped and counted.
    #[inline]
    pub fn log(&self, entry: &Entry) {
        let shard = &self.shards[shard_index() % self.shards.len()];
        let was_empty = {
            let mut s = lock(shard);
            if s.buf.len() >= SHARD_LIMIT {
                drop(s);
                crate::metrics::global().access_log_dropped.inc();
                return;
            }
            let was_empty = s.buf.is_empty();
            let Shard { buf, fmt } = &mut *s;
            fmt.line(entry, buf);
            was_empty
        };
        if was_empty {
            // A full bell has already rung.
            let _ = self.bell.try_send(Msg::Ring);
        }
    }

    /// Waits (up to `timeout`) until every line logged so far is written out. Blocks:
    /// for shutdown and tests, not for the request path.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.bell.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Under load the writer wakes this often to collect lines, rather than once per line.
pub const BATCH: Duration = Duration::from_millis(10);

/// Swaps every shard's lines out and writes them; true if there were any.
fn drain(
    shards: &[Mutex<Shard>],
    spare: &mut Vec<u8>,
    out: &mut dyn Write,
    errors: &mut ErrorReport,
) -> bool {
    let mut any = false;
    for shard in shards {
        {
            let mut s = lock(shard);
            if s.buf.is_empty() {
                continue;
            }
            std::mem::swap(&mut s.buf, spare);
        }
        any = true;
        if let Err(e) = out.write_all(spare) {
            errors.report(&e);
        }
        spare.clear();
        // A burst's big buffer is not kept forever.
        if spare.capacity() > 1 << 20 {
            *spare = Vec::new();
        }
    }
    if let Err(e) = out.flush() {
        errors.report(&e);
    }
    any
}

fn write_loop(bell: Receiver<Msg>, shards: Arc<[Mutex<Shard>]>, out: Box<dyn Write + Send>) {
    let mut out = out;
    let mut spare = Vec::new();
    let mut errors = ErrorReport::default();
    let mut acks = Vec::new();
    // Idle: blocked on the bell, so the first line after a quiet spell is written at
    // once. Busy: the thread sleeps between batches and nobody rings it (a wake-up
    // per line would cost more than the line), and each batch is one write(2) per
    // shard.
    loop {
        match bell.recv() {
            Ok(Msg::Ring) => {}
            Ok(Msg::Flush(ack)) => acks.push(ack),
            Err(_) => {
                drain(&shards, &mut spare, &mut *out, &mut errors);
                return;
            }
        }
        loop {
            while let Ok(m) = bell.try_recv() {
                if let Msg::Flush(ack) = m {
                    acks.push(ack);
                }
            }
            let wrote = drain(&shards, &mut spare, &mut *out, &mut errors);
            for ack in acks.drain(..) {
                let _ = ack.try_send(());
            }
            if !wrote {
                break;
            }
            std::thread::sleep(BATCH);
        }
    }
}

/// Logs write errors at most once a minute, with how many there were.
#[derive(Default)]
struct ErrorReport {
    last: Option<Instant>,
    count: u64,
}

impl ErrorReport {
    fn report(&mut self, e: &io::Error) {
        self.count += 1;
        if self
            .last
            .map_or(true, |t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(error = %e, errors = self.count, "access log write failed");
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// Where a line is built: a `Vec` that grows, or a [`Line`] sized for it beforehand.
trait Out: Write {
    fn put(&mut self, b: &[u8]);
    #[inline]
    fn push(&mut self, c: u8) {
        self.put(&[c]);
    }
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    #[inline]
    fn push(&mut self, c: u8) {
        Vec::push(self, c);
    }
}

/// A line written into memory already sized for its worst case: each piece is one
/// bounds check and a copy (inlined for the fixed pieces), with no growth checks.
/// Running out of room sets `overflow` and drops the rest instead of panicking.
struct Line<'a> {
    buf: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.put(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Out for Line<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.at..self.at + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }
}

/// Printable ASCII other than `"` and `\`: written as is in both formats.
#[inline]
fn plain(c: u8) -> bool {
    (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\'
}

/// nginx's default log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape_into(out: &mut impl Out, b: &[u8]) {
    if b.iter().all(|&c| plain(c)) {
        out.put(b);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if !plain(c) {
            out.put(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.push(c);
        }
    }
}

fn dash_or_escaped(out: &mut impl Out, v: Option<&[u8]>) {
    match v {
        Some(b) if !b.is_empty() => escape_into(out, b),
        _ => out.push(b'-'),
    }
}

// Lines are built with these rather than `write!`: the formatting machinery is most
// of a line's cost otherwise, and the writer thread shares the proxy's CPU.

#[inline]
fn put_int(out: &mut impl Out, n: impl itoa::Integer) {
    out.put(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n` in decimal to `buf` at `at`; returns the new end. Octets and ports are
/// most of a line's numbers, and one stack buffer per address beats a call per digit run.
#[inline]
fn put_small(buf: &mut [u8; 22], at: usize, n: u16) -> usize {
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut v = n;
    for i in (at..at + digits).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    at + digits
}

/// The decimal text of every octet value (left-aligned) and its length.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (h, d, u) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = if i >= 100 {
            ([b'0' + h, b'0' + d, b'0' + u], 3)
        } else if i >= 10 {
            ([b'0' + d, b'0' + u, 0], 2)
        } else {
            ([b'0' + u, 0, 0], 1)
        };
        i += 1;
    }
    t
};

/// `A.B.C.D` and, with `port`, `:PORT`, built on the stack and appended at once.
#[inline]
fn put_v4(out: &mut impl Out, ip: std::net::Ipv4Addr, port: Option<u16>) {
    let mut buf = [0u8; 22];
    let mut at = 0;
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        let (text, n) = OCTETS[usize::from(o)];
        buf[at..at + 3].copy_from_slice(&text);
        at += usize::from(n);
    }
    if let Some(p) = port {
        buf[at] = b':';
        at = put_small(&mut buf, at + 1, p);
    }
    out.put(&buf[..at]);
}

fn put_ip(out: &mut impl Out, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => put_v4(out, v4, None),
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ADDR:PORT`, `[V6]:PORT`.
fn put_addr(out: &mut impl Out, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => put_v4(out, *v4.ip(), Some(v4.port())),
        SocketAddr::V6(_) => {
            out.push(b'[');
            put_ip(out, a.ip());
            out.push(b']');
            out.push(b':');
            put_int(out, a.port());
        }
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// `$request_time` style: seconds with millisecond resolution.
fn write_secs(out: &mut impl Out, d: Duration) {
    let ms = d.subsec_millis();
    if d.as_secs() < 10 {
        out.put(&[
            b'0' + d.as_secs() as u8,
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ]);
        return;
    }
    put_int(out, d.as_secs());
    out.put(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
}

/// Which list of the tries to write.
#[derive(Clone, Copy)]
enum TryField {
    Addr,
    Status,
    Time,
}

/// nginx's `, `-separated list of the tries (none: nothing is written).
fn write_tries(out: &mut impl Out, tries: &[Try], field: TryField) {
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            out.put(b", ");
        }
        match field {
            TryField::Addr => put_addr(out, t.addr),
            TryField::Status if t.status == 0 => out.push(b'-'),
            TryField::Status => put_int(out, t.status),
            TryField::Time => write_secs(out, t.time),
        }
    }
}

/// Formats access log lines. The time text is cached per second, as nginx caches
/// its time strings: formatting a local time is most of a line's cost otherwise.
#[derive(Debug)]
pub struct Formatter {
    format: AccessLogFormat,
    sec: Option<u64>,
    time: String,
}

impl Formatter {
    /// A formatter for `format`.
    pub fn new(format: AccessLogFormat) -> Formatter {
        Formatter {
            format,
            sec: None,
            time: String::new(),
        }
    }

    /// Appends the line for `e`, with its newline, to `out`.
    pub fn line(&mut self, e: &Entry, out: &mut Vec<u8>) {
        self.update_time(e.time.unwrap_or_else(crate::clock::coarse_wall));
        match self.format {
            AccessLogFormat::Combined => combined(e, &self.time, out),
            AccessLogFormat::Json => json(e, &self.time, out),
        }
    }

    fn update_time(&mut self, t: SystemTime) {
        let sec = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.sec == Some(sec) {
            return;
        }
        let local = chrono::DateTime::<chrono::Local>::from(t);
        self.time.clear();
        let _ = match self.format {
            // nginx $time_local
            AccessLogFormat::Combined => std::fmt::Write::write_fmt(
                &mut self.time,
                format_args!("{}", local.format("%d/%b/%Y:%H:%M:%S %z")),
            ),
            // nginx $time_iso8601
            AccessLogFormat::Json => std::fmt::Write::write_str(
                &mut self.time,
                &local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            ),
        };
        self.sec = Some(sec);
    }
}

/// Appends a line written by `fast` into `bound` bytes reserved at the end of `out`;
/// if the bound were ever short, by `slow` into `out` itself.
fn presized(
    out: &mut Vec<u8>,
    bound: usize,
    fast: impl FnOnce(&mut Line<'_>),
    slow: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.resize(start + bound, 0);
    let mut line = Line {
        buf: &mut out[start..],
        at: 0,
        overflow: false,
    };
    fast(&mut line);
    let (end, overflow) = (start + line.at, line.overflow);
    out.truncate(end);
    if overflow {
        out.truncate(start);
        slow(out);
    }
}

/// Bytes of the entry's request text, user and method: what escaping can multiply.
fn text_len(e: &Entry) -> usize {
    e.text.buf.len()
        + e.remote_user.as_ref().map_or(0, String::len)
        + e.request.as_ref().map_or(0, |r| r.method.as_str().len())
}

fn combined(e: &Entry, time: &str, out: &mut Vec<u8>) {
    // Worst case: every text byte escaped to four, generous room for the rest.
    let bound = 256 + time.len() + 4 * text_len(e) + 128 * e.tries.len();
    presized(
        out,
        bound,
        |l| combined_into(e, time, l),
        |v| combined_into(e, time, v),
    );
}

fn combined_into(e: &Entry, time: &str, out: &mut impl Out) {
    put_ip(out, e.remote.ip());
    out.put(b" - ");
    dash_or_escaped(out, e.remote_user.as_deref().map(str::as_bytes));
    out.put(b" [");
    out.put(time.as_bytes());
    out.put(b"] \"");
    match &e.request {
        Some(r) => {
            escape_into(out, r.method.as_str().as_bytes());
            out.push(b' ');
            escape_into(out, e.text.get(Field::Target).unwrap_or(b"/"));
            out.push(b' ');
            out.put(version_str(r.version).as_bytes());
        }
        None => out.push(b'-'),
    }
    out.put(b"\" ");
    put_int(out, e.status);
    out.push(b' ');
    put_int(out, e.body_bytes_sent);
    out.put(b" \"");
    dash_or_escaped(out, e.text.get(Field::Referer));
    out.put(b"\" \"");
    dash_or_escaped(out, e.text.get(Field::UserAgent));
    for (i, field) in [TryField::Addr, TryField::Status, TryField::Time]
        .into_iter()
        .enumerate()
    {
        if i == 2 {
            out.put(b"\" ");
            write_secs(out, e.request_time);
            out.put(b" \"");
        } else {
            out.put(b"\" \"");
        }
        if e.tries.is_empty() {
            out.push(b'-');
        } else {
            write_tries(out, &e.tries, field);
        }
    }
    out.put(b"\"\n");
}

/// Writes `"key":` then a JSON string of `v` (lossy UTF-8), or `null`.
fn json_field(out: &mut impl Out, key: &str, v: Option<&[u8]>) {
    out.put(b",\"");
    out.put(key.as_bytes());
    out.put(b"\":");
    match v {
        Some(b) if b.iter().all(|&c| plain(c)) => {
            out.push(b'"');
            out.put(b);
            out.push(b'"');
        }
        Some(b) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b));
        }
        None => out.put(b"null"),
    }
}

fn json(e: &Entry, time: &str, out: &mut Vec<u8>) {
    // Worst case: every byte as `\u00XX`; the target is written twice.
    let bound = 512 + 6 * (time.len() + 2 * text_len(e)) + 128 * e.tries.len();
    presized(
        out,
        bound,
        |l| json_into(e, time, l),
        |v| json_into(e, time, v),
    );
}

fn json_into(e: &Entry, time: &str, out: &mut impl Out) {
    out.put(b"{\"time\":");
    let _ = serde_json::to_writer(&mut *out, time);
    out.put(b",\"remote_addr\":\"");
    put_ip(out, e.remote.ip());
    out.push(b'"');
    json_field(
        out,
        "remote_user",
        e.remote_user.as_deref().map(str::as_bytes),
    );
    match &e.request {
        Some(r) => {
            let target = e.text.get(Field::Target).unwrap_or(b"/");
            let method = r.method.as_str().as_bytes();
            let version = version_str(r.version).as_bytes();
            if method.iter().chain(target).all(|&c| plain(c)) {
                out.put(b",\"request\":\"");
                for part in [method, b" ", target, b" ", version] {
                    out.put(part);
                }
                out.push(b'"');
            } else {
                let line = [method, b" ", target, b" ", version].concat();
                json_field(out, "request", Some(&line));
            }
            json_field(out, "method", Some(r.method.as_str().as_bytes()));
            json_field(out, "uri", Some(target));
            json_field(out, "protocol", Some(version_str(r.version).as_bytes()));
        }
        None => out.put(b",\"request\":null,\"method\":null,\"uri\":null,\"protocol\":null"),
    }
    json_field(out, "host", e.text.get(Field::Host));
    out.put(b",\"status\":");
    put_int(out, e.status);
    out.put(b",\"body_bytes_sent\":");
    put_int(out, e.body_bytes_sent);
    json_field(out, "http_referer", e.text.get(Field::Referer));
    json_field(out, "http_user_agent", e.text.get(Field::UserAgent));
    out.put(b",\"request_time\":");
    write_secs(out, e.request_time);
    for (key, field) in [
        ("upstream_addr", TryField::Addr),
        ("upstream_status", TryField::Status),
        ("upstream_response_time", TryField::Time),
    ] {
        out.put(b",\"");
        out.put(key.as_bytes());
        out.put(b"\":");
        if e.tries.is_empty() {
            out.put(b"null");
        } else {
            // Addresses, numbers and "-": nothing to escape.
            out.push(b'"');
            write_tries(out, &e.tries, field);
            out.push(b'"');
        }
    }
    out.put(b"}\n");
}

/// `$remote_user`: the user name of a Basic `Authorization` header.
pub fn basic_user(v: &HeaderValue) -> Option<String> {
    use base64::Engine as _;
    let s = v.as_bytes();
    if !s.get(..6)?.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(s[6..].trim_ascii())
        .ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    Some(String::from_utf8_lossy(user).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            remote: "10.1.2.3:5555".parse().unwrap(),
            remote_user: None,
            request: Some(RequestLine {
                method: Method::GET,
                version: Version::HTTP_11,
            }),
            text: RequestText::new(
                &[b"/a?b=1"],
                Some(b"example.com"),
                None,
                Some(b"curl/8 \"x\""),
            ),
            status: 200,
            body_bytes_sent: 12,
            request_time: Duration::from_millis(1234),
            tries: smallvec::smallvec![
                Try {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    status: 502,
                    time: Duration::from_millis(1),
                },
                Try {
                    addr: "127.0.0.1:2".parse().unwrap(),
                    status: 200,
                    time: Duration::from_millis(20),
                },
            ],
        }
    }

    #[test]
    fn combined_line_has_nginx_fields_and_upstream_lists() {
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&entry(), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n'));
        let (head, rest) = line.split_once(" [").unwrap();
        assert_eq!(head, "10.1.2.3 - -");
        let (_time, rest) = rest.split_once("] ").unwrap();
        assert_eq!(
            rest,
            "\"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/8 \\x22x\\x22\" \
             \"127.0.0.1:1, 127.0.0.1:2\" \"502, 200\" 1.234 \"0.001, 0.020\"\n"
        );
    }

    #[test]
    fn combined_without_upstream_uses_dashes() {
        let mut e = entry();
        e.tries.clear();
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&e, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("\"-\" \"-\" 1.234 \"-\"\n"));
    }

    #[test]
    fn unparsed_request_is_a_dash() {
        let mut e = entry();
        e.request = None;
        e.tries.clear();
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&e, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("] \"-\" 200 12 "));
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Json).line(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["request"], serde_json::Value::Null);
        assert_eq!(v["method"], serde_json::Value::Null);
    }

    #[test]
    fn json_line_parses_with_typed_fields() {
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Json).line(&entry(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["request"], "GET /a?b=1 HTTP/1.1");
        assert_eq!(v["http_user_agent"], "curl/8 \"x\"");
        assert_eq!(v["http_referer"], serde_json::Value::Null);
        assert_eq!(v["request_time"], 1.234);
        assert_eq!(v["upstream_addr"], "127.0.0.1:1, 127.0.0.1:2");
        assert_eq!(v["upstream_status"], "502, 200");
        assert_eq!(v["upstream_response_time"], "0.001, 0.020");
    }

    #[test]
    fn request_text_fields_with_gaps() {
        let t = RequestText::new(&[b"http://", b"h", b"/p"], None, Some(b"r"), None);
        assert_eq!(t.get(Field::Target), Some(&b"http://h/p"[..]));
        assert_eq!(t.get(Field::Host), None);
        assert_eq!(t.get(Field::Referer), Some(&b"r"[..]));
        assert_eq!(t.get(Field::UserAgent), None);
        let empty = RequestText::new(&[b"/"], Some(b""), None, Some(b"ua"));
        assert_eq!(empty.get(Field::Host), Some(&b""[..]));
        assert_eq!(empty.get(Field::UserAgent), Some(&b"ua"[..]));
    }

    #[test]
    fn presized_line_matches_the_growing_one() {
        let ugly: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
        let mut e = entry();
        e.remote = "[2001:db8::1]:4444".parse().unwrap();
        e.remote_user = Some("\"al\\ice\u{7f}".into());
        e.text = RequestText::new(
            &[b"/\x01\"q\"", &ugly],
            Some(b"h"),
            Some(&ugly),
            Some(&ugly),
        );
        e.request_time = Duration::from_secs(12_345);
        for _ in 0..3 {
            e.tries.push(Try {
                addr: "[::ffff:10.0.0.1]:65535".parse().unwrap(),
                status: 0,
                time: Duration::from_secs(99_999),
            });
        }
        let time = "29/Nov/2026:21:30:00 +0000";
        let (mut fast, mut slow) = (b"prefix".to_vec(), b"prefix".to_vec());
        combined(&e, time, &mut fast);
        combined_into(&e, time, &mut slow);
        assert_eq!(fast, slow);
        assert!(fast.ends_with(b"\"\n") && fast.len() > 3 * 3000);
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        json(&e, time, &mut fast);
        json_into(&e, time, &mut slow);
        assert_eq!(fast, slow);
        let v: serde_json::Value = serde_json::from_slice(&fast).expect("json line");
        assert_eq!(v["upstream_status"], "502, 200, -, -, -");
        // Too little room: flagged, never a panic.
        let mut small = [0u8; 40];
        let mut line = Line {
            buf: &mut small,
            at: 0,
            overflow: false,
        };
        combined_into(&e, time, &mut line);
        assert!(line.overflow && line.at <= 40);
    }

    #[test]
    fn v4_addresses_match_display() {
        for o in [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255] {
            for port in [0u16, 7, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
                let a = SocketAddr::from(([o, 255 - o, o / 2, 9], port));
                let mut out = Vec::new();
                put_addr(&mut out, a);
                assert_eq!(out, a.to_string().into_bytes());
                out.clear();
                put_ip(&mut out, a.ip());
                assert_eq!(out, a.ip().to_string().into_bytes());
            }
        }
    }

    #[test]
    fn numbers_and_addresses() {
        let mut out = Vec::new();
        for d in [1234, 5, 12_000] {
            write_secs(&mut out, Duration::from_millis(d));
            out.push(b' ');
        }
        put_addr(&mut out, "[::1]:8080".parse().unwrap());
        out.push(b' ');
        put_addr(&mut out, "10.0.0.255:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1.234 0.005 12.000 [::1]:8080 10.0.0.255:80"
        );
    }

    #[test]
    fn basic_auth_user() {
        // "alice:secret"
        let v = HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0");
        assert_eq!(basic_user(&v).as_deref(), Some("alice"));
        assert_eq!(basic_user(&HeaderValue::from_static("Bearer x")), None);
    }
}
