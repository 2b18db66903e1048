//! `fulcrum-fuzz-afl TARGET`: one target under AFL++ (docs/testing.md):
//!
//! ```text
//! cargo afl build --release -p fulcrum-fuzz --features afl --bin fulcrum-fuzz-afl
//! cargo afl fuzz -i fuzz/corpus/chunked -o target/afl/chunked -- \
//!     target/release/fulcrum-fuzz-afl chunked
//! ```

#![forbid(unsafe_code)]

use fulcrum_fuzz::{network_isolated, target, TARGETS};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(t) = target(&name) else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: fulcrum-fuzz-afl TARGET ({})", names.join(", "));
        std::process::exit(2);
    };
    if t.resolves && !network_isolated() {
        eprintln!("{name} resolves host names: run it without a network (unshare -n)");
        std::process::exit(2);
    }
    afl::fuzz!(|data: &[u8]| {
        (t.run)(data);
    });
}
