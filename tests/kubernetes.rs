//! `examples/kubernetes/`: the fulcrum.toml in every ConfigMap passes `fulcrum
//! check`; the manifests keep the facts SPEC §7 lists (probes on the admin port,
//! the grace period above preStop + shutdown_timeout, a restricted securityContext,
//! the ConfigMap mounted as a directory, scrape annotations, `resolve = true` for
//! pools of names, HPA and PDB); breaking one on purpose is caught; with
//! `kubernetes-validate` on PATH (`.ci/run` installs it) the manifests pass it in
//! strict mode and a broken one fails. The Dockerfile's facts are checked too.

mod common;
use common::check_config as check;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes")
}

const MANIFESTS: &[&str] = &["sidecar.yaml", "deployment.yaml"];

/// The documents of a multi-document YAML file.
fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("yaml document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn load(name: &str) -> Vec<Value> {
    docs(&std::fs::read_to_string(dir().join(name)).expect("manifest"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn secs(d: &str) -> u64 {
    humantime::parse_duration(d).expect("duration").as_secs()
}

/// A container port by number or name.
fn port_of(container: &Value, port: &Value) -> Option<u64> {
    port.as_u64().or_else(|| {
        container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == *port)?["containerPort"]
            .as_u64()
    })
}

/// The preStop pause in seconds (`sleep` action, or `exec: sleep N`).
fn pre_stop(container: &Value) -> Option<u64> {
    let p = &container["lifecycle"]["preStop"];
    p["sleep"]["seconds"].as_u64().or_else(|| {
        let cmd = p["exec"]["command"].as_array()?;
        cmd.last()?.as_str()?.parse().ok()
    })
}

/// What is wrong with one manifest file, as sentences (empty: nothing).
fn problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let mut fulcrums = 0;
    for d in of_kind(docs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or("?").to_string();
        let pod = &d["spec"]["template"]["spec"];
        pod_security(&name, pod, &mut out);
        let Some(c) = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "fulcrum")
        else {
            continue;
        };
        fulcrums += 1;
        fulcrum_container(&name, docs, d, c, &mut out);
    }
    if fulcrums == 0 {
        out.push("no Deployment runs a container named fulcrum".into());
    }
    out
}

fn pod_security(name: &str, pod: &Value, out: &mut Vec<String>) {
    let sc = &pod["securityContext"];
    if sc["runAsNonRoot"] != true {
        out.push(format!(
            "{name}: pod securityContext.runAsNonRoot is not true"
        ));
    }
    if sc["seccompProfile"]["type"] != "RuntimeDefault" {
        out.push(format!("{name}: pod seccompProfile is not RuntimeDefault"));
    }
    for c in pod["containers"].as_array().into_iter().flatten() {
        let cn = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            out.push(format!(
                "{name}/{cn}: allowPrivilegeEscalation is not false"
            ));
        }
        if sc["readOnlyRootFilesystem"] != true {
            out.push(format!("{name}/{cn}: readOnlyRootFilesystem is not true"));
        }
        let drops = sc["capabilities"]["drop"].as_array();
        if !drops.is_some_and(|d| d.iter().any(|c| c == "ALL")) {
            out.push(format!("{name}/{cn}: capabilities do not drop ALL"));
        }
    }
}

fn fulcrum_container(name: &str, docs: &[Value], d: &Value, c: &Value, out: &mut Vec<String>) {
    let pod = &d["spec"]["template"]["spec"];
    let Some(toml_text) = mounted_config(name, docs, pod, c, out) else {
        return;
    };
    let conf: toml::Value = match toml::from_str(&toml_text) {
        Ok(v) => v,
        Err(e) => return out.push(format!("{name}: config: {e}")),
    };
    let admin = conf["admin"]["listen"].as_str().unwrap_or("127.0.0.1:9901");
    let admin_port: u64 = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if !admin.starts_with("0.0.0.0:") {
        out.push(format!(
            "{name}: admin listens on {admin}, not 0.0.0.0: the kubelet cannot probe it"
        ));
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let g = &c[probe]["httpGet"];
        if g["path"] != path {
            out.push(format!("{name}: {probe} path is {}, not {path}", g["path"]));
        }
        if port_of(c, &g["port"]) != Some(admin_port) {
            out.push(format!(
                "{name}: {probe} is not on the admin port {admin_port}"
            ));
        }
    }
    let shutdown = conf
        .get("global")
        .and_then(|g| g.get("shutdown_timeout"))
        .and_then(|s| s.as_str())
        .map_or(30, secs);
    let pause = pre_stop(c).unwrap_or(0);
    if pause == 0 {
        out.push(format!("{name}: no preStop pause"));
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    if grace <= shutdown + pause {
        out.push(format!(
            "{name}: terminationGracePeriodSeconds {grace} is not above preStop {pause} + shutdown_timeout {shutdown}"
        ));
    }
    let ann = &d["spec"]["template"]["metadata"]["annotations"];
    if ann["prometheus.io/scrape"] != "true"
        || ann["prometheus.io/port"] != admin_port.to_string().as_str()
    {
        out.push(format!(
            "{name}: no Prometheus scrape annotations for port {admin_port}"
        ));
    }
    resolve_pools(name, &conf, out);
}

/// The config the fulcrum container reads: `--config PATH` in a directory where a
/// ConfigMap of the same file is mounted whole (a `subPath` mount never updates).
fn mounted_config(
    name: &str,
    docs: &[Value],
    pod: &Value,
    c: &Value,
    out: &mut Vec<String>,
) -> Option<String> {
    let args: Vec<&str> = c["args"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let path = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]);
    let Some(path) = path.map(Path::new) else {
        out.push(format!("{name}: fulcrum has no --config"));
        return None;
    };
    let (dir, file) = (path.parent()?.to_str()?, path.file_name()?.to_str()?);
    let mount = c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"] == dir);
    let Some(mount) = mount else {
        out.push(format!("{name}: nothing is mounted at {dir}"));
        return None;
    };
    if !mount["subPath"].is_null() {
        out.push(format!(
            "{name}: the config is mounted with subPath: updates never arrive"
        ));
    }
    let vol = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    let cm_name = vol["configMap"]["name"].as_str();
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"].as_str() == cm_name);
    let Some(text) = cm.and_then(|m| m["data"][file].as_str()) else {
        out.push(format!(
            "{name}: no ConfigMap {cm_name:?} with {file} is mounted at {dir}"
        ));
        return None;
    };
    Some(text.to_string())
}

/// Pools of host names follow them through DNS: `resolve = true`.
fn resolve_pools(name: &str, conf: &toml::Value, out: &mut Vec<String>) {
    let Some(pools) = conf.get("upstream").and_then(|u| u.as_table()) else {
        return;
    };
    for (pool, p) in pools {
        let names = p["server"].as_array().into_iter().flatten().any(|s| {
            let addr = s
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.parse::<std::net::IpAddr>().is_err()
        });
        if names && p.get("resolve").and_then(|r| r.as_bool()) != Some(true) {
            out.push(format!(
                "{name}: pool {pool} names hosts without resolve = true"
            ));
        }
    }
}

#[test]
fn every_configmap_config_passes_fulcrum_check() {
    let mut checked = 0;
    for m in MANIFESTS {
        for cm in of_kind(&load(m), "ConfigMap") {
            for (key, text) in cm["data"].as_object().expect("data") {
                if !key.ends_with(".toml") {
                    continue;
                }
                let (code, out) = check(text.as_str().expect("text"));
                assert_eq!(code, Some(0), "{m} {key}: {out}");
                assert!(out.contains("configuration ok"), "{m} {key}: {out}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2, "one config per manifest");
}

#[test]
fn manifests_keep_the_deployment_facts() {
    for m in MANIFESTS {
        let p = problems(&load(m));
        assert!(p.is_empty(), "{m}:\n{}", p.join("\n"));
    }
    let d = load("deployment.yaml");
    let hpa = of_kind(&d, "HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    assert_eq!(hpa[0]["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa[0]["spec"]["scaleTargetRef"]["name"], "fulcrum");
    let pdb = of_kind(&d, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["apiVersion"], "policy/v1");
    let fulcrum = of_kind(&d, "Deployment")
        .into_iter()
        .find(|x| x["metadata"]["name"] == "fulcrum")
        .expect("fulcrum Deployment");
    let labels = &fulcrum["spec"]["template"]["metadata"]["labels"];
    for sel in [
        &pdb[0]["spec"]["selector"]["matchLabels"],
        &of_kind(&d, "Service")[0]["spec"]["selector"],
    ] {
        for (k, v) in sel.as_object().expect("selector") {
            assert_eq!(&labels[k], v, "selector {k} matches the pods");
        }
    }
    assert!(
        of_kind(&d, "Service")
            .iter()
            .any(|s| s["spec"]["clusterIP"] == "None"),
        "a headless Service for the resolve pool"
    );
    assert!(!of_kind(&load("sidecar.yaml"), "Deployment").is_empty());
}

/// Each edit breaks one fact; the check must say so.
#[test]
fn a_broken_manifest_is_caught() {
    let text = std::fs::read_to_string(dir().join("deployment.yaml")).expect("manifest");
    for (from, to) in [
        (
            "terminationGracePeriodSeconds: 40",
            "terminationGracePeriodSeconds: 20",
        ),
        ("path: /readyz", "path: /healthz"),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        ),
        ("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]"),
        ("runAsNonRoot: true", "runAsNonRoot: false"),
        ("type: RuntimeDefault", "type: Unconfined"),
        ("listen = \"0.0.0.0:9901\"", "listen = \"127.0.0.1:9901\""),
        ("    resolve = true\n", ""),
        (
            "mountPath: /etc/fulcrum\n",
            "mountPath: /etc/fulcrum\n              subPath: fulcrum.toml\n",
        ),
        (
            "prometheus.io/port: \"9901\"",
            "prometheus.io/port: \"8080\"",
        ),
        ("seconds: 5", "seconds: 30"),
    ] {
        assert!(text.contains(from), "{from}");
        let broken = text.replacen(from, to, 1);
        assert!(
            !problems(&docs(&broken)).is_empty(),
            "not caught: {from} -> {to}"
        );
    }
}

/// `kubernetes-validate` (PyPI), found on PATH; `None` after a note when it is
/// missing, unless FULCRUM_REQUIRE_TOOLS is set (CI), where that fails.
fn kubernetes_validate() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_none(),
            "kubernetes-validate not found and FULCRUM_REQUIRE_TOOLS is set"
        );
        eprintln!("note: kubernetes-validate not found; skipping the schema check");
    }
    found
}

/// The Kubernetes version validated against (`.ci/run` sets the same).
fn kube_version() -> String {
    std::env::var("FULCRUM_KUBE_VERSION").unwrap_or_else(|_| "1.37.0".into())
}

fn validate(tool: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(["--strict", "--quiet", "-k", &kube_version()])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn manifests_pass_kubernetes_validate_strict_and_a_broken_one_fails() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    for m in MANIFESTS {
        let (ok, text) = validate(&tool, &dir().join(m));
        assert!(ok, "{m}: {text}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(dir().join("deployment.yaml")).expect("manifest");
    for (from, to) in [
        // A field no schema has (strict mode).
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
        ),
        // A wrong type.
        (
            "terminationGracePeriodSeconds: 40",
            "terminationGracePeriodSeconds: forty",
        ),
    ] {
        let broken = tmp.path().join("broken.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).expect("write");
        let (ok, out) = validate(&tool, &broken);
        assert!(!ok, "{to} passed: {out}");
    }
}

#[test]
fn dockerfile_is_multi_stage_release_non_root_with_its_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RUN cargo build --release")),
        "release build"
    );
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    // The manifests' runAsUser is the image's user.
    assert!(text.contains("--uid 10001") && user == "10001");
    let copy = lines
        .iter()
        .find(|l| l.starts_with("COPY ") && l.ends_with(" /etc/fulcrum/fulcrum.toml"))
        .expect("config at /etc/fulcrum/fulcrum.toml");
    let src = copy.split_whitespace().nth(1).expect("source");
    let (code, out) = check(&std::fs::read_to_string(root.join(src)).expect("config"));
    assert_eq!(code, Some(0), "{src}: {out}");
    // Every build input the manifest names is copied in.
    for dir in ["src", "benches"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("COPY {dir} "))),
            "COPY {dir}"
        );
    }
}
