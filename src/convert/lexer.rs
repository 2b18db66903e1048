//! nginx's lexical rules (`ngx_conf_read_token`): words separated by white space,
//! `;` `{` `}` as their own tokens, `#` comments from the start of a word to the end
//! of the line, single- and double-quoted strings with `\` escapes, a `\` outside
//! quotes taking the next character into the word, and `${var}` whose braces belong
//! to the word.

/// One token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// 1-based line of its first character.
    pub line: usize,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A word or a quoted string, unescaped.
    Word(String),
    /// `;`
    Semicolon,
    /// `{`
    Open,
    /// `}`
    Close,
}

/// What the lexer rejects, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// A quote that never closes.
    #[error("unexpected end of file, expecting closing {quote}")]
    UnclosedQuote {
        /// The quote character.
        quote: char,
        /// Where the string starts.
        line: usize,
    },
    /// A `${` that never closes.
    #[error("unexpected end of file, expecting \"}}\" of a variable")]
    UnclosedVariable {
        /// Where the variable starts.
        line: usize,
    },
    /// A quoted string glued to what follows it.
    #[error("unexpected \"{found}\" after a quoted string")]
    AfterQuote {
        /// The character.
        found: char,
        /// Where it is.
        line: usize,
    },
}

impl LexError {
    /// The line the error is reported on.
    pub fn line(&self) -> usize {
        match self {
            LexError::UnclosedQuote { line, .. }
            | LexError::UnclosedVariable { line }
            | LexError::AfterQuote { line, .. } => *line,
        }
    }
}

/// Splits nginx config text into tokens.
pub fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                let kind = match c {
                    ';' => TokenKind::Semicolon,
                    '{' => TokenKind::Open,
                    _ => TokenKind::Close,
                };
                out.push(Token { kind, line });
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let word = quoted(&mut chars, c, &mut line)?;
                match chars.peek() {
                    None => {}
                    // nginx also lets `)` follow: `if ($a = "b")`.
                    Some(&n) if n.is_whitespace() || matches!(n, ';' | '{' | '}' | ')') => {}
                    Some(&found) => return Err(LexError::AfterQuote { found, line }),
                }
                out.push(Token {
                    kind: TokenKind::Word(word),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let word = bare(&mut chars, &mut line)?;
                out.push(Token {
                    kind: TokenKind::Word(word),
                    line: start,
                });
            }
        }
    }
    Ok(out)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// The unescaped character of `\c`, as nginx copies it: `\"`, `\'`, `\\`, `\t`,
/// `\r`, `\n` are one character, any other pair stays as written.
fn unescape(c: char, out: &mut String) {
    match c {
        '"' | '\'' | '\\' => out.push(c),
        't' => out.push('\t'),
        'r' => out.push('\r'),
        'n' => out.push('\n'),
        other => {
            out.push('\\');
            out.push(other);
        }
    }
}

fn quoted(chars: &mut Chars<'_>, quote: char, line: &mut usize) -> Result<String, LexError> {
    let start = *line;
    let mut word = String::new();
    loop {
        match chars.next() {
            None => return Err(LexError::UnclosedQuote { quote, line: start }),
            Some(c) if c == quote => return Ok(word),
            Some('\\') => match chars.next() {
                None => return Err(LexError::UnclosedQuote { quote, line: start }),
                Some(c) => {
                    if c == '\n' {
                        *line += 1;
                    }
                    unescape(c, &mut word);
                }
            },
            Some(c) => {
                if c == '\n' {
                    *line += 1;
                }
                word.push(c);
            }
        }
    }
}

fn bare(chars: &mut Chars<'_>, line: &mut usize) -> Result<String, LexError> {
    let mut word = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
            break;
        }
        chars.next();
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    if n == '\n' {
                        *line += 1;
                    }
                    unescape(n, &mut word);
                }
                None => word.push('\\'),
            },
            '$' if chars.peek() == Some(&'{') => {
                let start = *line;
                word.push('$');
                for n in chars.by_ref() {
                    if n == '\n' {
                        *line += 1;
                    }
                    word.push(n);
                    if n == '}' {
                        break;
                    }
                }
                if !word.ends_with('}') {
                    return Err(LexError::UnclosedVariable { line: start });
                }
            }
            c => word.push(c),
        }
    }
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        tokenize(src)
            .expect("lexes")
            .into_iter()
            .map(|t| match t.kind {
                TokenKind::Word(w) => w,
                TokenKind::Semicolon => ";".into(),
                TokenKind::Open => "{".into(),
                TokenKind::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn punctuation_ends_words_without_spaces() {
        assert_eq!(words("a b;c{d}"), ["a", "b", ";", "c", "{", "d", "}"]);
    }

    #[test]
    fn comments_run_to_end_of_line_only_at_word_start() {
        assert_eq!(words("a # b ; c\nd;"), ["a", "d", ";"]);
        assert_eq!(words("a b#c;"), ["a", "b#c", ";"]);
    }

    #[test]
    fn quotes_keep_spaces_and_specials_and_unescape() {
        assert_eq!(
            words(r#"a "b c;{}#" 'd"e';"#),
            ["a", "b c;{}#", "d\"e", ";"]
        );
        assert_eq!(words(r#"a "x\"y\\z\tq";"#), ["a", "x\"y\\z\tq", ";"]);
        // Other escapes stay as written (regexes keep their backslashes).
        assert_eq!(words(r#"a "\d+\.";"#), ["a", r"\d+\.", ";"]);
        assert_eq!(words("a '';"), ["a", "", ";"]);
    }

    #[test]
    fn backslash_outside_quotes_takes_the_next_character() {
        // The pair stays as written (nginx unescapes only quotes, `\\`, t, r, n).
        assert_eq!(words(r"a b\;c;"), ["a", r"b\;c", ";"]);
        assert_eq!(
            words(r"location ~ \.php$ {"),
            ["location", "~", r"\.php$", "{"]
        );
        assert_eq!(words(r"a b\ c;"), ["a", r"b\ c", ";"]);
    }

    #[test]
    fn braces_of_a_variable_belong_to_the_word() {
        assert_eq!(words("set $a ${b}c;"), ["set", "$a", "${b}c", ";"]);
        assert_eq!(
            tokenize("a ${b"),
            Err(LexError::UnclosedVariable { line: 1 })
        );
    }

    #[test]
    fn lines_count_through_multi_line_directives_and_strings() {
        let t = tokenize("a\n  b\n  c;\nd \"x\ny\";\ne;").expect("lexes");
        let lines: Vec<usize> = t.iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 2, 3, 3, 4, 4, 5, 6, 6]);
    }

    #[test]
    fn unclosed_quote_and_glued_quote_are_errors() {
        let e = tokenize("a\n\"b;\n").expect_err("unclosed");
        assert_eq!(e.line(), 2);
        assert_eq!(
            e.to_string(),
            "unexpected end of file, expecting closing \""
        );
        let e = tokenize("a \"b\"c;").expect_err("glued");
        assert_eq!(e.to_string(), "unexpected \"c\" after a quoted string");
        assert_eq!(
            words("if ($a = \"b\") {"),
            ["if", "($a", "=", "b", ")", "{"]
        );
    }

    #[test]
    fn crlf_and_tabs_are_white_space() {
        assert_eq!(words("a\tb;\r\nc;"), ["a", "b", ";", "c", ";"]);
    }
}
