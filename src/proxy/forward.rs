//! Headers on the way up and down (NGINX_COMPAT §10, RFC 9110 §7.6.1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers: never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks for a protocol upgrade fulcrum passes on: `Connection:
/// upgrade` plus an `Upgrade` offering WebSocket first. Any other `Upgrade` (`h2c`
/// above all: a backend answering 101 would get a raw tunnel past routing) is no
/// upgrade: the request goes up as a plain one, without it (nginx passes `Upgrade`
/// only when configured to).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| is_websocket(v.as_bytes()))
        && connection_has(headers, "upgrade")
}

/// Whether an `Upgrade` value's first protocol is WebSocket (`websocket`, any
/// version, ASCII case-insensitive).
pub fn is_websocket(upgrade: &[u8]) -> bool {
    let first = upgrade.split(|&b| b == b',').next().unwrap_or_default();
    let name = first.split(|&b| b == b'/').next().unwrap_or_default();
    name.trim_ascii().eq_ignore_ascii_case(b"websocket")
}

/// `HTTP2-Settings`, which belongs to an `Upgrade: h2c` offer (RFC 7540 §3.2.1) and
/// goes nowhere without it.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether a header must not be copied from the client: hop-by-hop ones, those
/// named in `Connection`, and those the proxy sets itself.
fn skip_client_header(name: &HeaderName, connection_named: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::HOST
        || name == header::EXPECT
        || connection_named.contains(name)
}

/// Names listed in `Connection` (they are hop-by-hop too). Usually empty: no allocation.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for t in s.split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close")
                    || t.eq_ignore_ascii_case("keep-alive")
                    || t.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Walks the upstream request headers in nginx's order: `proxy_set_header` entries
/// (those rendering empty are dropped, and still suppress the client's header),
/// then `Host: $proxy_host` unless set, then the client's headers minus hop-by-hop
/// ones and the names already set. `Upgrade`/`Connection: upgrade` are passed for
/// WebSocket handshakes. `emit` gets each header; nothing is copied.
pub fn for_each_upstream_header(
    client: &HeaderMap,
    set: &[(HeaderName, HeaderValue)],
    suppressed: &[HeaderName],
    proxy_host: &HeaderValue,
    upgrade: bool,
    mut emit: impl FnMut(&HeaderName, &HeaderValue),
) {
    for (n, v) in set {
        emit(n, v);
    }
    let host_set = set.iter().any(|(n, _)| n == header::HOST) || suppressed.contains(&header::HOST);
    if !host_set {
        emit(&header::HOST, proxy_host);
    }
    if upgrade {
        if let Some(u) = client.get(header::UPGRADE) {
            emit(&header::UPGRADE, u);
            emit(&header::CONNECTION, &HeaderValue::from_static("upgrade"));
        }
    }
    let named = if client.contains_key(header::CONNECTION) {
        let mut named = connection_named(client);
        // An h2c offer not listing its settings in `Connection` still loses them.
        if client.contains_key(header::UPGRADE) {
            named.push(HTTP2_SETTINGS);
        }
        named
    } else {
        Vec::new()
    };
    for (n, v) in client {
        if skip_client_header(n, &named)
            || set.iter().any(|(s, _)| s == n)
            || suppressed.contains(n)
        {
            continue;
        }
        emit(n, v);
    }
}

/// Whether a response header is hop-by-hop (RFC 9110 §7.6.1): never passed on.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_headers(
        client: &HeaderMap,
        set: &[(HeaderName, HeaderValue)],
        suppressed: &[HeaderName],
        proxy_host: &HeaderValue,
        upgrade: bool,
    ) -> HeaderMap {
        let mut out = HeaderMap::new();
        for_each_upstream_header(client, set, suppressed, proxy_host, upgrade, |n, v| {
            out.append(n.clone(), v.clone());
        });
        out
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn order_and_filtering() {
        let client = map(&[
            ("host", "example.com"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-real-ip", "spoofed"),
        ]);
        let set = vec![(
            HeaderName::from_static("x-real-ip"),
            HeaderValue::from_static("127.0.0.1"),
        )];
        let out = upstream_headers(
            &client,
            &set,
            &[],
            &HeaderValue::from_static("backend"),
            false,
        );
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-real-ip", "host", "accept"]);
        assert_eq!(out["host"], "backend");
        assert_eq!(out["x-real-ip"], "127.0.0.1");
        assert_eq!(out.get_all("accept").iter().count(), 2);
    }

    #[test]
    fn suppressed_and_upgrade() {
        let client = map(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("x-a", "1"),
        ]);
        assert!(is_upgrade(&client));
        let out = upstream_headers(
            &client,
            &[],
            &[HeaderName::from_static("x-a")],
            &HeaderValue::from_static("b"),
            true,
        );
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "upgrade");
        assert!(!out.contains_key("x-a"));
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        for (upgrade, yes) in [
            ("websocket", true),
            ("WebSocket", true),
            ("websocket/13, h2c", true),
            (" websocket ", true),
            ("h2c", false),
            ("H2C", false),
            ("h2c, websocket", false),
            ("websocketx", false),
            ("", false),
        ] {
            let client = map(&[
                ("upgrade", upgrade),
                ("connection", "Upgrade, HTTP2-Settings"),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ]);
            assert_eq!(is_upgrade(&client), yes, "{upgrade:?}");
            let out = upstream_headers(&client, &[], &[], &HeaderValue::from_static("b"), yes);
            assert_eq!(out.contains_key("upgrade"), yes, "{upgrade:?}");
            assert!(!out.contains_key("http2-settings"), "{upgrade:?}");
        }
        // Not named in `Connection`: still dropped with the offer.
        let client = map(&[
            ("upgrade", "h2c"),
            ("connection", "upgrade"),
            ("http2-settings", "AAMA"),
        ]);
        let out = upstream_headers(&client, &[], &[], &HeaderValue::from_static("b"), false);
        assert!(!out.contains_key("http2-settings") && !out.contains_key("upgrade"));
    }
}
