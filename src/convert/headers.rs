//! The header directives of each level: `proxy_set_header` (to the upstream) and
//! `add_header [always]` (to the client), checked the way fulcrum's config will
//! check them, so what convert writes validates.

use super::parser::Directive;
use super::Cx;
use crate::route::template::Template;

/// One `add_header NAME VALUE [always]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddHeader {
    pub name: String,
    pub value: String,
    pub always: bool,
}

/// One `proxy_set_header`; the WebSocket idiom is dropped silently (fulcrum passes
/// upgrades itself).
pub(crate) fn set_header(cx: &mut Cx, d: &Directive, list: &mut Vec<(String, String)>) {
    let [name, value] = d.args.as_slice() else {
        cx.warn(d, "needs a name and a value: ignored");
        return;
    };
    let value = &cx.server_vars(value);
    let lower = name.to_ascii_lowercase();
    let websocket = (lower == "upgrade" && value == "$http_upgrade")
        || (lower == "connection"
            && matches!(
                value.to_ascii_lowercase().as_str(),
                "upgrade" | "$connection_upgrade"
            ));
    if websocket {
        cx.carry(d);
        return;
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        cx.warn(d, format!("\"{name}\" is not a header name: ignored"));
        return;
    }
    if let Err(e) = Template::compile(value) {
        cx.warn(d, format!("value \"{value}\": {e}: the header is not set"));
        return;
    }
    if list.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
        cx.warn(d, format!("sets \"{name}\" a second time, which fulcrum's header table cannot: the first value is sent"));
        return;
    }
    cx.carry(d);
    list.push((name.clone(), value.clone()));
}

/// One `add_header NAME VALUE [always]`. A name added twice with the same `always`
/// cannot be one key of fulcrum's table: the first value stays, warned.
pub(crate) fn add_header(cx: &mut Cx, d: &Directive, list: &mut Vec<AddHeader>) {
    let (name, value, always) = match d.args.as_slice() {
        [n, v] => (n, v, false),
        [n, v, a] if a == "always" => (n, v, true),
        _ => {
            cx.warn(d, "needs a name, a value and at most \"always\": ignored");
            return;
        }
    };
    let value = &cx.server_vars(value);
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        cx.warn(d, format!("\"{name}\" is not a header name: ignored"));
        return;
    }
    if let Err(e) = Template::compile(value) {
        cx.warn(
            d,
            format!("value \"{value}\": {e}: the header is not added"),
        );
        return;
    }
    if list
        .iter()
        .any(|h| h.always == always && h.name.eq_ignore_ascii_case(name))
    {
        cx.warn(d, format!("adds \"{name}\" a second time, which fulcrum's header table cannot: only the first is added"));
        return;
    }
    cx.carry(d);
    list.push(AddHeader {
        name: name.clone(),
        value: value.clone(),
        always,
    });
}
