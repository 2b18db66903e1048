//! nginx's realip directives (`set_real_ip_from`, `real_ip_header`,
//! `real_ip_recursive`) into a server's `real_ip_*` keys. fulcrum's realip is
//! nginx's exactly (docs/real_ip.md), per server: `http` level settings pass to
//! every server, `location` level ones cannot be carried.

use super::parser::Directive;
use super::{values, Cx};

/// The realip settings in force at a level. As nginx merges them, a level with its
/// own `set_real_ip_from` list replaces the inherited one; the header and
/// `recursive` are inherited each on its own.
#[derive(Debug, Clone, Default)]
pub(crate) struct RealIpConv {
    /// Trusted addresses and CIDRs, as TOML strings.
    pub from: Option<Vec<String>>,
    /// `"X-Forwarded-For"` or `"X-Real-IP"`.
    pub header: Option<String>,
    pub recursive: Option<bool>,
}

/// Takes `d` if it is a realip directive (true), carrying or warning it; the
/// level's own `set_real_ip_from` entries collect in `own_from`.
pub(crate) fn directive(
    cx: &mut Cx,
    d: &Directive,
    context: &str,
    conf: &mut RealIpConv,
    own_from: &mut Option<Vec<String>>,
) -> bool {
    let name = d.name.as_str();
    if !matches!(
        name,
        "set_real_ip_from" | "real_ip_header" | "real_ip_recursive"
    ) {
        return false;
    }
    if !matches!(context, "http" | "server") {
        cx.warn(
            d,
            "is set per server in fulcrum: the server's realip settings apply here",
        );
        return true;
    }
    let arg = d.args.first().map(String::as_str).unwrap_or("");
    match name {
        // Even an entry not carried replaces the inherited list, as in nginx: the
        // level trusts no less narrowly than it says.
        "set_real_ip_from" => match (trusted(arg), own_from.get_or_insert_with(Vec::new)) {
            (Some(a), list) => {
                list.push(values::toml_str(&a));
                cx.carry(d);
            }
            (None, _) => cx.warn(
                d,
                format!("\"{arg}\" is not an address or CIDR fulcrum trusts (unix:, host names): ignored"),
            ),
        },
        "real_ip_header" => {
            let known = ["X-Forwarded-For", "X-Real-IP"]
                .into_iter()
                .find(|h| h.eq_ignore_ascii_case(arg));
            match known {
                Some(h) => {
                    conf.header = Some(values::toml_str(h));
                    cx.carry(d);
                }
                None if arg == "proxy_protocol" => cx.warn(
                    d,
                    "goes with proxy_protocol listen addresses, which are not carried: ignored",
                ),
                None => cx.warn(
                    d,
                    format!("\"{arg}\" is not a header fulcrum reads the client from (X-Forwarded-For, X-Real-IP): ignored"),
                ),
            }
        }
        _ => match arg {
            "on" | "off" => {
                conf.recursive = Some(arg == "on");
                cx.carry(d);
            }
            _ => cx.warn(d, "has a value nginx would reject: ignored"),
        },
    }
    true
}

/// An address or CIDR as fulcrum's `real_ip_from` takes it.
fn trusted(arg: &str) -> Option<String> {
    let ok = arg.parse::<std::net::IpAddr>().is_ok() || arg.parse::<ipnet::IpNet>().is_ok();
    ok.then(|| arg.to_string())
}

/// The server's `real_ip_*` lines; none without `set_real_ip_from` (nginx then
/// changes no address either).
pub(crate) fn emit(out: &mut String, conf: &RealIpConv) {
    let Some(from) = conf.from.as_ref().filter(|f| !f.is_empty()) else {
        return;
    };
    out.push_str(&format!("real_ip_from = [{}]\n", from.join(", ")));
    if let Some(h) = &conf.header {
        out.push_str(&format!("real_ip_header = {h}\n"));
    }
    if conf.recursive == Some(true) {
        out.push_str("real_ip_recursive = true\n");
    }
}
