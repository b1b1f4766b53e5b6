//! Which of several pipelined commands an untagged response answers.
//!
//! A transcript knows which commands were in flight when an untagged response came
//! (`in_flight`), not which of them it answers: the server owes no order. When mbsync sends
//! `UID FETCH 1`, `UID FETCH 2` and `UID FETCH 3` at once, Dovecot answers `* 1 FETCH`,
//! `* 2 FETCH`, `* 3 FETCH`, then the three OKs. A fake server playing that recording to a
//! client that sends one command at a time must answer `UID FETCH 1` with UID 1 only; the
//! client rejects UID 2 as an answer nobody asked for. Much untagged data names what it
//! answers, and that is read here: a FETCH its message (by UID, or by sequence number), a
//! STATUS its mailbox, a LIST its mailbox against the command's pattern, an ESEARCH its tag;
//! data only one kind of command asks for (SEARCH, CAPABILITY, NAMESPACE, QUOTAROOT...) its
//! command. Anything else (`* 3 EXISTS`, `* 2 EXPUNGE`) is left unattributed. Pure.

use crate::protocol::message::{parse_command, parse_response};
use crate::protocol::token::{Token, TokenKind, string_value};

/// Whether a command (its bytes) is the one a response answers.
type Fits = dyn Fn(&[u8]) -> bool;

/// The command among `candidates` (each an id and the command's bytes) that the untagged
/// `response` answers, when its content says; the first that fits when several do.
pub fn answered_command(response: &[u8], candidates: &[(u64, &[u8])]) -> Option<u64> {
    let head = parse_response(response);
    if !head.is_untagged() {
        return None;
    }
    let args = head.args();
    let fits: Box<Fits> = match head.name.as_deref()? {
        "FETCH" => {
            let number = head.number?;
            let uid = args.first().and_then(|list| uid_of(response, list));
            Box::new(move |command| fetch_fits(command, number, uid))
        }
        "STATUS" => {
            let mailbox = string_value(response, args.first()?)?;
            Box::new(move |command| status_fits(command, &mailbox))
        }
        name @ ("LIST" | "LSUB") => {
            let delimiter = args.get(1).and_then(|d| string_value(response, d));
            let mailbox = string_value(response, args.get(2)?)?;
            let delimiter = delimiter.and_then(|d| d.first().copied());
            let name = name.to_string();
            Box::new(move |command| list_fits(command, &name, &mailbox, delimiter))
        }
        // Data only one kind of command asks for. (Some servers answer CAPABILITY untagged
        // after LOGIN too; with a CAPABILITY in flight, it is that one's.)
        name @ ("CAPABILITY" | "SEARCH" | "SORT" | "THREAD" | "NAMESPACE" | "QUOTAROOT"
        | "QUOTA" | "ENABLED" | "ID" | "MYRIGHTS" | "ACL" | "LISTRIGHTS" | "METADATA") => {
            let asked_by: &'static [&'static str] = match name {
                "SEARCH" => &["SEARCH", "UID SEARCH"],
                "SORT" => &["SORT", "UID SORT"],
                "THREAD" => &["THREAD", "UID THREAD"],
                "QUOTAROOT" => &["GETQUOTAROOT"],
                "QUOTA" => &["GETQUOTA", "GETQUOTAROOT"],
                "ENABLED" => &["ENABLE"],
                "ACL" => &["GETACL"],
                "METADATA" => &["GETMETADATA"],
                "CAPABILITY" => &["CAPABILITY"],
                "NAMESPACE" => &["NAMESPACE"],
                "ID" => &["ID"],
                "MYRIGHTS" => &["MYRIGHTS"],
                _ => &["LISTRIGHTS"],
            };
            Box::new(move |command| {
                parse_command(command)
                    .name
                    .is_some_and(|n| asked_by.contains(&&*n))
            })
        }
        "ESEARCH" => {
            let tag = esearch_tag(response, args.first()?)?;
            Box::new(move |command| {
                parse_command(command)
                    .tag
                    .is_some_and(|t| t.as_bytes() == tag.as_slice())
            })
        }
        _ => return None,
    };
    candidates
        .iter()
        .find(|(_, command)| fits(command))
        .map(|(id, _)| *id)
}

/// The UID in a FETCH response's list: `(FLAGS () UID 7)`.
fn uid_of(response: &[u8], list: &Token) -> Option<u64> {
    let TokenKind::List(items) = &list.kind else {
        return None;
    };
    items.windows(2).find_map(|pair| {
        let is_uid = matches!(pair[0].kind, TokenKind::Atom)
            && response[pair[0].span.clone()].eq_ignore_ascii_case(b"UID");
        match pair[1].kind {
            TokenKind::Number(uid) if is_uid => Some(uid),
            _ => None,
        }
    })
}

/// A FETCH or STORE (or their UID forms) whose set holds the message.
fn fetch_fits(command: &[u8], number: u64, uid: Option<u64>) -> bool {
    let head = parse_command(command);
    let Some(set) = head.args().first().and_then(|t| string_value(command, t)) else {
        return false;
    };
    match head.name.as_deref() {
        Some("FETCH" | "STORE") => set_contains(&set, number),
        Some("UID FETCH" | "UID STORE") => uid.is_some_and(|uid| set_contains(&set, uid)),
        _ => false,
    }
}

/// Whether an IMAP sequence set (`1:3,7,9:*`) holds `n`. `*` is taken as any number, as the
/// largest is not known here; `$` (a saved search) may hold anything.
fn set_contains(set: &[u8], n: u64) -> bool {
    let value = |part: &[u8]| -> Option<u64> {
        if part == b"*" {
            Some(u64::MAX)
        } else {
            std::str::from_utf8(part).ok()?.parse().ok()
        }
    };
    if set == b"$" {
        return true;
    }
    set.split(|&b| b == b',').any(|part| {
        let mut ends = part.splitn(2, |&b| b == b':');
        let first = ends.next().and_then(value);
        let last = match ends.next() {
            Some(end) => value(end),
            None => first,
        };
        match (first, last) {
            (Some(a), Some(b)) => (a.min(b)..=a.max(b)).contains(&n),
            _ => false,
        }
    })
}

fn same_mailbox(a: &[u8], b: &[u8]) -> bool {
    a == b || (a.eq_ignore_ascii_case(b"INBOX") && b.eq_ignore_ascii_case(b"INBOX"))
}

/// A STATUS of the mailbox, or a LIST that returns STATUS (RFC 5819) and lists it.
fn status_fits(command: &[u8], mailbox: &[u8]) -> bool {
    let head = parse_command(command);
    match head.name.as_deref() {
        Some("STATUS") => head
            .args()
            .first()
            .and_then(|t| string_value(command, t))
            .is_some_and(|m| same_mailbox(&m, mailbox)),
        Some("LIST") => {
            let returns_status = head.args().iter().any(|t| match &t.kind {
                TokenKind::List(items) => items
                    .iter()
                    .any(|i| command[i.span.clone()].eq_ignore_ascii_case(b"STATUS")),
                _ => false,
            });
            returns_status && list_fits(command, "LIST", mailbox, None)
        }
        _ => false,
    }
}

/// A LIST (or LSUB) whose reference and pattern (or one of its patterns, RFC 5258) match the
/// mailbox.
fn list_fits(command: &[u8], name: &str, mailbox: &[u8], delimiter: Option<u8>) -> bool {
    let head = parse_command(command);
    if head.name.as_deref() != Some(name) {
        return false;
    }
    let mut args = head.args().iter().peekable();
    // LIST-EXTENDED selection options come first: `LIST (SUBSCRIBED) "" *`.
    if args
        .peek()
        .is_some_and(|t| matches!(t.kind, TokenKind::List(_)))
    {
        args.next();
    }
    let Some(reference) = args.next().and_then(|t| string_value(command, t)) else {
        return false;
    };
    let Some(patterns) = args.next() else {
        return false;
    };
    let patterns: Vec<Vec<u8>> = match &patterns.kind {
        TokenKind::List(items) => items
            .iter()
            .filter_map(|i| string_value(command, i))
            .collect(),
        _ => string_value(command, patterns).into_iter().collect(),
    };
    patterns.iter().any(|pattern| {
        let mut full = reference.clone();
        full.extend_from_slice(pattern);
        wildcard_match(&full, mailbox, delimiter)
            || (full.eq_ignore_ascii_case(b"INBOX") && mailbox.eq_ignore_ascii_case(b"INBOX"))
    })
}

/// RFC 9051 6.3.9: `*` matches anything, `%` anything but the hierarchy delimiter.
fn wildcard_match(pattern: &[u8], name: &[u8], delimiter: Option<u8>) -> bool {
    // Iterative matching with backtracking to the last wildcard; `%` may not cross the
    // delimiter, so a `%` star remembers that.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize, bool)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n, false));
                p += 1;
            }
            Some(b'%') => {
                star = Some((p, n, true));
                p += 1;
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn, percent)) if !(percent && Some(name[sn]) == delimiter) => {
                    star = Some((sp, sn + 1, percent));
                    p = sp + 1;
                    n = sn + 1;
                }
                _ => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*' || c == b'%')
}

/// The tag in `* ESEARCH (TAG "a4") ...`.
fn esearch_tag(response: &[u8], correlator: &Token) -> Option<Vec<u8>> {
    let TokenKind::List(items) = &correlator.kind else {
        return None;
    };
    let [key, value] = items.as_slice() else {
        return None;
    };
    response[key.span.clone()]
        .eq_ignore_ascii_case(b"TAG")
        .then(|| string_value(response, value))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(response: &str, commands: &[&str]) -> Option<u64> {
        let candidates: Vec<(u64, &[u8])> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 1, c.as_bytes()))
            .collect();
        answered_command(response.as_bytes(), &candidates)
    }

    #[test]
    fn a_fetch_answers_the_command_whose_set_holds_it() {
        let pipelined = [
            "a3 UID FETCH 1 (BODY.PEEK[])\r\n",
            "a4 UID FETCH 2:3 (BODY.PEEK[])\r\n",
            "a5 UID FETCH 4,9:* (BODY.PEEK[])\r\n",
        ];
        assert_eq!(
            owner("* 1 FETCH (UID 1 BODY[] NIL)\r\n", &pipelined),
            Some(1)
        );
        assert_eq!(
            owner("* 2 FETCH (UID 3 BODY[] NIL)\r\n", &pipelined),
            Some(2)
        );
        assert_eq!(
            owner("* 3 FETCH (UID 12 BODY[] NIL)\r\n", &pipelined),
            Some(3)
        );
        assert_eq!(owner("* 3 FETCH (UID 7 BODY[] NIL)\r\n", &pipelined), None);
        // Without its UID a FETCH cannot answer a UID FETCH; by number it answers a FETCH.
        assert_eq!(owner("* 2 FETCH (FLAGS (\\Seen))\r\n", &pipelined), None);
        let by_number = [
            "a1 NOOP\r\n",
            "a2 FETCH 2:4 FLAGS\r\n",
            "a3 STORE 5 +FLAGS (x)\r\n",
        ];
        assert_eq!(owner("* 3 FETCH (FLAGS ())\r\n", &by_number), Some(2));
        assert_eq!(owner("* 5 FETCH (FLAGS (x))\r\n", &by_number), Some(3));
        assert_eq!(owner("* 1 FETCH (FLAGS ())\r\n", &by_number), None);
    }

    #[test]
    fn status_list_and_esearch_answer_what_they_name() {
        let pipelined = [
            "a1 STATUS INBOX (MESSAGES)\r\n",
            "a2 STATUS \"Sent Items\" (MESSAGES)\r\n",
            "a3 LIST \"\" \"Lists/%\"\r\n",
            "a4 LSUB \"\" *\r\n",
            "a5 SEARCH RETURN (ALL) UNSEEN\r\n",
            "a6 LIST (SUBSCRIBED) \"\" (\"Work\" \"Drafts\") RETURN (STATUS (UNSEEN))\r\n",
        ];
        assert_eq!(
            owner("* STATUS inbox (MESSAGES 3)\r\n", &pipelined),
            Some(1)
        );
        assert_eq!(
            owner("* STATUS \"Sent Items\" (MESSAGES 1)\r\n", &pipelined),
            Some(2)
        );
        assert_eq!(owner("* LIST () \"/\" Lists/Rust\r\n", &pipelined), Some(3));
        assert_eq!(
            owner("* LIST () \"/\" Lists/Rust/Old\r\n", &pipelined),
            None
        );
        assert_eq!(
            owner("* LSUB () \"/\" Lists/Rust/Old\r\n", &pipelined),
            Some(4)
        );
        assert_eq!(owner("* LIST () \"/\" Drafts\r\n", &pipelined), Some(6));
        assert_eq!(owner("* STATUS Work (UNSEEN 2)\r\n", &pipelined), Some(6));
        assert_eq!(
            owner("* ESEARCH (TAG \"a5\") ALL 2:4\r\n", &pipelined),
            Some(5)
        );
        assert_eq!(owner("* 4 EXISTS\r\n", &pipelined), None);
        // A SEARCH in flight asks for it, whatever RETURN asked.
        assert_eq!(owner("* SEARCH 2 3\r\n", &pipelined), Some(5));
    }

    /// Data that only one kind of command asks for answers that command, whichever came
    /// last (Courier answers `* CAPABILITY` to a CAPABILITY pipelined before LOGIN).
    #[test]
    fn data_only_one_command_asks_for_answers_it() {
        let pipelined = [
            "a CAPABILITY\r\n",
            "b LOGIN nell pw\r\n",
            "f UID SEARCH ALL\r\n",
            "g GETQUOTAROOT INBOX\r\n",
            "h LIST \"\" *\r\n",
        ];
        assert_eq!(
            owner("* CAPABILITY IMAP4rev1 IDLE\r\n", &pipelined),
            Some(1)
        );
        assert_eq!(owner("* SEARCH 1 2 3\r\n", &pipelined), Some(3));
        assert_eq!(owner("* QUOTAROOT INBOX \"\"\r\n", &pipelined), Some(4));
        assert_eq!(
            owner("* QUOTA \"\" (STORAGE 1 10)\r\n", &pipelined),
            Some(4)
        );
        assert_eq!(owner("* SORT 2 1\r\n", &pipelined), None);
    }

    #[test]
    fn wildcards_stop_where_the_rfc_says() {
        assert!(wildcard_match(b"*", b"a/b/c", Some(b'/')));
        assert!(wildcard_match(b"a/%", b"a/b", Some(b'/')));
        assert!(!wildcard_match(b"a/%", b"a/b/c", Some(b'/')));
        assert!(wildcard_match(b"a*c", b"abbbc", None));
        assert!(!wildcard_match(b"a*c", b"abbbd", None));
        assert!(wildcard_match(b"%x%", b"abxcd", Some(b'/')));
        assert!(!wildcard_match(b"", b"a", None));
        assert!(set_contains(b"5:2", 3));
        assert!(!set_contains(b"1:2,4", 3));
        assert!(!set_contains(b"x", 3));
    }
}
