//! `fulcrum-fuzz`: runs the fuzz targets over their corpora and mutations of them.
//!
//! ```text
//! fulcrum-fuzz list
//! fulcrum-fuzz replay TARGET [FILE|DIR...]     (default: fuzz/corpus/TARGET)
//! fulcrum-fuzz run TARGET|all [--secs N] [--seed S] [--save FILE] [--crashes DIR]
//! ```
//!
//! `run` replays the target's corpus, then mutates it for the time given (`all`:
//! shared among the targets). A failing input is written to the crashes directory
//! (default `target/fuzz-crashes`) and the exit status is 1. Targets that resolve
//! host names run only without a network: `unshare -n fulcrum-fuzz run all`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fulcrum_fuzz::corpus::{self, Failure};
use fulcrum_fuzz::{mutate, network_isolated, target, Target, TARGETS};

/// `run`'s options.
struct RunOpts {
    secs: f64,
    seed: u64,
    save: Option<PathBuf>,
    crashes: PathBuf,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => {
            TARGETS.iter().for_each(|t| println!("{}", t.name));
            Ok(true)
        }
        Some("replay") if args.len() >= 2 => replay(&args[1], &args[2..]),
        Some("run") if args.len() >= 2 => parse_opts(&args[2..]).and_then(|o| run(&args[1], &o)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fulcrum-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "usage: fulcrum-fuzz list | replay TARGET [PATH...] | \
    run TARGET|all [--secs N] [--seed S] [--save FILE] [--crashes DIR]";

fn parse_opts(args: &[String]) -> Result<RunOpts, String> {
    let mut o = RunOpts {
        secs: 10.0,
        seed: fastrand::u64(..),
        save: None,
        crashes: PathBuf::from("target/fuzz-crashes"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--secs" => o.secs = value.parse().map_err(|e| bad(&e))?,
            "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
            "--save" => o.save = Some(PathBuf::from(value)),
            "--crashes" => o.crashes = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn find(name: &str) -> Result<&'static Target, String> {
    let t = target(name).ok_or_else(|| format!("no target {name:?}\n{USAGE}"))?;
    if t.resolves && !network_isolated() {
        return Err(format!(
            "{name} resolves host names: run it without a network (unshare -n)"
        ));
    }
    Ok(t)
}

/// Prints a failure and keeps its input.
fn report(t: &Target, f: &Failure, crashes: &Path) {
    let kept = corpus::save(crashes, t, &f.input).map_or_else(
        |e| format!("not kept: {e}"),
        |p| format!("kept in {}", p.display()),
    );
    eprintln!(
        "FAILED {} ({}): {}\n  input ({kept}): {}",
        t.name,
        f.from,
        f.message,
        f.input.escape_ascii()
    );
}

fn replay(name: &str, paths: &[String]) -> Result<bool, String> {
    let t = find(name)?;
    let dirs: Vec<PathBuf> = match paths {
        [] => vec![corpus::dir(name)],
        _ => paths.iter().map(PathBuf::from).collect(),
    };
    let mut ok = true;
    for d in dirs {
        let inputs = corpus::load(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let failures = corpus::replay(t, &inputs);
        println!(
            "{name}: {} inputs from {}, {} failed",
            inputs.len(),
            d.display(),
            failures.len()
        );
        for f in &failures {
            report(t, f, Path::new("target/fuzz-crashes"));
        }
        ok &= failures.is_empty();
    }
    Ok(ok)
}

fn run(name: &str, o: &RunOpts) -> Result<bool, String> {
    let targets: Vec<&Target> = match name {
        "all" => TARGETS.iter().collect(),
        _ => vec![target(name).ok_or_else(|| format!("no target {name:?}"))?],
    };
    for t in &targets {
        find(t.name)?;
    }
    let each = Duration::from_secs_f64(o.secs / targets.len() as f64);
    println!("fulcrum-fuzz: seed {} ({:?} a target)", o.seed, each);
    let mut ok = true;
    for t in targets {
        let inputs = corpus::load(&corpus::dir(t.name)).unwrap_or_default();
        let failures = corpus::replay(t, &inputs);
        failures.iter().for_each(|f| report(t, f, &o.crashes));
        let seeds: Vec<Vec<u8>> = inputs.into_iter().map(|(_, b)| b).collect();
        let out = mutate::run(t, &seeds, o.seed, each, o.save.as_deref());
        println!(
            "{}: corpus {} replayed, {} failed; {} mutated inputs run, {}",
            t.name,
            seeds.len(),
            failures.len(),
            out.execs,
            if out.failure.is_some() {
                "FAILED"
            } else {
                "no failure"
            }
        );
        if let Some(f) = &out.failure {
            report(t, f, &o.crashes);
        }
        ok &= failures.is_empty() && out.failure.is_none();
    }
    Ok(ok)
}
