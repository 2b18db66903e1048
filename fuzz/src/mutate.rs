//! A blind mutation loop: inputs made from the corpus by AFL-style byte
//! mutations (bit flips, interesting bytes, inserts, deletes, copies, repeats, the
//! target's dictionary, splices of two corpus entries), run for a bounded time.
//!
//! It has no coverage feedback (that needs instrumentation, which AFL++ brings
//! locally): it leans on a corpus that coverage-guided runs grew and minimised.
//! The inputs are a function of the seed alone, so a failure seen once is seen
//! again with the same seed; `--save` keeps the input of the run in progress, for
//! the failures that end the process (a stack overflow, an abort).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::corpus::{run_one, Failure};
use crate::Target;

/// Bytes that often sit on a parser's edge.
const INTERESTING: &[u8] = b"\0\x7f\xff\r\n\t :;,=$\"'{}[]#\\0f9-+%";

/// Makes inputs from a corpus.
pub struct Mutator<'a> {
    rng: fastrand::Rng,
    seeds: &'a [Vec<u8>],
    target: &'a Target,
}

impl<'a> Mutator<'a> {
    /// A mutator over `seeds` (an empty corpus starts from an empty input).
    pub fn new(seed: u64, seeds: &'a [Vec<u8>], target: &'a Target) -> Self {
        Mutator {
            rng: fastrand::Rng::with_seed(seed),
            seeds,
            target,
        }
    }

    /// Writes the next input into `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if !self.seeds.is_empty() {
            out.extend_from_slice(&self.seeds[self.rng.usize(..self.seeds.len())]);
        }
        for _ in 0..1 << self.rng.u32(0..4) {
            self.mutate(out);
        }
        out.truncate(self.target.max_len);
    }

    fn pos(&mut self, out: &[u8]) -> usize {
        self.rng.usize(..=out.len())
    }

    fn mutate(&mut self, out: &mut Vec<u8>) {
        let r = &mut self.rng;
        match r.u8(..11) {
            0 if !out.is_empty() => {
                let i = r.usize(..out.len());
                out[i] ^= 1 << r.u8(..8);
            }
            1 if !out.is_empty() => {
                let i = r.usize(..out.len());
                out[i] = INTERESTING[r.usize(..INTERESTING.len())];
            }
            2 if !out.is_empty() => {
                let i = r.usize(..out.len());
                out[i] = out[i].wrapping_add(if r.bool() { 1 } else { 255 });
            }
            3 => {
                let i = self.pos(out);
                let n = self.rng.usize(1..5);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.u8(..)).collect();
                out.splice(i..i, bytes);
            }
            4 if !out.is_empty() => {
                let start = r.usize(..out.len());
                let end = (start + r.usize(1..=16)).min(out.len());
                out.drain(start..end);
            }
            5 if !out.is_empty() => {
                let start = r.usize(..out.len());
                let end = (start + r.usize(1..=64)).min(out.len());
                let piece = out[start..end].to_vec();
                let at = self.pos(out);
                out.splice(at..at, piece);
            }
            6 | 7 if !self.target.dict.is_empty() => {
                let word = self.target.dict[r.usize(..self.target.dict.len())];
                let at = self.pos(out);
                out.splice(at..at, word.iter().copied());
            }
            8 if !self.seeds.is_empty() => {
                let other = &self.seeds[r.usize(..self.seeds.len())];
                let cut = r.usize(..=out.len());
                let from = r.usize(..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            9 if !out.is_empty() => {
                // A few bytes many times: long lines and numbers, nesting depth.
                let i = r.usize(..out.len());
                let piece = out[i..(i + r.usize(1..=4)).min(out.len())].to_vec();
                let times = r.usize(16..=4096) / piece.len();
                out.splice(i..i, piece.repeat(times));
            }
            _ => {
                let at = self.pos(out);
                out.insert(at, INTERESTING[self.rng.usize(..INTERESTING.len())]);
            }
        }
    }
}

/// What a bounded run did.
#[derive(Debug)]
pub struct Outcome {
    /// Inputs run.
    pub execs: u64,
    /// The first input a property failed on.
    pub failure: Option<Failure>,
}

/// One input taking longer than this is a hang: the process ends, naming it.
const HANG: Duration = Duration::from_secs(20);

/// Runs `target` on inputs made from `seeds` for `time`, or until one fails.
/// `save`: a file that holds each input while it runs.
pub fn run(
    target: &Target,
    seeds: &[Vec<u8>],
    seed: u64,
    time: Duration,
    save: Option<&Path>,
) -> Outcome {
    let current = Arc::new(Mutex::new(Vec::new()));
    let execs = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let watchdog = spawn_watchdog(
        target.name,
        seed,
        current.clone(),
        execs.clone(),
        done.clone(),
    );
    let mut m = Mutator::new(seed, seeds, target);
    let mut input = Vec::new();
    let start = Instant::now();
    let mut failure = None;
    while start.elapsed() < time {
        m.next_into(&mut input);
        if let Some(p) = save {
            let _ = std::fs::write(p, &input);
        }
        if let Ok(mut c) = current.lock() {
            c.clone_from(&input);
        }
        let n = execs.fetch_add(1, Ordering::Relaxed);
        if let Err(message) = run_one(target, &input) {
            let from = format!("seed {seed}, iteration {n}");
            failure = Some(Failure {
                from,
                input,
                message,
            });
            break;
        }
    }
    done.store(1, Ordering::Relaxed);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    Outcome {
        execs: execs.load(Ordering::Relaxed),
        failure,
    }
}

/// A thread that ends the process when one input runs longer than [`HANG`],
/// printing the input (escaped) first.
fn spawn_watchdog(
    name: &'static str,
    seed: u64,
    current: Arc<Mutex<Vec<u8>>>,
    execs: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seen = u64::MAX;
        let mut since = Instant::now();
        loop {
            std::thread::park_timeout(HANG / 4);
            if done.load(Ordering::Relaxed) == 1 {
                return;
            }
            let now = execs.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= HANG {
                let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                eprintln!(
                    "fulcrum-fuzz: {name}: one input ran over {HANG:?} (seed {seed}, iteration {}): {}",
                    now.saturating_sub(1),
                    input.escape_ascii()
                );
                std::process::exit(3);
            }
        }
    })
}
