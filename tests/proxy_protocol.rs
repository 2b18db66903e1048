//! `proxy_protocol = true` listeners: a PROXY v1 or v2 header from a raw client sets
//! `$remote_addr`/`$remote_port` (seen by the backend through `proxy_set_header`,
//! and by `ip_hash`); a connection without a valid header is closed and nothing
//! reaches the backend.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const REQ: &[u8] = b"GET /pp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A fulcrum with `proxy_protocol = true` in front of `backends`, passing the
/// client's address and port as headers.
fn start(backends: &[SocketAddr], upstream: &str) -> Fulcrum {
    let cfg = proxy_config(
        backends,
        upstream,
        "proxy_protocol = true\nclient_header_timeout = \"2s\"",
    ) + "proxy_set_header = { X-Real-IP = \"$remote_addr\", X-Port = \"$remote_port\", \
         X-Forwarded-For = \"$proxy_add_x_forwarded_for\" }\n";
    Fulcrum::start(&cfg)
}

/// Sends `parts` as separate writes (a pause between them, so they arrive as
/// separate segments), then reads everything until the connection closes.
fn send(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The server may close after refusing a first part.
        if s.write_all(p).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A v2 header (PROXY command, TCP over IPv4) for `src` → `dst`.
fn v2_tcp4(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("v4 addresses")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

fn header(b: &Backend, name: &str) -> Option<String> {
    let last = b.last.lock().unwrap();
    let parts = last.as_ref()?;
    Some(parts.headers.get(name)?.to_str().ok()?.to_string())
}

fn ok(out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn v1_tcp4_names_the_client() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    ok(&send(
        f.addr(),
        &[b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n", REQ],
    ));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("203.0.113.7"));
    assert_eq!(header(&b, "x-port").as_deref(), Some("51000"));
    assert_eq!(
        header(&b, "x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
}

#[test]
fn v1_tcp6_names_the_client() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    let mut req = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 80\r\n".to_vec();
    req.extend_from_slice(REQ);
    ok(&send(f.addr(), &[&req]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("2001:db8::7"));
    assert_eq!(header(&b, "x-port").as_deref(), Some("443"));
}

#[test]
fn v2_tcp4_names_the_client_even_split_across_writes() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    let h = v2_tcp4(
        "198.51.100.9:40000".parse().unwrap(),
        "192.0.2.1:80".parse().unwrap(),
    );
    // Header and request in one write.
    let mut all = h.clone();
    all.extend_from_slice(REQ);
    ok(&send(f.addr(), &[&all]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("198.51.100.9"));
    assert_eq!(header(&b, "x-port").as_deref(), Some("40000"));
    // Split inside the signature and inside the addresses.
    *b.last.lock().unwrap() = None;
    ok(&send(f.addr(), &[&h[..5], &h[5..20], &h[20..], REQ]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("198.51.100.9"));
}

#[test]
fn v2_tcp6_with_tlvs_names_the_client() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    let src: std::net::Ipv6Addr = "2001:db8::42".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    // An ALPN TLV (type 0x01) after the addresses: counted in the length, skipped.
    let tlv = [0x01, 0x00, 0x02, b'h', b'2'];
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21]);
    h.extend_from_slice(&((36 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&4242u16.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(&tlv);
    h.extend_from_slice(REQ);
    ok(&send(f.addr(), &[&h]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("2001:db8::42"));
    assert_eq!(header(&b, "x-port").as_deref(), Some("4242"));
}

#[test]
fn v1_split_across_writes() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    ok(&send(
        f.addr(),
        &[
            b"PROX",
            b"Y TCP4 203.0.113.8 19",
            b"2.0.2.1 5 80\r",
            b"\n",
            REQ,
        ],
    ));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("203.0.113.8"));
    assert_eq!(header(&b, "x-port").as_deref(), Some("5"));
}

#[test]
fn v2_local_and_v1_unknown_keep_the_socket_peer() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(REQ);
    ok(&send(f.addr(), &[&local]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("127.0.0.1"));
    *b.last.lock().unwrap() = None;
    ok(&send(f.addr(), &[b"PROXY UNKNOWN\r\n", REQ]));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[test]
fn a_connection_without_a_valid_header_is_closed_and_never_forwarded() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    // A v1 line over the protocol's 107 bytes.
    let long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
    let bad: [&[u8]; 5] = [
        REQ,
        b"PROXY TCP4 not.an.ip 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY FOO 1.2.3.4 1.2.3.4 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02garbage-garbage-garbage\r\n\r\n",
        &long,
    ];
    for req in bad {
        let out = send(f.addr(), &[req]);
        assert!(
            out.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(b.hits(), 0, "nothing reaches the backend");
}

#[test]
fn a_stalled_header_is_closed_after_client_header_timeout() {
    let b = Backend::named("a");
    let f = start(&[b.addr], "");
    let started = Instant::now();
    let out = send(f.addr(), &[b"PROXY TCP4 203.0.113.7"]);
    let took = started.elapsed();
    assert!(out.is_empty());
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    assert!(took < Duration::from_secs(20), "closed after {took:?}");
    assert_eq!(b.hits(), 0);
}

#[test]
fn ip_hash_hashes_the_proxy_client() {
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::named(n)).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let f = start(&addrs, "balance = \"ip_hash\"");
    let body = |client: &str| {
        let mut req = format!("PROXY TCP4 {client} 192.0.2.1 1000 80\r\n").into_bytes();
        req.extend_from_slice(REQ);
        let out = send(f.addr(), &[&req]);
        ok(&out);
        String::from_utf8_lossy(&out)
            .rsplit("\r\n")
            .next()
            .unwrap_or("")
            .to_string()
    };
    // Every socket peer is 127.0.0.1: only the PROXY client can spread the picks.
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        let client = format!("10.{n}.7.1");
        let first = body(&client);
        assert_eq!(body(&client), first, "{client} sticks to one server");
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "picks {seen:?}");
}

#[test]
fn servers_on_one_address_must_agree_on_proxy_protocol() {
    let cfg = |second: &str| {
        format!(
            r#"
[upstream.a]
server = ["127.0.0.1:9"]
[[server]]
listen = ["127.0.0.1:18080"]
proxy_protocol = true
[[server.location]]
path = "/"
proxy_pass = "http://a"
[[server]]
listen = ["127.0.0.1:18080"]
server_name = ["other"]
{second}
[[server.location]]
path = "/"
proxy_pass = "http://a"
"#
        )
    };
    let (code, text) = check_config(&cfg(""));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("every server on listen 127.0.0.1:18080 must have the same proxy_protocol"),
        "{text}"
    );
    let (code, text) = check_config(&cfg("proxy_protocol = true"));
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn the_access_log_records_the_proxy_client() {
    let b = Backend::named("a");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let cfg = format!(
        "[global]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n{}",
        log.display(),
        proxy_config(&[b.addr], "", "proxy_protocol = true")
    );
    let f = Fulcrum::start(&cfg);
    ok(&send(
        f.addr(),
        &[b"PROXY TCP4 203.0.113.77 192.0.2.1 51000 80\r\n", REQ],
    ));
    let logged = eventually(10, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"remote_addr\":\"203.0.113.77\""))
    });
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn http2_listeners_read_the_header_before_sniffing_the_protocol() {
    let b = Backend::named("a");
    let cfg = proxy_config(&[b.addr], "", "proxy_protocol = true\nhttp2 = true")
        + "proxy_set_header = { X-Real-IP = \"$remote_addr\" }\n";
    let f = Fulcrum::start(&cfg);
    ok(&send(
        f.addr(),
        &[b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 80\r\n", REQ],
    ));
    assert_eq!(header(&b, "x-real-ip").as_deref(), Some("203.0.113.9"));
    assert!(send(f.addr(), &[REQ]).is_empty(), "no header: closed");
}

#[test]
fn a_reload_turns_proxy_protocol_on_for_new_connections() {
    let b = Backend::named("a");
    let cfg = proxy_config(&[b.addr], "", "");
    let f = Fulcrum::start(&cfg);
    ok(&send(f.addr(), &[REQ]));
    let on = proxy_config(&[b.addr], "", "proxy_protocol = true");
    std::fs::write(&f.config, on).expect("write config");
    let admin = f.admin.expect("admin");
    let r = raw(
        admin,
        b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .expect("reload");
    assert_eq!(r.status, 200, "{}", r.text());
    // The listener stays bound; new connections need the header now.
    let closed = eventually(10, || send(f.addr(), &[REQ]).is_empty());
    assert!(closed, "plain HTTP still served after the reload");
    ok(&send(
        f.addr(),
        &[b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n", REQ],
    ));
}

/// A connection still in its PROXY header (an L4 balancer's pre-opened one, say)
/// does not hold a shutdown up for `shutdown_timeout`.
#[test]
fn a_shutdown_does_not_wait_for_a_connection_without_its_header() {
    let b = Backend::named("a");
    let cfg = format!(
        "[global]\nshutdown_timeout = \"30s\"\n{}",
        proxy_config(
            &[b.addr],
            "",
            "proxy_protocol = true\nclient_header_timeout = \"60s\""
        )
    );
    let mut f = Fulcrum::start(&cfg);
    let mut idle = TcpStream::connect(f.addr()).expect("connect");
    idle.write_all(b"PROXY TCP4 ").expect("write");
    // The connection is accepted and waiting for the rest of its header.
    let busy = eventually(10, || {
        let m = raw(
            f.admin.expect("admin"),
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .expect("metrics");
        m.text()
            .lines()
            .any(|l| l.starts_with("fulcrum_downstream_connections_active") && l.ends_with(" 1"))
    });
    assert!(busy, "the idle connection is open");
    let started = Instant::now();
    f.signal("TERM");
    assert_eq!(f.wait_exit(20), Some(0), "{}", f.log_text());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
