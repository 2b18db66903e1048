//! Fuzz targets for fulcrum's parsers (docs/testing.md).
//!
//! Each target is a plain `fn(&[u8])` that panics when one of its properties does
//! not hold (a panic in the code under test counts the same). The same functions
//! run three ways: under AFL++ (`fulcrum-fuzz-afl`, built with `cargo afl`) for
//! coverage-guided fuzzing; over a checked-in corpus (`fulcrum-fuzz replay`, and
//! `cargo test` through `tests/corpus.rs`); and under this crate's own blind
//! mutation loop for a bounded time ([`mutate`], `fulcrum-fuzz run`), which is
//! what CI does.
//!
//! The targets: [`http1`] (request heads, chunked bodies, response heads and their
//! bodies), [`text`] (the config loader, variable templates, the nginx-config
//! reader) and [`proxy_header`] (PROXY v1/v2 headers).

#![forbid(unsafe_code)]

pub mod corpus;
pub mod http1;
pub mod mutate;
pub mod proxy_header;
pub mod text;

use std::sync::OnceLock;

/// One fuzz target.
#[derive(Debug)]
pub struct Target {
    /// Its name: the corpus directory `fuzz/corpus/NAME` and the CLI's argument.
    pub name: &'static str,
    /// The function: panics when a property fails.
    pub run: fn(&[u8]),
    /// Inputs longer than this are cut by the mutation loop (AFL++ has its own).
    pub max_len: usize,
    /// Byte strings the mutation loop splices in (AFL++ takes `-x` dictionaries).
    pub dict: &'static [&'static [u8]],
    /// The target may resolve host names (the config validator does): it runs
    /// only where there is no network, see [`network_isolated`].
    pub resolves: bool,
}

/// Every target, in the order `fulcrum-fuzz run all` takes them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "request_head",
        run: http1::request_head,
        max_len: 8192,
        dict: http1::DICT,
        resolves: false,
    },
    Target {
        name: "chunked",
        run: http1::chunked,
        max_len: 12288,
        dict: http1::DICT,
        resolves: false,
    },
    Target {
        name: "response",
        run: http1::response,
        max_len: 8192,
        dict: http1::DICT,
        resolves: false,
    },
    Target {
        name: "config",
        run: text::config,
        max_len: 16384,
        dict: text::CONFIG_DICT,
        resolves: true,
    },
    Target {
        name: "template",
        run: text::template,
        max_len: 2048,
        dict: text::TEMPLATE_DICT,
        resolves: false,
    },
    Target {
        name: "nginx_conf",
        run: text::nginx_conf,
        max_len: 16384,
        dict: text::NGINX_DICT,
        resolves: true,
    },
    Target {
        name: "proxy_header",
        run: proxy_header::proxy_header,
        max_len: 1024,
        dict: proxy_header::DICT,
        resolves: false,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Whether this process has no route anywhere (a network namespace of its own,
/// `unshare -n`): then resolving a fuzzed host name fails at once instead of
/// sending it to the machine's resolver. Read once.
pub fn network_isolated() -> bool {
    static ISOLATED: OnceLock<bool> = OnceLock::new();
    *ISOLATED.get_or_init(|| {
        // Routes through an interface other than loopback (whose IPv6 table holds
        // `unreachable` entries even in an empty namespace).
        let routes = |p: &str| {
            std::fs::read_to_string(p).map(|t| {
                t.lines()
                    .filter(|l| !l.starts_with("Iface"))
                    .filter(|l| !matches!(l.split_whitespace().last(), Some("lo") | None))
                    .count()
            })
        };
        matches!(
            (routes("/proc/net/route"), routes("/proc/net/ipv6_route")),
            (Ok(0), Ok(0))
        )
    })
}

/// Panics unless [`network_isolated`]: a target that may resolve names calls it first.
fn require_isolation() {
    assert!(
        network_isolated(),
        "this target resolves host names: run it without a network (unshare -n)"
    );
}
