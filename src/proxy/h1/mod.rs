//! The upstream half of HTTP/1.1, written for the proxy.
//!
//! hyper's client runs each connection in a task of its own and hands requests,
//! responses and body chunks across channels: per request two task switches and
//! several wake-ups, which profiles put at a third of fulcrum's user CPU. Here the
//! request head is encoded straight from the parts the proxy already holds, the
//! response head is parsed with `httparse` in the request's own task, and the body
//! is decoded from the socket as the client takes it (RFC 9112 §6: length,
//! chunked, or until close). The downstream side is [`super::server`]; it shares
//! the body decoder and the header-name cache.
//!
//! What can be wrong with an answer is [`Invalid`] (in `proxy::error`, with every
//! other error of the request path). Its files, each using only earlier ones:
//! [`body_framing`] (how a body is delimited, and the headers that say so),
//! [`headers`] (which header lines pass through, and the names of a head),
//! [`request`] (the request head encoder), [`body_coding`] (a body on the wire) and
//! [`response`] (the response head parser).

pub mod body_coding;
pub mod body_framing;
pub mod headers;
pub mod request;
pub mod response;

pub use super::error::Invalid;
pub use body_coding::{check_chunked, poll_fill, BodyDecoder, ChunkLine, Truncated};
pub use body_framing::BodyFraming;
pub(crate) use body_framing::FramingHeaders;
pub(crate) use headers::Hop;
pub use headers::{NameCache, PassHeaders};
pub use request::{encode_head, HeadWriter};
pub use response::{parse_head, ResponseHead};
