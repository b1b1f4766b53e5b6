//! Canonical forms of server responses, for comparing a recording with a new run.
//!
//! The rules follow Dovecot's imaptest, which server developers already trust: a status
//! response is compared on its status and response code, never its human text; values a server
//! mints afresh become variables, bound on first sight and checked for consistency afterwards;
//! FETCH items may come in any order; FLAGS are sets.
//!
//! A variable belongs to what it describes, not to its value: UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ and MAILBOXID to a mailbox, INTERNALDATE, MODSEQ, SAVEDATE, EMAILID, THREADID
//! (and Dovecot's X-GUID, Gmail's X-GM-MSGID/X-GM-THRID) to a message, that is its UID in its
//! mailbox. Two messages that happened to share a date in the recording may differ in the new
//! run, and the comparison must not tie them together.
//!
//! `\Recent` and `RECENT` say which session saw a message first: with several connections that
//! depends on timing, not on the server's correctness, so `\Recent` is left out of flag sets and
//! the number of `* n RECENT` and STATUS `RECENT` is not compared (imaptest does the same).
//! For the same reason a LIST's `\Marked` and `\Unmarked` hints are left out.
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
    MailboxId,
    ModSeq,
    InternalDate,
    SaveDate,
    EmailId,
    ThreadId,
    /// Dovecot's `X-GUID`.
    Guid,
    /// Gmail's `X-GM-MSGID` and `X-GM-THRID`.
    GmailMessageId,
    GmailThreadId,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Var::UidValidity => "UIDVALIDITY",
            Var::UidNext => "UIDNEXT",
            Var::HighestModSeq => "HIGHESTMODSEQ",
            Var::MailboxId => "MAILBOXID",
            Var::ModSeq => "MODSEQ",
            Var::InternalDate => "INTERNALDATE",
            Var::SaveDate => "SAVEDATE",
            Var::EmailId => "EMAILID",
            Var::ThreadId => "THREADID",
            Var::Guid => "X-GUID",
            Var::GmailMessageId => "X-GM-MSGID",
            Var::GmailThreadId => "X-GM-THRID",
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
    /// A value the server mints: the variable, what it belongs to (a mailbox, a message), and
    /// the value.
    Var(Var, Vec<u8>, Vec<u8>),
    /// Anything matches (human text, ID values).
    Any,
}

/// What a message is about, for the variables in it: the mailbox selected when it was sent,
/// and the mailbox its command writes to (APPEND, COPY, MOVE), for APPENDUID and COPYUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub selected: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
}

/// Variable bindings: (variable, what it belongs to, recorded value) -> value seen in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    map: BTreeMap<(Var, Vec<u8>, Vec<u8>), Vec<u8>>,
}

impl Bindings {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `UIDVALIDITY of INBOX 1795654743 -> 1795660000`, one per binding whose values differ,
    /// then a count of the bindings that kept their value.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut same = 0;
        for ((var, owner, recorded), seen) in &self.map {
            if recorded == seen {
                same += 1;
            } else {
                out.push(format!(
                    "{var}{} {} -> {}",
                    of(owner),
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

    /// (variable, what it belongs to, recorded, received).
    pub fn pairs(&self) -> Vec<(String, String, String, String)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.map
            .iter()
            .map(|((v, o, r), s)| (v.to_string(), text(o), text(r), text(s)))
            .collect()
    }
}

/// ` of INBOX UID 4`, or nothing when the owner is unknown.
fn of(owner: &[u8]) -> String {
    if owner.is_empty() {
        String::new()
    } else {
        format!(" of {}", String::from_utf8_lossy(owner))
    }
}

/// The canonical form of one server message, with no mailbox context.
pub fn canon(bytes: &[u8]) -> Vec<C> {
    canon_in(bytes, &Scope::default())
}

/// The canonical form of one server message sent within `scope`.
pub fn canon_in(bytes: &[u8], scope: &Scope) -> Vec<C> {
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
        // `* n RECENT`: which session saw a message first (see the module doc).
        let recent = head.name.as_deref() == Some("RECENT");
        out.push(if recent { C::Any } else { C::Num(n) });
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
            out.push(code_canon(bytes, code, scope));
        }
        return out;
    }
    let args = head.args();
    match &*name {
        "CAPABILITY" | "ENABLED" => out.push(set(bytes, args, false)),
        "ID" => out.push(C::Any),
        "FLAGS" => out.push(args.first().map_or(C::Nil, |t| list_set(bytes, t))),
        "FETCH" => {
            let owner = message_owner(scope, head.number, args.first().map(|t| (bytes, t)));
            out.push(args.first().map_or(C::Nil, |t| fetch_map(bytes, t, &owner)));
        }
        "STATUS" => {
            let mailbox = args.first().map(|t| word(bytes, t)).unwrap_or_default();
            out.extend(args.first().map(|t| value(bytes, t)));
            out.extend(args.get(1).map(|t| status_items(bytes, t, &mailbox)));
        }
        // `* SEARCH 2 3 (MODSEQ 6)` (RFC 7162): the highest mod-sequence among them, which
        // the server mints.
        "SEARCH" | "SORT" => out.extend(args.iter().map(|t| match &t.kind {
            TokenKind::List(items) if items.len() == 2 && upper(bytes, &items[0]) == b"MODSEQ" => {
                C::List(vec![C::Word(b"MODSEQ".to_vec()), C::Any])
            }
            _ => value(bytes, t),
        })),
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
        TokenKind::Code(items) => code_canon(bytes, items, &Scope::default()),
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

/// A LIST or LSUB response's attributes, without `\Marked` and `\Unmarked`: hints that a
/// mailbox got messages since it was last selected, which depend on what other sessions did
/// when (Dovecot says `\UnMarked` in one run and nothing in the next).
fn list_set(bytes: &[u8], t: &Token) -> C {
    match &t.kind {
        TokenKind::List(items) => match set(bytes, items, true) {
            C::Set(words) => C::Set(
                words
                    .into_iter()
                    .filter(|w| w != b"\\MARKED" && w != b"\\UNMARKED")
                    .collect(),
            ),
            other => other,
        },
        _ => value(bytes, t),
    }
}

fn code_canon(bytes: &[u8], items: &[Token], scope: &Scope) -> C {
    let Some(first) = items.first() else {
        return C::List(Vec::new());
    };
    let name = upper(bytes, first);
    let rest = &items[1..];
    let selected = scope.selected.clone().unwrap_or_default();
    let var = |v: Var, owner: &[u8], t: Option<&Token>| {
        t.map_or(C::Nil, |t| C::Var(v, owner.to_vec(), flat(bytes, t)))
    };
    let args = match name.as_slice() {
        b"UIDVALIDITY" => vec![var(Var::UidValidity, &selected, rest.first())],
        b"UIDNEXT" => vec![var(Var::UidNext, &selected, rest.first())],
        b"HIGHESTMODSEQ" => vec![var(Var::HighestModSeq, &selected, rest.first())],
        b"MAILBOXID" => vec![var(Var::MailboxId, &selected, rest.first())],
        b"APPENDUID" | b"COPYUID" => {
            let target = scope.target.clone().unwrap_or_default();
            let mut v = vec![var(Var::UidValidity, &target, rest.first())];
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

/// A value as one byte string: a word's content, a list's items joined by spaces
/// (`MAILBOXID (F3c8...)` and `MODSEQ (12)` wrap theirs in parentheses).
fn flat(bytes: &[u8], t: &Token) -> Vec<u8> {
    match &t.kind {
        TokenKind::List(items) => items
            .iter()
            .map(|i| flat(bytes, i))
            .collect::<Vec<_>>()
            .join(&b' '),
        _ => word(bytes, t),
    }
}

/// What a FETCH response is about: its message's UID in the selected mailbox, or its sequence
/// number when the response carries no UID.
fn message_owner(scope: &Scope, number: Option<u64>, items: Option<(&[u8], &Token)>) -> Vec<u8> {
    let uid = items.and_then(|(bytes, t)| match &t.kind {
        TokenKind::List(items) => items
            .chunks(2)
            .find(|pair| upper(bytes, &pair[0]) == b"UID")
            .and_then(|pair| pair.get(1))
            .map(|v| flat(bytes, v)),
        _ => None,
    });
    let mut owner = scope.selected.clone().unwrap_or_default();
    if !owner.is_empty() {
        owner.push(b' ');
    }
    match (uid, number) {
        (Some(uid), _) => {
            owner.extend_from_slice(format!("UID {}", String::from_utf8_lossy(&uid)).as_bytes())
        }
        (None, Some(n)) => owner.extend_from_slice(format!("message {n}").as_bytes()),
        (None, None) => {}
    }
    owner
}

/// FETCH data items: FLAGS as a set; what the server mints for a message as variables of it.
fn fetch_map(bytes: &[u8], t: &Token, owner: &[u8]) -> C {
    let var = |v: Var, t: &Token| Some(C::Var(v, owner.to_vec(), flat(bytes, t)));
    item_map(bytes, t, |key, v| match key {
        b"FLAGS" => Some(list_set(bytes, v)),
        b"INTERNALDATE" => var(Var::InternalDate, v),
        b"MODSEQ" => var(Var::ModSeq, v),
        b"SAVEDATE" => var(Var::SaveDate, v),
        b"EMAILID" => var(Var::EmailId, v),
        b"THREADID" => var(Var::ThreadId, v),
        b"X-GUID" => var(Var::Guid, v),
        b"X-GM-MSGID" => var(Var::GmailMessageId, v),
        b"X-GM-THRID" => var(Var::GmailThreadId, v),
        b"BODYSTRUCTURE" | b"BODY" => Some(body_structure(bytes, v)),
        _ => None,
    })
}

/// A BODYSTRUCTURE with what RFC 9051 makes case-insensitive in upper case: media types and
/// subtypes, parameter names, CHARSET values, transfer encodings and disposition types
/// (Cyrus says `"TEXT" "PLAIN"` where Dovecot says `"text" "plain"`). Descriptions, ids and
/// other parameter values (file names) keep their case.
fn body_structure(bytes: &[u8], t: &Token) -> C {
    let TokenKind::List(items) = &t.kind else {
        return value(bytes, t);
    };
    let up = |t: &Token| match &t.kind {
        TokenKind::Nil => C::Nil,
        TokenKind::Number(n) => C::Num(*n),
        _ => C::Word(upper(bytes, t)),
    };
    let params = |t: &Token| match &t.kind {
        TokenKind::List(kv) => C::List(
            kv.chunks(2)
                .flat_map(|pair| {
                    let key = upper(bytes, &pair[0]);
                    let val = pair.get(1).map(|v| match key.as_slice() {
                        b"CHARSET" => up(v),
                        _ => value(bytes, v),
                    });
                    std::iter::once(C::Word(key)).chain(val)
                })
                .collect(),
        ),
        _ => value(bytes, t),
    };
    // `(type params)` of a disposition.
    let disposition = |t: &Token| match &t.kind {
        TokenKind::List(d) => C::List(
            d.iter()
                .enumerate()
                .map(|(i, x)| if i == 0 { up(x) } else { params(x) })
                .collect(),
        ),
        _ => value(bytes, t),
    };
    let parts = items
        .iter()
        .take_while(|i| matches!(i.kind, TokenKind::List(_)))
        .count();
    // Where the extension data starts (RFC 9051 `body-ext-mpart`, `body-ext-1part`): a
    // server may leave out its trailing fields, which a client reads as NIL.
    let mut extension_from = parts + 1;
    let mut out: Vec<C> = if parts > 0 {
        // Multipart: the parts, the subtype, then params, disposition, language, location.
        items
            .iter()
            .enumerate()
            .map(|(i, x)| match i.checked_sub(parts) {
                None => body_structure(bytes, x),
                Some(0) => up(x),
                Some(1) => params(x),
                Some(2) => disposition(x),
                _ => value(bytes, x),
            })
            .collect()
    } else {
        // One part: type, subtype, params, id, description, encoding, size, then by type
        // (MESSAGE/RFC822's envelope, body and lines; TEXT's lines), md5, disposition...
        let message = items.len() > 9
            && upper(bytes, &items[0]) == b"MESSAGE"
            && matches!(items[8].kind, TokenKind::List(_));
        let disposition_at = if message {
            11
        } else if upper(bytes, &items[0]) == b"TEXT" {
            9
        } else {
            8
        };
        extension_from = disposition_at - 1;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| match i {
                0 | 1 | 5 => up(x),
                2 => params(x),
                8 if message => body_structure(bytes, x),
                i if i == disposition_at => disposition(x),
                _ => value(bytes, x),
            })
            .collect()
    };
    while out.len() > extension_from && out.last() == Some(&C::Nil) {
        out.pop();
    }
    C::List(out)
}

/// STATUS items: what the server mints for the mailbox as its variables; RECENT not compared.
fn status_items(bytes: &[u8], t: &Token, mailbox: &[u8]) -> C {
    let var = |v: Var, t: &Token| Some(C::Var(v, mailbox.to_vec(), flat(bytes, t)));
    item_map(bytes, t, |key, v| match key {
        b"UIDVALIDITY" => var(Var::UidValidity, v),
        b"UIDNEXT" => var(Var::UidNext, v),
        b"HIGHESTMODSEQ" => var(Var::HighestModSeq, v),
        b"MAILBOXID" => var(Var::MailboxId, v),
        b"RECENT" => Some(C::Any),
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
            let key = header_list_unquoted(upper(bytes, &pair[0]));
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

/// A FETCH item's name with the header list of a `HEADER.FIELDS` section as a set of names:
/// `BODY[HEADER.FIELDS ("FROM" "TO")]` (Courier echoes them quoted) and `BODY[HEADER.FIELDS
/// (TO FROM)]` name the same item (`header-fld-name` is an astring; the headers come in the
/// message's order whatever the list's).
fn header_list_unquoted(key: Vec<u8>) -> Vec<u8> {
    let Some(at) = memchr::memmem::find(&key, b"HEADER.FIELDS") else {
        return key;
    };
    let Some(open) = key[at..].iter().position(|&b| b == b'(').map(|i| at + i) else {
        return key;
    };
    let Some(close) = key[open..]
        .iter()
        .position(|&b| b == b')')
        .map(|i| open + i)
    else {
        return key;
    };
    let mut names: Vec<&[u8]> = key[open + 1..close]
        .split(|&b| b == b' ')
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.strip_prefix(b"\"")
                .and_then(|n| n.strip_suffix(b"\""))
                .unwrap_or(n)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = key[..=open].to_vec();
    out.extend_from_slice(&names.join(&b' '));
    out.extend_from_slice(&key[close..]);
    out
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
        (C::Var(ve, owner, xe), C::Var(vr, _, xr)) if ve == vr => {
            let key = (*ve, owner.clone(), xe.clone());
            match b.map.get(&key) {
                Some(bound) => bound == xr,
                None => {
                    b.map.insert(key, xr.clone());
                    true
                }
            }
        }
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

    /// Courier echoes a HEADER.FIELDS list quoted, pymap sorted; the item is the same.
    #[test]
    fn a_header_list_compares_as_a_set_of_names() {
        let mut b = Bindings::default();
        let fetch = |section: &str| {
            format!("* 1 FETCH (UID 1 BODY[HEADER.FIELDS {section}] {{6}}\r\nab\r\n\r\n)\r\n")
                .into_bytes()
        };
        assert!(m(
            &fetch("(FROM SUBJECT)"),
            &fetch("(\"FROM\" \"Subject\")"),
            &mut b
        ));
        assert!(m(&fetch("(TO FROM)"), &fetch("(FROM TO)"), &mut b));
        assert!(!m(&fetch("(FROM TO)"), &fetch("(FROM CC)"), &mut b));
        let not = String::from_utf8(fetch("(FROM)"))
            .unwrap()
            .replace("HEADER.FIELDS", "HEADER.FIELDS.NOT");
        assert!(!m(&fetch("(FROM)"), not.as_bytes(), &mut b));
    }

    /// Trailing extension fields of a BODYSTRUCTURE are optional (a client reads an absent
    /// one as NIL): Dovecot sends them, Courier leaves them out.
    #[test]
    fn a_bodystructure_without_its_trailing_nil_fields_is_the_same() {
        let mut b = Bindings::default();
        let dovecot = b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 66 1 NIL NIL NIL NIL))\r\n";
        let courier = b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 66 1 NIL NIL NIL))\r\n";
        let basic = b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 66 1))\r\n";
        assert!(m(dovecot, courier, &mut b));
        assert!(m(dovecot, basic, &mut b));
        // A field that is not NIL is no trailing NIL.
        let md5 = b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 66 1 \"abc\"))\r\n";
        assert!(!m(dovecot, md5, &mut b));
        // Nor does it hide a basic field.
        let lines = b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 66 2))\r\n";
        assert!(!m(basic, lines, &mut b));
        let multipart = |ext: &str| {
            format!("* 2 FETCH (UID 2 BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 3 1) \"alternative\"{ext}))\r\n").into_bytes()
        };
        assert!(m(
            &multipart(" (\"boundary\" \"x\") NIL NIL NIL"),
            &multipart(" (\"boundary\" \"x\")"),
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

    fn in_box(e: &[u8], r: &[u8], mailbox: &str, b: &mut Bindings) -> bool {
        let scope = Scope {
            selected: Some(mailbox.as_bytes().to_vec()),
            target: None,
        };
        matches(&canon_in(e, &scope), &canon_in(r, &scope), b)
    }

    #[test]
    fn a_date_belongs_to_its_message_not_to_its_value() {
        // Messages 3 and 4 shared a second in the recording, not in this run.
        let mut b = Bindings::default();
        assert!(in_box(
            b"* 3 FETCH (UID 3 INTERNALDATE \"27-Nov-2026 08:54:28 +0000\")\r\n",
            b"* 3 FETCH (UID 3 INTERNALDATE \"27-Nov-2026 08:54:34 +0000\")\r\n",
            "INBOX",
            &mut b
        ));
        assert!(in_box(
            b"* 4 FETCH (UID 4 INTERNALDATE \"27-Nov-2026 08:54:28 +0000\")\r\n",
            b"* 4 FETCH (UID 4 INTERNALDATE \"27-Nov-2026 08:54:35 +0000\")\r\n",
            "INBOX",
            &mut b
        ));
        // The same message must keep its date.
        assert!(!in_box(
            b"* 3 FETCH (UID 3 INTERNALDATE \"27-Nov-2026 08:54:28 +0000\")\r\n",
            b"* 3 FETCH (UID 3 INTERNALDATE \"27-Nov-2026 08:54:35 +0000\")\r\n",
            "INBOX",
            &mut b
        ));
        // UIDVALIDITY belongs to a mailbox: two mailboxes may share one in the recording.
        assert!(in_box(
            b"* OK [UIDVALIDITY 1700] ok\r\n",
            b"* OK [UIDVALIDITY 1800] ok\r\n",
            "INBOX",
            &mut b
        ));
        assert!(in_box(
            b"* OK [UIDVALIDITY 1700] ok\r\n",
            b"* OK [UIDVALIDITY 1801] ok\r\n",
            "Sent",
            &mut b
        ));
        assert!(
            b.describe()
                .iter()
                .any(|d| d == "UIDVALIDITY of Sent 1700 -> 1801")
        );
    }

    #[test]
    fn identifiers_a_server_mints_are_variables() {
        let mut b = Bindings::default();
        assert!(in_box(
            b"* OK [MAILBOXID (F2212ea87-6097-4256-9d51-71338625)] Ok\r\n",
            b"* OK [MAILBOXID (F9a0d0cb1-3c1e-4a4b-8c49-2f1b0e2d)] Ok\r\n",
            "INBOX",
            &mut b
        ));
        assert!(in_box(
            b"* 1 FETCH (UID 1 EMAILID (M6d99ac3275bb4e) THREADID (T64b478a75b7ea9) SAVEDATE \"27-Nov-2026 08:00:00 +0000\" MODSEQ (4))\r\n",
            b"* 1 FETCH (MODSEQ (9) UID 1 EMAILID (M1111111111111) THREADID (T2222222222222) SAVEDATE \"27-Nov-2026 09:00:00 +0000\")\r\n",
            "INBOX",
            &mut b
        ));
        assert!(m(
            b"* STATUS Sent (MESSAGES 1 MAILBOXID (Fabc) UIDVALIDITY 5 RECENT 1)\r\n",
            b"* STATUS Sent (MESSAGES 1 MAILBOXID (Fdef) UIDVALIDITY 6 RECENT 0)\r\n",
            &mut b
        ));
        // UIDs are not minted afresh by a re-seeded server: they are compared.
        assert!(!in_box(
            b"* 2 FETCH (UID 2 EMAILID (Ma))\r\n",
            b"* 2 FETCH (UID 3 EMAILID (Ma))\r\n",
            "INBOX",
            &mut b
        ));
    }

    #[test]
    fn bodystructure_case_is_compared_as_the_rfc_says() {
        let mut b = Bindings::default();
        let dovecot = b"* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 1 NIL (\"inline\" (\"filename\" \"a.txt\")) NIL NIL))\r\n";
        let cyrus = b"* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 12 1 NIL (\"INLINE\" (\"FILENAME\" \"a.txt\")) NIL NIL))\r\n";
        assert!(m(dovecot, cyrus, &mut b));
        // A file name keeps its case.
        let renamed = b"* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 12 1 NIL (\"INLINE\" (\"FILENAME\" \"A.TXT\")) NIL NIL))\r\n";
        assert!(!m(dovecot, renamed, &mut b));
        let multipart = b"* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1)(\"image\" \"png\" (\"name\" \"x.png\") NIL NIL \"base64\" 4) \"mixed\" (\"boundary\" \"b1\") NIL NIL))\r\n";
        let upper = b"* 2 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 3 1)(\"IMAGE\" \"PNG\" (\"NAME\" \"x.png\") NIL NIL \"BASE64\" 4) \"MIXED\" (\"BOUNDARY\" \"b1\") NIL NIL))\r\n";
        assert!(m(multipart, upper, &mut b));
        // The highest mod-sequence of a SEARCH is minted, its numbers are not.
        assert!(m(
            b"* SEARCH 1 2 (MODSEQ 6)\r\n",
            b"* SEARCH 1 2 (MODSEQ 9)\r\n",
            &mut b
        ));
        assert!(!m(
            b"* SEARCH 1 2 (MODSEQ 6)\r\n",
            b"* SEARCH 1 3 (MODSEQ 6)\r\n",
            &mut b
        ));
    }

    #[test]
    fn recent_is_not_compared() {
        let mut b = Bindings::default();
        assert!(m(b"* 3 RECENT\r\n", b"* 0 RECENT\r\n", &mut b));
        assert!(m(
            b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n",
            b"* 1 FETCH (FLAGS (\\Seen))\r\n",
            &mut b
        ));
        assert!(!m(b"* 3 EXISTS\r\n", b"* 2 EXISTS\r\n", &mut b));
    }

    #[test]
    fn a_list_marked_hint_is_not_compared_and_other_attributes_are() {
        let mut b = Bindings::default();
        assert!(m(
            b"* LIST (\\HasChildren \\UnMarked) \"/\" Lists\r\n",
            b"* LIST (\\HasChildren) \"/\" Lists\r\n",
            &mut b
        ));
        assert!(!m(
            b"* LIST (\\HasChildren) \"/\" Lists\r\n",
            b"* LIST (\\HasNoChildren) \"/\" Lists\r\n",
            &mut b
        ));
    }
}
