//! The config watcher: `notify` on the directories of the watched files, debounced,
//! reloading only when a watched file's content (or what its symlinks resolve to)
//! really changed.
//!
//! Directories, not files, are watched: editors save by writing a temp file and
//! renaming it over the original (a watch on the old inode would go deaf), and a
//! Kubernetes ConfigMap volume swaps a `..data` symlink in the file's directory,
//! so the file itself never sees an event. Every event in those directories, after
//! a quiet period, re-reads the watched files and compares a fingerprint (resolved
//! path and content hash): unrelated files, and the truncate-then-write of an
//! in-place save, reload once, and only with the complete text.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{reload, Trigger};
use crate::runtime::Shared;

/// Quiet time after the last event before the files are compared.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Failures starting the watcher (reloads by signal and admin still work).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch config files: {0}")]
pub struct WatchError(#[from] notify::Error);

/// What identifies a watched file's current version.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Fingerprint(Vec<(Option<PathBuf>, Option<u32>)>);

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    Fingerprint(
        paths
            .iter()
            .map(|p| {
                let real = std::fs::canonicalize(p).ok();
                let sum = std::fs::read(p).ok().map(|b| crc32fast::hash(&b));
                (real, sum)
            })
            .collect(),
    )
}

/// The directories to watch for `paths`: each file's own directory and, when it is
/// a symlink, the directory of what it resolves to.
fn dirs_of(paths: &[PathBuf]) -> HashSet<PathBuf> {
    let mut dirs = HashSet::new();
    for p in paths {
        let parent = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        dirs.insert(parent(p));
        if let Ok(real) = std::fs::canonicalize(p) {
            dirs.insert(parent(&real));
        }
    }
    dirs
}

/// Starts watching the files in `shared.control.paths` and reloading on change.
/// The watch set follows the paths each successful reload publishes. The watches
/// are in place when this returns, so a change made right after start-up (once
/// "fulcrum ready" is logged) is never missed.
pub fn spawn(shared: Arc<Shared>) -> Result<(), WatchError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // The receiver only goes away at exit.
        let _ = tx.send(ev);
    })?;
    let mut paths_rx = shared.control.paths.subscribe();
    let paths = paths_rx.borrow_and_update().clone();
    let mut watched = HashSet::new();
    rewatch(&mut watcher, &mut watched, dirs_of(&paths));
    let last = fingerprint(&paths);
    tracing::info!(files = ?paths, "watching config files");
    tokio::spawn(run(
        shared,
        Watching {
            watcher,
            watched,
            paths,
            paths_rx,
            last,
        },
        rx,
    ));
    Ok(())
}

/// The watcher's state, set up before serving starts.
struct Watching {
    watcher: RecommendedWatcher,
    watched: HashSet<PathBuf>,
    paths: Vec<PathBuf>,
    paths_rx: tokio::sync::watch::Receiver<Vec<PathBuf>>,
    last: Fingerprint,
}

fn rewatch(w: &mut RecommendedWatcher, watched: &mut HashSet<PathBuf>, want: HashSet<PathBuf>) {
    for d in watched.difference(&want) {
        let _ = w.unwatch(d);
    }
    for d in want.difference(watched) {
        if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
        }
    }
    *watched = want;
}

async fn run(
    shared: Arc<Shared>,
    w: Watching,
    mut rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
) {
    let Watching {
        mut watcher,
        mut watched,
        mut paths,
        mut paths_rx,
        mut last,
    } = w;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "config watch error");
                    continue;
                }
                None => return,
            },
            r = paths_rx.changed() => {
                if r.is_err() {
                    return;
                }
                paths = paths_rx.borrow_and_update().clone();
                rewatch(&mut watcher, &mut watched, dirs_of(&paths));
                last = fingerprint(&paths);
                continue;
            }
        }
        // Debounce: wait until the directory is quiet.
        while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        let p = paths.clone();
        let now = match tokio::task::spawn_blocking(move || fingerprint(&p)).await {
            Ok(f) => f,
            Err(_) => continue,
        };
        // A symlink swap may point at a new directory.
        rewatch(&mut watcher, &mut watched, dirs_of(&paths));
        if now == last {
            continue;
        }
        last = now;
        // Errors are logged and counted by reload itself.
        let _ = reload(&shared, Trigger::Watch).await;
    }
}
