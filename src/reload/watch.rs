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

use super::reload_if_changed;
use crate::runtime::Shared;

/// Quiet time after the last event before the files are compared.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Failures starting the watcher (reloads by signal and admin still work).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch config files: {0}")]
pub struct WatchError(#[from] notify::Error);

/// What identifies a watched file's current version.
#[derive(Debug, PartialEq, Eq, Clone, Hash)]
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

/// A digest of the files' resolved paths and contents, kept by [`crate::runtime::Control`] as what the
/// last reload read.
pub fn digest(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fingerprint(paths).0.hash(&mut h);
    h.finish()
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

/// The file names whose events matter: the watched files and what their symlinks
/// resolve to. Other files in the same directories (a log file beside the config,
/// say) must neither trigger a re-read nor keep the debounce from ever going quiet.
fn names_of(paths: &[PathBuf]) -> HashSet<std::ffi::OsString> {
    let mut names = HashSet::new();
    for p in paths {
        names.extend(p.file_name().map(|n| n.to_os_string()));
        if let Ok(real) = std::fs::canonicalize(p) {
            names.extend(real.file_name().map(|n| n.to_os_string()));
        }
    }
    names
}

/// Whether an event may concern a watched file: it names one, or a Kubernetes
/// ConfigMap entry (`..data`, `..2026_11_29_...`), or it names nothing (a rescan).
/// A file opened, read or closed unwritten changed nothing: inotify reports the
/// watcher's own reads of the files, which would otherwise start the next
/// comparison, a read every debounce period for as long as fulcrum runs.
fn relevant(ev: &notify::Result<notify::Event>, names: &HashSet<std::ffi::OsString>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    let Ok(ev) = ev else {
        return true;
    };
    if matches!(ev.kind, EventKind::Access(k) if k != AccessKind::Close(AccessMode::Write)) {
        return false;
    }
    ev.paths.is_empty()
        || ev.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.contains(n) || n.to_str().is_some_and(|s| s.starts_with(".."))
            })
        })
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
    shared
        .control
        .read
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(|| digest(&paths));
    tracing::info!(files = ?paths, "watching config files");
    tokio::spawn(run(
        shared,
        Watching {
            watcher,
            watched,
            paths,
            paths_rx,
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
    } = w;
    let mut names = names_of(&paths);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) if !relevant(&ev, &names) => continue,
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
                names = names_of(&paths);
                continue;
            }
        }
        // Debounce: wait until the watched files have been quiet for DEBOUNCE
        // (events about other files neither count nor extend the wait).
        let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(quiet_at) => break,
                ev = rx.recv() => match ev {
                    Some(ev) if relevant(&ev, &names) => {
                        quiet_at = tokio::time::Instant::now() + DEBOUNCE;
                    }
                    Some(_) => {}
                    None => return,
                },
            }
        }
        // A symlink swap may point at a new directory (and a new file name).
        rewatch(&mut watcher, &mut watched, dirs_of(&paths));
        names = names_of(&paths);
        // Errors are logged and counted by the reload itself.
        let _ = reload_if_changed(&shared).await;
    }
}
