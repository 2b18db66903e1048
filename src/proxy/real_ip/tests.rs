use super::*;

fn conf(from: &[&str], header: RealIpHeader, recursive: bool) -> RealIp {
    RealIp {
        from: from.iter().map(|f| f.parse().expect("cidr")).collect(),
        header,
        recursive,
    }
}

fn meta(remote: &str) -> ConnMeta {
    let a: SocketAddr = remote.parse().expect("addr");
    ConnMeta::new(a, a, a, "http")
}

/// `$remote_addr` (and port) for the XFF lines given, from `remote`.
fn xff(lines: &[&str], remote: &str, recursive: bool) -> String {
    let c = conf(
        &["10.0.0.0/8", "2001:db8::/32"],
        RealIpHeader::XForwardedFor,
        recursive,
    );
    let mut h = HeaderMap::new();
    for l in lines {
        h.append("x-forwarded-for", l.parse().expect("value"));
    }
    let m = meta(remote);
    client(&c, &m, &h).unwrap_or(m.remote).to_string()
}

#[test]
fn untrusted_peers_keep_their_address() {
    assert_eq!(xff(&["1.2.3.4"], "192.0.2.1:5000", false), "192.0.2.1:5000");
}

#[test]
fn the_last_entry_is_taken_without_recursion() {
    assert_eq!(
        xff(&["1.2.3.4, 10.0.0.5"], "10.0.0.1:5000", false),
        "10.0.0.5:0"
    );
    assert_eq!(
        xff(&["1.2.3.4, 10.0.0.5"], "10.0.0.1:5000", true),
        "1.2.3.4:0"
    );
    assert_eq!(
        xff(&["1.2.3.4, 5.6.7.8, 10.0.0.5"], "10.0.0.1:1", true),
        "5.6.7.8:0"
    );
}

#[test]
fn lines_are_walked_last_first_and_only_the_last_without_recursion() {
    assert_eq!(
        xff(&["1.1.1.1", "10.0.0.7"], "10.0.0.1:1", true),
        "1.1.1.1:0"
    );
    assert_eq!(
        xff(&["1.1.1.1", "10.0.0.7"], "10.0.0.1:1", false),
        "10.0.0.7:0"
    );
    assert_eq!(
        xff(&["1.1.1.1", "2.2.2.2"], "10.0.0.1:1", true),
        "2.2.2.2:0"
    );
}

#[test]
fn invalid_entries_stop_the_walk_keeping_what_was_taken() {
    assert_eq!(
        xff(&["1.2.3.4, bogus, 10.0.0.5"], "10.0.0.1:1", true),
        "10.0.0.5:0"
    );
    assert_eq!(xff(&["bogus"], "10.0.0.1:1", true), "10.0.0.1:1");
    assert_eq!(xff(&["[2001:db8::1]"], "10.0.0.1:1", true), "10.0.0.1:1");
}

#[test]
fn ports_and_v6_entries_parse_as_nginx() {
    assert_eq!(xff(&["1.2.3.4:8080"], "10.0.0.1:1", false), "1.2.3.4:8080");
    assert_eq!(
        xff(&["[2001:db8::9]:443"], "10.0.0.1:1", false),
        "[2001:db8::9]:443"
    );
    assert_eq!(
        xff(&["2001:db8::9"], "10.0.0.1:1", false),
        "[2001:db8::9]:0"
    );
    assert_eq!(
        xff(&["::ffff:1.2.3.4"], "10.0.0.1:1", false),
        "[::ffff:1.2.3.4]:0"
    );
}

#[test]
fn nginx_parser_quirks_are_kept() {
    assert_eq!(inet_addr(b"1.2.3."), Some(Ipv4Addr::new(1, 2, 3, 0)));
    assert_eq!(inet_addr(b"01.2..4"), Some(Ipv4Addr::new(1, 2, 0, 4)));
    assert_eq!(inet_addr(b"255.255.255.255"), None);
    assert_eq!(inet_addr(b"1.2.3.256"), None);
    assert_eq!(inet6_addr(b"::"), Some(Ipv6Addr::UNSPECIFIED));
    assert_eq!(inet6_addr(b"1::"), "1::".parse().ok());
    assert_eq!(
        inet6_addr(b":1:2:3:4:5:6:7:8"),
        "1:2:3:4:5:6:7:8".parse().ok()
    );
    assert_eq!(inet6_addr(b"1::2::3"), None);
    assert_eq!(inet6_addr(b"1:2:3:4:5:6:7:8:9"), None);
    assert_eq!(
        inet6_addr(b"::ffff:10.1.2.3"),
        "::ffff:10.1.2.3".parse().ok()
    );
    assert_eq!(inet6_addr(b"12345::"), None);
    assert_eq!(parse_addr_port(b"1.2.3.4:0"), None);
    assert_eq!(parse_addr_port(b"1.2.3.4:65536"), None);
    assert_eq!(parse_addr_port(b"1.2.3.4:00080"), "1.2.3.4:80".parse().ok());
}

#[test]
fn v4_mapped_peers_match_v4_networks() {
    assert!(trusted(
        "::ffff:10.1.1.1".parse().expect("ip"),
        &["10.0.0.0/8".parse().expect("net")]
    ));
    assert!(!trusted(
        "::ffff:10.1.1.1".parse().expect("ip"),
        &["::ffff:0:0/96".parse().expect("net")]
    ));
}

#[test]
fn x_real_ip_and_proxy_protocol() {
    let c = conf(&["10.0.0.0/8"], RealIpHeader::XRealIp, false);
    let mut h = HeaderMap::new();
    h.append("x-real-ip", "7.7.7.7".parse().expect("value"));
    assert_eq!(
        client(&c, &meta("10.0.0.1:1"), &h),
        "7.7.7.7:0".parse().ok()
    );
    assert_eq!(client(&c, &meta("192.0.2.1:1"), &h), None);
    let c = conf(&["10.0.0.0/8"], RealIpHeader::ProxyProtocol, false);
    let mut m = meta("198.51.100.7:4000");
    m.peer = "10.0.0.1:1".parse().expect("addr");
    assert_eq!(client(&c, &m, &h), Some(m.remote));
    m.peer = "192.0.2.1:1".parse().expect("addr");
    assert_eq!(client(&c, &m, &h), Some(m.peer));
}
