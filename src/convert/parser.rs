//! Tokens into a tree of directives, each with the file and line it comes from;
//! `include` is followed (globs too, relative to the main file's directory, nginx's
//! prefix), each file read from disk once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lexer::{self, Token, TokenKind};

/// One nginx directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Its name.
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
    /// The file it is written in.
    pub file: Arc<Path>,
    /// Its line there.
    pub line: usize,
    /// The directives of its block, if it has one.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// `nginx.conf:42`: the file's name (not its directory) and the line, for comments.
    pub fn short(&self) -> String {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("{name}:{}", self.line)
    }

    /// `PATH:LINE`, as warnings and errors name it.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Why a config cannot be read; shown as `PATH:LINE: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {kind}", path.display())]
pub struct ParseError {
    /// The file.
    pub path: PathBuf,
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ParseErrorKind {
    /// A lexical error.
    #[error(transparent)]
    Lex(#[from] lexer::LexError),
    /// A file that cannot be read.
    #[error("cannot read \"{}\": {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A token where it cannot be.
    #[error("unexpected \"{0}\"")]
    Unexpected(String),
    /// The file ends inside a directive or block.
    #[error("unexpected end of file, expecting \";\" or \"}}\"")]
    Eof,
    /// `include` without exactly one argument, or with a block.
    #[error("invalid number of arguments in \"include\" directive")]
    IncludeArgs,
    /// Blocks nested deeper than [`MAX_DEPTH`].
    #[error("blocks nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A file that includes itself.
    #[error("\"{}\" includes itself", file.display())]
    IncludeCycle {
        /// The file.
        file: PathBuf,
    },
}

/// The deepest nesting of blocks read (nginx's own configs nest a handful deep):
/// the reader recurses per block, and a deep enough nesting overflowed its stack
/// (found with the `nginx_conf` fuzz target).
pub const MAX_DEPTH: usize = 64;

/// Reads `path` and every file it includes.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, ParseError> {
    let prefix = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader {
        prefix,
        eof_line: 1,
        texts: HashMap::new(),
        stack: Vec::new(),
        depth: 0,
    };
    reader.file(path, path, 1)
}

struct Reader {
    prefix: PathBuf,
    /// The last line of the file being read: where an unexpected end is reported.
    eof_line: usize,
    /// Each file's text, read once.
    texts: HashMap<PathBuf, Arc<str>>,
    /// The files being read, to refuse include cycles.
    stack: Vec<PathBuf>,
    /// Blocks open (across included files).
    depth: usize,
}

impl Reader {
    /// `path`'s directives; `from`:`line` is who named it (for read errors).
    fn file(
        &mut self,
        path: &Path,
        from: &Path,
        line: usize,
    ) -> Result<Vec<Directive>, ParseError> {
        let err = |kind| ParseError {
            path: from.to_path_buf(),
            line,
            kind,
        };
        if self.stack.iter().any(|p| p == path) {
            return Err(err(ParseErrorKind::IncludeCycle {
                file: path.to_path_buf(),
            }));
        }
        let text = match self.texts.get(path) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = std::fs::read_to_string(path)
                    .map_err(|source| {
                        err(ParseErrorKind::Read {
                            file: path.to_path_buf(),
                            source,
                        })
                    })?
                    .into();
                self.texts.insert(path.to_path_buf(), t.clone());
                t
            }
        };
        let file: Arc<Path> = Arc::from(path);
        let tokens = lexer::tokenize(&text).map_err(|e| ParseError {
            path: path.to_path_buf(),
            line: e.line(),
            kind: e.into(),
        })?;
        self.stack.push(path.to_path_buf());
        let outer = self.eof_line;
        self.eof_line = text.lines().count().max(1);
        let mut it = tokens.into_iter().peekable();
        let out = self.block(&mut it, &file, false);
        self.eof_line = outer;
        self.stack.pop();
        out
    }

    fn block(
        &mut self,
        it: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        file: &Arc<Path>,
        nested: bool,
    ) -> Result<Vec<Directive>, ParseError> {
        let err = |line, kind| ParseError {
            path: file.to_path_buf(),
            line,
            kind,
        };
        let mut out = Vec::new();
        loop {
            let Some(tok) = it.next() else {
                return if nested {
                    Err(err(self.eof_line, ParseErrorKind::Eof))
                } else {
                    Ok(out)
                };
            };
            let name = match tok.kind {
                TokenKind::Word(w) => w,
                TokenKind::Close if nested => return Ok(out),
                TokenKind::Close => {
                    return Err(err(tok.line, ParseErrorKind::Unexpected("}".into())))
                }
                TokenKind::Semicolon => {
                    return Err(err(tok.line, ParseErrorKind::Unexpected(";".into())))
                }
                TokenKind::Open => {
                    return Err(err(tok.line, ParseErrorKind::Unexpected("{".into())))
                }
            };
            let mut args = Vec::new();
            let block = loop {
                let Some(t) = it.next() else {
                    return Err(err(self.eof_line, ParseErrorKind::Eof));
                };
                match t.kind {
                    TokenKind::Word(w) => args.push(w),
                    TokenKind::Semicolon => break None,
                    TokenKind::Open => break Some(self.nested(it, file, t.line)?),
                    TokenKind::Close => {
                        return Err(err(t.line, ParseErrorKind::Unexpected("}".into())))
                    }
                }
            };
            if name == "include" {
                if args.len() != 1 || block.is_some() {
                    return Err(err(tok.line, ParseErrorKind::IncludeArgs));
                }
                self.include(&args[0], file, tok.line, &mut out)?;
                continue;
            }
            out.push(Directive {
                name,
                args,
                file: file.clone(),
                line: tok.line,
                block,
            });
        }
    }

    /// The directives of a block whose `{` is at `line`, at most [`MAX_DEPTH`] deep.
    fn nested(
        &mut self,
        it: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        file: &Arc<Path>,
        line: usize,
    ) -> Result<Vec<Directive>, ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(ParseError {
                path: file.to_path_buf(),
                line,
                kind: ParseErrorKind::TooDeep,
            });
        }
        self.depth += 1;
        let out = self.block(it, file, true);
        self.depth -= 1;
        out
    }

    /// Splices in the directives of the files `pattern` names.
    fn include(
        &mut self,
        pattern: &str,
        file: &Arc<Path>,
        line: usize,
        out: &mut Vec<Directive>,
    ) -> Result<(), ParseError> {
        for f in self.expand(pattern, file, line)? {
            match self.file(&f, file, line) {
                Ok(tree) => out.extend(tree),
                // A file named but not here (`mime.types`, a snippet of another
                // machine): kept as an `include` directive, which convert warns on
                // (and fails closed in a server or location).
                Err(ParseError {
                    kind: ParseErrorKind::Read { source, .. },
                    ..
                }) if source.kind() == std::io::ErrorKind::NotFound => out.push(Directive {
                    name: "include".into(),
                    args: vec![f.display().to_string()],
                    file: file.clone(),
                    line,
                    block: None,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The files an `include` names: one path, or a glob's matches in name order
    /// (none is fine for a glob, as nginx).
    fn expand(&self, pattern: &str, from: &Path, line: usize) -> Result<Vec<PathBuf>, ParseError> {
        let full = self.prefix.join(pattern);
        if !pattern.contains(['*', '?', '[']) {
            return Ok(vec![full]);
        }
        let mut found = vec![PathBuf::new()];
        for comp in full.components() {
            let part = comp.as_os_str().to_string_lossy();
            if !part.contains(['*', '?', '[']) {
                found.iter_mut().for_each(|p| p.push(comp));
                continue;
            }
            let mut next = Vec::new();
            for dir in &found {
                let entries = match std::fs::read_dir(dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    r => r,
                };
                let entries = entries.map_err(|source| ParseError {
                    path: from.to_path_buf(),
                    line,
                    kind: ParseErrorKind::Read {
                        file: dir.clone(),
                        source,
                    },
                })?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && glob_match(&part, &name) {
                        next.push(dir.join(name));
                    }
                }
            }
            next.sort();
            found = next;
        }
        Ok(found.into_iter().filter(|p| p.is_file()).collect())
    }
}

/// Shell-style matching of one path component: `*`, `?` and `[abc]` / `[a-z]` /
/// `[!a]`.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches_at(&p, &n)
}

fn matches_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && matches_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                return n.first() == Some(&'[') && matches_at(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else { return false };
            let (neg, set) = match p.get(1) {
                Some('!' | '^') => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && matches_at(&p[end + 1..], &n[1..])
        }
        Some(&c) => n.first() == Some(&c) && matches_at(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn blocks_nest_with_lines() {
        let d = tempfile::tempdir().expect("tempdir");
        let main = write(
            d.path(),
            "nginx.conf",
            "http {\n  server {\n    listen 80;\n  }\n}\n",
        );
        let tree = parse_file(&main).expect("parses");
        assert_eq!(tree.len(), 1);
        let server = &tree[0].block.as_ref().expect("block")[0];
        assert_eq!(server.name, "server");
        assert_eq!(server.line, 2);
        let listen = &server.block.as_ref().expect("block")[0];
        assert_eq!(
            (listen.args.as_slice(), listen.line),
            (&["80".to_string()][..], 3)
        );
    }

    #[test]
    fn include_globs_are_relative_to_the_main_files_directory_and_sorted() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "conf.d/b.conf",
            "upstream b { server 127.0.0.1; }",
        );
        write(
            d.path(),
            "conf.d/a.conf",
            "upstream a {\n server 127.0.0.1; }",
        );
        write(d.path(), "conf.d/skip.txt", "broken {");
        let main = write(
            d.path(),
            "nginx.conf",
            "http {\n include conf.d/*.conf;\n}\n",
        );
        let tree = parse_file(&main).expect("parses");
        let http = tree[0].block.as_ref().expect("block");
        let names: Vec<&str> = http.iter().map(|u| u.args[0].as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(http[0].file.ends_with("conf.d/a.conf"));
        assert_eq!(http[0].block.as_ref().expect("block")[0].line, 2);
        // A glob matching nothing is fine; a missing plain file stays as its `include`.
        let empty = write(d.path(), "e.conf", "include none/*.conf;");
        assert_eq!(parse_file(&empty).expect("parses"), Vec::new());
        // A missing file stays in the tree as its `include`, for convert to warn on.
        let missing = write(d.path(), "m.conf", "\ninclude nothere.conf;");
        let tree = parse_file(&missing).expect("parses");
        assert_eq!((tree[0].name.as_str(), tree[0].line), ("include", 2));
        assert!(tree[0].args[0].ends_with("nothere.conf"));
    }

    #[test]
    fn include_cycles_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let main = write(d.path(), "a.conf", "include b.conf;");
        write(d.path(), "b.conf", "include a.conf;");
        let e = parse_file(&main).expect_err("cycle");
        assert!(e.to_string().contains("includes itself"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = write(d.path(), "x.conf", "http {\n  a b;\n");
        let e = parse_file(&f).expect_err("eof");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: unexpected end of file, expecting \";\" or \"}}\"",
                f.display()
            )
        );
        let f = write(d.path(), "y.conf", "a;\n}\n");
        assert_eq!(
            parse_file(&f).expect_err("}").to_string(),
            format!("{}:2: unexpected \"}}\"", f.display())
        );
        let f = write(d.path(), "z.conf", "a b");
        assert!(parse_file(&f).is_err());
        let f = write(d.path(), "w.conf", "a\n'b");
        assert!(parse_file(&f)
            .expect_err("quote")
            .to_string()
            .contains(":2: unexpected end of file"));
    }

    #[test]
    fn globs_match_like_the_shell() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("site-?", "site-1"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
    }
}
