//! Canonical forms of server responses, for comparing a recording with a new run.
//!
//! The rules follow Dovecot's imaptest, which server developers already trust: a status
//! response is compared on its status and response code, never its human text; volatile values
//! (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, MODSEQ, INTERNALDATE, greeting and ID texts, Dovecot's
//! `(0.001 + 0.000 secs)`) become variables, bound on first sight and checked for consistency
//! afterwards; FETCH items may come in any order; FLAGS are sets and `\Recent` is ignored.
//! Pure functions over bytes: the replayer and the fake server are shells around them.

use std::collections::BTreeMap;
use std::fmt;

use crate::protocol::message::parse_response;
use crate::protocol::token::{Token, TokenKind, string_value};

/// A value that may differ from run to run, but must do so consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Var {
    UidValidity,
    UidNext,
    HighestModSeq,
    ModSeq,
    InternalDate,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Var::UidValidity => "UIDVALIDITY",
            Var::UidNext => "UIDNEXT",
            Var::HighestModSeq => "HIGHESTMODSEQ",
            Var::ModSeq => "MODSEQ",
            Var::InternalDate => "INTERNALDATE",
        })
    }
}

/// One canonical value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C {
    /// An atom, quoted string or literal: compared by content.
    Word(Vec<u8>),
    Num(u64),
    Nil,
    List(Vec<C>),
    /// Order does not matter (FLAGS, CAPABILITY).
    Set(Vec<Vec<u8>>),
    /// Key-value pairs whose order does not matter (FETCH items), sorted by key.
    Map(Vec<(Vec<u8>, C)>),
    Var(Var, Vec<u8>),
    /// Anything matches (human text, ID values).
    Any,
}

/// Variable bindings: recorded value -> value seen in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    map: BTreeMap<(Var, Vec<u8>), Vec<u8>>,
}

impl Bindings {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `UIDVALIDITY 1795654743 -> 1795660000`, one per binding whose values differ, then a
    /// count of the bindings that kept their value.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut same = 0;
        for ((var, recorded), seen) in &self.map {
            if recorded == seen {
                same += 1;
            } else {
                out.push(format!(
                    "{var} {} -> {}",
                    String::from_utf8_lossy(recorded),
                    String::from_utf8_lossy(seen)
                ));
            }
        }
        if same > 0 {
            out.push(format!("{same} other value(s) unchanged"));
        }
        out
    }

    pub fn pairs(&self) -> Vec<(String, String, String)> {
        self.map
            .iter()
            .map(|((v, r), s)| {
                (
                    v.to_string(),
                    String::from_utf8_lossy(r).into_owned(),
                    String::from_utf8_lossy(s).into_owned(),
                )
            })
            .collect()
    }
}

/// The canonical form of one server message.
pub fn canon(bytes: &[u8]) -> Vec<C> {
    let head = parse_response(bytes);
    let Some(tag) = head.tag.as_deref() else {
        return vec![C::Word(bytes.trim_ascii().to_vec())];
    };
    if head.is_continuation() {
        return vec![C::Word(b"+".to_vec()), C::Any];
    }
    let mut out = vec![C::Word(tag.as_bytes().to_vec())];
    if head.error.is_some() {
        // Not understood: compare the bytes.
        out.push(C::Word(bytes.trim_ascii_end().to_vec()));
        return out;
    }
    let tokens = &head.tokens[1..];
    if let Some(n) = head.number {
        out.push(C::Num(n));
    }
    let Some(name) = head.name.clone() else {
        return out;
    };
    out.push(C::Word(name.as_bytes().to_vec()));
    if head.status.is_some() {
        // Status and code only; the text is for people.
        if let Some(code) = tokens.iter().find_map(|t| match &t.kind {
            TokenKind::Code(items) => Some(items),
            _ => None,
        }) {
            out.push(code_canon(bytes, code));
        }
        return out;
    }
    let args = head.args();
    match &*name {
        "CAPABILITY" | "ENABLED" => out.push(set(bytes, args, false)),
        "ID" => out.push(C::Any),
        "FLAGS" => out.push(args.first().map_or(C::Nil, |t| list_set(bytes, t))),
        "FETCH" => out.push(args.first().map_or(C::Nil, |t| fetch_map(bytes, t))),
        "STATUS" => {
            out.extend(args.first().map(|t| value(bytes, t)));
            out.extend(args.get(1).map(|t| status_items(bytes, t)));
        }
        "LIST" | "LSUB" => {
            out.extend(args.first().map(|t| list_set(bytes, t)));
            out.extend(args[1.min(args.len())..].iter().map(|t| value(bytes, t)));
        }
        _ => out.extend(args.iter().map(|t| value(bytes, t))),
    }
    out
}

fn word(bytes: &[u8], t: &Token) -> Vec<u8> {
    string_value(bytes, t).unwrap_or_else(|| bytes[t.span.clone()].to_vec())
}

fn upper(bytes: &[u8], t: &Token) -> Vec<u8> {
    word(bytes, t).to_ascii_uppercase()
}

fn value(bytes: &[u8], t: &Token) -> C {
    match &t.kind {
        TokenKind::Number(n) => C::Num(*n),
        TokenKind::Nil => C::Nil,
        TokenKind::List(items) => C::List(items.iter().map(|i| value(bytes, i)).collect()),
        TokenKind::Code(items) => code_canon(bytes, items),
        TokenKind::Text => C::Any,
        TokenKind::Literal {
            data: None, len, ..
        } => C::Word(format!("{{{len}}}").into_bytes()),
        _ => C::Word(word(bytes, t)),
    }
}

fn set(bytes: &[u8], items: &[Token], drop_recent: bool) -> C {
    let mut words: Vec<Vec<u8>> = items
        .iter()
        .map(|t| upper(bytes, t))
        .filter(|w| !(drop_recent && w == b"\\RECENT"))
        .collect();
    words.sort();
    words.dedup();
    C::Set(words)
}

fn list_set(bytes: &[u8], t: &Token) -> C {
    match &t.kind {
        TokenKind::List(items) => set(bytes, items, true),
        _ => value(bytes, t),
    }
}

fn code_canon(bytes: &[u8], items: &[Token]) -> C {
    let Some(first) = items.first() else {
        return C::List(Vec::new());
    };
    let name = upper(bytes, first);
    let rest = &items[1..];
    let var = |v: Var, t: Option<&Token>| t.map_or(C::Nil, |t| C::Var(v, word(bytes, t)));
    let args = match name.as_slice() {
        b"UIDVALIDITY" => vec![var(Var::UidValidity, rest.first())],
        b"UIDNEXT" => vec![var(Var::UidNext, rest.first())],
        b"HIGHESTMODSEQ" => vec![var(Var::HighestModSeq, rest.first())],
        b"APPENDUID" | b"COPYUID" => {
            let mut v = vec![var(Var::UidValidity, rest.first())];
            v.extend(rest.iter().skip(1).map(|t| value(bytes, t)));
            v
        }
        b"CAPABILITY" => vec![set(bytes, rest, false)],
        b"PERMANENTFLAGS" => rest.iter().map(|t| list_set(bytes, t)).collect(),
        _ => rest.iter().map(|t| value(bytes, t)).collect(),
    };
    let mut out = vec![C::Word(name)];
    out.extend(args);
    C::List(out)
}

/// FETCH data items: FLAGS as a set, INTERNALDATE and MODSEQ as variables.
fn fetch_map(bytes: &[u8], t: &Token) -> C {
    item_map(bytes, t, |key, v| match key {
        b"FLAGS" => Some(list_set(bytes, v)),
        b"INTERNALDATE" => Some(C::Var(Var::InternalDate, word(bytes, v))),
        b"MODSEQ" => match &v.kind {
            TokenKind::List(inner) if inner.len() == 1 => {
                Some(C::Var(Var::ModSeq, word(bytes, &inner[0])))
            }
            _ => None,
        },
        _ => None,
    })
}

/// STATUS items: UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as variables.
fn status_items(bytes: &[u8], t: &Token) -> C {
    item_map(bytes, t, |key, v| match key {
        b"UIDVALIDITY" => Some(C::Var(Var::UidValidity, word(bytes, v))),
        b"UIDNEXT" => Some(C::Var(Var::UidNext, word(bytes, v))),
        b"HIGHESTMODSEQ" => Some(C::Var(Var::HighestModSeq, word(bytes, v))),
        _ => None,
    })
}

/// A `(KEY value KEY value ...)` list as a map sorted by key, so item order does not matter.
/// `special` gives the canonical form of a key's value where it is not the plain value.
fn item_map(bytes: &[u8], t: &Token, special: impl Fn(&[u8], &Token) -> Option<C>) -> C {
    let TokenKind::List(items) = &t.kind else {
        return value(bytes, t);
    };
    let mut pairs: Vec<_> = items
        .chunks(2)
        .map(|pair| {
            let key = upper(bytes, &pair[0]);
            let val = match pair.get(1) {
                None => C::Nil,
                Some(v) => special(&key, v).unwrap_or_else(|| value(bytes, v)),
            };
            (key, val)
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    C::Map(pairs)
}

/// The UIDVALIDITY values a server message announces (`[UIDVALIDITY n]`, STATUS items), in
/// order. A client sends them back (`SELECT INBOX (QRESYNC (n modseq))`), so a replay must
/// put the new server's values where the recorded ones were.
pub fn uidvalidities(bytes: &[u8]) -> Vec<Vec<u8>> {
    let key = b"UIDVALIDITY ";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = memchr::memmem::find(&bytes[at..], key) {
        let start = at + p + key.len();
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        if end > start {
            out.push(bytes[start..end].to_vec());
        }
        at = end.max(start);
    }
    out
}

/// `bytes` with each whole number `from` replaced by `to`.
pub fn replace_number(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let boundary_before = i == 0 || !bytes[i - 1].is_ascii_digit();
        if boundary_before && bytes[i..].starts_with(from) {
            let after = i + from.len();
            if bytes.get(after).is_none_or(|b| !b.is_ascii_digit()) {
                out.extend_from_slice(to);
                i = after;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Whether `received` matches `expected`, binding variables as it goes. The bindings change
/// only when the whole message matches.
pub fn matches(expected: &[C], received: &[C], bindings: &mut Bindings) -> bool {
    let mut trial = bindings.clone();
    if expected.len() == received.len()
        && expected
            .iter()
            .zip(received)
            .all(|(e, r)| value_matches(e, r, &mut trial))
    {
        *bindings = trial;
        true
    } else {
        false
    }
}

fn value_matches(e: &C, r: &C, b: &mut Bindings) -> bool {
    match (e, r) {
        (C::Any, _) | (_, C::Any) => true,
        (C::Var(ve, xe), C::Var(vr, xr)) if ve == vr => match b.map.get(&(*ve, xe.clone())) {
            Some(bound) => bound == xr,
            None => {
                b.map.insert((*ve, xe.clone()), xr.clone());
                true
            }
        },
        (C::List(a), C::List(z)) => {
            a.len() == z.len() && a.iter().zip(z).all(|(x, y)| value_matches(x, y, b))
        }
        (C::Map(a), C::Map(z)) => {
            a.len() == z.len()
                && a.iter()
                    .zip(z)
                    .all(|((ka, va), (kz, vz))| ka == kz && value_matches(va, vz, b))
        }
        _ => e == r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(e: &[u8], r: &[u8], b: &mut Bindings) -> bool {
        matches(&canon(e), &canon(r), b)
    }

    #[test]
    fn completions_compare_status_and_code_not_text() {
        let mut b = Bindings::default();
        assert!(m(
            b"a1 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
            b"a1 OK [READ-WRITE] Select completed (0.004 + 0.001 secs).\r\n",
            &mut b
        ));
        assert!(!m(
            b"a1 OK [READ-WRITE] done\r\n",
            b"a1 OK [READ-ONLY] done\r\n",
            &mut b
        ));
        assert!(!m(b"a1 OK done\r\n", b"a1 NO done\r\n", &mut b));
    }

    #[test]
    fn volatile_values_bind_once_and_must_stay_consistent() {
        let mut b = Bindings::default();
        assert!(m(
            b"* OK [UIDVALIDITY 100] UIDs valid\r\n",
            b"* OK [UIDVALIDITY 777] UIDs valid\r\n",
            &mut b
        ));
        assert!(m(
            b"a5 OK [APPENDUID 100 4] Append completed.\r\n",
            b"a5 OK [APPENDUID 777 4] Append completed.\r\n",
            &mut b
        ));
        assert!(!m(
            b"a6 OK [APPENDUID 100 5] done\r\n",
            b"a6 OK [APPENDUID 778 5] done\r\n",
            &mut b
        ));
        assert_eq!(b.describe(), vec!["UIDVALIDITY 100 -> 777"]);
    }

    #[test]
    fn fetch_items_in_any_order_flags_as_sets_without_recent() {
        let mut b = Bindings::default();
        assert!(m(
            b"* 1 FETCH (FLAGS (\\Seen \\Recent \\Answered) UID 4 INTERNALDATE \"25-Nov-2026 21:05:01 +0000\")\r\n",
            b"* 1 FETCH (UID 4 INTERNALDATE \"26-Nov-2026 01:00:00 +0000\" FLAGS (\\Answered \\Seen))\r\n",
            &mut b
        ));
        assert!(!m(
            b"* 1 FETCH (FLAGS (\\Seen) UID 4)\r\n",
            b"* 1 FETCH (FLAGS (\\Seen) UID 5)\r\n",
            &mut b
        ));
        assert!(!m(
            b"* 1 FETCH (BODY[] {5}\r\nHello)\r\n",
            b"* 1 FETCH (BODY[] {5}\r\nHellO)\r\n",
            &mut b
        ));
    }

    #[test]
    fn uidvalidity_values_are_found_and_replaced_whole() {
        assert_eq!(
            uidvalidities(b"* STATUS INBOX (MESSAGES 3 UIDVALIDITY 1795 UIDNEXT 4)\r\n"),
            vec![b"1795".to_vec()]
        );
        assert_eq!(
            replace_number(
                b"a SELECT INBOX (QRESYNC (1795 1 11795))\r\n",
                b"1795",
                b"42"
            ),
            b"a SELECT INBOX (QRESYNC (42 1 11795))\r\n".to_vec()
        );
    }

    #[test]
    fn greeting_and_id_texts_are_variables() {
        let mut b = Bindings::default();
        assert!(m(
            b"* OK [CAPABILITY IMAP4rev1 IDLE] Dovecot ready.\r\n",
            b"* OK [CAPABILITY IDLE IMAP4rev1] Dovecot (Debian) ready.\r\n",
            &mut b
        ));
        assert!(m(
            b"* ID (\"name\" \"Dovecot\" \"version\" \"2.3.19\")\r\n",
            b"* ID (\"name\" \"Dovecot\" \"version\" \"2.4.0\")\r\n",
            &mut b
        ));
        assert!(!m(b"* 3 EXISTS\r\n", b"* 4 EXISTS\r\n", &mut b));
    }
}
