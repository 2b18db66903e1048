//! Hot reload: load → validate → bind new listeners → swap → drain removed → summary.
//!
//! Every trigger (the file watcher in [`watch`], `SIGHUP`, `POST /reload`) calls
//! [`reload`]; reloads run one at a time under the lock of [`crate::runtime::Control`]. Nothing changes
//! until the new file has been parsed, validated, compiled into a snapshot and
//! every new listener is bound; then the snapshot is swapped in one atomic store.
//! Live per-server state comes from the same [`crate::upstream::Registry`], so servers that
//! stay keep their health, failure counts, in-flight counts and pooled connections.

pub mod diff;
pub mod watch;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, ConfigError};
use crate::runtime::{bind_all, drain, listen_opts, Listeners, Shared, StartError};
use crate::state::Snapshot;

pub use diff::Summary;

/// What asked for a reload (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`.
    Signal,
    /// `POST /reload`.
    Admin,
    /// The config file (or a file it names) changed.
    Watch,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin",
            Trigger::Watch => "file change",
        }
    }
}

/// Why a reload was rejected; the running config is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate (`PATH:LINE:COL: message` lines).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The snapshot could not be compiled.
    #[error(transparent)]
    Snapshot(crate::state::BuildError),
    /// A new listener could not be bound.
    #[error("{0}")]
    Bind(#[source] StartError),
    /// The loading task panicked.
    #[error("reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Re-reads the config file and applies it without dropping anything. On error the
/// old config keeps serving, the error is logged and counted, and returned.
pub async fn reload(shared: &Arc<Shared>, trigger: Trigger) -> Result<Summary, ReloadError> {
    let started = Instant::now();
    let mut set = shared.control.listeners.lock().await;
    let result = apply(shared, &mut set, started).await;
    report(shared, trigger, result)
}

/// [`reload`] for the watcher: nothing happens when the watched files are as the
/// last reload read them (another trigger applied this change already).
pub async fn reload_if_changed(shared: &Arc<Shared>) -> Option<Result<Summary, ReloadError>> {
    let started = Instant::now();
    let mut set = shared.control.listeners.lock().await;
    let paths = shared.control.paths.borrow().clone();
    let now = tokio::task::spawn_blocking(move || watch::digest(&paths))
        .await
        .ok()?;
    if lock_read(shared).as_ref() == Some(&now) {
        return None;
    }
    let result = apply(shared, &mut set, started).await;
    Some(report(shared, Trigger::Watch, result))
}

fn lock_read(shared: &Shared) -> std::sync::MutexGuard<'_, Option<u64>> {
    // The value is a plain digest: a panic elsewhere cannot leave it inconsistent.
    shared
        .control
        .read
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn report(
    shared: &Arc<Shared>,
    trigger: Trigger,
    result: Result<Summary, ReloadError>,
) -> Result<Summary, ReloadError> {
    match result {
        Ok(summary) => {
            shared.reloads.succeeded();
            tracing::info!(
                trigger = trigger.as_str(),
                elapsed_ms = summary.elapsed_ms,
                "configuration reloaded: {summary}"
            );
            Ok(summary)
        }
        Err(e) => {
            let failures = shared.reloads.failure.fetch_add(1, Ordering::Relaxed) + 1;
            // States created for servers of the rejected config.
            shared.registry.prune();
            tracing::error!(
                trigger = trigger.as_str(),
                failures,
                "reload failed; keeping the running configuration:\n{e}"
            );
            Err(e)
        }
    }
}

async fn apply(
    shared: &Arc<Shared>,
    set: &mut Listeners,
    started: Instant,
) -> Result<Summary, ReloadError> {
    // Parsing and compiling a large file takes milliseconds of CPU: keep it off the
    // workers serving traffic.
    let sh = shared.clone();
    let (snap, paths, mut summary) = tokio::task::spawn_blocking(move || load(&sh)).await??;

    let opts = listen_opts(&snap);
    let wanted: HashSet<SocketAddr> = opts.keys().copied().collect();
    let removed: Vec<SocketAddr> = set
        .keys()
        .filter(|k| !wanted.contains(k))
        .copied()
        .collect();
    // Every new socket is bound before anything changes: a failure leaves all as it was.
    let bound = bind_all(wanted.iter().filter(|k| !set.contains(k)).copied())
        .await
        .map_err(ReloadError::Bind)?;

    // Removed listeners stop accepting and tell their connections to finish first,
    // so no request on them starts on the new snapshot (which has no routes there).
    let grace = snap.global.shutdown_timeout;
    for key in &removed {
        if let Some(g) = set.stop(key).await {
            tokio::spawn(drain(*key, g, grace));
        }
    }
    shared.snapshot.store(Arc::new(snap));
    for (key, l) in bound {
        let local = l.local_addr().unwrap_or(key);
        summary.bound.push((key, local));
        set.spawn(shared, key, l, opts[&key]);
    }
    for (key, o) in &opts {
        if set.update(key, *o) {
            summary.listeners.changed.push(key.to_string());
        }
    }
    // Forgetting removed servers walks every live state and metric series (10,000
    // servers take a while): off the workers serving traffic too.
    let sh = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        sh.registry.prune();
        crate::metrics::retain(&sh.snapshot.load().metric_labels());
    })
    .await;
    shared.control.paths.send_if_modified(|p| {
        let changed = *p != paths;
        *p = paths;
        changed
    });
    summary.elapsed_ms = elapsed_ms(started.elapsed());
    Ok(summary)
}

/// Reads, validates and compiles the config file (blocking: milliseconds of CPU for
/// a large file), recording what it read for the watcher.
fn load(sh: &Shared) -> Result<(Snapshot, Vec<std::path::PathBuf>, Summary), ReloadError> {
    let t = Instant::now();
    // Read before loading: a change made while loading is then seen as new.
    let old = sh.control.paths.borrow().clone();
    *lock_read(sh) = Some(watch::digest(&old));
    let cfg = config::load(&sh.config_path)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let loaded = t.elapsed();
    let paths = cfg.watch_paths();
    if paths != old {
        *lock_read(sh) = Some(watch::digest(&paths));
    }
    let snap = Snapshot::build(cfg, &sh.registry).map_err(ReloadError::Snapshot)?;
    let built = t.elapsed();
    let summary = diff::summarize(&sh.snapshot.load(), &snap);
    tracing::debug!(
        load_ms = elapsed_ms(loaded),
        build_ms = elapsed_ms(built - loaded),
        diff_ms = elapsed_ms(t.elapsed() - built),
        "reload phases"
    );
    Ok((snap, paths, summary))
}

fn elapsed_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// `POST /reload`: 200 with the JSON summary, or 400 with the error text.
pub async fn admin_answer(
    shared: &Arc<Shared>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, ctype, body) = match reload(shared, Trigger::Admin).await {
        Ok(s) => (
            http::StatusCode::OK,
            "application/json",
            serde_json::to_vec(&s).unwrap_or_default(),
        ),
        Err(e) => (
            http::StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{e}\n").into_bytes(),
        ),
    };
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}
