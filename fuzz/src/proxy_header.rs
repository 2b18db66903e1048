//! The PROXY protocol header (v1 text, v2 binary) at the front of a connection,
//! read with the decisions `runtime::proxy_header::read` makes on a socket.

use fulcrum::runtime::proxy_header::{parse_bytes, ProxyHeaderError};

/// Pieces of PROXY headers for the mutation loop.
pub const DICT: &[&[u8]] = &[
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN\r\n",
    b"192.0.2.1 ",
    b"::1 ",
    b"65535 ",
    b"\r\n",
    b"\r\n\r\n\0\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x20\x00\x00\x00",
    b"\x21\x21\x00\x24",
    b"\x21\x31\x00\xd8",
];

/// The v2 signature.
const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The header at the front of the input: its length agrees with what it says, and
/// no byte before its end is enough.
pub fn proxy_header(input: &[u8]) {
    let (client, used) = match parse_bytes(input) {
        Ok(Some(found)) => found,
        Ok(None) => {
            assert!(
                input.len() < 16 + 0xffff,
                "{} bytes and still waiting",
                input.len()
            );
            return;
        }
        Err(ProxyHeaderError::NotProxy) => {
            assert!(!input.starts_with(b"PROXY ") && !input.starts_with(V2));
            return;
        }
        Err(_) => return,
    };
    assert!(used <= input.len(), "{used} bytes of {}", input.len());
    if input.starts_with(V2) {
        let len = usize::from(u16::from_be_bytes([input[14], input[15]]));
        assert_eq!(used, 16 + len, "a v2 header's length");
    } else {
        assert!(used <= 107 && input[used - 1] == b'\n', "a v1 header's end");
        if let Some(addr) = client {
            // The client named is in the header's text.
            let text = String::from_utf8_lossy(&input[..used]);
            assert!(
                text.contains(&addr.port().to_string()),
                "{addr} from {text:?}"
            );
        }
    }
    assert!(
        matches!(parse_bytes(&input[..used - 1]), Ok(None)),
        "a header's prefix is taken"
    );
}
