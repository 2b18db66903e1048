//! The running [`AccessLog`]: per-thread shards of formatted lines, and the thread
//! that writes them out.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::entry::Entry;
use super::format::Formatter;
use crate::config::{AccessLogFormat, AccessLogTarget};

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
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(error = %e, errors = self.count, "access log write failed");
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}
