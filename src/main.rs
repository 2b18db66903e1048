//! The `fulcrum` binary: command line, logging, runtime, signals.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use fulcrum::config;
use fulcrum::reload;
use fulcrum::runtime::Instance;

#[derive(Parser)]
#[command(name = "fulcrum", version, about = "HTTP reverse-proxy load balancer")]
struct Cli {
    /// Config file (default: $FULCRUM_CONFIG, then config/fulcrum.toml).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate the config, like `nginx -t`.
    Check,
    /// Translate an nginx config to fulcrum TOML on stdout; warnings on stderr.
    Convert {
        /// The nginx config file (its includes are followed).
        nginx_conf: PathBuf,
    },
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("FULCRUM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/fulcrum.toml"))
}

/// mimalloc: the proxy allocates small short-lived buffers per request, where glibc's
/// malloc showed up at ~6% of CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Convert { nginx_conf }) = &cli.command {
        return convert(nginx_conf);
    }
    let path = config_path(&cli);
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Check) = cli.command {
        for w in &cfg.warnings {
            eprintln!("{w}");
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    init_logging(cfg.global.log_level.as_deref());
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `fulcrum convert`: TOML on stdout, one warning a line and the summary on stderr.
fn convert(path: &std::path::Path) -> ExitCode {
    match fulcrum::convert::convert(path) {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("{w}");
            }
            eprintln!(
                "fulcrum convert: {} directives carried, {} warned",
                out.carried,
                out.warnings.len()
            );
            print!("{}", out.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn run(cfg: config::Config) -> anyhow::Result<()> {
    let threads = cfg.global.worker_threads;
    // One worker: a current-thread runtime has no work-stealing overhead.
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            b.worker_threads(threads);
        }
        b.enable_all().build()?
    };
    rt.block_on(serve(cfg))
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let admin = cfg.admin.clone();
    // Without the admin API nothing can scrape /metrics: requests skip the counting.
    fulcrum::metrics::set_recording(admin.is_some());
    let demo_requests = cfg.demo_requests;
    if !cfg.demo.is_empty() {
        let addrs = fulcrum::demo::start(&cfg.demo).await?;
        tracing::info!(?addrs, "demo backends started");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let instance = Instance::start(cfg).await?;
    if let Some(a) = admin {
        fulcrum::admin::start(a.listen, a.token.clone(), instance.shared.clone()).await?;
    }
    let health = fulcrum::health::spawn(instance.shared.clone());
    // `resolve` pools get their first answers before the instance says it is ready.
    let _discovery = fulcrum::discovery::start(instance.shared.clone()).await;
    instance
        .shared
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Without a watcher, SIGHUP and POST /reload still reload.
    if let Err(e) = reload::watch::spawn(instance.shared.clone()) {
        tracing::warn!(error = %e, "config file changes will not be picked up");
    }
    tracing::info!("fulcrum ready");
    if demo_requests > 0 {
        if let Some((addr, _)) = instance.local_addrs().first().copied() {
            tokio::spawn(fulcrum::demo::show(addr, demo_requests));
        }
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // Logged and counted inside; the running config stays on failure.
            _ = hup.recv() => {
                if reload::reload(&instance.shared, reload::Trigger::Signal).await.is_ok() {
                    health.notify();
                }
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    // The grace period of the config running now, which may have been reloaded.
    let grace = instance.shared.snapshot.load().global.shutdown_timeout;
    let shared = instance.shared.clone();
    instance.shutdown(grace).await;
    // Lines of requests that just finished are still queued: write them out.
    let snap = shared.snapshot.load_full();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(log) = &snap.access_log {
            log.flush(std::time::Duration::from_secs(5));
        }
    })
    .await;
    tracing::info!("bye");
    Ok(())
}
