//! `fulcrum check` on the balancing keys: every algorithm accepted, misuse reported
//! with its position.

mod common;
use common::bin;

fn check(config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text, path.display().to_string())
}

const SERVER: &str = r#"
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://a"
"#;

#[test]
fn check_accepts_every_algorithm() {
    for extra in [
        r#"balance = "round_robin""#,
        r#"balance = "least_conn""#,
        r#"balance = "ip_hash""#,
        "balance = \"hash\"\nhash_key = \"$request_uri\"",
        "balance = \"hash\"\nhash_key = \"$http_x_user$cookie_sid\"\nconsistent = true",
        r#"balance = "random""#,
        r#"balance = "random_two_least_conn""#,
        r#"balance = "peak_ewma""#,
    ] {
        let cfg = format!(
            "[upstream.a]\nserver = [\"127.0.0.1:1\", \"127.0.0.1:2 backup\"]\n{extra}\n{SERVER}"
        );
        let (code, text, _) = check(&cfg);
        assert_eq!(code, Some(0), "{extra}: {text}");
        assert!(text.contains("configuration ok"), "{text}");
    }
}

#[test]
fn check_rejects_balancing_misuse_with_positions() {
    let cfg = format!(
        r#"[upstream.a]
server = ["127.0.0.1:1"]
balance = "hash"
[upstream.b]
server = ["127.0.0.1:1"]
hash_key = "$uri"
consistent = true
[upstream.c]
server = ["127.0.0.1:1"]
balance = "fastest"
[upstream.d]
server = ["127.0.0.1:1"]
balance = "hash"
hash_key = "$no_such_var"
{SERVER}"#
    );
    let (code, text, p) = check(&cfg);
    assert_eq!(code, Some(1), "{text}");
    for (line, what) in [
        (3, "balance \"hash\" needs a hash_key"),
        (6, "\"hash_key\" needs balance = \"hash\""),
        (7, "\"consistent\" needs balance = \"hash\""),
        (10, "unknown balance \"fastest\""),
        (14, "no_such_var"),
    ] {
        let prefix = format!("{p}:{line}:");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no {what:?} at line {line}:\n{text}"
        );
    }
}
