//! Downstream TLS end to end: a real fulcrum process, certificates made here with
//! rcgen (a test CA, leaf certificates, client certificates), and a rustls client.
//! SNI picks each server's certificate (exact and wildcard names), no SNI gets the
//! first server's, HTTP/1.1 and h2 by ALPN reach the backend with `$ssl_*` set,
//! TLS 1.1 and a missing required client certificate fail the handshake (counted),
//! certificates rotate on a live listener, and `fulcrum check` loads them.

mod common;
use common::*;
#[path = "common/tls.rs"]
mod tls_client;
use tls_client::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

/// A backend answering with the TLS facts fulcrum passed in headers.
fn facts_backend() -> Backend {
    Backend::with(Arc::new(|parts: &http::request::Parts, _: &Bytes| {
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let body = format!(
            "proto={} sni={} verify={} dn={} scheme={} version={:?}",
            h("x-proto"),
            h("x-sni"),
            h("x-verify"),
            h("x-dn"),
            h("x-scheme"),
            parts.version
        );
        http::Response::new(Full::new(Bytes::from(body)))
    }))
}

const SET_HEADERS: &str = r#"proxy_set_header = { X-Proto = "$ssl_protocol", X-Sni = "$ssl_server_name", X-Verify = "$ssl_client_verify", X-Dn = "$ssl_client_s_dn", X-Scheme = "$scheme" }"#;

/// Two TLS servers on one address (`a.example.com`, `*.wild.example`), each
/// proxying to `backend` with the `$ssl_*` headers; `a_extra` goes into a's `tls`.
fn two_servers(pki: &Pki, backend: SocketAddr, a_extra: &str, b_extra: &str) -> String {
    pki.leaf("a", &["a.example.com", "127.0.0.1"]);
    pki.leaf("w", &["*.wild.example"]);
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{backend}"]
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["a.example.com"]
{}
[[server.location]]
path = "/"
proxy_pass = "http://b"
{SET_HEADERS}
[[server]]
listen = ["127.0.0.1:0"]
server_name = ["*.wild.example"]
{}
[[server.location]]
path = "/"
proxy_pass = "http://b"
{SET_HEADERS}
"#,
        pki.tls("a", a_extra),
        pki.tls("w", b_extra)
    )
}

fn scrape(f: &Fulcrum) -> String {
    let admin = f.admin.expect("admin");
    get(admin, "/metrics").text()
}

/// HTTP/1.1 over TLS end to end: the certificate of the server the SNI names
/// (exact and wildcard), the `$ssl_*` variables and `$scheme` at the backend.
#[test]
fn sni_picks_each_servers_certificate_and_http1_reaches_the_backend() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let http11: &[&[u8]] = &[b"http/1.1"];

    let mut a = connect(f.addr(), client_config(&pki, http11, None), "a.example.com").expect("a");
    assert_eq!(served_name(&a), "a.example.com");
    let (status, body) = tls_get(&mut a, "/", "a.example.com");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "proto=TLSv1.3 sni=a.example.com verify=NONE dn=- scheme=https version=HTTP/1.1"
    );
    // Keep-alive on the same TLS connection.
    assert_eq!(tls_get(&mut a, "/again", "a.example.com").0, 200);

    let mut w = connect(
        f.addr(),
        client_config(&pki, http11, None),
        "x.wild.example",
    )
    .expect("w");
    assert_eq!(served_name(&w), "*.wild.example");
    let (status, body) = tls_get(&mut w, "/", "x.wild.example");
    assert_eq!(status, 200);
    assert!(body.contains("sni=x.wild.example"), "{body}");
}

/// No SNI, an IP literal (no SNI is sent for one) and an unknown name all get the
/// first server's certificate.
#[test]
fn no_sni_ip_and_unknown_names_get_the_first_servers_certificate() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let mut cfg = client_config(&pki, &[], None);
    cfg.enable_sni = false;
    let mut s = connect(f.addr(), cfg, "a.example.com").expect("no sni");
    assert_eq!(served_name(&s), "a.example.com");
    let (status, body) = tls_get(&mut s, "/", "a.example.com");
    assert_eq!(status, 200);
    assert!(
        body.contains("sni=- "),
        "no SNI renders empty (the header is not sent): {body}"
    );

    let s = connect(f.addr(), client_config(&pki, &[], None), "127.0.0.1").expect("ip");
    assert_eq!(served_name(&s), "a.example.com");

    // An unknown name: the default certificate, which this client cannot verify.
    let err = connect(f.addr(), client_config(&pki, &[], None), "other.test");
    assert!(
        err.is_err(),
        "the default certificate does not name other.test"
    );
}

/// The value of the sample `name{labels}` in a scrape (a line match; labels in the
/// order the exposition writes them, alphabetical).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A TLS 1.1 ClientHello (no supported_versions extension): what a client that
/// offers nothing newer sends. rustls cannot be made to send one.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

/// TLS 1.1 is refused (an alert, then the close), counted as a failed handshake
/// beside the successful ones; the certificate expiry gauge has each server's
/// date; `promtool check metrics` passes.
#[test]
fn tls11_is_refused_and_handshakes_and_expiry_are_in_metrics() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    for _ in 0..2 {
        let mut s =
            connect(f.addr(), client_config(&pki, &[], None), "a.example.com").expect("tls");
        assert_eq!(tls_get(&mut s, "/", "a.example.com").0, 200);
    }
    let mut raw = TcpStream::connect(f.addr()).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(30))).ok();
    raw.write_all(&tls11_client_hello()).expect("hello");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert_eq!(
        got.first(),
        Some(&0x15),
        "an alert record, then the close: {got:?}"
    );

    let key = "127.0.0.1:0";
    let ok = format!("fulcrum_tls_handshakes_total{{listener=\"{key}\",result=\"success\"}}");
    let failed = format!("fulcrum_tls_handshakes_total{{listener=\"{key}\",result=\"failure\"}}");
    assert!(
        eventually(10, || sample(&scrape(&f), &failed) == Some(1.0)),
        "{}",
        scrape(&f)
    );
    let text = scrape(&f);
    assert_eq!(sample(&text, &ok), Some(2.0), "{text}");
    for (name, file) in [("a.example.com", "a"), ("*.wild.example", "w")] {
        let der =
            &fulcrum::tls::certs::load_chain(&pki.path(&format!("{file}.crt"))).expect("c")[0];
        let not_after = fulcrum::tls::inspect::inspect(der)
            .expect("inspect")
            .not_after;
        let series = format!(
            "fulcrum_tls_certificate_not_after_timestamp_seconds{{listener=\"{key}\",server_name=\"{name}\"}}"
        );
        assert_eq!(
            sample(&text, &series),
            Some(not_after as f64),
            "{series}\n{text}"
        );
    }
    promtool(&["check", "metrics"], Some(text.as_bytes()));
}

/// h2 chosen by ALPN: two requests multiplexed on one TLS connection, routed and
/// proxied (to an HTTP/1.1 backend) with the `$ssl_*` headers.
#[test]
fn alpn_h2_serves_multiplexed_requests_with_routing() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let cfg = client_config(&pki, &[b"h2", b"http/1.1"], None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(f.addr())
            .await
            .expect("connect");
        let name = ServerName::try_from("x.wild.example").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let one = |path: &str| {
            let mut send = send.clone();
            let req = http::Request::get(format!("https://x.wild.example{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            async move {
                let resp = send.send_request(req).await.expect("response");
                assert_eq!(resp.status(), 200);
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                String::from_utf8_lossy(&body).to_string()
            }
        };
        let (a, b) = tokio::join!(one("/one"), one("/two"));
        for body in [a, b] {
            assert!(
                body.starts_with("proto=TLSv1.3 sni=x.wild.example verify=NONE dn=- scheme=https"),
                "{body}"
            );
        }
    });
    assert_eq!(backend.hits(), 2);
}

/// `client_auth = "required"`: no certificate → the handshake fails (counted);
/// a CA-signed one → `$ssl_client_verify` SUCCESS and its subject in RFC 2253 at
/// the backend. `"optional"` without one → NONE.
#[test]
fn client_certificates_required_and_optional() {
    let pki = Pki::new();
    pki.leaf_dated("client", &["client.test"], "client one", None);
    let backend = facts_backend();
    let ca = format!(", client_ca = \"{}\"", pki.path("ca.crt").display());
    let f = Fulcrum::start(&two_servers(
        &pki,
        backend.addr,
        &format!("{ca}, client_auth = \"required\""),
        &format!("{ca}, client_auth = \"optional\""),
    ));
    // TLS 1.3 client auth fails after the client's Finished: the first read sees it.
    let refused =
        connect(f.addr(), client_config(&pki, &[], None), "a.example.com").map(|mut s| {
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
            let mut b = [0u8; 1];
            s.read(&mut b)
        });
    assert!(
        !matches!(refused, Ok(Ok(n)) if n > 0),
        "a required certificate was not asked for: {refused:?}"
    );
    let mut s = connect(
        f.addr(),
        client_config(&pki, &[], Some("client")),
        "a.example.com",
    )
    .expect("with a certificate");
    let (status, body) = tls_get(&mut s, "/", "a.example.com");
    assert_eq!(status, 200);
    assert!(
        body.contains("verify=SUCCESS dn=O=Acme\\, Inc,CN=client one "),
        "{body}"
    );

    let mut s = connect(f.addr(), client_config(&pki, &[], None), "x.wild.example")
        .expect("optional, none");
    let (status, body) = tls_get(&mut s, "/", "x.wild.example");
    assert_eq!(status, 200);
    assert!(body.contains("verify=NONE dn=- "), "{body}");
    let failed = "fulcrum_tls_handshakes_total{listener=\"127.0.0.1:0\",result=\"failure\"}";
    assert!(
        eventually(10, || sample(&scrape(&f), failed) == Some(1.0)),
        "{}",
        scrape(&f)
    );
}

/// The DER of the certificate a new handshake as `a.example.com` gets.
fn served_der(f: &Fulcrum, pki: &Pki) -> Vec<u8> {
    let s = connect(f.addr(), client_config(pki, &[], None), "a.example.com").expect("tls");
    s.conn.peer_certificates().expect("certificate")[0].to_vec()
}

/// Replaces `NAME.crt`/`NAME.key` by renaming new files over them (as cert-manager
/// and editors do: a reader never sees half a file).
fn rotate(pki: &Pki, name: &str, sans: &[&str], cn: &str) -> Vec<u8> {
    let der = pki.leaf_dated("next", sans, cn, None);
    for ext in ["key", "crt"] {
        std::fs::rename(
            pki.path(&format!("next.{ext}")),
            pki.path(&format!("{name}.{ext}")),
        )
        .expect("rename");
    }
    der
}

/// A certificate rotated under a live listener: new handshakes get the new one
/// (the file watch reloads) while a keep-alive connection opened before keeps
/// working; a broken replacement fails the reload (counted), the old certificate
/// stays.
#[test]
fn rotated_certificate_serves_new_handshakes_and_a_broken_one_is_refused() {
    let pki = Pki::new();
    let backend = facts_backend();
    let f = Fulcrum::start(&two_servers(&pki, backend.addr, "", ""));
    let first = served_der(&f, &pki);
    let mut open = connect(f.addr(), client_config(&pki, &[], None), "a.example.com").expect("tls");
    assert_eq!(tls_get(&mut open, "/", "a.example.com").0, 200);

    let next = rotate(&pki, "a", &["a.example.com", "127.0.0.1"], "rotated");
    assert_ne!(first, next);
    assert!(
        eventually(10, || served_der(&f, &pki) == next),
        "the new certificate was not served:\n{}",
        f.log_text()
    );
    assert_eq!(tls_get(&mut open, "/still", "a.example.com").0, 200);

    let reloads = |result: &str| {
        sample(
            &scrape(&f),
            &format!("fulcrum_config_reloads_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let failures = reloads("failure");
    std::fs::write(
        pki.path("a.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .expect("break");
    assert!(
        eventually(10, || reloads("failure") > failures),
        "a broken certificate did not fail a reload:\n{}",
        f.log_text()
    );
    assert!(
        f.log_text().contains("a.crt"),
        "the error names the file:\n{}",
        f.log_text()
    );
    assert_eq!(served_der(&f, &pki), next, "the running certificate stays");
    assert_eq!(tls_get(&mut open, "/after", "a.example.com").0, 200);
}

/// Runs `fulcrum check` on `config` written as `fulcrum.toml` into the PKI's
/// directory (so relative paths name its files): exit code and stderr.
fn check(pki: &Pki, config: &str) -> (i32, String) {
    let path = pki.path("fulcrum.toml");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn check_config(tls: &str) -> String {
    format!(
        "[[server]]\nlisten = [\"127.0.0.1:0\"]\n{tls}\n[[server.location]]\npath = \"/\"\nreturn = {{ status = 200 }}\n"
    )
}

/// `fulcrum check` loads the files (relative to the config file): a key of
/// another certificate is an error at its key naming the file (exit 1); an expired
/// certificate is a warning with its dates (exit 0); a missing file names it.
#[test]
fn check_names_a_mismatched_key_and_warns_of_an_expired_certificate() {
    let pki = Pki::new();
    pki.leaf("one", &["one.test"]);
    pki.leaf("two", &["two.test"]);
    let (code, err) = check(
        &pki,
        &check_config("tls = { cert = \"one.crt\", key = \"one.key\" }"),
    );
    assert_eq!((code, err.as_str()), (0, ""), "a good pair");

    let (code, err) = check(
        &pki,
        &check_config("tls = { cert = \"one.crt\", key = \"two.key\" }"),
    );
    assert_eq!(code, 1, "{err}");
    let key = pki.path("two.key");
    assert!(
        err.contains(&format!(
            "fulcrum.toml:3:33: the key in \"{}\" does not match",
            key.display()
        )),
        "{err}"
    );

    let (code, err) = check(
        &pki,
        &check_config("tls = { cert = \"gone.crt\", key = \"one.key\" }"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gone.crt") && err.contains("cannot read"),
        "{err}"
    );

    pki.leaf_dated("old", &["old.test"], "old.test", Some((2020, 2021)));
    let (code, err) = check(
        &pki,
        &check_config("tls = { cert = \"old.crt\", key = \"old.key\" }"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: certificate")
            && err.contains(
                "has expired (valid from 2020-01-01 00:00:00 UTC until 2021-01-01 00:00:00 UTC)"
            ),
        "{err}"
    );

    // One address, TLS and cleartext servers: an error.
    let mixed = format!(
        "{}{}",
        check_config("tls = { cert = \"one.crt\", key = \"one.key\" }"),
        check_config("")
    );
    let (code, err) = check(&pki, &mixed);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("must all have tls or none have it"), "{err}");
}

/// `keepalive_timeout`: an idle keep-alive connection, cleartext or TLS, is closed
/// after it; a request that takes longer than it is still answered.
#[test]
fn keepalive_timeout_closes_idle_connections_and_spares_busy_ones() {
    let pki = Pki::new();
    pki.leaf("k", &["k.test"]);
    let slow = Backend::with(Arc::new(|parts: &http::request::Parts, _: &Bytes| {
        if parts.uri.path() == "/slow" {
            std::thread::sleep(Duration::from_millis(2500));
        }
        http::Response::new(Full::new(Bytes::from("ok")))
    }));
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.b]
server = ["{}"]
[[server]]
listen = ["127.0.0.1:0"]
keepalive_timeout = "1s"
[[server.location]]
path = "/"
proxy_pass = "http://b"
[[server]]
listen = ["127.0.0.2:0"]
keepalive_timeout = "1s"
{}
[[server.location]]
path = "/"
proxy_pass = "http://b"
"#,
        slow.addr,
        pki.tls("k", "")
    );
    let f = Fulcrum::start(&config);
    let (plain, tls_addr) = (f.listeners[0], f.listeners[1]);

    let mut c = Conn::open(plain);
    assert_eq!(
        c.get("/slow").status,
        200,
        "a request longer than the timeout"
    );
    let t = std::time::Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(c.s.read(&mut b).unwrap_or(0), 0, "closed when idle");
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_secs(10),
        "{idle:?}"
    );

    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let mut s = connect(tls_addr, cfg, "k.test").expect("tls");
    assert_eq!(tls_get(&mut s, "/slow", "k.test").0, 200);
    let t = std::time::Instant::now();
    let n = s.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "closed when idle");
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_secs(10),
        "{idle:?}"
    );
}

/// The json access log names the TLS version and the SNI name of each request.
#[test]
fn json_access_log_has_the_tls_version_and_sni_name() {
    let pki = Pki::new();
    let backend = facts_backend();
    let log = pki.path("access.log");
    let config = format!(
        "[global]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n{}",
        log.display(),
        two_servers(&pki, backend.addr, "", "")
    );
    let f = Fulcrum::start(&config);
    let mut s = connect(f.addr(), client_config(&pki, &[], None), "x.wild.example").expect("tls");
    assert_eq!(tls_get(&mut s, "/logged", "x.wild.example").0, 200);
    let line = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("/logged"))
            .map(str::to_string)
    };
    assert!(eventually(10, || line().is_some()), "no log line");
    let v: serde_json::Value = serde_json::from_str(&line().unwrap_or_default()).expect("json");
    assert_eq!(v["ssl_protocol"], "TLSv1.3");
    assert_eq!(v["ssl_server_name"], "x.wild.example");
}
