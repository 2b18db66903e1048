//! Admin API for servers: `/status` fields, drain/enable, bearer token.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

fn config(servers: &str, admin_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{admin_extra}
[upstream.backend]
server = [{servers}]
[[server]]
listen = ["127.0.0.1:0"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
"#
    )
}

fn post(admin: SocketAddr, path: &str, auth: Option<&str>) -> Resp {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    raw(
        admin,
        format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("admin request")
}

fn status(f: &Fulcrum) -> serde_json::Value {
    let r = get(f.admin.expect("admin"), "/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).expect("json")
}

fn server(f: &Fulcrum, addr: SocketAddr) -> serde_json::Value {
    let s = status(f);
    s["upstreams"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["addr"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no {addr} in {s}"))
}

#[test]
fn status_reports_every_server_with_its_fields() {
    let (a, bk, down) = (
        Backend::named("a"),
        Backend::named("bk"),
        Backend::named("d"),
    );
    let dead = dead_addr();
    let f = Fulcrum::start(&config(
        &format!(
            r#""{} weight=3", "{dead}", "{} down", "{} backup""#,
            a.addr, down.addr, bk.addr
        ),
        "",
    ));
    for _ in 0..6 {
        assert_eq!(get(f.addr(), "/").text(), "a");
    }
    let s = status(&f);
    let ups = s["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0]["name"], "backend");
    let servers = ups[0]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 4);
    for srv in servers {
        for key in [
            "addr",
            "backup",
            "weight",
            "state",
            "active_requests",
            "requests",
            "failures",
        ] {
            assert!(srv.get(key).is_some(), "{key} missing in {srv}");
        }
    }
    let sa = server(&f, a.addr);
    assert_eq!(sa["state"], "up");
    assert_eq!(sa["weight"], 3);
    assert_eq!(sa["backup"], false);
    assert_eq!(sa["requests"], 6);
    assert_eq!(sa["failures"], 0);
    assert_eq!(sa["active_requests"], 0);
    let sd = server(&f, dead);
    assert_eq!(sd["state"], "failed");
    assert_eq!(sd["failures"], 1);
    assert_eq!(server(&f, down.addr)["state"], "down");
    let sb = server(&f, bk.addr);
    assert_eq!(
        (sb["backup"].clone(), sb["requests"].clone()),
        (true.into(), 0.into())
    );
}

#[test]
fn drain_stops_new_requests_while_in_flight_finishes_and_enable_restores() {
    let slow = |name: &'static str| -> Handler {
        Arc::new(move |parts: &http::request::Parts, _: &Bytes| {
            if parts.uri.path() == "/slow" {
                // Blocks this backend's only worker: fine, the other one serves.
                std::thread::sleep(Duration::from_millis(1500));
            }
            http::Response::new(Full::new(Bytes::from(name)))
        })
    };
    let (a, b) = (Backend::with(slow("a")), Backend::with(slow("b")));
    let f = Fulcrum::start(&config(&format!(r#""{}", "{}""#, a.addr, b.addr), ""));
    let addr = f.addr();
    let inflight = std::thread::spawn(move || get(addr, "/slow"));
    assert!(eventually(5, || a.hits() + b.hits() == 1));
    let (busy, other, busy_name, other_name) = if a.hits() == 1 {
        (&a, &b, "a", "b")
    } else {
        (&b, &a, "b", "a")
    };
    let admin = f.admin.unwrap();
    let r = post(
        admin,
        &format!("/upstream/backend/server/{}/drain", busy.addr),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = server(&f, busy.addr);
    assert_eq!(s["state"], "draining");
    assert_eq!(s["active_requests"], 1);
    for _ in 0..10 {
        assert_eq!(get(f.addr(), "/").text(), other_name);
    }
    assert_eq!(busy.hits(), 1, "a drained server got a new request");
    let done = inflight.join().unwrap();
    assert_eq!((done.status, done.text().as_str()), (200, busy_name));
    assert_eq!(server(&f, busy.addr)["active_requests"], 0);
    assert!(f.wait_log("admin drain", 5).is_some());

    let r = post(
        admin,
        &format!("/upstream/backend/server/{}/enable", busy.addr),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(server(&f, busy.addr)["state"], "up");
    let before = other.hits();
    let names: Vec<String> = (0..4).map(|_| get(f.addr(), "/").text()).collect();
    assert!(names.iter().any(|n| n == busy_name), "{names:?}");
    assert!(other.hits() > before);
}

#[test]
fn token_guards_mutating_calls_and_unknown_targets_are_404() {
    let a = Backend::named("a");
    let f = Fulcrum::start(&config(&format!(r#""{}""#, a.addr), r#"token = "s3cret""#));
    let admin = f.admin.unwrap();
    let drain = format!("/upstream/backend/server/{}/drain", a.addr);
    assert_eq!(post(admin, &drain, None).status, 401);
    assert_eq!(post(admin, &drain, Some("Bearer wrong")).status, 401);
    assert_eq!(post(admin, &drain, Some("Bearer s3cre")).status, 401);
    assert_eq!(post(admin, &drain, Some("s3cret")).status, 401);
    assert_eq!(server(&f, a.addr)["state"], "up");
    // Reading needs no token.
    assert_eq!(get(admin, "/status").status, 200);
    assert_eq!(post(admin, &drain, Some("Bearer s3cret")).status, 200);
    assert_eq!(server(&f, a.addr)["state"], "draining");
    assert_eq!(get(f.addr(), "/").status, 502);
    let ok = Some("Bearer s3cret");
    assert_eq!(
        post(
            admin,
            &format!("/upstream/nope/server/{}/drain", a.addr),
            ok
        )
        .status,
        404
    );
    assert_eq!(
        post(admin, "/upstream/backend/server/127.0.0.1:1/drain", ok).status,
        404
    );
    assert_eq!(
        post(
            admin,
            &format!("/upstream/backend/server/{}/pause", a.addr),
            ok
        )
        .status,
        404
    );
    let enable = format!("/upstream/backend/server/{}/enable", a.addr);
    assert_eq!(post(admin, &enable, None).status, 401);
    assert_eq!(post(admin, &enable, ok).status, 200);
    assert_eq!(get(f.addr(), "/").text(), "a");
}
