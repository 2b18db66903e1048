//! Schema → runtime [`Config`], collecting every problem with its position.
//!
//! This file holds the [`Validator`] with its value parsers and the small sections
//! (`[global]`, `[admin]`); `upstream` and `server` validate the sections named so.

mod location;
mod real_ip;
mod resolve;
mod server;
mod tls;
mod upstream;
mod upstream_tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::{ConfigError, Reporter};
use super::schema::{self, FileConfig};
use super::values;
use super::*;
use crate::route::template::Template;

pub(super) fn validate(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let mut r = Reporter::new(path, src);
    let file: FileConfig = match toml::from_str(src) {
        Ok(f) => f,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            r.error_at(at, syntax_message(&e, src, at));
            return Err(r.finish().err().unwrap_or(ConfigError {
                diagnostics: Vec::new(),
            }));
        }
    };
    let mut v = Validator { r };
    let mut config = v.config(path, file);
    config.warnings = v.r.take_warnings();
    v.r.finish()?;
    Ok(config)
}

/// What a TOML syntax error says. toml has no words for some (a control character
/// in a comment: found by fuzzing); those name the character found.
fn syntax_message(e: &toml::de::Error, src: &str, at: usize) -> String {
    match e.message().trim_end() {
        "" => match src.get(at..).and_then(|s| s.chars().next()) {
            Some(c) => format!("invalid TOML: unexpected {c:?}"),
            None => "invalid TOML: unexpected end of file".to_string(),
        },
        m => m.to_string(),
    }
}

struct Validator<'a> {
    r: Reporter<'a>,
}

fn span_of<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

impl Validator<'_> {
    fn duration(&mut self, v: &Option<Spanned<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match values::parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.r.error(span_of(s), e.to_string());
                    default
                }
            },
        }
    }

    fn count(&mut self, v: &Option<Spanned<i64>>, default: u64, what: &str) -> u64 {
        match v {
            None => default,
            Some(n) if *n.get_ref() >= 0 => *n.get_ref() as u64,
            Some(n) => {
                self.r
                    .error(span_of(n), format!("{what} must not be negative"));
                default
            }
        }
    }

    fn size(&mut self, v: &Option<schema::SpannedValue>, default: u64) -> u64 {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => values::parse_size_str(s),
            other => Err(values::ValueError::SizeType {
                value: other.to_string(),
            }),
        };
        parsed.unwrap_or_else(|e| {
            self.r.error(span_of(v), e.to_string());
            default
        })
    }

    fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::compile(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                // +1 skips the opening quote of the TOML string.
                self.r
                    .error_at(s.span().start + 1 + e.offset(), e.to_string());
                None
            }
        }
    }

    fn config(&mut self, path: &Path, file: FileConfig) -> Config {
        let global = self.global(&file.global);
        let admin = self.admin(&file.admin);
        // Relative certificate, key and CA paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new(""));
        let mut upstreams = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (name, section) in &file.upstream {
            if let Some(u) = self.upstream(name, section, base) {
                by_name.insert(name.get_ref().to_ascii_lowercase(), upstreams.len());
                upstreams.push(u);
            }
        }
        let mut servers = Vec::new();
        for s in &file.server {
            servers.push(self.server(s, base, &mut upstreams, &mut by_name));
        }
        self.check_listens(&file.server, &servers);
        let mut demo = Vec::new();
        if let Some(d) = &file.demo {
            for b in &d.get_ref().backends {
                match values::parse_listen(b.get_ref()) {
                    Ok(a) => demo.push(a),
                    Err(e) => self.r.error(span_of(b), e.to_string()),
                }
            }
        }
        Config {
            path: path.to_path_buf(),
            global,
            admin,
            upstreams,
            servers,
            demo,
            demo_requests: file.demo.as_ref().map_or(0, |d| d.get_ref().requests),
            warnings: Vec::new(),
        }
    }

    fn global(&mut self, g: &schema::GlobalSection) -> Global {
        let access_log = match g.access_log.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("off") => AccessLogTarget::Off,
            Some("stdout") => AccessLogTarget::Stdout,
            Some("stderr") => AccessLogTarget::Stderr,
            Some("") => {
                if let Some(a) = &g.access_log {
                    self.r.error(span_of(a), "access_log must not be empty");
                }
                AccessLogTarget::Off
            }
            Some(path) => AccessLogTarget::Path(path.into()),
        };
        let access_log_format = match g.access_log_format.as_ref() {
            None => AccessLogFormat::Combined,
            Some(f) => match f.get_ref().as_str() {
                "combined" => AccessLogFormat::Combined,
                "json" => AccessLogFormat::Json,
                other => {
                    self.r.error(
                        span_of(f),
                        format!(
                            "invalid access_log_format \"{other}\" (expected \"combined\" or \"json\")"
                        ),
                    );
                    AccessLogFormat::Combined
                }
            },
        };
        if let Some(l) = &g.log_level {
            if tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err() {
                self.r
                    .error(span_of(l), format!("invalid log_level \"{}\"", l.get_ref()));
            }
        }
        Global {
            worker_threads: self.count(&g.worker_threads, 0, "worker_threads") as usize,
            shutdown_timeout: self.duration(&g.shutdown_timeout, Duration::from_secs(30)),
            log_level: g.log_level.as_ref().map(|l| l.get_ref().clone()),
            max_connections: self.count(&g.max_connections, 0, "max_connections") as usize,
            access_log,
            access_log_format,
            resolver: self.resolver(&g.resolver),
            resolver_timeout: self.resolver_timeout(&g.resolver_timeout),
        }
    }

    fn admin(&mut self, a: &schema::AdminSection) -> Option<Admin> {
        let listen = match &a.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
            Some(l) if l.get_ref() == "off" => return None,
            Some(l) => match values::parse_listen(l.get_ref()) {
                Ok(a) => a,
                Err(e) => {
                    self.r.error(span_of(l), e.to_string());
                    return None;
                }
            },
        };
        let token = match &a.token {
            Some(t) if t.get_ref().is_empty() => {
                self.r.error(span_of(t), "admin token must not be empty");
                None
            }
            t => t.as_ref().map(|t| t.get_ref().clone()),
        };
        Some(Admin { listen, token })
    }
}
