//! What the first line of a message says: tag, name, status and response code.
//!
//! This is the thin layer of IMAP grammar above the token tree that every message shares.
//! It does not know the meaning of any particular command; the tracker does.

use std::borrow::Cow;
use std::fmt;

use super::token::{Token, TokenError, TokenKind, Tokenizer};

/// A tag, name or response-code word. The words IMAP uses all the time (`*`, `FETCH`, `OK`,
/// `UIDNEXT`...) are borrowed from a static table, so a mailbox's worth of `* n FETCH`
/// responses allocates no strings; anything else is owned.
pub type Word = Cow<'static, str>;

/// Names, statuses and response codes common enough to be worth not allocating.
macro_rules! known_words {
    ($($w:literal)*) => {
        fn known_word(upper: &[u8]) -> Option<&'static str> {
            match upper {
                $(w if w == $w.as_bytes() => Some($w),)*
                _ => None,
            }
        }
    };
}

// Most frequent first: the match tries them in order.
known_words! {
    "FETCH" "OK" "EXISTS" "EXPUNGE" "RECENT" "FLAGS" "LIST" "STATUS" "SEARCH" "ESEARCH"
    "VANISHED" "NO" "BAD" "BYE" "PREAUTH" "CAPABILITY" "LSUB" "ENABLED" "ID" "NAMESPACE"
    "QUOTA" "QUOTAROOT" "METADATA" "THREAD" "SORT" "MYRIGHTS" "ACL"
    "UIDNEXT" "UIDVALIDITY" "UNSEEN" "PERMANENTFLAGS" "READ-WRITE" "READ-ONLY" "HIGHESTMODSEQ"
    "NOMODSEQ" "APPENDUID" "COPYUID" "CLOSED" "ALERT" "TRYCREATE" "NONEXISTENT" "ALREADYEXISTS"
    "AUTHENTICATIONFAILED" "UNAVAILABLE" "SERVERBUG" "CANNOT" "LIMIT" "OVERQUOTA" "INUSE"
    "NOPERM" "EXPUNGEISSUED" "CORRUPTION" "CONTACTADMIN" "PARSE" "BADCHARSET" "MODIFIED"
    "UID" "NOOP" "IDLE" "DONE" "LOGIN" "LOGOUT" "AUTHENTICATE" "SELECT" "EXAMINE" "CREATE"
    "DELETE" "RENAME" "SUBSCRIBE" "UNSUBSCRIBE" "APPEND" "CHECK" "CLOSE" "UNSELECT" "STORE"
    "COPY" "MOVE" "STARTTLS" "COMPRESS" "ENABLE" "GETQUOTAROOT" "GETQUOTA" "GETMETADATA"
    "UID FETCH" "UID STORE" "UID SEARCH" "UID COPY" "UID MOVE" "UID EXPUNGE" "UID THREAD"
    "UID SORT" "*" "+"
}

/// `text` as a [`Word`], upper-cased when `upper` (names and codes; tags keep their case).
pub fn word(text: &[u8], upper: bool) -> Word {
    const MAX: usize = 20;
    // Servers and most clients already send them upper-case.
    if let Some(w) = known_word(text) {
        return Cow::Borrowed(w);
    }
    if upper && text.len() <= MAX {
        let mut buf = [0u8; MAX];
        let buf = &mut buf[..text.len()];
        buf.copy_from_slice(text);
        buf.make_ascii_uppercase();
        if let Some(w) = known_word(buf) {
            return Cow::Borrowed(w);
        }
    }
    let mut owned = String::from_utf8_lossy(text).into_owned();
    if upper {
        owned.make_ascii_uppercase();
    }
    Cow::Owned(owned)
}

/// The status word of a status response (RFC 9051 `resp-cond-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

impl Status {
    fn parse(word: &[u8]) -> Option<Status> {
        [
            Status::Ok,
            Status::No,
            Status::Bad,
            Status::Bye,
            Status::Preauth,
        ]
        .into_iter()
        .find(|s| word.eq_ignore_ascii_case(s.as_str().as_bytes()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::Preauth => "PREAUTH",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start of a message, as far as generic grammar can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// `*` for untagged responses, `+` for continuation requests, else the tag.
    pub tag: Option<Word>,
    /// Upper-cased command or response name: `UID FETCH`, `SELECT`, `OK`, `EXISTS`.
    pub name: Option<Word>,
    /// For status responses.
    pub status: Option<Status>,
    /// The first atom of a bracketed response code, upper-cased: `CAPABILITY`, `UIDNEXT`.
    pub code: Option<Word>,
    /// The number in `* 23 EXISTS`.
    pub number: Option<u64>,
    /// Every token of the message, tag and name included (but see [`parse_response_head`]).
    pub tokens: Vec<Token>,
    /// Index in `tokens` of the first argument after the name (and response code).
    pub args_from: usize,
    /// Where tokenizing stopped making sense, if it did.
    pub error: Option<TokenError>,
}

impl Head {
    pub fn is_untagged(&self) -> bool {
        self.tag.as_deref() == Some("*")
    }

    pub fn is_continuation(&self) -> bool {
        self.tag.as_deref() == Some("+")
    }

    /// The arguments after the name.
    pub fn args(&self) -> &[Token] {
        self.tokens.get(self.args_from..).unwrap_or(&[])
    }
}

fn tag(bytes: &[u8], token: &Token) -> Word {
    word(&bytes[token.span.clone()], false)
}

fn upper(bytes: &[u8], token: &Token) -> Option<Word> {
    matches!(token.kind, TokenKind::Atom | TokenKind::Nil)
        .then(|| word(&bytes[token.span.clone()], true))
}

/// Reads a client command: `tag NAME args`, with `UID x` as a two-word name.
pub fn parse_command(bytes: &[u8]) -> Head {
    let mut tokenizer = Tokenizer::new(bytes);
    let (tokens, error) = match tokenizer.tag() {
        Ok(Some(tag)) => {
            let (rest, error) = tokenizer.rest();
            (std::iter::once(tag).chain(rest).collect(), error)
        }
        Ok(None) => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut head = Head {
        error,
        ..Head::default()
    };
    let mut i = 0;
    if let Some(first) = tokens.first() {
        head.tag = Some(tag(bytes, first));
        i = 1;
    }
    if let Some(name) = tokens.get(1).and_then(|t| upper(bytes, t)) {
        i = 2;
        let name = if name == "UID" {
            match tokens.get(2).and_then(|t| upper(bytes, t)) {
                Some(sub) => {
                    i = 3;
                    word(format!("UID {sub}").as_bytes(), false)
                }
                None => name,
            }
        } else {
            name
        };
        head.name = Some(name);
    }
    head.tokens = tokens;
    head.args_from = i;
    head
}

/// Reads a server response: untagged (`* ...`), continuation (`+ ...`) or tagged status.
pub fn parse_response(bytes: &[u8]) -> Head {
    parse_response_with(bytes, true)
}

/// [`parse_response`] for the live tracker, which needs the arguments of CAPABILITY data
/// only. Other untagged data is checked (for the "unparsed" note) but its `tokens` are left
/// empty, tag, number and name included (their values are in the other fields). A mailbox's
/// worth of `* n FETCH (FLAGS (...))` then costs no token tree and no allocation.
pub fn parse_response_head(bytes: &[u8]) -> Head {
    parse_response_with(bytes, false)
}

/// `* 23 FETCH (...)`, `* SEARCH 2 3`: untagged data, nearly every line of a big mailbox's
/// responses, read without building a token. `None` for any other shape (statuses,
/// CAPABILITY, anything odd), which the general path reads; both say the same of a head
/// (a property test in `tests/robustness.rs` holds them to it).
fn untagged_data(bytes: &[u8]) -> Option<Head> {
    if !bytes.starts_with(b"* ") {
        return None;
    }
    let mut t = Tokenizer::at(bytes, 1);
    let mut name = t.plain_atom()?;
    let mut number = None;
    if bytes[name.start].is_ascii_digit() {
        number = Some(super::token::number(&bytes[name.clone()])?);
        name = t.plain_atom()?;
    }
    if !bytes[name.start].is_ascii_alphabetic() {
        return None;
    }
    let name = word(&bytes[name], true);
    if Status::parse(name.as_bytes()).is_some() || name == "CAPABILITY" {
        return None;
    }
    Some(Head {
        tag: Some(Cow::Borrowed("*")),
        name: Some(name),
        number,
        error: t.check_rest(),
        ..Head::default()
    })
}

fn parse_response_with(bytes: &[u8], keep_args: bool) -> Head {
    if !keep_args && let Some(head) = untagged_data(bytes) {
        return head;
    }
    let mut t = Tokenizer::new(bytes);
    let mut head = Head::default();
    let first = match t.tag() {
        Ok(Some(tok)) => tok,
        Ok(None) => return head,
        Err(e) => {
            head.error = Some(e);
            return head;
        }
    };
    head.tag = Some(tag(bytes, &first));
    if &bytes[first.span.clone()] == b"+" {
        head.tokens = std::iter::once(first).chain(t.rest_as_text()).collect();
        head.args_from = 1;
        return head;
    }
    // The number of `* 23 EXISTS`, then the name. Held apart from `tokens` until it is
    // known whether they are kept: the common `* n FETCH` in a heads-only read keeps none.
    let (number, name) = match t.next_token() {
        Ok(Some(
            n @ Token {
                kind: TokenKind::Number(_),
                ..
            },
        )) => match t.next_token() {
            Ok(name) => (Some(n), name),
            Err(e) => {
                head.error = Some(e);
                head.tokens = vec![first, n];
                return head;
            }
        },
        Ok(name) => (None, name),
        Err(e) => {
            head.error = Some(e);
            head.tokens = vec![first];
            return head;
        }
    };
    if let Some(TokenKind::Number(n)) = number.as_ref().map(|n| &n.kind) {
        head.number = Some(*n);
    }
    head.name = name.as_ref().and_then(|w| upper(bytes, w));
    head.status = head
        .name
        .as_deref()
        .and_then(|n| Status::parse(n.as_bytes()));
    let lead = |first: Token| {
        let mut tokens = Vec::with_capacity(5);
        tokens.push(first);
        tokens.extend(number);
        tokens.extend(name);
        tokens
    };
    if head.status.is_some() {
        let mut tokens = lead(first);
        // resp-text: an optional [code], then free text that need not tokenize.
        let before = t.position();
        let code_start = bytes[before..]
            .iter()
            .position(|&b| b != b' ')
            .map(|i| before + i);
        if code_start.is_some_and(|i| bytes[i] == b'[') {
            match t.next_token() {
                Ok(Some(code)) => {
                    if let TokenKind::Code(items) = &code.kind {
                        head.code = items.first().and_then(|c| upper(bytes, c));
                    }
                    tokens.push(code);
                }
                Ok(None) => {}
                Err(e) => head.error = Some(e),
            }
        }
        head.args_from = tokens.len();
        if head.error.is_none() {
            tokens.extend(t.rest_as_text());
        }
        head.tokens = tokens;
    } else if keep_args || head.name.as_deref() == Some("CAPABILITY") {
        let mut tokens = lead(first);
        head.args_from = tokens.len();
        let (rest, error) = t.rest();
        tokens.extend(rest);
        head.error = error;
        head.tokens = tokens;
    } else {
        // Checked, not kept: `tokens` stays empty (see `parse_response_head`).
        head.error = t.check_rest();
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let h = parse_command(b"C fetch 232 body[]\r\n");
        assert_eq!(h.tag.as_deref(), Some("C"));
        assert_eq!(h.name.as_deref(), Some("FETCH"));
        assert_eq!(h.args().len(), 2);
        let h = parse_command(b"7 UID fetch 1:4 (UID RFC822.SIZE BODY.PEEK[])\r\n");
        assert_eq!(h.name.as_deref(), Some("UID FETCH"));
        assert_eq!(h.args().len(), 2);
        let h = parse_command(b"select inbox\r\n");
        assert_eq!(h.tag.as_deref(), Some("select"));
        assert_eq!(h.name.as_deref(), Some("INBOX"));
    }

    #[test]
    fn responses_from_the_seed() {
        let h = parse_response(
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR STARTTLS AUTH=PLAIN] Dovecot ready.\r\n",
        );
        assert!(h.is_untagged());
        assert_eq!(h.status, Some(Status::Ok));
        assert_eq!(h.code.as_deref(), Some("CAPABILITY"));
        assert_eq!(
            h.tokens.last().map(|t| t.kind.clone()),
            Some(TokenKind::Text)
        );
        let h = parse_response(b"* 228 EXISTS\r\n");
        assert_eq!(h.number, Some(228));
        assert_eq!(h.name.as_deref(), Some("EXISTS"));
        let h = parse_response(b"B OK [READ-WRITE] Select completed (0.416 secs).\r\n");
        assert_eq!(h.tag.as_deref(), Some("B"));
        assert_eq!(h.status, Some(Status::Ok));
        assert_eq!(h.code.as_deref(), Some("READ-WRITE"));
        let h = parse_response(b"select BAD Error in IMAP command INBOX: Unknown command.\r\n");
        assert_eq!(h.status, Some(Status::Bad));
        let h = parse_response(b"+ idling\r\n");
        assert!(h.is_continuation());
        let h = parse_response(b"+\r\n");
        assert!(h.is_continuation());
    }

    #[test]
    fn status_text_need_not_tokenize() {
        let h = parse_response(b"a NO [AUTHENTICATIONFAILED] Authentication failed (\"oops\r\n");
        assert_eq!(h.status, Some(Status::No));
        assert_eq!(h.error, None);
        let h = parse_response(b"* 3 FETCH (FLAGS (\\Seen)\r\n");
        assert!(h.error.is_some());
        assert_eq!(h.name.as_deref(), Some("FETCH"));
    }
}
