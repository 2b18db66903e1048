//! The shipped monitoring examples: `examples/prometheus.yml` is a valid Prometheus
//! config, and every query of `examples/grafana-dashboard.json` is valid PromQL over
//! metric names a running fulcrum exports (checked with promtool; skipped with a note
//! when promtool is missing unless FULCRUM_REQUIRE_TOOLS is set); `examples/embed.rs`
//! runs and exits on its own.

mod common;
use common::*;

use std::collections::HashSet;
use std::path::Path;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn prometheus_example_config_is_valid() {
    let path = example("prometheus.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("metrics_path: /metrics"));
    promtool(&["check", "config", path.to_str().unwrap()], None);
}

/// Every PromQL expression of the dashboard: panel targets and annotations.
fn dashboard_exprs(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push(e.to_string());
        }
    }
    out
}

/// The metric names a fulcrum with one health-checked pool exports.
fn exported_names() -> HashSet<String> {
    let b = Backend::named("a");
    let f = Fulcrum::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
server = ["{}"]
[upstream.app.health_check]
interval = "1h"
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://app"
"#,
        b.addr
    ));
    let text = get(f.admin.unwrap(), "/metrics").text();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_metrics() {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("grafana-dashboard.json")).unwrap())
            .expect("dashboard is JSON");
    let titles: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for want in [
        "request rate",
        "error ratio",
        "p50 / p99",
        "server up",
        "reloads",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want}: {titles:?}"
        );
    }
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 15, "{} queries", exprs.len());

    let names = exported_names();
    let re = regex::Regex::new(r"\b(?:fulcrum|process)_[a-z_]+").unwrap();
    for e in &exprs {
        for m in re.find_iter(e) {
            assert!(
                names.contains(m.as_str()),
                "dashboard uses {} which fulcrum does not export",
                m.as_str()
            );
        }
    }

    // promtool parses PromQL when it checks a rules file: one recording rule per query,
    // with Grafana's variables replaced by what they expand to.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$upstream", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()], None);
}

/// `examples/embed.rs` runs, proxies one request to its demo backend and exits on its
/// own. `cargo test` builds the examples; a run of only this test file does not, and
/// then it is skipped with a note.
#[test]
fn embed_example_proxies_one_request_and_exits() {
    let dir = bin().parent().expect("a directory").join("examples");
    let exe = dir.join(format!("embed{}", std::env::consts::EXE_SUFFIX));
    if !exe.exists() {
        // CI runs the whole `cargo test`, which builds it: there a skip would hide a
        // broken example.
        assert!(
            std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_none(),
            "{} not built (run the whole `cargo test`)",
            exe.display()
        );
        eprintln!("note: {} not built, skipping", exe.display());
        return;
    }
    let mut child = std::process::Command::new(&exe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the embed example");
    let exited = eventually(20, || child.try_wait().ok().flatten().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("its output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(exited, "the example did not exit on its own: {text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("status: 200 OK"), "{text}");
    assert!(text.contains("body: hello from demo backend"), "{text}");
}
