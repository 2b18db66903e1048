//! The `combined` and `json` formats: the [`Formatter`] that turns an [`Entry`] into
//! its line.

use std::time::SystemTime;

use super::entry::{Entry, Field};
use super::line::{
    dash_or_escaped, escape_into, plain, presized, put_int, put_ip, version_str, write_secs,
    write_tries, Out, TryField,
};
use crate::config::AccessLogFormat;

/// Formats access log lines. The time text is cached per second, as nginx caches
/// its time strings: formatting a local time is most of a line's cost otherwise.
#[derive(Debug)]
pub struct Formatter {
    format: AccessLogFormat,
    sec: Option<u64>,
    time: String,
}

impl Formatter {
    /// A formatter for `format`.
    pub fn new(format: AccessLogFormat) -> Formatter {
        Formatter {
            format,
            sec: None,
            time: String::new(),
        }
    }

    /// Appends the line for `e`, with its newline, to `out`.
    pub fn line(&mut self, e: &Entry, out: &mut Vec<u8>) {
        self.update_time(e.time.unwrap_or_else(crate::clock::coarse_wall));
        match self.format {
            AccessLogFormat::Combined => combined(e, &self.time, out),
            AccessLogFormat::Json => json(e, &self.time, out),
        }
    }

    fn update_time(&mut self, t: SystemTime) {
        let sec = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.sec == Some(sec) {
            return;
        }
        let local = chrono::DateTime::<chrono::Local>::from(t);
        self.time.clear();
        let _ = match self.format {
            // nginx $time_local
            AccessLogFormat::Combined => std::fmt::Write::write_fmt(
                &mut self.time,
                format_args!("{}", local.format("%d/%b/%Y:%H:%M:%S %z")),
            ),
            // nginx $time_iso8601
            AccessLogFormat::Json => std::fmt::Write::write_str(
                &mut self.time,
                &local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            ),
        };
        self.sec = Some(sec);
    }
}

/// Bytes of the entry's request text, user and method: what escaping can multiply.
fn text_len(e: &Entry) -> usize {
    e.text.buf.len()
        + e.remote_user.as_ref().map_or(0, String::len)
        + e.request.as_ref().map_or(0, |r| r.method.as_str().len())
}

fn combined(e: &Entry, time: &str, out: &mut Vec<u8>) {
    // Worst case: every text byte escaped to four, generous room for the rest.
    let bound = 256 + time.len() + 4 * text_len(e) + 128 * e.tries.len();
    presized(
        out,
        bound,
        |l| combined_into(e, time, l),
        |v| combined_into(e, time, v),
    );
}

fn combined_into(e: &Entry, time: &str, out: &mut impl Out) {
    put_ip(out, e.remote.ip());
    out.put(b" - ");
    dash_or_escaped(out, e.remote_user.as_deref().map(str::as_bytes));
    out.put(b" [");
    out.put(time.as_bytes());
    out.put(b"] \"");
    match &e.request {
        Some(r) => {
            escape_into(out, r.method.as_str().as_bytes());
            out.push(b' ');
            escape_into(out, e.text.get(Field::Target).unwrap_or(b"/"));
            out.push(b' ');
            out.put(version_str(r.version).as_bytes());
        }
        None => out.push(b'-'),
    }
    out.put(b"\" ");
    put_int(out, e.status);
    out.push(b' ');
    put_int(out, e.body_bytes_sent);
    out.put(b" \"");
    dash_or_escaped(out, e.text.get(Field::Referer));
    out.put(b"\" \"");
    dash_or_escaped(out, e.text.get(Field::UserAgent));
    for (i, field) in [TryField::Addr, TryField::Status, TryField::Time]
        .into_iter()
        .enumerate()
    {
        if i == 2 {
            out.put(b"\" ");
            write_secs(out, e.request_time);
            out.put(b" \"");
        } else {
            out.put(b"\" \"");
        }
        if e.tries.is_empty() {
            out.push(b'-');
        } else {
            write_tries(out, &e.tries, field);
        }
    }
    out.put(b"\"\n");
}

/// Writes `"key":` then a JSON string of `v` (lossy UTF-8), or `null`.
fn json_field(out: &mut impl Out, key: &str, v: Option<&[u8]>) {
    out.put(b",\"");
    out.put(key.as_bytes());
    out.put(b"\":");
    match v {
        Some(b) if b.iter().all(|&c| plain(c)) => {
            out.push(b'"');
            out.put(b);
            out.push(b'"');
        }
        Some(b) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b));
        }
        None => out.put(b"null"),
    }
}

fn json(e: &Entry, time: &str, out: &mut Vec<u8>) {
    // Worst case: every byte as `\u00XX`; the target is written twice.
    let bound =
        512 + 6 * (time.len() + 2 * text_len(e) + e.ssl_server_name.len()) + 128 * e.tries.len();
    presized(
        out,
        bound,
        |l| json_into(e, time, l),
        |v| json_into(e, time, v),
    );
}

fn json_into(e: &Entry, time: &str, out: &mut impl Out) {
    out.put(b"{\"time\":");
    let _ = serde_json::to_writer(&mut *out, time);
    out.put(b",\"remote_addr\":\"");
    put_ip(out, e.remote.ip());
    out.push(b'"');
    json_field(
        out,
        "remote_user",
        e.remote_user.as_deref().map(str::as_bytes),
    );
    match &e.request {
        Some(r) => {
            let target = e.text.get(Field::Target).unwrap_or(b"/");
            let method = r.method.as_str().as_bytes();
            let version = version_str(r.version).as_bytes();
            if method.iter().chain(target).all(|&c| plain(c)) {
                out.put(b",\"request\":\"");
                for part in [method, b" ", target, b" ", version] {
                    out.put(part);
                }
                out.push(b'"');
            } else {
                let line = [method, b" ", target, b" ", version].concat();
                json_field(out, "request", Some(&line));
            }
            json_field(out, "method", Some(r.method.as_str().as_bytes()));
            json_field(out, "uri", Some(target));
            json_field(out, "protocol", Some(version_str(r.version).as_bytes()));
        }
        None => out.put(b",\"request\":null,\"method\":null,\"uri\":null,\"protocol\":null"),
    }
    json_field(out, "host", e.text.get(Field::Host));
    out.put(b",\"status\":");
    put_int(out, e.status);
    out.put(b",\"body_bytes_sent\":");
    put_int(out, e.body_bytes_sent);
    json_field(out, "http_referer", e.text.get(Field::Referer));
    json_field(out, "http_user_agent", e.text.get(Field::UserAgent));
    out.put(b",\"request_time\":");
    write_secs(out, e.request_time);
    for (key, field) in [
        ("upstream_addr", TryField::Addr),
        ("upstream_status", TryField::Status),
        ("upstream_response_time", TryField::Time),
    ] {
        out.put(b",\"");
        out.put(key.as_bytes());
        out.put(b"\":");
        if e.tries.is_empty() {
            out.put(b"null");
        } else {
            // Addresses, numbers and "-": nothing to escape.
            out.push(b'"');
            write_tries(out, &e.tries, field);
            out.push(b'"');
        }
    }
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.as_bytes().to_vec());
    json_field(out, "ssl_protocol", nonempty(e.ssl_protocol).as_deref());
    json_field(
        out,
        "ssl_server_name",
        nonempty(&e.ssl_server_name).as_deref(),
    );
    out.put(b"}\n");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, Version};

    use super::super::entry::{RequestLine, RequestText, Try};
    use super::super::line::Line;
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            remote: "10.1.2.3:5555".parse().unwrap(),
            remote_user: None,
            request: Some(RequestLine {
                method: Method::GET,
                version: Version::HTTP_11,
            }),
            text: RequestText::new(
                &[b"/a?b=1"],
                Some(b"example.com"),
                None,
                Some(b"curl/8 \"x\""),
            ),
            status: 200,
            body_bytes_sent: 12,
            request_time: Duration::from_millis(1234),
            tries: smallvec::smallvec![
                Try {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    status: 502,
                    time: Duration::from_millis(1),
                },
                Try {
                    addr: "127.0.0.1:2".parse().unwrap(),
                    status: 200,
                    time: Duration::from_millis(20),
                },
            ],
            ssl_protocol: "TLSv1.3",
            ssl_server_name: "example.com".into(),
        }
    }

    #[test]
    fn combined_line_has_nginx_fields_and_upstream_lists() {
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&entry(), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n'));
        let (head, rest) = line.split_once(" [").unwrap();
        assert_eq!(head, "10.1.2.3 - -");
        let (_time, rest) = rest.split_once("] ").unwrap();
        assert_eq!(
            rest,
            "\"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/8 \\x22x\\x22\" \
             \"127.0.0.1:1, 127.0.0.1:2\" \"502, 200\" 1.234 \"0.001, 0.020\"\n"
        );
    }

    #[test]
    fn combined_without_upstream_uses_dashes() {
        let mut e = entry();
        e.tries.clear();
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&e, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("\"-\" \"-\" 1.234 \"-\"\n"));
    }

    #[test]
    fn unparsed_request_is_a_dash() {
        let mut e = entry();
        e.request = None;
        e.tries.clear();
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Combined).line(&e, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("] \"-\" 200 12 "));
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Json).line(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["request"], serde_json::Value::Null);
        assert_eq!(v["method"], serde_json::Value::Null);
    }

    #[test]
    fn json_line_parses_with_typed_fields() {
        let mut out = Vec::new();
        Formatter::new(AccessLogFormat::Json).line(&entry(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["request"], "GET /a?b=1 HTTP/1.1");
        assert_eq!(v["http_user_agent"], "curl/8 \"x\"");
        assert_eq!(v["http_referer"], serde_json::Value::Null);
        assert_eq!(v["request_time"], 1.234);
        assert_eq!(v["upstream_addr"], "127.0.0.1:1, 127.0.0.1:2");
        assert_eq!(v["upstream_status"], "502, 200");
        assert_eq!(v["upstream_response_time"], "0.001, 0.020");
        assert_eq!(v["ssl_protocol"], "TLSv1.3");
        assert_eq!(v["ssl_server_name"], "example.com");
    }

    #[test]
    fn presized_line_matches_the_growing_one() {
        let ugly: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
        let mut e = entry();
        e.remote = "[2001:db8::1]:4444".parse().unwrap();
        e.remote_user = Some("\"al\\ice\u{7f}".into());
        e.text = RequestText::new(
            &[b"/\x01\"q\"", &ugly],
            Some(b"h"),
            Some(&ugly),
            Some(&ugly),
        );
        e.request_time = Duration::from_secs(12_345);
        for _ in 0..3 {
            e.tries.push(Try {
                addr: "[::ffff:10.0.0.1]:65535".parse().unwrap(),
                status: 0,
                time: Duration::from_secs(99_999),
            });
        }
        let time = "29/Nov/2026:21:30:00 +0000";
        let (mut fast, mut slow) = (b"prefix".to_vec(), b"prefix".to_vec());
        combined(&e, time, &mut fast);
        combined_into(&e, time, &mut slow);
        assert_eq!(fast, slow);
        assert!(fast.ends_with(b"\"\n") && fast.len() > 3 * 3000);
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        json(&e, time, &mut fast);
        json_into(&e, time, &mut slow);
        assert_eq!(fast, slow);
        let v: serde_json::Value = serde_json::from_slice(&fast).expect("json line");
        assert_eq!(v["upstream_status"], "502, 200, -, -, -");
        // Too little room: flagged, never a panic.
        let mut small = [0u8; 40];
        let mut line = Line {
            buf: &mut small,
            at: 0,
            overflow: false,
        };
        combined_into(&e, time, &mut line);
        assert!(line.overflow && line.at <= 40);
    }
}
