//! End-to-end affinity and spread through a real fulcrum: `hash` on a header and
//! cookie template, and weighted `random`.

mod common;
use common::*;

use std::collections::HashMap;

fn start(balance: &str, servers: &str) -> Fulcrum {
    Fulcrum::start(&format!(
        r#"
[admin]
listen = "off"
[upstream.backend]
{balance}
server = [{servers}]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    ))
}

#[test]
fn hash_on_a_header_and_cookie_template_is_sticky_per_user() {
    let b: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::named(n))
        .collect();
    let servers = b
        .iter()
        .map(|x| format!("\"{}\"", x.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let f = start(
        "balance = \"hash\"\nhash_key = \"$http_x_user:$cookie_sid\"",
        &servers,
    );
    let mut conn = Conn::open(f.addr());
    let mut by_user: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for u in 0..40 {
            let req = format!(
                "GET /item/{round} HTTP/1.1\r\nHost: t\r\nX-User: user{u}\r\nCookie: theme=x; sid=s{u}\r\n\r\n"
            );
            let who = conn.send(req.as_bytes()).text();
            let first = by_user
                .entry(format!("user{u}"))
                .or_insert_with(|| who.clone());
            assert_eq!(*first, who, "user{u} moved on round {round}");
        }
    }
    let used: std::collections::HashSet<&String> = by_user.values().collect();
    assert!(used.len() >= 3, "40 users spread over the pool: {used:?}");
}

#[test]
fn weighted_random_follows_the_weights() {
    let b: Vec<Backend> = ["a", "b"].iter().map(|n| Backend::named(n)).collect();
    let f = start(
        "balance = \"random\"",
        &format!("\"{} weight=3\", \"{}\"", b[0].addr, b[1].addr),
    );
    let mut conn = Conn::open(f.addr());
    for _ in 0..400 {
        assert_eq!(conn.get("/").status, 200);
    }
    let share = b[0].hits() as f64 / 400.0;
    // Expected 0.75; binomial sd ~0.022, so this bound fails only when broken.
    assert!((0.65..=0.85).contains(&share), "{share}");
}
