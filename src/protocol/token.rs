//! A generic IMAP token tree, built over the exact bytes of one message.
//!
//! IMAP has one lexical layer shared by every command and response: atoms, numbers, quoted
//! strings, literals, NIL, parenthesized lists and bracketed response codes. Knowing only that
//! layer is enough to find tags, command names, response codes and secrets in any message, and
//! it keeps imapscope useful on extensions it has never heard of.
//!
//! Tokens never copy: each carries the byte range it covers in the message. Tokenizing never
//! fails outright: it returns every token it could read plus, where the input stopped making
//! sense, a [`TokenError`] with the offset, so the message is still shown and annotated.

use std::ops::Range;

use super::framer::literal_suffix;

/// One token and the bytes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// An atom, a flag (`\Seen`) or a fetch item with its section (`BODY.PEEK[HEADER]<0.10>`).
    Atom,
    /// An atom made only of digits that fits in 64 bits.
    Number(u64),
    /// `"..."`; the span includes the quotes.
    Quoted,
    /// `{n}` / `{n+}` / `~{n}` and its data. `data` is `None` when the message was cut short
    /// before the data ended (a message too large to hold whole).
    Literal {
        len: u64,
        non_sync: bool,
        binary: bool,
        data: Option<Range<usize>>,
    },
    Nil,
    /// `( ... )`.
    List(Vec<Token>),
    /// `[ ... ]` as a response code.
    Code(Vec<Token>),
    /// Free human-readable text (the end of a status response or a continuation request).
    Text,
}

/// Where and why tokenizing stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Bytes that may end an atom or change its bracket depth.
const ATOM_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let specials = *b"\r\n ()[]";
    let mut i = 0;
    while i < specials.len() {
        table[specials[i] as usize] = true;
        i += 1;
    }
    table
};

/// The value of an atom made only of digits, if it fits in 64 bits.
pub(crate) fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// How deeply lists and response codes may nest. Real messages stay far below it (a
/// BODYSTRUCTURE of nested multiparts reaches a dozen); without a limit, a peer sending ten
/// thousand `(` would overflow the stack of whatever walks the tree.
pub const MAX_DEPTH: usize = 128;

const TOO_DEEP: &str = "lists nested more than 128 deep";
// The message above spells the limit out.
const _: () = assert!(MAX_DEPTH == 128);

/// A cursor over one message's bytes.
pub struct Tokenizer<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Lists and codes open around the current position.
    depth: usize,
    /// Response codes (`[...]`) open around the current position. Outside one, `]` is an
    /// ordinary character of an astring (RFC 9051 `ASTRING-CHAR`): a password `pa]ss`, a
    /// tag `a]`.
    codes: usize,
}

impl<'a> Tokenizer<'a> {
    pub fn new(buf: &'a [u8]) -> Tokenizer<'a> {
        Tokenizer {
            buf,
            pos: 0,
            depth: 0,
            codes: 0,
        }
    }

    /// A tokenizer that starts `pos` bytes into `buf`.
    pub fn at(buf: &'a [u8], pos: usize) -> Tokenizer<'a> {
        Tokenizer {
            buf,
            pos: pos.min(buf.len()),
            depth: 0,
            codes: 0,
        }
    }

    /// The next token's span if it is an atom that starts with a letter or digit (what tags,
    /// numbers and names nearly always are), read without building a token; `None`, with
    /// nothing consumed, for anything else.
    pub fn plain_atom(&mut self) -> Option<Range<usize>> {
        let before = self.pos;
        self.skip_spaces();
        if !self.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
            self.pos = before;
            return None;
        }
        let start = self.pos;
        self.skip_atom();
        Some(start..self.pos)
    }

    /// A message's tag: everything up to the first space (RFC 9051 `tag`, which may hold
    /// `[` and `]`), read as an atom. A message that starts with a list, a string or a
    /// literal is no tagged message; that is read as the token it is.
    pub fn tag(&mut self) -> Result<Option<Token>, TokenError> {
        self.skip_spaces();
        match self.peek() {
            None | Some(b'\r' | b'\n' | b'(' | b')' | b'"' | b'{' | b'~') => self.next_token(),
            Some(_) => {
                let start = self.pos;
                while !matches!(self.peek(), None | Some(b' ' | b'\r' | b'\n')) {
                    self.pos += 1;
                }
                let kind =
                    number(&self.buf[start..self.pos]).map_or(TokenKind::Atom, TokenKind::Number);
                Ok(Some(Token {
                    kind,
                    span: start..self.pos,
                }))
            }
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// True at CRLF, LF, or the end of the held bytes.
    pub fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\r' | b'\n'))
    }

    /// The rest of the line as text (line ending excluded), or `None` if it is empty.
    pub fn rest_as_text(&mut self) -> Option<Token> {
        self.skip_spaces();
        let start = self.pos;
        while !self.at_line_end() {
            self.pos += 1;
        }
        // A CR not followed by LF is part of the text, not the line ending.
        (self.pos > start).then_some(Token {
            kind: TokenKind::Text,
            span: start..self.pos,
        })
    }

    /// The next token on this line, `Ok(None)` at the end of the line.
    pub fn next_token(&mut self) -> Result<Option<Token>, TokenError> {
        self.skip_spaces();
        let start = self.pos;
        let Some(b) = self.peek() else {
            return Ok(None);
        };
        match b {
            b'\r' | b'\n' => Ok(None),
            b'(' | b'[' if self.depth >= MAX_DEPTH => Err(self.error(TOO_DEEP)),
            b'(' => {
                self.pos += 1;
                let items = self.sequence(b')')?;
                Ok(Some(Token {
                    kind: TokenKind::List(items),
                    span: start..self.pos,
                }))
            }
            b'[' => {
                self.pos += 1;
                self.codes += 1;
                let items = self.sequence(b']');
                self.codes -= 1;
                Ok(Some(Token {
                    kind: TokenKind::Code(items?),
                    span: start..self.pos,
                }))
            }
            b']' if self.codes == 0 => Ok(Some(self.atom())),
            b')' | b']' => Err(self.error("unbalanced closing bracket")),
            b'"' => self.quoted().map(Some),
            b'{' => Ok(Some(self.literal(start))),
            b'~' if self.buf.get(self.pos + 1) == Some(&b'{') => Ok(Some(self.literal(start))),
            _ => Ok(Some(self.atom())),
        }
    }

    /// Tokens up to the matching `close`, which is consumed.
    fn sequence(&mut self, close: u8) -> Result<Vec<Token>, TokenError> {
        self.depth += 1;
        let mut items = Vec::new();
        let result = loop {
            self.skip_spaces();
            match self.peek() {
                Some(b) if b == close => {
                    self.pos += 1;
                    break Ok(items);
                }
                None | Some(b'\r' | b'\n') => break Err(self.error(not_closed(close))),
                _ => match self.next_token() {
                    Ok(Some(token)) => items.push(token),
                    Ok(None) => break Err(self.error("unexpected end of line")),
                    Err(e) => break Err(e),
                },
            }
        };
        self.depth -= 1;
        result
    }

    fn quoted(&mut self) -> Result<Token, TokenError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Token {
                        kind: TokenKind::Quoted,
                        span: start..self.pos,
                    });
                }
                Some(b'\\') => self.pos += 2,
                None | Some(b'\r' | b'\n') => {
                    self.pos = self.pos.min(self.buf.len());
                    return Err(TokenError {
                        offset: start,
                        reason: "quoted string not closed before end of line",
                    });
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn literal(&mut self, start: usize) -> Token {
        let close = self.buf[start..]
            .iter()
            .take(24)
            .position(|&b| b == b'}')
            .map(|i| start + i);
        let header = close.and_then(|c| literal_suffix(&self.buf[start..=c]));
        let (Some(close), Some(header)) = (close, header) else {
            // Not a literal after all: `{` inside an atom-like word.
            return self.atom();
        };
        let mut data_start = close + 1;
        match &self.buf[data_start.min(self.buf.len())..] {
            [b'\r', b'\n', ..] => data_start += 2,
            [b'\n', ..] => data_start += 1,
            [] => {
                self.pos = self.buf.len();
                return self.literal_token(start, header, None);
            }
            _ => return self.atom(),
        }
        let available = self.buf.len().saturating_sub(data_start) as u64;
        if available < header.len {
            self.pos = self.buf.len();
            return self.literal_token(start, header, None);
        }
        let data_end = data_start + header.len as usize;
        self.pos = data_end;
        self.literal_token(start, header, Some(data_start..data_end))
    }

    fn literal_token(
        &self,
        start: usize,
        header: super::framer::LiteralHeader,
        data: Option<Range<usize>>,
    ) -> Token {
        Token {
            kind: TokenKind::Literal {
                len: header.len,
                non_sync: header.non_sync,
                binary: header.binary,
                data,
            },
            span: start..self.pos,
        }
    }

    /// An atom. Brackets inside an atom (`BODY[HEADER.FIELDS (To)]`) belong to it, spaces and
    /// parentheses within them included.
    fn atom(&mut self) -> Token {
        let start = self.pos;
        self.skip_atom();
        let text = &self.buf[start..self.pos];
        let kind = if text.len() == 3 && text.eq_ignore_ascii_case(b"NIL") {
            TokenKind::Nil
        } else {
            number(text).map_or(TokenKind::Atom, TokenKind::Number)
        };
        Token {
            kind,
            span: start..self.pos,
        }
    }

    /// Moves past an atom without classifying it.
    fn skip_atom(&mut self) {
        let rest = &self.buf[self.pos..];
        let mut depth = 0usize;
        let mut len = 0;
        // Every byte of every atom passes here: a table lookup keeps the common case (a byte
        // that is none of the delimiters) to one load and one branch.
        while let Some(&b) = rest.get(len) {
            if ATOM_SPECIAL[usize::from(b)] {
                match b {
                    b'\r' | b'\n' => break,
                    b' ' | b'(' | b')' if depth == 0 => break,
                    // Outside a response code, `]` is an astring's own.
                    b']' if depth == 0 && self.codes > 0 => break,
                    b']' if depth == 0 => {}
                    b'[' => depth += 1,
                    b']' => depth -= 1,
                    _ => {}
                }
            }
            len += 1;
        }
        self.pos += len;
    }

    fn error(&self, reason: &'static str) -> TokenError {
        TokenError {
            offset: self.pos,
            reason,
        }
    }

    /// Walks the remaining tokens like [`Self::rest`] without building them: where, if
    /// anywhere, the message stops making sense. The same error as `rest` gives, found
    /// without recursion or allocation, so a FETCH response for every message of a mailbox
    /// costs a scan and nothing more.
    pub fn check_rest(&mut self) -> Option<TokenError> {
        let codes = self.codes;
        let error = self.check_rest_inner();
        self.codes = codes;
        error
    }

    fn check_rest_inner(&mut self) -> Option<TokenError> {
        // The closers of the lists and codes open here, innermost last.
        let mut open = [0u8; MAX_DEPTH];
        let mut depth = 0;
        loop {
            self.skip_spaces();
            let start = self.pos;
            let Some(b) = self.peek() else {
                return (depth > 0).then(|| self.error(not_closed(open[depth - 1])));
            };
            match b {
                b'\r' | b'\n' if depth == 0 => return None,
                b'\r' | b'\n' => return Some(self.error(not_closed(open[depth - 1]))),
                _ if depth > 0 && b == open[depth - 1] => {
                    self.pos += 1;
                    depth -= 1;
                    if b == b']' {
                        self.codes -= 1;
                    }
                }
                b'(' | b'[' if self.depth + depth >= MAX_DEPTH => {
                    return Some(self.error(TOO_DEEP));
                }
                b'(' | b'[' => {
                    self.pos += 1;
                    open[depth] = if b == b'(' { b')' } else { b']' };
                    depth += 1;
                    if b == b'[' {
                        self.codes += 1;
                    }
                }
                b']' if self.codes == 0 => self.skip_atom(),
                b')' | b']' => return Some(self.error("unbalanced closing bracket")),
                b'"' => {
                    if let Err(e) = self.quoted() {
                        return Some(e);
                    }
                }
                b'{' => {
                    self.literal(start);
                }
                b'~' if self.buf.get(self.pos + 1) == Some(&b'{') => {
                    self.literal(start);
                }
                _ => self.skip_atom(),
            }
        }
    }

    /// All remaining tokens of the message (across literals), stopping at the first error.
    pub fn rest(&mut self) -> (Vec<Token>, Option<TokenError>) {
        let mut tokens = Vec::new();
        loop {
            match self.next_token() {
                Ok(Some(t)) => tokens.push(t),
                Ok(None) => return (tokens, None),
                Err(e) => return (tokens, Some(e)),
            }
        }
    }
}

fn not_closed(close: u8) -> &'static str {
    if close == b')' {
        "list not closed before end of line"
    } else {
        "response code not closed before end of line"
    }
}

/// The text of a quoted string (escapes removed) or of a literal's data or an atom.
pub fn string_value(bytes: &[u8], token: &Token) -> Option<Vec<u8>> {
    match &token.kind {
        TokenKind::Atom | TokenKind::Number(_) => Some(bytes[token.span.clone()].to_vec()),
        TokenKind::Quoted => {
            let inner = &bytes[token.span.start + 1..token.span.end - 1];
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if !escaped && b == b'\\' {
                    escaped = true;
                } else {
                    out.push(b);
                    escaped = false;
                }
            }
            Some(out)
        }
        TokenKind::Literal {
            data: Some(data), ..
        } => Some(bytes[data.clone()].to_vec()),
        _ => None,
    }
}

/// `s` as an IMAP quoted string (the inverse of reading one with [`string_value`]).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(msg: &[u8]) -> (Vec<String>, Option<TokenError>) {
        fn show(msg: &[u8], t: &Token) -> String {
            match &t.kind {
                TokenKind::List(items) => format!(
                    "({})",
                    items
                        .iter()
                        .map(|i| show(msg, i))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                TokenKind::Code(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| show(msg, i))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                TokenKind::Number(n) => format!("#{n}"),
                TokenKind::Nil => "NIL".into(),
                TokenKind::Quoted => format!("Q{}", String::from_utf8_lossy(&msg[t.span.clone()])),
                TokenKind::Literal { len, data, .. } => format!(
                    "L{len}:{}",
                    data.as_ref()
                        .map(|d| String::from_utf8_lossy(&msg[d.clone()]).into_owned())
                        .unwrap_or_else(|| "?".into())
                ),
                TokenKind::Atom => String::from_utf8_lossy(&msg[t.span.clone()]).into_owned(),
                TokenKind::Text => format!("T{}", String::from_utf8_lossy(&msg[t.span.clone()])),
            }
        }
        let (tokens, err) = Tokenizer::new(msg).rest();
        (tokens.iter().map(|t| show(msg, t)).collect(), err)
    }

    #[test]
    fn fetch_response_with_literal_and_sections() {
        let msg =
            b"* 232 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (From To)] {5}\r\nHello UID 7)\r\n";
        let (tokens, err) = kinds(msg);
        assert_eq!(err, None);
        assert_eq!(
            tokens,
            vec![
                "*",
                "#232",
                "FETCH",
                "(FLAGS (\\Seen) BODY[HEADER.FIELDS (From To)] L5:Hello UID #7)"
            ]
        );
    }

    #[test]
    fn quoted_with_escapes_and_nil() {
        let msg = b"a1 LOGIN \"nell\" \"pa ss\\\"word\" NIL\r\n";
        let mut t = Tokenizer::new(msg);
        let (tokens, err) = t.rest();
        assert_eq!(err, None);
        assert_eq!(
            string_value(msg, &tokens[3]).unwrap(),
            b"pa ss\"word".to_vec()
        );
        assert_eq!(tokens[4].kind, TokenKind::Nil);
    }

    #[test]
    fn response_code() {
        let msg = b"* OK [PERMANENTFLAGS (\\Answered \\*)] Flags permitted.\r\n";
        let (tokens, _) = kinds(msg);
        assert_eq!(tokens[2], "[PERMANENTFLAGS (\\Answered \\*)]");
    }

    #[test]
    fn errors_keep_what_was_read() {
        let (tokens, err) = kinds(b"a SELECT \"INBOX\r\n");
        assert_eq!(tokens, vec!["a", "SELECT"]);
        assert_eq!(
            err.unwrap().reason,
            "quoted string not closed before end of line"
        );
        let (tokens, err) = kinds(b"* LIST (\\HasNoChildren \"/\" INBOX\r\n");
        assert_eq!(tokens, vec!["*", "LIST"]);
        assert!(err.is_some());
        let (_, err) = kinds(b"a NOOP )\r\n");
        assert!(err.is_some());
    }

    #[test]
    fn truncated_literal() {
        let (tokens, err) = kinds(b"* 1 FETCH (BODY[] {100000}\r\nabc");
        assert_eq!(
            err.map(|e| e.reason),
            Some("list not closed before end of line")
        );
        assert_eq!(tokens, vec!["*", "#1", "FETCH"]);
        let (tokens, err) = kinds(b"a APPEND INBOX {10}\r\nabc");
        assert_eq!(err, None);
        assert_eq!(tokens, vec!["a", "APPEND", "INBOX", "L10:?"]);
    }

    #[test]
    fn never_panics_on_garbage() {
        for input in [
            &b"\xff\xfe[[[((\"\\"[..],
            b"{",
            b"~{",
            b"{3}",
            b"{3}\r",
            b"]]]",
            b"\"\\",
            b"a ~{2}\r\n\x00\x01 x",
        ] {
            let _ = Tokenizer::new(input).rest();
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // Ten thousand `(` once overflowed the stack of the tokio worker that tokenized them.
        let mut line = b"* 1 FETCH ".to_vec();
        line.extend(std::iter::repeat_n(b'(', 10_000));
        line.extend_from_slice(b"\r\n");
        let (_, err) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Tokenizer::new(&line).rest())
            .unwrap()
            .join()
            .unwrap();
        let err = err.unwrap();
        assert_eq!((err.offset, err.reason), (10 + MAX_DEPTH, TOO_DEEP));
        // At the limit it is still a list.
        let mut ok = vec![b'('; MAX_DEPTH];
        ok.extend(std::iter::repeat_n(b')', MAX_DEPTH));
        assert_eq!(Tokenizer::new(&ok).rest().1, None);
        assert_eq!(Tokenizer::new(&ok).check_rest(), None);
    }

    /// Bytes with many IMAP delimiters, so lists, codes, quotes and literals interleave.
    fn imapish() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let byte = prop_oneof![
            Just(b'('),
            Just(b')'),
            Just(b'['),
            Just(b']'),
            Just(b' '),
            Just(b'"'),
            Just(b'\\'),
            Just(b'{'),
            Just(b'}'),
            Just(b'~'),
            Just(b'\r'),
            Just(b'\n'),
            Just(b'+'),
            Just(b'1'),
            Just(b'a'),
            any::<u8>(),
        ];
        prop::collection::vec(byte, 0..300)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The allocation-free check finds exactly the error the token tree stops at, and
        /// ends at the same place.
        #[test]
        fn check_rest_agrees_with_rest(bytes in imapish(), deep in 0usize..2) {
            let mut bytes = bytes;
            if deep == 1 {
                let mut nested = vec![b'('; MAX_DEPTH - 2];
                nested.extend(bytes);
                bytes = nested;
            }
            let mut full = Tokenizer::new(&bytes);
            let (_, expected) = full.rest();
            let mut check = Tokenizer::new(&bytes);
            let got = check.check_rest();
            proptest::prop_assert_eq!(&got, &expected);
            if expected.is_none() {
                proptest::prop_assert_eq!(check.position(), full.position());
            }
        }
    }
}
