//! The PROXY protocol header (v1 text or v2 binary, HAProxy's
//! `proxy-protocol.txt`) that starts every connection on a `proxy_protocol = true`
//! listener, parsed with the `ppp` crate.
//!
//! The header is read to its last byte and no further, so what follows (the HTTP
//! request) stays in the socket for the HTTP server: a v2 header says its length;
//! a v1 header ends at its first `\n`, found by peeking (what is peeked before the
//! `\n` is header and is consumed, so a header split across writes costs no spin).

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v1;
use ppp::v2;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Why a connection's PROXY header was refused (the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Reading the socket failed, or the client closed it mid-header.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// No complete header within `client_header_timeout`.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The bytes are not a PROXY header.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A v1 header longer than the 107 bytes the protocol allows.
    #[error("PROXY v1 header longer than 107 bytes")]
    TooLong,
    /// A v1 header ppp refused.
    #[error("invalid PROXY v1 header: {0}")]
    V1(#[from] v1::BinaryParseError),
    /// A v2 header ppp refused.
    #[error("invalid PROXY v2 header: {0}")]
    V2(#[from] v2::ParseError),
}

/// The v2 signature, then version/command, family/protocol and a 16-bit length.
const V2_FIXED: usize = 16;
/// Protocol limit of a v1 header, `\r\n` included.
const V1_MAX: usize = 107;
/// Enough to tell the versions apart: the v2 signature's length. The shortest v1
/// header (`PROXY UNKNOWN\r\n`) is longer, so no request byte is read with it.
const SNIFF: usize = 12;

/// Reads the PROXY header of `stream` within `timeout`: the client it names, or
/// `None` when the header names none (v2 `LOCAL`, v1 `UNKNOWN`, an address family
/// other than TCP over IPv4/IPv6), in which case the socket's peer stands.
pub async fn read(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(timeout, read_header(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(timeout))?
}

async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = vec![0u8; SNIFF];
    stream.read_exact(&mut head).await?;
    if head[..] == v2::PROTOCOL_PREFIX[..] {
        head.resize(V2_FIXED, 0);
        stream.read_exact(&mut head[SNIFF..]).await?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        head.resize(V2_FIXED + len, 0);
        stream.read_exact(&mut head[V2_FIXED..]).await?;
        return v2_client(&head);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::NotProxy);
    }
    read_v1_rest(stream, &mut head).await?;
    v1_client(&head)
}

/// [`read`]'s decisions on bytes already in hand, for the fuzz harness (`fuzz/`):
/// the client the header at the front of `input` names and the header's length;
/// `Ok(None)` while `input` ends before the header does.
#[doc(hidden)]
pub fn parse_bytes(input: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyHeaderError> {
    let Some(head) = input.get(..SNIFF) else {
        return Ok(None);
    };
    if head[..] == v2::PROTOCOL_PREFIX[..] {
        let Some(fixed) = input.get(..V2_FIXED) else {
            return Ok(None);
        };
        let len = V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        return match input.get(..len) {
            Some(head) => Ok(Some((v2_client(head)?, len))),
            None => Ok(None),
        };
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::NotProxy);
    }
    let room = &input[..input.len().min(V1_MAX)];
    match memchr::memchr(b'\n', room) {
        Some(i) => Ok(Some((v1_client(&input[..=i])?, i + 1))),
        None if room.len() == V1_MAX => Err(ProxyHeaderError::TooLong),
        None => Ok(None),
    }
}

/// The client of a complete v1 header.
fn v1_client(head: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let h = v1::Header::try_from(head)?;
    Ok(match h.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    })
}

/// Appends to `head` the rest of a v1 header, through its `\n`.
async fn read_v1_rest(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<(), ProxyHeaderError> {
    let mut peeked = [0u8; V1_MAX];
    while !head.ends_with(b"\n") {
        let room = V1_MAX.saturating_sub(head.len());
        if room == 0 {
            return Err(ProxyHeaderError::TooLong);
        }
        let n = stream.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let take = memchr::memchr(b'\n', &peeked[..n]).map_or(n, |i| i + 1);
        let start = head.len();
        head.resize(start + take, 0);
        stream.read_exact(&mut head[start..]).await?;
    }
    Ok(())
}

/// The client of a complete v2 header.
fn v2_client(head: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let h = v2::Header::try_from(head)?;
    if h.command == v2::Command::Local {
        return Ok(None);
    }
    Ok(match h.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}
