//! Every checked-in corpus input passes its target's properties: the crashes the
//! fuzzers found stay fixed. Targets that resolve host names run in a process of
//! their own without a network (`unshare -n`); where that cannot be had the test
//! says so and skips them, unless FULCRUM_REQUIRE_TOOLS is set.

use std::process::Command;

use fulcrum_fuzz::corpus::{self, replay};
use fulcrum_fuzz::{network_isolated, TARGETS};

#[test]
fn every_target_has_a_corpus() {
    for t in TARGETS {
        let inputs = corpus::load(&corpus::dir(t.name)).expect("corpus directory");
        assert!(inputs.len() >= 3, "{}: {} inputs", t.name, inputs.len());
    }
}

#[test]
fn corpora_replay_clean() {
    for t in TARGETS.iter().filter(|t| !t.resolves || network_isolated()) {
        let inputs = corpus::load(&corpus::dir(t.name)).expect("corpus");
        let failures = replay(t, &inputs);
        assert!(failures.is_empty(), "{}: {failures:#?}", t.name);
    }
}

#[test]
fn resolving_targets_replay_clean_without_a_network() {
    if network_isolated() {
        return; // corpora_replay_clean ran them.
    }
    for t in TARGETS.iter().filter(|t| t.resolves) {
        let out = Command::new("unshare")
            .args(["-n", env!("CARGO_BIN_EXE_fulcrum-fuzz"), "replay", t.name])
            .output();
        let out = match out {
            Ok(o) if o.status.success() || o.status.code() == Some(1) => o,
            other => {
                let why = format!("{}: no network namespace here: {other:?}", t.name);
                assert!(std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_none(), "{why}");
                eprintln!("skipped {why}");
                continue;
            }
        };
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains(" 0 failed"),
            "{}: {said}{}",
            t.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
