//! `real_ip_from` / `real_ip_header` / `real_ip_recursive` as nginx's realip module:
//! a differential test against a real nginx (the same `X-Forwarded-For` and
//! `X-Real-IP` chains, from trusted and untrusted peers, give the same
//! `$remote_addr` and `$remote_port`), the access log and `ip_hash` following the
//! real address, and `fulcrum check` on misuse.
//!
//! Without nginx on PATH (or in /usr/sbin) the differential test prints a note and
//! passes, unless FULCRUM_REQUIRE_NGINX=1 (CI), where it fails.

mod common;
#[path = "common/nginx.rs"]
mod nginx;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::{
    check_config as check, eventually, free_port, nginx_bin, read_response, Backend, Fulcrum,
};
use nginx::Nginx;

/// One realip setup, written the same way for both.
struct Setup {
    from: &'static [&'static str],
    header: &'static str,
    recursive: bool,
}

const SETUPS: &[Setup] = &[
    Setup {
        from: &["127.0.0.1"],
        header: "X-Forwarded-For",
        recursive: false,
    },
    Setup {
        from: &["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"],
        header: "X-Forwarded-For",
        recursive: true,
    },
    Setup {
        from: &["127.0.0.1", "10.0.0.0/8"],
        header: "X-Forwarded-For",
        recursive: false,
    },
    Setup {
        from: &["10.0.0.0/8"],
        header: "X-Forwarded-For",
        recursive: true,
    },
    Setup {
        from: &["127.0.0.0/8", "10.0.0.0/8"],
        header: "X-Real-IP",
        recursive: true,
    },
    Setup {
        from: &["127.0.0.1"],
        header: "X-Real-IP",
        recursive: false,
    },
];

/// Header lines sent; each chain is tried with every setup, from a trusted
/// (127.0.0.1) and an untrusted (127.0.0.2) peer.
const CHAINS: &[&[&str]] = &[
    &[],
    &["1.2.3.4"],
    &["1.2.3.4, 10.0.0.5"],
    &["1.2.3.4, 10.0.0.5, 10.0.0.6"],
    &["10.0.0.5, 10.0.0.6"],
    &["1.2.3.4", "10.0.0.7"],
    &["1.1.1.1", "2.2.2.2"],
    &["10.0.0.8", "10.0.0.9, 10.0.0.7"],
    &["bogus, 10.0.0.5"],
    &["1.2.3.4, bogus"],
    &["1.2.3.4, bogus, 10.0.0.5"],
    &["1.2.3.4:8080"],
    &["1.2.3.4:8080, 10.0.0.5:99"],
    &["1.2.3.4:0"],
    &["[2001:db8::9]:443, 10.0.0.5"],
    &["2001:db8::9"],
    &["2001:db8::9, 2001:db8::1"],
    &["[2001:db8::9]"],
    &["  1.2.3.4 ,, 10.0.0.5 , "],
    &[",1.2.3.4"],
    &[" 10.0.0.5"],
    &["1.2.3."],
    &["255.255.255.255"],
    &["01.2.3.4"],
    &["::ffff:10.1.1.1, 1.2.3.4"],
    &["1.2.3.4, ::ffff:10.1.1.1"],
    &["1::2::3, 10.0.0.5"],
    &["7.7.7.7", "8.8.8.8"],
];

const BODY: &str = "$remote_addr|$remote_port";

fn start_nginx(bin: &PathBuf, ports: &[u16]) -> Nginx {
    let mut servers = String::new();
    for (s, port) in SETUPS.iter().zip(ports) {
        servers += &format!("    server {{\n        listen 127.0.0.1:{port};\n");
        for f in s.from {
            servers += &format!("        set_real_ip_from {f};\n");
        }
        servers += &format!(
            "        real_ip_header {};\n        real_ip_recursive {};\n        location / {{ return 200 \"{BODY}\"; }}\n    }}\n",
            s.header,
            if s.recursive { "on" } else { "off" }
        );
    }
    let last = SocketAddr::from(([127, 0, 0, 1], ports[ports.len() - 1]));
    Nginx::run(bin, &servers, last)
}

fn fulcrum_config(ports: &[u16]) -> String {
    let mut cfg = String::from("[admin]\nlisten = \"127.0.0.1:0\"\n");
    for (s, port) in SETUPS.iter().zip(ports) {
        let from: Vec<String> = s.from.iter().map(|f| format!("\"{f}\"")).collect();
        cfg += &format!(
            "[[server]]\nlisten = [\"127.0.0.1:{port}\"]\nreal_ip_from = [{}]\n\
             real_ip_header = \"{}\"\nreal_ip_recursive = {}\n\
             [[server.location]]\npath = \"/\"\nreturn = {{ status = 200, body = \"{BODY}\" }}\n",
            from.join(", "),
            s.header,
            s.recursive
        );
    }
    cfg
}

/// GET `/` from local address `from` with `header` lines of `chain`: the body.
fn ask(to: SocketAddr, from: Ipv4Addr, header: &str, chain: &[&str]) -> String {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
        .expect("bind client address");
    sock.connect(&to.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for line in chain {
        req += &format!("{header}: {line}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("write");
    let r = read_response(&mut s).expect("response");
    assert_eq!(r.status, 200, "{chain:?}: {}", r.text());
    // The peer's own port differs between the two servers: compare "peer" instead.
    let local_port = s.local_addr().expect("local").port().to_string();
    let text = r.text();
    match text.split_once('|') {
        Some((a, p)) if p == local_port => format!("{a}|peer"),
        _ => text,
    }
}

#[test]
fn realip_matches_nginx() {
    let Some(nginx) = nginx_bin() else { return };
    let nginx_ports: Vec<u16> = SETUPS.iter().map(|_| free_port()).collect();
    let _n = start_nginx(&nginx, &nginx_ports);
    let f_ports: Vec<u16> = SETUPS.iter().map(|_| free_port()).collect();
    let _f = Fulcrum::start(&fulcrum_config(&f_ports));
    let mut compared = 0;
    let mut differ = Vec::new();
    let mut changed = 0;
    for (i, s) in SETUPS.iter().enumerate() {
        let n_addr = SocketAddr::from(([127, 0, 0, 1], nginx_ports[i]));
        let f_addr = SocketAddr::from(([127, 0, 0, 1], f_ports[i]));
        for peer in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)] {
            for chain in CHAINS {
                let want = ask(n_addr, peer, s.header, chain);
                let got = ask(f_addr, peer, s.header, chain);
                compared += 1;
                if !want.starts_with(&format!("{peer}|")) {
                    changed += 1;
                }
                if want != got {
                    differ.push(format!(
                        "{} recursive={} from={:?} peer {peer} {chain:?}: nginx {want:?}, fulcrum {got:?}",
                        s.header, s.recursive, s.from
                    ));
                }
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {compared} differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
    // The chains exercise the module: many of them change the address.
    assert!(
        changed > compared / 4,
        "only {changed} of {compared} changed the address"
    );
    eprintln!("{compared} requests compared, {changed} changed $remote_addr, all equal");
}

#[test]
fn the_real_address_reaches_the_backend_ip_hash_and_the_access_log() {
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::named(n)).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let mut cfg = common::proxy_config(
        &addrs,
        "balance = \"ip_hash\"",
        "real_ip_from = [\"127.0.0.1\"]\nreal_ip_header = \"X-Forwarded-For\"",
    ) + "proxy_set_header = { X-Real-IP = \"$remote_addr\", X-Forwarded-For = \"$proxy_add_x_forwarded_for\" }\n";
    cfg = format!(
        "[global]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n{cfg}",
        log.display()
    );
    let f = Fulcrum::start(&cfg);
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        let client = format!("10.{n}.3.4");
        let mut picks = Vec::new();
        for _ in 0..2 {
            let r = common::raw(
                f.addr(),
                format!(
                    "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("request");
            assert_eq!(r.status, 200);
            picks.push(r.text());
        }
        assert_eq!(picks[0], picks[1], "{client} sticks to one server");
        seen.insert(picks[0].clone());
    }
    assert!(seen.len() >= 2, "ip_hash hashes the real address: {seen:?}");
    let last = backends
        .iter()
        .filter_map(|b| b.last.lock().unwrap().clone())
        .map(|p| {
            (
                p.headers
                    .get("x-real-ip")
                    .map(|v| v.to_str().unwrap_or("").to_string()),
                p.headers
                    .get("x-forwarded-for")
                    .map(|v| v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect::<Vec<_>>();
    assert!(!last.is_empty());
    for (real, xff) in &last {
        let real = real.as_deref().expect("X-Real-IP");
        assert!(real.starts_with("10.") && real.ends_with(".3.4"), "{real}");
        // $proxy_add_x_forwarded_for: the header as received, then $remote_addr.
        assert_eq!(xff.as_deref(), Some(format!("{real}, {real}").as_str()));
    }
    let ok = eventually(10, || {
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.matches("\"remote_addr\":\"10.").count() >= 60)
    });
    assert!(
        ok,
        "access log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn check_reports_realip_misuse_with_positions() {
    let cfg = |keys: &str| {
        format!(
            "[[server]]\nlisten = [\"127.0.0.1:18081\"]\n{keys}\n[[server.location]]\npath = \"/\"\nreturn = {{ status = 200 }}\n"
        )
    };
    for (keys, msg) in [
        (
            "real_ip_from = [\"10.0.0.0/33\"]",
            "real_ip_from \"10.0.0.0/33\" is not an address or a CIDR",
        ),
        (
            "real_ip_from = []",
            "real_ip_from needs at least one address or CIDR",
        ),
        (
            "real_ip_header = \"X-Forwarded-For\"",
            "real_ip_header has no effect without real_ip_from",
        ),
        (
            "real_ip_from = [\"10.0.0.0/8\"]\nreal_ip_header = \"Forwarded\"",
            "real_ip_header \"Forwarded\" must be",
        ),
        (
            "real_ip_from = [\"10.0.0.0/8\"]\nreal_ip_header = \"proxy_protocol\"",
            "needs proxy_protocol = true",
        ),
    ] {
        let (code, text) = check(&cfg(keys));
        assert_eq!(code, Some(1), "{keys}: {text}");
        assert!(text.contains(msg), "{keys}: {text}");
        // The key is on line 3 or 4 of the file.
        assert!(
            text.contains("f.toml:3:") || text.contains("f.toml:4:"),
            "{keys}: position in {text}"
        );
    }
    let (code, text) = check(&cfg(
        "proxy_protocol = true\nreal_ip_from = [\"10.0.0.0/8\", \"::1\"]\nreal_ip_header = \"proxy_protocol\"\nreal_ip_recursive = true",
    ));
    assert_eq!(code, Some(0), "{text}");
}
