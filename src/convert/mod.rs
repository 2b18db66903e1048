//! `fulcrum convert`: an nginx config becomes the fulcrum TOML that means the same,
//! with a warning for each directive it cannot carry (`docs/convert.md` has the
//! mapping). The output is checked with fulcrum's own validation before it is handed
//! back, so what `convert` writes is what `fulcrum check` accepts.

mod emit;
mod headers;
mod inherit;
pub mod lexer;
mod location;
pub mod parser;
mod real_ip;
mod server;
mod targets;
mod tls;
mod upstream;
mod upstream_tls;
mod values;

use std::path::Path;

use parser::Directive;

/// A converted config.
#[derive(Debug)]
pub struct Output {
    /// The fulcrum TOML.
    pub toml: String,
    /// One per directive not carried, in file order.
    pub warnings: Vec<Warning>,
    /// How many directives were carried.
    pub carried: usize,
    /// The `PATH:LINE` of each directive carried (as many as `carried`).
    pub carried_at: Vec<String>,
}

/// A directive convert cannot carry, and what happens instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `PATH:LINE`.
    pub at: String,
    /// The directive's name.
    pub name: String,
    /// What happens instead.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: directive \"{}\" {}",
            self.at, self.name, self.message
        )
    }
}

/// Why there is no output.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The nginx files cannot be read.
    #[error(transparent)]
    Parse(#[from] parser::ParseError),
    /// What convert wrote does not validate: a bug in convert, or a name that does
    /// not resolve here.
    #[error("the converted config does not pass fulcrum's validation:\n{0}")]
    Invalid(crate::config::ConfigError),
}

/// Converts the nginx config at `path` (and what it includes).
pub fn convert(path: &Path) -> Result<Output, ConvertError> {
    let tree = parser::parse_file(path)?;
    let mut cx = Cx {
        prefix: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ..Cx::default()
    };
    let http = cx.main(&tree);
    let toml = emit::config(&http);
    crate::config::parse(Path::new("converted.toml"), &toml).map_err(ConvertError::Invalid)?;
    Ok(Output {
        toml,
        warnings: cx.warnings,
        carried: cx.carried,
        carried_at: cx.carried_at,
    })
}

/// What the `http` context holds, ready to write.
#[derive(Debug, Default)]
pub(crate) struct Http {
    pub upstreams: Vec<upstream::Pool>,
    pub servers: Vec<server::Server>,
}

/// The conversion's running account: warnings and the count carried.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    pub warnings: Vec<Warning>,
    pub carried: usize,
    /// `PATH:LINE` of each directive carried.
    pub carried_at: Vec<String>,
    /// nginx's prefix: the main file's directory, which relative paths in the
    /// config (certificates) are relative to.
    pub prefix: std::path::PathBuf,
    /// The first name of the server being read, nginx's `$server_name`, when it is a
    /// plain name.
    pub server_name: Option<String>,
    /// Pools dropped for having no server fulcrum can carry (lowercase names).
    pub dropped: std::collections::HashSet<String>,
}

impl Cx {
    pub fn warn(&mut self, d: &Directive, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: d.at(),
            name: d.name.clone(),
            message: message.into(),
        });
    }

    /// A warning about something a directive at `at` leads to.
    pub fn warn_at(&mut self, at: &str, name: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: at.to_string(),
            name: name.to_string(),
            message: message.into(),
        });
    }

    /// `value` with nginx's `$server_name` written as the server's first name, when
    /// it is a plain one (fulcrum's templates have no such variable).
    pub fn server_vars(&self, value: &str) -> String {
        match &self.server_name {
            Some(n) => value
                .replace("${server_name}", n)
                .replace("$server_name", n),
            None => value.to_string(),
        }
    }

    pub fn carry(&mut self, d: &Directive) {
        self.carried += 1;
        self.carried_at.push(d.at());
    }

    /// The main context: `http` blocks are read; `server` and `upstream` at the top
    /// (a file meant to be included into `http`) too; everything else is warned. A
    /// file with no `http` block at all (a conf.d snippet) is read as one.
    fn main(&mut self, tree: &[Directive]) -> Http {
        let mut http = Http::default();
        let snippet = !tree.iter().any(|d| d.name == "http");
        let mut levels = if snippet { vec![tree] } else { Vec::new() };
        for d in tree.iter().filter(|_| !snippet) {
            match (d.name.as_str(), &d.block) {
                ("http", Some(b)) => {
                    self.carry(d);
                    levels.push(b.as_slice());
                }
                ("upstream" | "server", Some(_)) => levels.push(std::slice::from_ref(d)),
                _ => self.warn(d, other_message(d)),
            }
        }
        for level in levels {
            self.http(level, &mut http);
        }
        targets::resolve_targets(self, &mut http);
        server::order(self, &mut http.servers);
        server::tls_addresses(self, &mut http.servers);
        http
    }

    fn http(&mut self, block: &[Directive], http: &mut Http) {
        let inherit = location::Inherit::default().level(self, block, "http");
        for d in block {
            match (d.name.as_str(), &d.block) {
                ("upstream", Some(b)) => {
                    if let Some(p) = upstream::pool(self, d, b) {
                        http.upstreams.push(p);
                    }
                }
                ("server", Some(b)) => {
                    http.servers.extend(server::server(self, d, b, &inherit));
                }
                _ => {}
            }
        }
    }
}

/// The warning for a directive convert does not carry.
pub(crate) fn other_message(d: &Directive) -> String {
    let what = match d.name.as_str() {
        "root" | "alias" | "index" | "autoindex" | "try_files" => {
            "serves files from disk, which fulcrum does not: ignored"
        }
        "gzip" | "gzip_types" | "gzip_proxied" | "gzip_comp_level" | "gzip_vary" => {
            "compresses responses, which fulcrum does not: responses pass as the upstream sends them"
        }
        "limit_req" | "limit_conn" | "limit_req_zone" | "limit_conn_zone" => {
            "limits request rates, which fulcrum does not: no limit applies"
        }
        "access_log" | "error_log" | "log_format" => {
            "is not carried: set [global] access_log / log_level instead"
        }
        "send_timeout" => "(to the client) has no fulcrum equivalent: ignored",
        "include" => "names a file that is not there: its directives are not carried",
        "rewrite" => "is not carried: the URI passes unchanged",
        "if" => "is not carried: its block is ignored",
        "error_page" => "is not carried: errors are answered with fulcrum's own pages",
        _ if d.block.is_some() => "is not carried: the block is ignored",
        _ => "has no fulcrum equivalent here: ignored",
    };
    what.to_string()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tls;
