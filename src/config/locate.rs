//! Finds where a field path sits in a RON source, for semantic errors.
//!
//! serde gives positions only for what it rejects while parsing; `validate()`
//! finds problems later (a name that refers to nothing, a duplicate
//! listener) and still owes the user a line and column. This walks the RON
//! text once and records the position of every value by its field path
//! (`dns.listen[1]`, `dns.upstreams.knot.url`). It is only run on text that
//! already parsed, and gives up quietly on anything it does not understand.

use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Open(char),
    Close(char),
    Comma,
    Colon,
    Ident(String),
    Str(String),
    Other,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            chars: src.chars().peekable(),
            line: 1,
            col: 1,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') => {
                    let mut ahead = self.chars.clone();
                    ahead.next();
                    match ahead.next() {
                        Some('/') => while self.bump().is_some_and(|c| c != '\n') {},
                        Some('*') => self.skip_block_comment(),
                        _ => return,
                    }
                }
                _ => return,
            }
        }
    }

    fn skip_block_comment(&mut self) {
        self.bump();
        self.bump();
        let mut depth = 1;
        while depth > 0 {
            match self.bump() {
                Some('*') if self.chars.peek() == Some(&'/') => {
                    self.bump();
                    depth -= 1;
                }
                Some('/') if self.chars.peek() == Some(&'*') => {
                    self.bump();
                    depth += 1;
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    fn string(&mut self) -> String {
        let mut out = String::new();
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.bump() {
                        out.push(escaped);
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    fn raw_string(&mut self) -> String {
        self.bump(); // r
        let mut hashes = 0;
        while self.chars.peek() == Some(&'#') {
            self.bump();
            hashes += 1;
        }
        self.bump(); // "
        let mut out = String::new();
        while let Some(c) = self.bump() {
            if c == '"' {
                let mut ahead = self.chars.clone();
                if (0..hashes).all(|_| ahead.next() == Some('#')) {
                    for _ in 0..hashes {
                        self.bump();
                    }
                    break;
                }
            }
            out.push(c);
        }
        out
    }

    fn next_token(&mut self) -> Option<(Position, Tok)> {
        self.skip_trivia();
        let pos = Position {
            line: self.line,
            col: self.col,
        };
        let c = *self.chars.peek()?;
        let tok = match c {
            '(' | '[' | '{' => {
                self.bump();
                Tok::Open(c)
            }
            ')' | ']' | '}' => {
                self.bump();
                Tok::Close(c)
            }
            ',' => {
                self.bump();
                Tok::Comma
            }
            ':' => {
                self.bump();
                Tok::Colon
            }
            '"' => Tok::Str(self.string()),
            'r' if matches!(self.peek2(), Some('"') | Some('#')) => Tok::Str(self.raw_string()),
            '\'' => {
                self.bump();
                while self.bump().is_some_and(|c| c != '\'') {}
                Tok::Other
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut ident = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_alphanumeric() || c == '_' {
                        ident.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Tok::Ident(ident)
            }
            _ => {
                // Numbers and anything else: one run of non-delimiters.
                while let Some(&c) = self.chars.peek() {
                    if c.is_whitespace() || "()[]{},:\"".contains(c) {
                        break;
                    }
                    self.bump();
                }
                Tok::Other
            }
        };
        Some((pos, tok))
    }

    fn peek2(&self) -> Option<char> {
        let mut ahead = self.chars.clone();
        ahead.next();
        ahead.next()
    }
}

/// Positions of values in one RON document, by field path.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
}

impl Locator {
    /// Walks `src`; anything unexpected ends the walk with what was found.
    pub fn new(src: &str) -> Self {
        let tokens: Vec<(Position, Tok)> = {
            let mut lexer = Lexer::new(src);
            std::iter::from_fn(|| lexer.next_token()).collect()
        };
        let mut walker = Walker {
            tokens: &tokens,
            at: 0,
            positions: HashMap::new(),
        };
        walker.value("");
        Locator {
            positions: walker.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that was found.
    pub fn find(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => {
                    return self
                        .positions
                        .get("")
                        .copied()
                        .unwrap_or(Position { line: 1, col: 1 })
                }
            }
        }
    }
}

struct Walker<'t> {
    tokens: &'t [(Position, Tok)],
    at: usize,
    positions: HashMap<String, Position>,
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

impl Walker<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn peek_at(&self, offset: usize) -> Option<&Tok> {
        self.tokens.get(self.at + offset).map(|(_, t)| t)
    }

    fn take(&mut self) -> Option<(Position, Tok)> {
        let tok = self.tokens.get(self.at).cloned();
        self.at += 1;
        tok
    }

    /// One value at `path`; returns false when the walk must stop.
    fn value(&mut self, path: &str) -> bool {
        let Some((pos, tok)) = self.take() else {
            return false;
        };
        self.positions.entry(path.to_string()).or_insert(pos);
        match tok {
            Tok::Ident(_) if self.peek() == Some(&Tok::Open('(')) => {
                self.take();
                self.parens(path)
            }
            Tok::Open('(') => self.parens(path),
            Tok::Open('[') => self.list(path),
            Tok::Open('{') => self.map(path),
            Tok::Ident(_) | Tok::Str(_) | Tok::Other => true,
            _ => false,
        }
    }

    /// The inside of `( ... )`: struct fields, or a tuple. A one-element
    /// tuple (`Some(x)`, a newtype variant) is transparent.
    fn parens(&mut self, path: &str) -> bool {
        let is_struct =
            matches!(self.peek(), Some(Tok::Ident(_))) && self.peek_at(1) == Some(&Tok::Colon);
        if is_struct {
            return self.fields(path);
        }
        let mut items: Vec<usize> = Vec::new();
        loop {
            if self.peek() == Some(&Tok::Close(')')) {
                self.take();
                break;
            }
            items.push(self.at);
            if !self.value(&format!("{path}[{}]", items.len() - 1)) {
                return false;
            }
            match self.take() {
                Some((_, Tok::Comma)) => {}
                Some((_, Tok::Close(')'))) => break,
                _ => return false,
            }
        }
        if items.len() == 1 {
            // Re-walk the single element under the parent's own path.
            let end = self.at;
            self.at = items[0];
            let ok = self.value(path);
            self.at = end;
            return ok;
        }
        true
    }

    fn fields(&mut self, path: &str) -> bool {
        loop {
            match self.take() {
                Some((_, Tok::Close(')'))) => return true,
                Some((_, Tok::Ident(name))) => {
                    if self.take().map(|(_, t)| t) != Some(Tok::Colon) {
                        return false;
                    }
                    if !self.value(&join(path, &name)) {
                        return false;
                    }
                }
                _ => return false,
            }
            match self.take() {
                Some((_, Tok::Comma)) => {}
                Some((_, Tok::Close(')'))) => return true,
                _ => return false,
            }
        }
    }

    fn list(&mut self, path: &str) -> bool {
        let mut index = 0;
        loop {
            if self.peek() == Some(&Tok::Close(']')) {
                self.take();
                return true;
            }
            if !self.value(&format!("{path}[{index}]")) {
                return false;
            }
            index += 1;
            match self.take() {
                Some((_, Tok::Comma)) => {}
                Some((_, Tok::Close(']'))) => return true,
                _ => return false,
            }
        }
    }

    fn map(&mut self, path: &str) -> bool {
        loop {
            let key = match self.take() {
                Some((_, Tok::Close('}'))) => return true,
                Some((_, Tok::Str(key))) | Some((_, Tok::Ident(key))) => key,
                _ => return false,
            };
            if self.take().map(|(_, t)| t) != Some(Tok::Colon) {
                return false;
            }
            if !self.value(&join(path, &key)) {
                return false;
            }
            match self.take() {
                Some((_, Tok::Comma)) => {}
                Some((_, Tok::Close('}'))) => return true,
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r##"// comment (with parens)
(
    admin: (socket: Some("/run/ward.sock")),
    /* block
       comment */
    dns: (
        listen: ["127.0.0.1:53", "[::1]:53"],
        upstreams: {
            "knot": (url: "udp://127.0.0.10:53"),
            r#"cf"#: (url: "tls://1.1.1.1:853", via: "hk1"),
        },
    ),
    dialers: { "hk1": Socks5((server: "127.0.0.1:1080")) },
)
"##;

    fn at(line: usize, col: usize) -> Position {
        Position { line, col }
    }

    #[test]
    fn finds_fields_list_items_map_entries_and_variants() {
        let loc = Locator::new(SRC);
        assert_eq!(loc.find("admin"), at(3, 12));
        assert_eq!(loc.find("admin.socket"), at(3, 21));
        assert_eq!(loc.find("dns.listen[1]"), at(7, 34));
        assert_eq!(loc.find("dns.upstreams.knot.url"), at(9, 27));
        assert_eq!(loc.find("dns.upstreams.cf.via"), at(10, 54));
        assert_eq!(loc.find("dialers.hk1.server"), at(13, 39));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_ancestor() {
        let loc = Locator::new(SRC);
        assert_eq!(loc.find("dns.upstreams.knot.missing"), at(9, 21));
        assert_eq!(loc.find("dns.listen[7]"), at(7, 17));
        assert_eq!(loc.find("nothing.here"), at(2, 1));
    }
}
