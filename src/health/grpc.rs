//! The gRPC health check (`type = "grpc"`): `grpc.health.v1.Health/Check` over h2c
//! on a fresh connection, passing only on `SERVING`.
//!
//! The two messages are one field each (`HealthCheckRequest { string service = 1 }`,
//! `HealthCheckResponse { ServingStatus status = 1 }`), so they are encoded and
//! decoded here by hand: pulling prost and tonic into the release binary for two
//! one-field messages would cost more than these few lines.

use std::net::SocketAddr;

use crate::upstream::conn::UpstreamIo;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::error::ProbeError;
use crate::config::HealthCheck;

/// The method every gRPC health service answers.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// An answer bigger than this is not a health check response.
const MAX_ANSWER: usize = 64 * 1024;

/// Asks `stream`'s server for the health of `check.grpc_service`.
pub async fn check(
    check: &HealthCheck,
    server: SocketAddr,
    stream: UpstreamIo,
) -> Result<(), ProbeError> {
    let authority = match &check.host {
        Some(h) => h.clone(),
        None => server.to_string(),
    };
    let req = Request::post(format!("http://{authority}{CHECK_PATH}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "fulcrum-health-check")
        .body(Full::new(request_frame(&check.grpc_service)))
        .map_err(ProbeError::Request)?;
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
    // Drive the connection here rather than in a spawned task: one task per check.
    let exchange = async move {
        let resp = tx.send_request(req).await.map_err(ProbeError::Http)?;
        let (parts, body) = resp.into_parts();
        if parts.status != StatusCode::OK {
            return Err(ProbeError::Status(parts.status.as_u16()));
        }
        // A trailers-only answer carries the status in its headers.
        grpc_ok(&parts.headers)?;
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| ProbeError::Grpc("unreadable or oversized answer"))?;
        match body.trailers() {
            Some(t) => grpc_ok(t)?,
            None => return Err(ProbeError::Grpc("no grpc-status")),
        }
        serving(&body.to_bytes())
    };
    tokio::pin!(exchange);
    tokio::select! {
        r = &mut exchange => r,
        r = conn => match r {
            Ok(()) => Err(ProbeError::Closed),
            Err(e) => Err(ProbeError::Http(e)),
        },
    }
}

/// The request: one uncompressed gRPC frame holding the `service` field, if any.
fn request_frame(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(0);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    frame.freeze()
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// Reads a varint at `*at`, moving past it.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Fails unless `grpc-status`, when present, is 0.
fn grpc_ok(h: &HeaderMap) -> Result<(), ProbeError> {
    match h.get("grpc-status") {
        None => Ok(()),
        Some(v) if v == "0" => Ok(()),
        Some(v) => Err(ProbeError::GrpcStatus(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
    }
}

/// Whether the answer's one message says SERVING.
fn serving(body: &[u8]) -> Result<(), ProbeError> {
    let bad = |why| Err(ProbeError::Grpc(why));
    let Some((&flag, rest)) = body.split_first() else {
        return bad("no message");
    };
    if flag != 0 {
        return bad("compressed message");
    }
    let len = match rest.get(..4) {
        Some(l) => u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize,
        None => return bad("truncated message"),
    };
    let Some(msg) = rest.get(4..4 + len) else {
        return bad("truncated message");
    };
    // Field 1 (a varint) is the status; unknown fields are skipped. Absent: 0,
    // UNKNOWN.
    let (mut at, mut status) = (0, 0);
    while at < msg.len() {
        let Some(key) = varint(msg, &mut at) else {
            return bad("malformed message");
        };
        let skip = match (key >> 3, key & 7) {
            (1, 0) => {
                status = varint(msg, &mut at).unwrap_or(u64::MAX);
                continue;
            }
            (_, 0) => varint(msg, &mut at).map(|_| 0),
            (_, 1) => Some(8),
            (_, 2) => varint(msg, &mut at),
            (_, 5) => Some(4),
            _ => None,
        };
        match skip.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if at + n <= msg.len() => at += n,
            _ => return bad("malformed message"),
        }
    }
    if status == SERVING {
        Ok(())
    } else {
        Err(ProbeError::NotServing(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_service_name() {
        assert_eq!(&request_frame("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &request_frame("a.B")[..],
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "x".repeat(200);
        let f = request_frame(&long);
        assert_eq!(&f[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn only_serving_passes() {
        let frame = |m: &[u8]| {
            let mut b = vec![0, 0, 0, 0, m.len() as u8];
            b.extend_from_slice(m);
            b
        };
        assert!(serving(&frame(&[0x08, 1])).is_ok());
        // Unknown fields around it are skipped.
        assert!(serving(&frame(&[0x12, 2, b'h', b'i', 0x08, 1, 0x18, 0x96, 0x01])).is_ok());
        assert!(matches!(
            serving(&frame(&[0x08, 2])),
            Err(ProbeError::NotServing(2))
        ));
        assert!(matches!(
            serving(&frame(&[])),
            Err(ProbeError::NotServing(0))
        ));
        assert!(matches!(
            serving(&frame(&[0x08, 3])),
            Err(ProbeError::NotServing(3))
        ));
        assert!(serving(&[]).is_err());
        assert!(serving(&[1, 0, 0, 0, 2, 0x08, 1]).is_err(), "compressed");
        assert!(serving(&[0, 0, 0, 0, 9, 0x08, 1]).is_err(), "truncated");
        assert!(
            serving(&frame(&[0x12, 9, b'h'])).is_err(),
            "field past the end"
        );
    }

    #[test]
    fn a_non_zero_grpc_status_fails() {
        let mut h = HeaderMap::new();
        assert!(grpc_ok(&h).is_ok());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_ok(&h).is_ok());
        h.insert("grpc-status", "5".parse().unwrap());
        assert!(matches!(grpc_ok(&h), Err(ProbeError::GrpcStatus(s)) if s == "5"));
    }
}
