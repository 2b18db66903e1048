//! Config errors located as `PATH:LINE:COL: message`, like `nginx -t`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file, with its 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All the problems found in one file. Displays one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// Every problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of a source text to line and column, and collects diagnostics.
pub struct Reporter<'a> {
    path: &'a Path,
    src: &'a str,
    line_starts: Vec<usize>,
    diags: Vec<(usize, Diagnostic)>,
    warnings: Vec<(usize, Diagnostic)>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `src`, read from `path`.
    pub fn new(path: &'a Path, src: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Reporter {
            path,
            src,
            line_starts,
            diags: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Line and column (1-based) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line + 1, col)
    }

    /// Records a problem at the start of `span`.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.error_at(span.start, message);
    }

    /// Records a problem at a byte offset.
    pub fn error_at(&mut self, offset: usize, message: impl Into<String>) {
        let d = self.diagnostic(offset, message.into());
        self.diags.push((offset, d));
    }

    /// Records a warning (valid, but worth saying) at the start of `span`; its
    /// message starts with `warning: `.
    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diagnostic(span.start, format!("warning: {}", message.into()));
        self.warnings.push((span.start, d));
    }

    /// The warnings in file order, taken out of the reporter.
    pub fn take_warnings(&mut self) -> Vec<Diagnostic> {
        let mut w = std::mem::take(&mut self.warnings);
        w.sort_by_key(|(off, _)| *off);
        w.into_iter().map(|(_, d)| d).collect()
    }

    fn diagnostic(&self, offset: usize, message: String) -> Diagnostic {
        let (line, col) = self.position(offset);
        // One diagnostic per line, whatever the underlying error printed.
        let message: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Diagnostic {
            path: self.path.to_path_buf(),
            line,
            col,
            message,
        }
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }

    /// The collected problems in file order, or `Ok` when there were none.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.diags.is_empty() {
            return Ok(());
        }
        self.diags.sort_by_key(|(off, _)| *off);
        Err(ConfigError {
            diagnostics: self.diags.into_iter().map(|(_, d)| d).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbb = 2\n\ncé = x";
        let r = Reporter::new(Path::new("f.toml"), src);
        assert_eq!(r.position(0), (1, 1));
        assert_eq!(r.position(6), (2, 1));
        assert_eq!(r.position(9), (2, 4));
        assert_eq!(r.position(13), (3, 1));
        // "cé = x": 'x' is the 6th character although the 7th byte.
        assert_eq!(r.position(src.len() - 1), (4, 6));
    }

    #[test]
    fn sorted_output() {
        let mut r = Reporter::new(Path::new("f.toml"), "x\ny\n");
        r.error_at(2, "second");
        r.error_at(0, "first");
        let e = r.finish().unwrap_err();
        assert_eq!(e.to_string(), "f.toml:1:1: first\nf.toml:2:1: second");
    }
}
