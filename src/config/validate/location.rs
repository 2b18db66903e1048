//! The `[[server.location]]` sections: what a location does (`proxy_pass` or
//! `return`), its `proxy_set_header`, its `add_header` tables and the pool and server
//! settings it overrides, as nginx sets them per location.

use std::collections::HashMap;

use serde_spanned::Spanned;

use super::{span_of, Validator};
use crate::config::schema::{self, HeaderTemplates};
use crate::config::{Action, AddHeader, Location, PassOpts, ProxyPass, Return, Upstream};
use crate::route::location::LocationPattern;

/// What a location inherits from its `[[server]]` when it does not set it itself.
pub(super) struct ServerDefaults {
    pub add_headers: Vec<AddHeader>,
    pub client_max_body_size: u64,
}

impl Validator<'_> {
    pub(super) fn location(
        &mut self,
        loc: &schema::LocationSection,
        server: &ServerDefaults,
        upstreams: &mut Vec<Upstream>,
        by_name: &mut HashMap<String, usize>,
    ) -> Option<Location> {
        let pattern = match LocationPattern::parse(loc.path.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                self.r.error(span_of(&loc.path), e.to_string());
                return None;
            }
        };
        let action = match (&loc.proxy_pass, &loc.return_) {
            (Some(_), Some(r)) => {
                self.r.error(
                    span_of(r),
                    "a location has either proxy_pass or return, not both",
                );
                return None;
            }
            (None, None) => {
                self.r
                    .error(span_of(&loc.path), "location needs proxy_pass or return");
                return None;
            }
            (None, Some(r)) => Action::Return(self.return_(r.get_ref())),
            (Some(pp), None) => {
                let target = self.proxy_pass(pp, &pattern, upstreams, by_name)?;
                Action::Proxy(ProxyPass {
                    set_headers: self.set_headers(&loc.proxy_set_header),
                    opts: self.pass_opts(loc, target.opts),
                    ..target
                })
            }
        };
        // nginx: a level with any add_header of its own inherits none from above.
        let add_headers = if loc.add_header.is_some() || loc.add_header_always.is_some() {
            self.add_headers(&loc.add_header, &loc.add_header_always)
        } else {
            server.add_headers.clone()
        };
        Some(Location {
            path: loc.path.get_ref().clone(),
            pattern,
            action,
            add_headers,
            client_max_body_size: self.size(&loc.client_max_body_size, server.client_max_body_size),
        })
    }

    /// nginx `return`: a code 100–999 (444 closes the connection), body and
    /// `Location` templates.
    fn return_(&mut self, ret: &schema::ReturnSection) -> Return {
        let status = *ret.status.get_ref();
        if !(100..=999).contains(&status) {
            self.r.error(
                span_of(&ret.status),
                format!("invalid return code \"{status}\""),
            );
        }
        Return {
            status: status.clamp(100, 999) as u16,
            body: ret.body.as_ref().and_then(|b| self.template(b)),
            location: ret.location.as_ref().and_then(|b| self.template(b)),
        }
    }

    /// `proxy_set_header`, in file order.
    fn set_headers(
        &mut self,
        table: &Option<HeaderTemplates>,
    ) -> Vec<(http::HeaderName, crate::route::template::Template)> {
        let mut out = Vec::new();
        for (name, value) in table.iter().flat_map(|t| t.get_ref()) {
            if let Some(n) = self.header_name(name, value) {
                if let Some(t) = self.template(value) {
                    out.push((n, t));
                }
            }
        }
        out
    }

    /// `add_header` then `add_header_always`, each in file order.
    pub(super) fn add_headers(
        &mut self,
        plain: &Option<HeaderTemplates>,
        always: &Option<HeaderTemplates>,
    ) -> Vec<AddHeader> {
        let mut out = Vec::new();
        for (table, always) in [(plain, false), (always, true)] {
            for (name, value) in table.iter().flat_map(|t| t.get_ref()) {
                let Some(name) = self.header_name(name, value) else {
                    continue;
                };
                if let Some(value) = self.template(value) {
                    out.push(AddHeader {
                        name,
                        value,
                        always,
                    });
                }
            }
        }
        out
    }

    fn header_name(&mut self, name: &str, at: &Spanned<String>) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.r
                    .error(span_of(at), format!("invalid header name \"{name}\""));
                None
            }
        }
    }

    /// The pool's settings with the location's own where it sets them.
    fn pass_opts(&mut self, loc: &schema::LocationSection, pool: PassOpts) -> PassOpts {
        PassOpts {
            connect_timeout: self.duration(&loc.connect_timeout, pool.connect_timeout),
            send_timeout: self.duration(&loc.send_timeout, pool.send_timeout),
            read_timeout: self.duration(&loc.read_timeout, pool.read_timeout),
            next_upstream: match &loc.next_upstream {
                Some(_) => self.next_upstream(&loc.next_upstream),
                None => pool.next_upstream,
            },
            next_upstream_tries: self.count(
                &loc.next_upstream_tries,
                pool.next_upstream_tries.into(),
                "next_upstream_tries",
            ) as u32,
            next_upstream_timeout: self
                .duration(&loc.next_upstream_timeout, pool.next_upstream_timeout),
        }
    }
}
