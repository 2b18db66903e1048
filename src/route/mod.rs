//! Request routing as pure functions, following nginx 1.22 (NGINX_COMPAT §8, §9).
//!
//! - [`uri`]: normalize the request path (percent-decoding, `//` merging, dot segments) and
//!   build the upstream request-target for `proxy_pass`.
//! - [`server_name`]: normalize `Host` and choose the virtual server on a listen address.
//! - [`template`]: nginx variable templates, compiled once and rendered per request.
//! - [`location`]: parse `location` patterns and choose one with nginx's precedence.
//!
//! Nothing here does I/O or allocates on the common path; tables are built once per config.

pub mod location;
pub mod server_name;
pub mod template;
pub mod uri;

pub use location::{LocationMatch, LocationPattern, LocationTable};
pub use server_name::{normalize_host, InvalidHost, ServerNameTable};
pub use uri::{normalize_path, proxy_pass_target, BadPath};
