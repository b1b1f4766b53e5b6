//! The exchanges of a capture, shared by the connections a fake server plays them to.
//!
//! A desktop client opens several connections at once, in a different order each run, and
//! hands its work to whichever connection is free: in one run the connection that sent
//! NAMESPACE goes on to LIST, in the next it selects INBOX while another one lists. So a
//! connection cannot be handed "its" recording, not even by its first commands. What stays
//! true from run to run is what each command is answered with in a given state: the same
//! server answers `UID fetch 1:* (FLAGS)` with INBOX selected alike on every connection.
//!
//! So every command of every recording is an exchange in one pool, with the session state it
//! was sent in ([`Context`]: not logged in, logged in, which mailbox selected). A connection's
//! command is answered with an unused exchange that has the same command in the same state,
//! preferring the recording it is already following and, there, the next one in order (VCR's
//! "match on request", with IMAP's state as part of the request). The units that belong to a
//! command (literal data, SASL responses, IDLE's DONE) stay in the recording of the command.
//! A capture has been served when every exchange was used and every connection that used one
//! has closed. Pure: the fake server's accept loop is the shell around it.

use std::sync::Arc;

use super::matcher::show;
use super::script::{Script, Unit};
use super::serve::SessionOutcome;
use crate::protocol::message::{parse_command, parse_response};
use crate::protocol::token::string_value;
use crate::protocol::{Kind, Side, Status};

/// The IMAP session state a command is sent in (RFC 9051 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    NotAuthenticated,
    Authenticated,
    /// The mailbox selected, as the client named it (INBOX in upper case).
    Selected(Vec<u8>),
}

/// Commands that only read, whose recorded answer may be played again when a client asks
/// twice what it asked once in the recording (connections racing to the same NAMESPACE), and
/// that a client may ask fewer times than recorded once it asked at all (offlineimap's
/// threads share a connection and examine INBOX again whenever another folder came between,
/// a different number of times each run).
pub const REPEATABLE: &[&str] = &[
    "CAPABILITY",
    "NAMESPACE",
    "ID",
    "LIST",
    "LSUB",
    "STATUS",
    "NOOP",
    "GETQUOTAROOT",
    "GETQUOTA",
    "SELECT",
    "EXAMINE",
];

/// Commands whose answer does not depend on which mailbox is selected: a SELECT or EXAMINE
/// opens its mailbox whichever one was open before, and the others name what they work on.
const ANY_MAILBOX_OPEN: &[&str] = &[
    "SELECT",
    "EXAMINE",
    "LOGOUT",
    "CAPABILITY",
    "ID",
    "NAMESPACE",
    "LIST",
    "LSUB",
    "STATUS",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "APPEND",
    "GETQUOTA",
    "GETQUOTAROOT",
    "ENABLE",
];

/// Whether a recorded command sent in state `recorded` may answer the command `name` sent in
/// state `live`: the same state, or for a command that does not depend on the selected
/// mailbox, logged in alike (clients that share a connection between threads, offlineimap's,
/// select in a different order each run and log out with another mailbox open).
pub fn fits_state(name: &str, recorded: &Context, live: &Context) -> bool {
    let any_mailbox = ANY_MAILBOX_OPEN
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name));
    if any_mailbox {
        (*recorded == Context::NotAuthenticated) == (*live == Context::NotAuthenticated)
    } else {
        recorded == live
    }
}

/// The recordings of a capture and which of their units have been played.
#[derive(Debug)]
pub struct Pool {
    scripts: Vec<Arc<Script>>,
    used: Vec<Vec<bool>>,
    /// Per recording and unit: the state a client command was sent in, and the state its
    /// completion left (for units that are not commands: the state around them).
    before: Vec<Vec<Context>>,
    after: Vec<Vec<Context>>,
    /// Connections that have played something and are still open.
    open: usize,
    /// What the connections of this round that have ended did.
    ended: Vec<SessionOutcome>,
    /// A connection of this round went astray: the round ends when the open ones close, used
    /// up or not (a test run waiting on exchanges that will never be asked for helps no one).
    failed: bool,
}

impl Pool {
    pub fn new(scripts: Vec<Script>) -> Pool {
        let scripts: Vec<Arc<Script>> = scripts.into_iter().map(Arc::new).collect();
        let used = scripts
            .iter()
            .map(|s| vec![false; s.timeline.len()])
            .collect();
        let (before, after) = scripts.iter().map(|s| contexts(s)).unzip();
        Pool {
            scripts,
            used,
            before,
            after,
            open: 0,
            ended: Vec::new(),
            failed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    pub fn script(&self, index: usize) -> &Arc<Script> {
        &self.scripts[index]
    }

    pub fn unit(&self, script: usize, index: usize) -> &Unit {
        &self.scripts[script].timeline[index]
    }

    pub fn is_used(&self, script: usize, index: usize) -> bool {
        self.used[script][index]
    }

    pub fn mark_used(&mut self, script: usize, index: usize) {
        self.used[script][index] = true;
    }

    /// The state the recorded command at (`script`, `index`) was sent in, and the state it
    /// left the session in.
    pub fn context_before(&self, script: usize, index: usize) -> &Context {
        &self.before[script][index]
    }

    pub fn context_after(&self, script: usize, index: usize) -> &Context {
        &self.after[script][index]
    }

    /// A connection played its first exchange.
    pub fn opened(&mut self) {
        self.open += 1;
    }

    /// A connection that had played something closed.
    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    /// A connection that sent commands ended, having done `outcome`. When that completes the
    /// round (every exchange played, every such connection closed), the round's report, one
    /// outcome per recording, and the capture is ready to be served again. Decided here,
    /// under the one lock, so no connection's outcome can fall into the wrong round.
    pub fn connection_ended(&mut self, outcome: SessionOutcome) -> Option<Vec<SessionOutcome>> {
        self.failed |= !outcome.mismatches.is_empty();
        self.ended.push(outcome);
        if !self.served() {
            return None;
        }
        let round = self.round_outcomes();
        self.reset();
        Some(round)
    }

    /// A round cut short (the server was stopped, or no client came back for what is left):
    /// its report, if anything was played, and the capture is ready to be served again.
    pub fn cut_short(&mut self) -> Option<Vec<SessionOutcome>> {
        let round = (self.touched() || !self.ended.is_empty()).then(|| self.round_outcomes());
        self.reset();
        round
    }

    /// One outcome per recording: the commands of it no connection asked for, and the
    /// mismatches of the connections that were following it when they ended.
    fn round_outcomes(&mut self) -> Vec<SessionOutcome> {
        let mut out: Vec<SessionOutcome> = self
            .unused_commands()
            .into_iter()
            .map(|(transcript, commands, unused)| SessionOutcome {
                transcript,
                commands,
                unused,
                ..SessionOutcome::default()
            })
            .collect();
        for c in std::mem::take(&mut self.ended) {
            match out.iter_mut().find(|o| o.transcript == c.transcript) {
                Some(o) => {
                    o.repeated += c.repeated;
                    o.mismatches.extend(c.mismatches);
                    o.error = o.error.take().or(c.error);
                }
                // A connection whose every command matched nothing.
                None => out.push(SessionOutcome {
                    transcript: "(no recording matched this connection)".into(),
                    ..c
                }),
            }
        }
        out
    }

    /// Every client unit of every recording has been played (or a connection went astray),
    /// and the connections that played them closed.
    pub fn served(&self) -> bool {
        self.open == 0
            && (self.failed
                || self.scripts.iter().enumerate().all(|(s, script)| {
                    (0..script.timeline.len()).all(|i| {
                        self.used[s][i]
                            || script.timeline[i].from == Side::Server
                            || self.asked_elsewhere(s, i)
                    })
                }))
    }

    /// The unused command at (`script`, `index`) only reads, and the same command (name and
    /// arguments) was answered from some recording already: a client that asks it fewer
    /// times than recorded has what it needed.
    fn asked_elsewhere(&self, script: usize, index: usize) -> bool {
        let unit = &self.scripts[script].timeline[index];
        let reads = unit.kind == Kind::Command
            && !unit.is_part
            && REPEATABLE.contains(&unit.name.as_deref().unwrap_or_default());
        reads
            && self.played_commands().into_iter().any(|(s, i)| {
                let other = self.unit(s, i);
                other.name == unit.name
                    && after_tag(&other.bytes).eq_ignore_ascii_case(after_tag(&unit.bytes))
            })
    }

    /// The `* OK [CLOSED]` line of the capture's server, if it sends one when a SELECT closes
    /// the mailbox that was open.
    pub fn closed_line(&self) -> Option<Vec<u8>> {
        self.scripts.iter().find_map(|s| {
            s.timeline
                .iter()
                .find(|u| u.from == Side::Server && super::serve::is_closed_line(&u.bytes))
                .map(|u| u.bytes.clone())
        })
    }

    /// Connections that played something and are still open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Did any connection play something of this capture?
    pub fn touched(&self) -> bool {
        self.used.iter().flatten().any(|u| *u)
    }

    /// Every recording is unplayed again: the capture is served once more.
    pub fn reset(&mut self) {
        self.failed = false;
        for used in &mut self.used {
            used.iter_mut().for_each(|u| *u = false);
        }
    }

    /// Per recording: its name, how many of its commands were played, and the commands no
    /// connection asked for.
    pub fn unused_commands(&self) -> Vec<(String, usize, Vec<String>)> {
        self.scripts
            .iter()
            .zip(&self.used)
            .enumerate()
            .map(|(n, (s, used))| {
                let commands = s
                    .timeline
                    .iter()
                    .enumerate()
                    .zip(used)
                    .filter(|((_, u), _)| {
                        u.from == Side::Client && u.kind == Kind::Command && !u.is_part
                    });
                let played = commands.clone().filter(|(_, used)| **used).count();
                let unused = commands
                    .filter(|((i, _), used)| !**used && !self.asked_elsewhere(n, *i))
                    .map(|((_, u), _)| show(&u.shown))
                    .collect();
                (s.name.clone(), played, unused)
            })
            .collect()
    }

    /// Commands already played, as (recording, unit).
    pub fn played_commands(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (s, script) in self.scripts.iter().enumerate() {
            for (i, u) in script.timeline.iter().enumerate() {
                if self.used[s][i]
                    && u.from == Side::Client
                    && u.kind == Kind::Command
                    && !u.is_part
                {
                    out.push((s, i));
                }
            }
        }
        out
    }

    /// Unused commands, as (recording, unit), in the order a connection should prefer them:
    /// `following`'s first, then each recording in start order; within a recording, in order.
    /// With `next_only`, only each recording's next unused command: recordings are played in
    /// their order, though not necessarily on one connection.
    pub fn open_commands(&self, following: Option<usize>, next_only: bool) -> Vec<(usize, usize)> {
        let order = following
            .into_iter()
            .chain((0..self.scripts.len()).filter(|s| Some(*s) != following));
        let mut out = Vec::new();
        for s in order {
            let open = self.scripts[s]
                .timeline
                .iter()
                .enumerate()
                .filter(|(i, u)| {
                    !self.used[s][*i]
                        && u.from == Side::Client
                        && u.kind == Kind::Command
                        && !u.is_part
                })
                .map(|(i, _)| (s, i));
            if next_only {
                out.extend(open.take(1));
            } else {
                out.extend(open);
            }
        }
        out
    }
}

/// The state before and after each unit of a recording, followed from its commands and their
/// completions.
fn contexts(script: &Script) -> (Vec<Context>, Vec<Context>) {
    let mut state = match &script.greeting {
        Some(g) if parse_response(&g.bytes).name.as_deref() == Some("PREAUTH") => {
            Context::Authenticated
        }
        _ => Context::NotAuthenticated,
    };
    let n = script.timeline.len();
    let mut before = vec![Context::NotAuthenticated; n];
    let mut after = vec![Context::NotAuthenticated; n];
    // Each command head by seq, and the commands that got a completion (one pass each, so a
    // session of many commands costs linear time).
    let heads: std::collections::HashMap<u64, usize> = script
        .timeline
        .iter()
        .enumerate()
        .filter(|(_, u)| u.from == Side::Client && !u.is_part)
        .map(|(i, u)| (u.seq, i))
        .collect();
    let mut completed = vec![false; n];
    for (i, unit) in script.timeline.iter().enumerate() {
        before[i] = state.clone();
        if unit.kind == Kind::Completion
            && let Some(&c) = unit.reply_to.and_then(|seq| heads.get(&seq))
        {
            let ok = parse_response(&unit.bytes).status == Some(Status::Ok);
            state = next_state(&state, &script.timeline[c], ok);
            // The command's own "after" is the state its completion left.
            after[c] = state.clone();
            completed[c] = true;
        }
        if unit.kind != Kind::Command || unit.is_part {
            after[i] = state.clone();
        }
    }
    // A command whose completion was never recorded (IDLE at quit) leaves the state it found.
    for (i, unit) in script.timeline.iter().enumerate() {
        if unit.kind == Kind::Command && !unit.is_part && !completed[i] {
            after[i] = before[i].clone();
        }
    }
    (before, after)
}

/// The state after `command` completed (`ok`: with OK).
pub fn next_state(state: &Context, command: &Unit, ok: bool) -> Context {
    let head = parse_command(&command.bytes);
    let name = head
        .name
        .as_deref()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match (name.as_str(), ok) {
        ("LOGIN" | "AUTHENTICATE", true) => Context::Authenticated,
        ("SELECT" | "EXAMINE", true) => {
            let mailbox = head
                .args()
                .first()
                .map(|t| {
                    string_value(&command.bytes, t)
                        .unwrap_or_else(|| command.bytes[t.span.clone()].to_vec())
                })
                .unwrap_or_default();
            Context::Selected(mailbox_key(mailbox))
        }
        // A failed SELECT leaves no mailbox selected (RFC 9051 6.3.2).
        ("SELECT" | "EXAMINE", false) | ("CLOSE" | "UNSELECT", true) => Context::Authenticated,
        _ => state.clone(),
    }
}

/// A command's bytes after its tag.
fn after_tag(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b == b' ')
        .map_or(bytes.len(), |at| at + 1);
    &bytes[start..]
}

/// INBOX is case-insensitive; other names are compared as sent.
fn mailbox_key(mailbox: Vec<u8>) -> Vec<u8> {
    if mailbox.eq_ignore_ascii_case(b"INBOX") {
        b"INBOX".to_vec()
    } else {
        mailbox
    }
}

#[cfg(test)]
mod tests {
    use super::super::serve::{MatchMode, Output, ServeSession};
    use super::*;
    use crate::transcript::reader::parse_transcript;

    /// A recording: greeting, then each (command, responses) in turn; tags `a1`, `a2`...
    fn recording(name: &str, exchanges: &[(&str, &[&str])]) -> Script {
        let mut lines = vec![
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#.to_string(),
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#.to_string(),
        ];
        let mut seq = 1;
        for (n, (command, untagged)) in exchanges.iter().enumerate() {
            let tag = format!("a{}", n + 1);
            seq += 1;
            let cmd = seq;
            let name = command.split(' ').next().unwrap().to_ascii_uppercase();
            lines.push(format!(
                r#"{{"type":"message","seq":{cmd},"t_us":{cmd},"from":"client","kind":"command","tag":"{tag}","name":"{name}","text":"{tag} {command}\r\n"}}"#
            ));
            for u in *untagged {
                seq += 1;
                lines.push(format!(
                    r#"{{"type":"message","seq":{seq},"t_us":{seq},"from":"server","kind":"untagged","text":"{u}\r\n","in_flight":[{cmd}]}}"#
                ));
            }
            seq += 1;
            lines.push(format!(
                r#"{{"type":"message","seq":{seq},"t_us":{seq},"from":"server","kind":"completion","tag":"{tag}","name":"OK","text":"{tag} OK done\r\n","status":"OK","reply_to":{cmd}}}"#
            ));
        }
        let text = lines.join("\n");
        let transcript = parse_transcript(text.as_bytes(), name).unwrap();
        Script::from_transcript(name, &transcript).unwrap()
    }

    fn said(outputs: &[Output]) -> String {
        outputs
            .iter()
            .map(|o| match o {
                Output::Bytes { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
                Output::StartTls => String::new(),
            })
            .collect()
    }

    fn capture() -> Pool {
        Pool::new(vec![
            recording(
                "first",
                &[
                    ("LOGIN nell pw", &[]),
                    ("NAMESPACE", &["* NAMESPACE ((\\\"\\\" \\\"/\\\")) NIL NIL"]),
                    ("LIST \\\"\\\" *", &["* LIST () \\\"/\\\" INBOX"]),
                ],
            ),
            recording(
                "second",
                &[
                    ("LOGIN nell pw", &[]),
                    ("SELECT INBOX", &["* 3 EXISTS"]),
                    ("FETCH 1:* FLAGS", &["* 1 FETCH (FLAGS ())"]),
                ],
            ),
            recording(
                "third",
                &[
                    ("LOGIN nell pw", &[]),
                    ("SELECT Drafts", &["* 0 EXISTS"]),
                    ("FETCH 1:* FLAGS", &[]),
                ],
            ),
        ])
    }

    #[test]
    fn work_handed_to_another_connection_is_answered_all_the_same() {
        let mut pool = capture();
        let (mut a, mut b, mut c) = (
            ServeSession::new(MatchMode::Strict, 1.0),
            ServeSession::new(MatchMode::Strict, 1.0),
            ServeSession::new(MatchMode::Strict, 1.0),
        );
        for s in [&mut a, &mut b, &mut c] {
            assert_eq!(s.greeting(&pool), b"* OK ready\r\n");
            assert_eq!(
                said(&s.on_client(b"1 login nell pw\r\n", &mut pool)),
                "1 OK done\r\n"
            );
        }
        // The connection that sent NAMESPACE now selects INBOX, and another one lists:
        // not as recorded per connection, and answered all the same.
        assert!(said(&a.on_client(b"2 NAMESPACE\r\n", &mut pool)).starts_with("* NAMESPACE"));
        assert_eq!(
            said(&a.on_client(b"3 SELECT INBOX\r\n", &mut pool)),
            "* 3 EXISTS\r\n3 OK done\r\n"
        );
        assert_eq!(
            said(&b.on_client(b"7 LIST \"\" *\r\n", &mut pool)),
            "* LIST () \"/\" INBOX\r\n7 OK done\r\n"
        );
        assert_eq!(
            said(&c.on_client(b"9 SELECT Drafts\r\n", &mut pool)),
            "* 0 EXISTS\r\n9 OK done\r\n"
        );
        // The same command is answered as recorded in the mailbox each connection has open.
        assert_eq!(
            said(&c.on_client(b"10 FETCH 1:* FLAGS\r\n", &mut pool)),
            "10 OK done\r\n"
        );
        assert_eq!(
            said(&a.on_client(b"4 FETCH 1:* FLAGS\r\n", &mut pool)),
            "* 1 FETCH (FLAGS ())\r\n4 OK done\r\n"
        );
        assert!(a.mismatches().is_empty() && b.mismatches().is_empty());
        assert!(!pool.served(), "connections are still open");
        let a = a.finish(&mut pool);
        assert!(pool.connection_ended(a).is_none());
        let b = b.finish(&mut pool);
        assert!(pool.connection_ended(b).is_none());
        let c = c.finish(&mut pool);
        let round = pool.connection_ended(c).expect("the round is over");
        assert!(round.iter().all(|o| o.ok()), "{round:?}");
        assert_eq!(round.iter().map(|o| o.commands).sum::<usize>(), 9);
        // Ready for the next round.
        assert!(!pool.touched());
    }

    #[test]
    fn a_connection_that_sends_nothing_uses_nothing() {
        let pool = capture();
        let mut probe = ServeSession::new(MatchMode::Strict, 1.0);
        probe.greeting(&pool);
        assert_eq!(probe.commands(), 0);
        assert!(!pool.touched());
    }

    #[test]
    fn what_the_server_said_before_the_first_command_goes_out_with_the_greeting() {
        let text = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#,
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#,
            r#"{"type":"message","seq":2,"t_us":1,"from":"server","kind":"untagged","tag":"*","name":"OK","status":"OK","code":"ALERT","text":"* OK [ALERT] maintenance at 5pm\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":2,"from":"client","kind":"command","tag":"a1","name":"NOOP","text":"a1 NOOP\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":3,"from":"server","kind":"completion","tag":"a1","name":"OK","status":"OK","reply_to":3,"text":"a1 OK\r\n"}"#,
        ]
        .join("\n");
        let transcript = parse_transcript(text.as_bytes(), "alert").unwrap();
        let mut pool = Pool::new(vec![Script::from_transcript("alert", &transcript).unwrap()]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        assert_eq!(
            s.greeting(&pool),
            b"* OK ready\r\n* OK [ALERT] maintenance at 5pm\r\n"
        );
        // Like the greeting, they use nothing up: a probe would have had them too.
        assert!(!pool.touched());
        assert_eq!(said(&s.on_client(b"a1 NOOP\r\n", &mut pool)), "a1 OK\r\n");
        let outcome = s.finish(&mut pool);
        let round = pool.connection_ended(outcome).expect("the round is over");
        assert!(round.iter().all(|o| o.ok()), "{round:?}");
    }

    /// A server that completed pipelined commands in its own order is imitated for a client
    /// that pipelines them alike; one that sends them one at a time gets each answer as its
    /// command comes.
    #[test]
    fn pipelined_commands_are_completed_in_the_recorded_order() {
        let text = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#,
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* PREAUTH ready\r\n"}"#,
            r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"t0","name":"NOOP","text":"t0 NOOP\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":1,"from":"client","kind":"command","tag":"t1","name":"NOOP","text":"t1 NOOP\r\n"}"#,
            r#"{"type":"message","seq":4,"t_us":1,"from":"client","kind":"command","tag":"t2","name":"FETCH","text":"t2 FETCH 1 (FLAGS)\r\n"}"#,
            r#"{"type":"message","seq":5,"t_us":2,"from":"server","kind":"untagged","text":"* 1 FETCH (FLAGS (\\Seen))\r\n","in_flight":[2,3,4]}"#,
            r#"{"type":"message","seq":6,"t_us":2,"from":"server","kind":"completion","tag":"t2","name":"OK","status":"OK","reply_to":4,"text":"t2 OK fetched\r\n"}"#,
            r#"{"type":"message","seq":7,"t_us":2,"from":"server","kind":"completion","tag":"t1","name":"OK","status":"OK","reply_to":3,"text":"t1 OK\r\n"}"#,
            r#"{"type":"message","seq":8,"t_us":2,"from":"server","kind":"completion","tag":"t0","name":"OK","status":"OK","reply_to":2,"text":"t0 OK\r\n"}"#,
        ]
        .join("\n");
        let transcript = parse_transcript(text.as_bytes(), "ooo").unwrap();
        let script = Script::from_transcript("ooo", &transcript).unwrap();
        let mut pool = Pool::new(vec![script.clone()]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        assert_eq!(
            said(&s.on_client(b"a NOOP\r\nb NOOP\r\nc FETCH 1 (FLAGS)\r\n", &mut pool)),
            "* 1 FETCH (FLAGS (\\Seen))\r\nc OK fetched\r\nb OK\r\na OK\r\n"
        );
        assert!(s.mismatches().is_empty(), "{:?}", s.mismatches());
        let outcome = s.finish(&mut pool);
        let round = pool.connection_ended(outcome).expect("the round is over");
        assert!(round.iter().all(|o| o.ok()), "{round:?}");

        let mut pool = Pool::new(vec![script]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        assert_eq!(said(&s.on_client(b"a NOOP\r\n", &mut pool)), "a OK\r\n");
        assert_eq!(said(&s.on_client(b"b NOOP\r\n", &mut pool)), "b OK\r\n");
        assert_eq!(
            said(&s.on_client(b"c FETCH 1 (FLAGS)\r\n", &mut pool)),
            "* 1 FETCH (FLAGS (\\Seen))\r\nc OK fetched\r\n"
        );
    }

    /// With the recorded latency, each answer waits as long after what came before it as
    /// the recorded server's did (scaled by the speed factor); without, it goes at once.
    #[test]
    fn answers_keep_the_recorded_latency_when_asked() {
        let text = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#,
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* PREAUTH ready\r\n"}"#,
            r#"{"type":"message","seq":2,"t_us":1000,"from":"client","kind":"command","tag":"a","name":"SEARCH","text":"a SEARCH ALL\r\n"}"#,
            r#"{"type":"message","seq":3,"t_us":41000,"from":"server","kind":"untagged","text":"* SEARCH 1\r\n","in_flight":[2]}"#,
            r#"{"type":"message","seq":4,"t_us":61000,"from":"server","kind":"completion","tag":"a","name":"OK","status":"OK","reply_to":2,"text":"a OK\r\n"}"#,
        ]
        .join("\n");
        let transcript = parse_transcript(text.as_bytes(), "slow").unwrap();
        let script = Script::from_transcript("slow", &transcript).unwrap();
        let delays = |session: ServeSession| {
            let mut pool = Pool::new(vec![script.clone()]);
            let mut session = session;
            session.greeting(&pool);
            session
                .on_client(b"x SEARCH ALL\r\n", &mut pool)
                .iter()
                .map(|o| match o {
                    Output::Bytes { delay, .. } => delay.as_millis(),
                    Output::StartTls => 0,
                })
                .collect::<Vec<_>>()
        };
        let recorded = ServeSession::new(MatchMode::Strict, 2.0).with_recorded_latency(true);
        assert_eq!(delays(recorded), vec![20, 10]);
        assert_eq!(
            delays(ServeSession::new(MatchMode::Strict, 2.0)),
            vec![0, 0]
        );
    }

    #[test]
    fn a_command_in_the_wrong_state_is_refused_and_reported() {
        let mut pool = capture();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        // Not logged in: no recorded SELECT was sent in that state.
        assert!(
            said(&s.on_client(b"1 SELECT INBOX\r\n", &mut pool)).starts_with("1 BAD [CLIENTBUG]")
        );
        assert_eq!(s.mismatches().len(), 1, "{:?}", s.mismatches());
        assert!(
            s.mismatches()[0].contains("expected `a1 LOGIN"),
            "{:?}",
            s.mismatches()
        );
        // The same text as recorded: the report names the states, not a difference in bytes.
        assert!(
            s.mismatches()[0].contains(
                "the recording sent it logged in with no mailbox selected, and this connection \
                 is before logging in"
            ),
            "{:?}",
            s.mismatches()
        );
        assert!(
            !s.mismatches()[0].contains("differ at"),
            "{:?}",
            s.mismatches()
        );
    }

    /// A second client on a one-connection capture that the first is playing: its LOGIN is
    /// not "expected" to be the first client's next command.
    #[test]
    fn a_second_client_is_told_nothing_is_left_in_its_state() {
        let mut pool = Pool::new(vec![recording(
            "only",
            &[("LOGIN nell pw", &[]), ("SELECT INBOX", &["* 3 EXISTS"])],
        )]);
        let (mut first, mut second) = (
            ServeSession::new(MatchMode::Strict, 1.0),
            ServeSession::new(MatchMode::Strict, 1.0),
        );
        first.greeting(&pool);
        first.on_client(b"1 LOGIN nell pw\r\n", &mut pool);
        second.greeting(&pool);
        second.on_client(b"x LOGIN nell pw\r\n", &mut pool);
        let said = &second.mismatches()[0];
        assert!(
            said.contains(
                "expected nothing sent before logging in (the capture's next unused command, \
                 `a2 SELECT INBOX`, was sent logged in with no mailbox selected)"
            ),
            "{said}"
        );
    }

    /// A client upgraded since the recording says so in its ID; the server's answer is the
    /// same.
    #[test]
    fn a_clients_id_is_matched_whatever_version_it_names() {
        let mut pool = Pool::new(vec![recording(
            "tb",
            &[
                ("LOGIN nell pw", &[]),
                (
                    "ID (\\\"name\\\" \\\"Thunderbird\\\" \\\"version\\\" \\\"153.7.0\\\")",
                    &["* ID (\\\"name\\\" \\\"Dovecot\\\")"],
                ),
            ],
        )]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        s.on_client(b"1 LOGIN nell pw\r\n", &mut pool);
        let said = said(&s.on_client(
            b"2 ID (\"name\" \"Thunderbird\" \"version\" \"153.8.0\")\r\n",
            &mut pool,
        ));
        assert_eq!(said, "* ID (\"name\" \"Dovecot\")\r\n2 OK done\r\n");
        assert!(s.mismatches().is_empty(), "{:?}", s.mismatches());
    }

    #[test]
    fn a_read_asked_twice_is_answered_again_and_counted() {
        let mut pool = capture();
        let (mut a, mut b) = (
            ServeSession::new(MatchMode::Strict, 1.0),
            ServeSession::new(MatchMode::Strict, 1.0),
        );
        for s in [&mut a, &mut b] {
            s.greeting(&pool);
            s.on_client(b"1 LOGIN nell pw\r\n", &mut pool);
        }
        // Both connections race to NAMESPACE; the capture has it once.
        let first = said(&a.on_client(b"2 NAMESPACE\r\n", &mut pool));
        let again = said(&b.on_client(b"5 NAMESPACE\r\n", &mut pool));
        assert!(first.starts_with("* NAMESPACE") && first.ends_with("2 OK done\r\n"));
        assert_eq!(again, first.replace("2 OK", "5 OK"));
        assert!(b.mismatches().is_empty(), "{:?}", b.mismatches());
        // A command that writes is never played twice.
        let twice = said(&b.on_client(b"6 LOGIN nell pw\r\n", &mut pool));
        assert!(twice.starts_with("6 BAD"), "{twice}");
        let outcome = b.finish(&mut pool);
        assert_eq!(outcome.repeated, 1);
    }

    #[test]
    fn an_upload_is_matched_by_its_size_and_its_date_by_its_form() {
        // mbsync stamps each uploaded message with a new X-TUID; offlineimap dates it by the
        // file's modification time. Strict matching still answers the same upload.
        let mut pool = Pool::new(vec![recording(
            "upload",
            &[
                ("LOGIN nell pw", &[]),
                (
                    "APPEND INBOX () \\\"27-Nov-2026 19:32:22 +0000\\\" {15+}\\r\\nX-TUID: abc\\r\\n\\r\\n",
                    &[],
                ),
            ],
        )]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        s.on_client(b"1 LOGIN nell pw\r\n", &mut pool);
        let other_size = said(&s.on_client(
            b"2 APPEND INBOX () \" 3-Dec-2026 08:01:02 -0500\" {16+}\r\nX-TUID: abcd\r\n\r\n\r\n",
            &mut pool,
        ));
        assert!(other_size.starts_with("2 BAD"), "{other_size}");
        let same_size = said(&s.on_client(
            b"3 APPEND INBOX () \" 3-Dec-2026 08:01:02 -0500\" {15+}\r\nX-TUID: xyz\r\n\r\n\r\n",
            &mut pool,
        ));
        assert_eq!(same_size, "3 OK done\r\n");
    }

    #[test]
    fn mailboxes_selected_in_another_order_and_another_number_of_times_are_served() {
        // offlineimap's threads share one connection: each run selects in its own order, and
        // examines INBOX again whenever another folder came between.
        let mut pool = Pool::new(vec![recording(
            "threads",
            &[
                ("LOGIN nell pw", &[]),
                ("SELECT Drafts", &["* 0 EXISTS"]),
                (
                    "EXAMINE INBOX",
                    &["* OK [CLOSED] Previous mailbox closed.", "* 2 EXISTS"],
                ),
                ("FETCH 1 (FLAGS)", &["* 1 FETCH (FLAGS ())"]),
                (
                    "SELECT Junk",
                    &["* OK [CLOSED] Previous mailbox closed.", "* 0 EXISTS"],
                ),
                (
                    "EXAMINE INBOX",
                    &["* OK [CLOSED] Previous mailbox closed.", "* 2 EXISTS"],
                ),
                ("FETCH 2 (FLAGS)", &["* 2 FETCH (FLAGS ())"]),
            ],
        )]);
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        s.on_client(b"1 LOGIN nell pw\r\n", &mut pool);
        // INBOX first this time, with nothing open: no [CLOSED].
        assert_eq!(
            said(&s.on_client(b"2 EXAMINE INBOX\r\n", &mut pool)),
            "* 2 EXISTS\r\n2 OK done\r\n"
        );
        assert_eq!(
            said(&s.on_client(b"3 FETCH 1 (FLAGS)\r\n", &mut pool)),
            "* 1 FETCH (FLAGS ())\r\n3 OK done\r\n"
        );
        assert_eq!(
            said(&s.on_client(b"4 FETCH 2 (FLAGS)\r\n", &mut pool)),
            "* 2 FETCH (FLAGS ())\r\n4 OK done\r\n"
        );
        // Drafts was selected first in the recording, with nothing open: now INBOX was.
        assert_eq!(
            said(&s.on_client(b"5 SELECT Drafts\r\n", &mut pool)),
            "* OK [CLOSED] Previous mailbox closed.\r\n* 0 EXISTS\r\n5 OK done\r\n"
        );
        assert!(said(&s.on_client(b"6 SELECT Junk\r\n", &mut pool)).ends_with("6 OK done\r\n"));
        assert!(s.mismatches().is_empty(), "{:?}", s.mismatches());
        // INBOX was examined once where the recording has it twice: served all the same.
        let outcome = s.finish(&mut pool);
        assert!(outcome.mismatches.is_empty());
        assert!(pool.served());
        assert!(
            pool.unused_commands()
                .iter()
                .all(|(_, _, unused)| unused.is_empty())
        );
    }

    /// A capture of one recording, from transcript lines after the greeting.
    fn recorded(name: &str, lines: &[&str]) -> Pool {
        let mut text = vec![
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#,
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#,
        ];
        text.extend_from_slice(lines);
        let transcript = parse_transcript(text.join("\n").as_bytes(), name).unwrap();
        Pool::new(vec![Script::from_transcript(name, &transcript).unwrap()])
    }

    /// mbsync's three UID FETCHes sent at once, answered by Dovecot as one batch.
    fn pipelined_fetches() -> Pool {
        recorded(
            "pipelined",
            &[
                r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a3","name":"UID FETCH","text":"a3 UID FETCH 1 (BODY.PEEK[])\r\n"}"#,
                r#"{"type":"message","seq":3,"t_us":1,"from":"client","kind":"command","tag":"a4","name":"UID FETCH","text":"a4 UID FETCH 2 (BODY.PEEK[])\r\n"}"#,
                r#"{"type":"message","seq":4,"t_us":1,"from":"client","kind":"command","tag":"a5","name":"UID FETCH","text":"a5 UID FETCH 3 (BODY.PEEK[])\r\n"}"#,
                r#"{"type":"message","seq":5,"t_us":2,"from":"server","kind":"untagged","name":"FETCH","text":"* 1 FETCH (UID 1 BODY[] NIL)\r\n","in_flight":[2,3,4]}"#,
                r#"{"type":"message","seq":6,"t_us":2,"from":"server","kind":"untagged","name":"FETCH","text":"* 2 FETCH (UID 2 BODY[] NIL)\r\n","in_flight":[2,3,4]}"#,
                r#"{"type":"message","seq":7,"t_us":2,"from":"server","kind":"untagged","name":"FETCH","text":"* 3 FETCH (UID 3 BODY[] NIL)\r\n","in_flight":[2,3,4]}"#,
                r#"{"type":"message","seq":8,"t_us":3,"from":"server","kind":"completion","tag":"a3","name":"OK","status":"OK","text":"a3 OK done\r\n","reply_to":2}"#,
                r#"{"type":"message","seq":9,"t_us":3,"from":"server","kind":"completion","tag":"a4","name":"OK","status":"OK","text":"a4 OK done\r\n","reply_to":3}"#,
                r#"{"type":"message","seq":10,"t_us":3,"from":"server","kind":"completion","tag":"a5","name":"OK","status":"OK","text":"a5 OK done\r\n","reply_to":4}"#,
            ],
        )
    }

    #[test]
    fn a_pipelined_batch_is_answered_command_by_command_to_a_client_that_waits() {
        let mut pool = pipelined_fetches();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        for uid in 1..=3 {
            let tag = uid + 2;
            let command = format!("a{tag} UID FETCH {uid} (BODY.PEEK[])\r\n");
            assert_eq!(
                said(&s.on_client(command.as_bytes(), &mut pool)),
                format!("* {uid} FETCH (UID {uid} BODY[] NIL)\r\na{tag} OK done\r\n")
            );
        }
        let outcome = s.finish(&mut pool);
        assert!(outcome.ok(), "{outcome:?}");
        // Asked in another order, each still gets its own message.
        let mut pool = pipelined_fetches();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        assert_eq!(
            said(&s.on_client(b"a5 UID FETCH 3 (BODY.PEEK[])\r\n", &mut pool)),
            "* 3 FETCH (UID 3 BODY[] NIL)\r\na5 OK done\r\n"
        );
        // And a client that pipelines as recorded gets the batch as recorded.
        let mut pool = pipelined_fetches();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        let all = said(&s.on_client(
            b"a3 UID FETCH 1 (BODY.PEEK[])\r\na4 UID FETCH 2 (BODY.PEEK[])\r\na5 UID FETCH 3 (BODY.PEEK[])\r\n",
            &mut pool,
        ));
        for uid in 1..=3 {
            assert!(all.contains(&format!("* {uid} FETCH (UID {uid}")), "{all}");
        }
        assert_eq!(all.matches(" OK done").count(), 3, "{all}");
    }

    #[test]
    fn a_command_cut_off_where_the_recording_cut_it_is_played() {
        // The recorded client closed in the middle of a LITERAL+ APPEND, its only command.
        let capture = || {
            recorded(
                "cut",
                &[
                    r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a1","name":"APPEND","partial":true,"text":"a1 APPEND x {100+}\r\nFrom: x\r\n"}"#,
                    r#"{"type":"end","t_us":2,"reason":"client closed","bytes_from_client":29,"bytes_from_server":12,"messages":2,"unanswered":[2]}"#,
                ],
            )
        };
        let mut pool = capture();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        assert!(
            s.on_client(b"a1 APPEND x {100+}\r\nFrom: x\r\n", &mut pool)
                .is_empty()
        );
        assert!(s.on_client_closed(&mut pool).is_empty());
        assert_eq!(s.commands(), 1);
        let outcome = s.finish(&mut pool);
        let round = pool.connection_ended(outcome).expect("the round is over");
        assert!(round.iter().all(|o| o.ok()), "{round:?}");
        // Cut off sooner, it is not the recorded command: nothing is used.
        let mut pool = capture();
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        s.on_client(b"a1 APPEND x {100+}\r\nFr", &mut pool);
        s.on_client_closed(&mut pool);
        assert_eq!(s.commands(), 0);
        assert!(!pool.touched());
    }

    #[test]
    fn a_line_recorded_without_a_command_name_is_matched_by_the_same_line() {
        let mut pool = recorded(
            "nameless",
            &[
                r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"xyz","text":"xyz\r\n"}"#,
                r#"{"type":"message","seq":3,"t_us":2,"from":"server","kind":"completion","tag":"xyz","name":"BAD","status":"BAD","text":"xyz BAD\r\n"}"#,
            ],
        );
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        // Another line without a name is no match for it.
        assert!(said(&s.on_client(b"abc\r\n", &mut pool)).starts_with("abc BAD [CLIENTBUG]"));
        assert_eq!(s.mismatches().len(), 1);
        assert_eq!(said(&s.on_client(b"xyz\r\n", &mut pool)), "xyz BAD\r\n");
        assert_eq!(s.mismatches().len(), 1, "{:?}", s.mismatches());
    }

    #[test]
    fn a_scram_login_is_refused_with_the_reason() {
        let mut pool = recorded(
            "scram",
            &[
                r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a","name":"AUTHENTICATE","text":"a AUTHENTICATE SCRAM-SHA-1\r\n"}"#,
                r#"{"type":"message","seq":3,"t_us":2,"from":"server","kind":"continuation-request","tag":"+","reply_to":2,"text":"+ \r\n"}"#,
                r#"{"type":"message","seq":4,"t_us":3,"from":"client","kind":"sasl-data","reply_to":2,"redacted":["sasl-data"],"text":"<redacted>\r\n"}"#,
                r#"{"type":"message","seq":5,"t_us":4,"from":"server","kind":"completion","tag":"a","name":"OK","status":"OK","reply_to":2,"text":"a OK\r\n"}"#,
            ],
        );
        let mut s = ServeSession::new(MatchMode::Strict, 1.0);
        s.greeting(&pool);
        let answer = said(&s.on_client(b"a AUTHENTICATE scram-sha-1\r\n", &mut pool));
        assert!(
            answer.starts_with(
                "a NO [AUTHENTICATIONFAILED] imapscope serve cannot answer SCRAM-SHA-1"
            ),
            "{answer}"
        );
        assert!(s.mismatches()[0].contains("needs") || s.mismatches()[0].contains("proof"));
    }
}
