//! A fake IMAP server that plays the server side of recordings to a client under test.
//!
//! [`ServeSession`] is the pure part, one per connection: it reads the client's bytes with a
//! [`SessionTracker`], matches each command with an unused exchange of the capture's
//! [`Pool`] sent in the same session state (`--match strict|name|lenient`), and says what to
//! send: the recorded responses, with the recorded tag replaced by the client's. Responses
//! are sent as soon as the client has sent what the recorded client had sent before them; a
//! command's own completion (or continuation request) is never held back. What the server
//! sent between its greeting and the client's first command (an `* OK [ALERT]`) goes out with
//! the greeting. Pushes during IDLE keep their recorded delays, scaled by a speed factor.
//!
//! [`FakeServer`] is the async shell; it never connects anywhere. It serves a capture (the
//! connections one client made) to connections arriving in any order, concurrently: see
//! [`super::pool`] for why exchanges, not whole recordings, are handed out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::attribution::answered_command;
use super::capture::Capture;
use super::matcher::show;
use super::pool::{Context, Pool, REPEATABLE, fits_state};
use super::sasl::{Mechanism, ScramServer};
use super::script::{Login, Script, ScriptError, Unit};
use crate::protocol::message::{parse_command, parse_response};
use crate::protocol::token::{Token, TokenKind, string_value};
use crate::protocol::{Event, Kind, SessionTracker, Side, Status};
use crate::relay::stream::Stream;
use crate::tls::TlsMode;

/// How many of the commands read with the one being answered are looked at for answers the
/// recording gave them first (see `ServeSession::read_ahead`).
const READ_AHEAD_MAX: usize = 64;

/// How closely a client's command must resemble the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MatchMode {
    /// An unused recorded command sent in the same session state (not logged in, logged in,
    /// which mailbox), with the same name and arguments (normalized: case of atoms, quoting;
    /// a redacted password matches any; a literal, such as the message an APPEND uploads,
    /// by its size; a date-time by its form; ID, which describes the client, by its name).
    /// Each recording's next command is preferred.
    #[default]
    Strict,
    /// An unused recorded command in the same state with the same name.
    Name,
    /// Any recorded command not yet used with the same name: the client may reorder.
    Lenient,
}

/// Something to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Bytes {
        bytes: Vec<u8>,
        delay: Duration,
    },
    /// Start TLS now (the OK to STARTTLS was just sent).
    StartTls,
}

/// How one served session went.
#[derive(Debug, Clone, Default)]
pub struct SessionOutcome {
    pub transcript: String,
    /// Client commands that matched no recorded command, with the diagnostic.
    pub mismatches: Vec<String>,
    /// Recorded commands the client never sent.
    pub unused: Vec<String>,
    pub commands: usize,
    /// Commands asked again that the recording answered once: played again, not a failure.
    pub repeated: usize,
    pub error: Option<String>,
}

impl SessionOutcome {
    /// The recording was used fully and exactly.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.unused.is_empty() && self.error.is_none()
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {}: {} commands served",
            if self.ok() { "PASS" } else { "FAIL" },
            self.transcript,
            self.commands
        );
        if self.repeated > 0 {
            s.push_str(&format!(
                ", {} asked again and answered as recorded",
                self.repeated
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s.push('\n');
        for m in &self.mismatches {
            s.push_str(&format!("  unexpected: {m}\n"));
        }
        for u in &self.unused {
            s.push_str(&format!("  never asked for: C: {u}\n"));
        }
        s
    }
}

/// The pure side of one served session. See the module documentation.
pub struct ServeSession {
    mode: MatchMode,
    speed: f64,
    tracker: SessionTracker,
    events: Vec<Event>,
    /// The recording this connection last played an exchange of.
    following: Option<usize>,
    /// The session state the client is in, as the exchanges played so far left it.
    context: Context,
    /// (recording, recorded tag) -> the client's tag.
    tags: HashMap<(usize, String), String>,
    /// The client's current multi-unit message (sync literals): recording, seq, parts used.
    current: Option<(usize, u64, usize)>,
    /// The recorded AUTHENTICATE being played: recording, seq.
    sasl_for: Option<(usize, u64)>,
    outcome: SessionOutcome,
    t_us: u64,
    /// After COMPRESS: what is sent is deflated first.
    deflater: Option<crate::protocol::compress::Deflater>,
    /// The exchange being answered is one played before, asked again.
    repeat: bool,
    /// The exchange answered last is its recording's last client message.
    played_last: bool,
    /// The password a SCRAM login is answered with (`serve --login`).
    login: Option<Login>,
    /// A SCRAM login being answered, and its next answer, which stands in for the recorded
    /// continuation request's.
    scram: Option<ScramServer>,
    scram_reply: Option<Vec<u8>>,
    /// The client's whole commands read with the one being answered and after it, not yet
    /// matched (its bytes and tag): an answer the recording gave to one of them before this
    /// one's completion is sent in its recorded place, as a server that completed pipelined
    /// commands in its own order did.
    read_ahead: std::collections::VecDeque<(Vec<u8>, Option<String>)>,
    /// Answer after the recorded latency (scaled by `speed`), not at once.
    recorded_latency: bool,
}

impl ServeSession {
    pub fn new(mode: MatchMode, speed: f64) -> ServeSession {
        ServeSession {
            outcome: SessionOutcome::default(),
            mode,
            speed: if speed > 0.0 { speed } else { 1.0 },
            tracker: SessionTracker::new(),
            events: Vec::new(),
            following: None,
            context: Context::NotAuthenticated,
            tags: HashMap::new(),
            current: None,
            sasl_for: None,
            t_us: 0,
            deflater: None,
            repeat: false,
            played_last: false,
            login: None,
            scram: None,
            scram_reply: None,
            read_ahead: std::collections::VecDeque::new(),
            recorded_latency: false,
        }
    }

    /// Each answer after the time the recorded server took (scaled by the speed factor): a
    /// client whose path depends on timing (Geary sends NOOP or a SEARCH by how soon its
    /// other connection got its answers) then takes the recorded one.
    pub fn with_recorded_latency(mut self, on: bool) -> ServeSession {
        self.recorded_latency = on;
        self
    }

    /// With the password a SCRAM login is answered with; without one, SCRAM is refused.
    pub fn with_login(mut self, login: Option<Login>) -> ServeSession {
        self.login = login;
        self
    }

    /// How many commands the client has sent.
    pub fn commands(&self) -> usize {
        self.outcome.commands
    }

    /// The greeting of the first recording, to send first, with the lines its server sent
    /// after it and before the client's first command (an `* OK [ALERT]`, a stray `+`): they
    /// answer no command, so no exchange plays them, and the client is owed them all the same.
    /// Sent on every connection, as the greeting is, and used by none: a port probe that gets
    /// them consumes nothing.
    pub fn greeting(&mut self, pool: &Pool) -> Vec<u8> {
        let first = (0..pool.len()).find(|&s| pool.script(s).greeting.is_some());
        let greeting = first.and_then(|s| pool.script(s).greeting.as_ref());
        if let Some(g) = greeting
            && parse_response(&g.bytes).name.as_deref() == Some("PREAUTH")
        {
            self.context = Context::Authenticated;
        }
        let mut bytes = greeting
            .map(|g| g.bytes.clone())
            .unwrap_or_else(|| b"* OK imapscope serve ready\r\n".to_vec());
        if let Some(s) = first {
            let opening = pool.script(s).timeline.iter();
            for unit in opening.take_while(|u| u.from == Side::Server) {
                bytes.extend_from_slice(&unit.bytes);
            }
        }
        self.tracker
            .on_bytes(Side::Server, 0, &bytes, &mut Vec::new());
        bytes
    }

    /// The client sent `bytes`: what to answer.
    pub fn on_client(&mut self, bytes: &[u8], pool: &mut Pool) -> Vec<Output> {
        self.t_us += 1;
        let mut events = std::mem::take(&mut self.events);
        self.tracker
            .on_bytes(Side::Client, self.t_us, bytes, &mut events);
        let mut out = Vec::new();
        self.play(&mut events, pool, &mut out);
        if self.answered_before_its_data(pool) {
            self.tracker.hand_out_command(&mut events);
            self.play(&mut events, pool, &mut out);
        }
        self.events = events;
        out
    }

    /// The client closed. A command it was still sending, its literal data not waiting for
    /// `+` (LITERAL+), never came out of the tracker; when a recording has that command cut
    /// off at the same byte (its client closed there too), the client repeated it exactly and
    /// it is played. A command cut off elsewhere stays unsent, as it never reached a server.
    pub fn on_client_closed(&mut self, pool: &mut Pool) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(bytes) = self.tracker.unsent_command() else {
            return out;
        };
        let cut_alike = matches!(
            self.find_command(bytes, pool),
            Ok((s, i, false)) if pool.unit(s, i).bytes.len() == bytes.len()
        );
        if cut_alike {
            let mut events = std::mem::take(&mut self.events);
            self.tracker.hand_out_command(&mut events);
            self.play(&mut events, pool, &mut out);
            self.events = events;
        }
        out
    }

    /// Whether the command the client is sending the literal data of was answered in the
    /// recording before that data ended (a LITERAL+ APPEND refused at once): then it is
    /// answered now, as the recorded server did, and not when the data is complete.
    fn answered_before_its_data(&self, pool: &Pool) -> bool {
        let Some(bytes) = self.tracker.unsent_command() else {
            return false;
        };
        let Ok((s, i, false)) = self.find_command(bytes, pool) else {
            return false;
        };
        let seq = pool.unit(s, i).seq;
        let timeline = &pool.script(s).timeline;
        let answer = timeline.iter().position(|u| {
            u.from == Side::Server && u.kind == Kind::Completion && u.reply_to == Some(seq)
        });
        let data = timeline
            .iter()
            .position(|u| u.from == Side::Client && u.is_part && u.seq == seq);
        matches!((answer, data), (Some(a), Some(d)) if a < d)
    }

    /// Answers what the client's messages in `events` stand for.
    fn play(&mut self, events: &mut Vec<Event>, pool: &mut Pool, out: &mut Vec<Output>) {
        let whole_command = |m: &crate::protocol::Message| {
            m.from == Side::Client && m.kind == Kind::Command && !m.partial
        };
        // Bounded: a flood of thousands of commands in one read is answered in command order
        // past the first ones, rather than searched through for every answer.
        self.read_ahead = events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) if whole_command(m) => {
                    Some((m.bytes.to_vec(), m.tag.as_deref().map(String::from)))
                }
                _ => None,
            })
            .take(READ_AHEAD_MAX)
            .collect();
        for event in events.drain(..) {
            if let Event::Message(m) = &event
                && whole_command(m)
            {
                self.read_ahead.pop_front();
            }
            let matched = match event {
                Event::Message(m) if m.from == Side::Client => self.match_message(&m, pool, out),
                Event::Part {
                    from: Side::Client, ..
                } => self.match_part(pool),
                _ => None,
            };
            if let Some((script, index)) = matched {
                if self.following.is_none() {
                    pool.opened();
                    self.following = Some(script);
                } else if !self.repeat {
                    // An answer played again is borrowed: the connection goes on following
                    // its recording (else one used up could end the connection, see
                    // `finished`, in the middle of its work).
                    self.following = Some(script);
                }
                let timeline = &pool.script(script).timeline;
                self.played_last = !timeline[index + 1..].iter().any(|u| u.from == Side::Client);
                self.respond(script, index, pool, out);
            }
        }
    }

    /// Commands that matched nothing so far, each with its diagnostic.
    pub fn mismatches(&self) -> &[String] {
        &self.outcome.mismatches
    }

    /// The recording followed has been played to its end, by this connection's last command
    /// (a LOGOUT), and its server hung up: time to hang up too. (A connection that takes the
    /// last unused exchange of another recording in the middle of its work goes on.)
    pub fn finished(&self, pool: &Pool) -> bool {
        let Some(s) = self.following else {
            return false;
        };
        let script = pool.script(s);
        self.played_last
            && script.server_hung_up()
            && (0..script.timeline.len()).all(|i| pool.is_used(s, i))
    }

    /// The connection is over: what it did. The recording's name is that of the recording it
    /// followed last.
    pub fn finish(mut self, pool: &mut Pool) -> SessionOutcome {
        if let Some(s) = self.following {
            self.outcome.transcript = pool.script(s).name.clone();
            pool.closed();
        }
        self.outcome
    }

    fn match_message(
        &mut self,
        m: &crate::protocol::Message,
        pool: &mut Pool,
        out: &mut Vec<Output>,
    ) -> Option<(usize, usize)> {
        match m.kind {
            Kind::Command => {
                self.outcome.commands += 1;
                match self.find_command(&m.bytes, pool) {
                    Ok((s, index, true)) => {
                        // Asked again (two connections raced to the same NAMESPACE): the
                        // recorded answer is played again, and nothing is used up.
                        self.repeat = true;
                        let unit = pool.unit(s, index);
                        if let (Some(rec), Some(cli)) = (&unit.tag, &m.tag) {
                            self.tags.insert((s, rec.clone()), cli.to_string());
                        }
                        self.outcome.repeated += 1;
                        Some((s, index))
                    }
                    Ok((s, _, false)) if scram(&m.bytes).is_some() && self.login.is_none() => {
                        // A SCRAM client checks the server's proof (`v=`), which only the
                        // password can make: the recorded one answered another nonce, and it is
                        // not in the transcript. Refused at once, and said why, rather than
                        // played to a client that gives up on it.
                        let mechanism = scram(&m.bytes).unwrap_or_default();
                        let tag = m.tag.clone().unwrap_or_else(|| "*".into());
                        out.push(
                            self.say(
                                format!(
                                    "{tag} NO [AUTHENTICATIONFAILED] imapscope serve cannot answer \
                                 {mechanism}: the client checks a proof that needs the password\r\n"
                                )
                                .into_bytes(),
                                Duration::ZERO,
                            ),
                        );
                        self.outcome.mismatches.push(format!(
                            "AUTHENTICATE {mechanism} (recording {}): a SCRAM client checks the \
                             server's proof of its password, which serve cannot make; record the \
                             client with PLAIN, LOGIN or CRAM-MD5 to serve it",
                            pool.script(s).name
                        ));
                        None
                    }
                    Ok((s, index, false)) => {
                        self.repeat = false;
                        let unit = pool.unit(s, index);
                        if let (Some(rec), Some(cli)) = (&unit.tag, &m.tag) {
                            self.tags.insert((s, rec.clone()), cli.to_string());
                        }
                        self.current = m.partial.then_some((s, unit.seq, 0));
                        if unit.name.as_deref() == Some("AUTHENTICATE") {
                            self.sasl_for = Some((s, unit.seq));
                            self.start_scram(&m.bytes);
                        }
                        pool.mark_used(s, index);
                        Some((s, index))
                    }
                    Err(diagnostic) => {
                        self.repeat = false;
                        let tag = m.tag.clone().unwrap_or_else(|| "*".into());
                        out.push(self.say(
                            format!(
                                "{tag} BAD [CLIENTBUG] imapscope serve: no recorded command matches\r\n"
                            )
                            .into_bytes(),
                            Duration::ZERO,
                        ));
                        self.outcome.mismatches.push(diagnostic);
                        None
                    }
                }
            }
            Kind::SaslData | Kind::IdleDone => {
                let want = m.kind;
                if want == Kind::SaslData
                    && let Some(scram) = self.scram.as_mut()
                {
                    self.scram_reply = decode_sasl(&m.bytes).and_then(|c| scram.respond(&c));
                }
                // In the recording of the command they belong to.
                let (s, auth) = match (want, self.sasl_for) {
                    (Kind::SaslData, Some((s, seq))) => (Some(s), Some(seq)),
                    _ => (self.following, None),
                };
                let index = s.and_then(|s| {
                    let timeline = &pool.script(s).timeline;
                    (0..timeline.len())
                        .find(|&i| {
                            let u = &timeline[i];
                            !pool.is_used(s, i)
                                && u.from == Side::Client
                                && u.kind == want
                                && (auth.is_none() || u.reply_to == auth)
                        })
                        .map(|i| (s, i))
                });
                match index {
                    Some((s, i)) => {
                        pool.mark_used(s, i);
                        Some((s, i))
                    }
                    None => {
                        self.outcome.mismatches.push(format!(
                            "{} `{}` that the recording does not have",
                            if want == Kind::IdleDone {
                                "DONE"
                            } else {
                                "SASL data"
                            },
                            show(&m.bytes)
                        ));
                        None
                    }
                }
            }
            _ => None,
        }
    }

    fn match_part(&mut self, pool: &mut Pool) -> Option<(usize, usize)> {
        let (s, seq, n) = self.current?;
        let index = pool
            .script(s)
            .timeline
            .iter()
            .enumerate()
            .filter(|(_, u)| u.from == Side::Client && u.is_part && u.seq == seq)
            .nth(n)
            .map(|(i, _)| i);
        self.current = Some((s, seq, n + 1));
        let i = index?;
        pool.mark_used(s, i);
        Some((s, i))
    }

    /// The recorded exchange this client command stands for, or why there is none: an unused
    /// command of the capture sent in the same session state, the same command (`strict`:
    /// name and arguments; `name`: name; `lenient`: name, in any state). The recording being
    /// followed is preferred, then each recording's next command, then any.
    fn find_command(&self, bytes: &[u8], pool: &Pool) -> Result<(usize, usize, bool), String> {
        let head = parse_command(bytes);
        let name = head.name.clone().unwrap_or_default();
        // Each recording's next command first; then any unused one, since connections move
        // at their own pace (one may select INBOX before another has logged in, and the
        // SELECT it needs is the one recorded after that login).
        let heads = pool.open_commands(self.following, true);
        let rest = pool.open_commands(self.following, false);
        let candidates: Vec<(usize, usize)> = heads
            .iter()
            .copied()
            .chain(rest.into_iter().filter(|c| !heads.contains(c)))
            .collect();
        // A line without a command name (`xyz`, a client's junk) is recorded without one, and
        // is known by the whole line.
        let same_name = |&(s, i): &(usize, usize)| {
            let unit = pool.unit(s, i);
            match unit.name.as_deref() {
                Some(recorded) => recorded == name,
                None => name.is_empty() && unit.bytes.eq_ignore_ascii_case(bytes),
            }
        };
        // The state the command was recorded in, or for a command that does not depend on
        // the selected mailbox, one it answers alike in (see `fits_state`): then the order of
        // the candidates decides, the recording being followed first.
        let same_state =
            |&(s, i): &(usize, usize)| fits_state(&name, pool.context_before(s, i), &self.context);
        let found = match self.mode {
            MatchMode::Strict => candidates.iter().copied().find(|c| {
                same_name(c) && same_state(c) && same_arguments(pool.unit(c.0, c.1), bytes, &head)
            }),
            MatchMode::Name => candidates
                .iter()
                .copied()
                .find(|c| same_name(c) && same_state(c)),
            MatchMode::Lenient => candidates.iter().copied().find(same_name),
        };
        if let Some((s, i)) = found {
            return Ok((s, i, false));
        }
        // A command the capture has answered already, in the same state, with the same
        // arguments, and without a literal or a SASL exchange: a read the client made twice.
        // The latest such answer (a mailbox selected again is as it was last seen), in the
        // recording being followed if it has one.
        let again = pool
            .played_commands()
            .into_iter()
            .filter(|c| {
                let unit = pool.unit(c.0, c.1);
                same_name(c)
                    && same_state(c)
                    && !unit.bytes.ends_with(b"}\r\n")
                    && unit.name.as_deref() != Some("AUTHENTICATE")
                    && REPEATABLE.contains(&unit.name.as_deref().unwrap_or_default())
                    && same_arguments(unit, bytes, &head)
            })
            .max_by_key(|&(s, i)| (Some(s) == self.following, i));
        if let Some((s, i)) = again {
            return Ok((s, i, true));
        }
        Err({
            let shown = |&(s, i): &(usize, usize)| format!("`{}`", show(&pool.unit(s, i).shown));
            // What the capture has left for this connection's state; when nothing, what it
            // has left at all, and where (a second client on a one-connection capture is not
            // expected to send what the first one is about to).
            let expected = match (
                candidates.iter().find(|c| same_state(c)),
                candidates.first(),
            ) {
                (Some(c), _) => shown(c),
                (None, Some(c)) => format!(
                    "nothing sent {} (the capture's next unused command, {}, was sent {})",
                    describe(&self.context),
                    shown(c),
                    describe(pool.context_before(c.0, c.1))
                ),
                (None, None) => "nothing more (the recordings are used up)".into(),
            };
            let received = redacted_view(bytes, &head);
            let closest = candidates.iter().find(|c| same_name(c));
            let mut said = format!(
                "`{}`; expected {expected}{}",
                show(&received),
                closest
                    .map(|c| format!("; closest recorded: {}", shown(c)))
                    .unwrap_or_default()
            );
            if let Some(&(s, i)) = closest {
                let recorded = pool.unit(s, i);
                if same_arguments(recorded, bytes, &head) && !same_state(&(s, i)) {
                    // The same command, sent where the recording never was.
                    said.push_str(&format!(
                        "; the recording sent it {}, and this connection is {}",
                        describe(pool.context_before(s, i)),
                        describe(&self.context)
                    ));
                } else if show(&recorded.shown) == show(&received) {
                    // Shortened (a literal cut off), the two read alike: say where they differ.
                    said.push_str(&first_difference(&recorded.shown, &received));
                }
            }
            said
        })
    }

    /// Sends the recorded answer to the client unit at `index` of recording `s`. See the
    /// module documentation.
    fn respond(&mut self, s: usize, index: usize, pool: &mut Pool, out: &mut Vec<Output>) {
        let script = pool.script(s).clone();
        let timeline = &script.timeline;
        let matched = &timeline[index];
        // A mailbox selected where the recording had none open (or the other way round):
        // the server's `* OK [CLOSED]` (RFC 7162) goes with what this session had open.
        let selects = matched.kind == Kind::Command
            && matches!(matched.name.as_deref(), Some("SELECT" | "EXAMINE"));
        let had_open = matches!(self.context, Context::Selected(_));
        let recorded_open = matches!(pool.context_before(s, index), Context::Selected(_));
        let mut closed = match (selects, had_open, recorded_open) {
            (true, true, false) => pool.closed_line(),
            _ => None,
        };
        let drop_closed = selects && !had_open && recorded_open;
        // A command matched in another state than recorded (see `fits_state`) leaves this
        // session's state as it was, unless it selects.
        let matched_in_state = *pool.context_before(s, index) == self.context;
        if matched.kind == Kind::Command && !matched.is_part && (matched_in_state || selects) {
            self.context = pool.context_after(s, index).clone();
        }
        let next_client = timeline[index + 1..]
            .iter()
            .position(|u| u.from == Side::Client)
            .map_or(timeline.len(), |p| index + 1 + p);
        // The answer this unit needs: its continuation request or completion.
        let answers = |u: &Unit| {
            matches!(u.kind, Kind::Completion | Kind::ContinuationRequest)
                && (u.reply_to == Some(matched.seq)
                    || (matched.kind == Kind::SaslData && u.reply_to == matched.reply_to)
                    || (matched.kind == Kind::IdleDone && u.reply_to == matched.reply_to))
        };
        let reply = timeline[index + 1..]
            .iter()
            .position(|u| u.from == Side::Server && answers(u))
            .map(|p| index + 1 + p);
        // Up to the next client unit, and never short of this unit's own answer.
        let until = match reply {
            Some(r) if r >= next_client => r + 1,
            _ => next_client,
        };
        let idle = matched.kind == Kind::Command && matched.name.as_deref() == Some("IDLE");
        let mut previous_t = matched.t_us;
        let mut after_continuation = false;
        let end = until.min(timeline.len());
        // Per owning command, whether the client sent it with this one (looked up once).
        let mut looked_up: HashMap<u64, Option<String>> = HashMap::new();
        for (i, unit) in timeline.iter().enumerate().take(end).skip(index + 1) {
            // An answer to another command pipelined with this one waits for that command,
            // for a client that sends one at a time (a client sending them together gets
            // the same bytes, in an order the server was free to choose).
            let owner = if unit.from == Side::Server {
                owner(&script, unit)
            } else {
                None
            };
            // Unless the client has sent that command already, with this one: then the answer
            // goes where the recording has it (the client gets the order the server chose).
            let read_with_it = owner
                .filter(|&(seq, at)| seq != matched.seq && !pool.is_used(s, at))
                .and_then(|(seq, at)| {
                    looked_up
                        .entry(seq)
                        .or_insert_with(|| self.read_ahead_tag(pool.unit(s, at)))
                        .clone()
                });
            if let (Some(client_tag), Some(recorded_tag)) = (&read_with_it, &unit.tag)
                && unit.kind == Kind::Completion
            {
                self.tags
                    .insert((s, recorded_tag.clone()), client_tag.clone());
            }
            let waits = read_with_it.is_none()
                && owner.is_some_and(|(seq, at)| seq != matched.seq && !pool.is_used(s, at));
            // Played again: its answer (tagged or untagged) whether or not used before.
            let again = self.repeat
                && (unit.reply_to == Some(matched.seq)
                    || (unit.in_flight.contains(&matched.seq)
                        && owner.is_none_or(|(seq, _)| seq == matched.seq)));
            if unit.from != Side::Server
                || waits
                || (pool.is_used(s, i) && !again)
                || (self.repeat && !again)
            {
                continue;
            }
            let delay = if (idle && after_continuation && unit.kind == Kind::Untagged)
                || self.recorded_latency
            {
                Duration::from_micros(unit.t_us.saturating_sub(previous_t)).div_f64(self.speed)
            } else {
                Duration::ZERO
            };
            after_continuation |= unit.kind == Kind::ContinuationRequest;
            previous_t = unit.t_us;
            let mut bytes = self.retag(s, unit);
            if unit.kind == Kind::ContinuationRequest
                && self.scram.is_some()
                && let Some(reply) = self.scram_reply.take()
            {
                // This run's SCRAM message, not the one recorded for another nonce.
                let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, reply);
                bytes = format!("+ {b64}\r\n").into_bytes();
            } else if unit.kind == Kind::Completion
                && self
                    .sasl_for
                    .is_some_and(|(_, auth)| unit.reply_to == Some(auth))
            {
                // The AUTHENTICATE is answered: its exchange is over.
                self.scram = None;
            }
            let accepted = unit.kind == Kind::Completion
                && unit.reply_to == Some(matched.seq)
                && parse_response(&unit.bytes).status == Some(Status::Ok);
            if !self.repeat {
                pool.mark_used(s, i);
            }
            if drop_closed && is_closed_line(&unit.bytes) {
                continue;
            }
            if let Some(line) = closed.take() {
                out.push(self.say(line, Duration::ZERO));
            }
            out.push(self.say(bytes, delay));
            match matched.name.as_deref() {
                Some("STARTTLS") if accepted => {
                    out.push(Output::StartTls);
                    self.tracker.tls_established();
                }
                Some("COMPRESS") if accepted => {
                    self.deflater = Some(crate::protocol::compress::Deflater::new());
                }
                _ => {}
            }
        }
    }

    /// The client's tag of a command read with the one being answered that stands for the
    /// recorded command `recorded` (same name and arguments), if there is one.
    fn read_ahead_tag(&self, recorded: &Unit) -> Option<String> {
        if self.read_ahead.is_empty() {
            return None;
        }
        self.read_ahead.iter().find_map(|(bytes, tag)| {
            let head = parse_command(bytes);
            let same = head.name.as_deref() == recorded.name.as_deref()
                && same_arguments(recorded, bytes, &head);
            same.then(|| tag.clone().unwrap_or_default())
        })
    }

    /// The recorded message with the recorded tag replaced by the client's.
    fn retag(&self, s: usize, unit: &Unit) -> Vec<u8> {
        if unit.kind != Kind::Completion {
            return unit.bytes.clone();
        }
        match unit
            .tag
            .as_ref()
            .and_then(|t| self.tags.get(&(s, t.clone())).map(|c| (t, c)))
        {
            Some((recorded, client)) if unit.bytes.starts_with(recorded.as_bytes()) => {
                let mut b = client.as_bytes().to_vec();
                b.extend_from_slice(&unit.bytes[recorded.len()..]);
                b
            }
            _ => unit.bytes.clone(),
        }
    }

    /// An output (deflated after COMPRESS), also fed to the tracker so it follows
    /// AUTHENTICATE, IDLE and COMPRESS.
    /// A SCRAM AUTHENTICATE matched with a password at hand: this run's exchange is answered
    /// by a [`ScramServer`], its client's first message taken from the command when sent
    /// with it (SASL-IR).
    fn start_scram(&mut self, command: &[u8]) {
        let (Some(name), Some(login)) = (scram(command), &self.login) else {
            self.scram = None;
            return;
        };
        let mut server = Mechanism::from_name(&name)
            .and_then(|m| ScramServer::with_random_nonce(m, &login.password));
        let head = parse_command(command);
        let initial = head
            .args()
            .get(1)
            .and_then(|t| decode_sasl(&command[t.span.clone()]));
        self.scram_reply = match (&mut server, initial) {
            (Some(server), Some(first)) => server.respond(&first),
            _ => None,
        };
        self.scram = server;
    }

    fn say(&mut self, bytes: Vec<u8>, delay: Duration) -> Output {
        let bytes = match self.deflater.as_mut() {
            Some(d) => d.deflate(&bytes),
            None => bytes,
        };
        self.tracker
            .on_bytes(Side::Server, self.t_us, &bytes, &mut self.events);
        Output::Bytes { bytes, delay }
    }
}

/// A SASL line's payload, decoded (`None` for `*` or what is not base64).
fn decode_sasl(line: &[u8]) -> Option<Vec<u8>> {
    base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        line.trim_ascii(),
    )
    .ok()
}

/// `SCRAM-SHA-1` for `a AUTHENTICATE SCRAM-SHA-1 ...`: a login serve answers only with the
/// password (`--login`).
fn scram(command: &[u8]) -> Option<String> {
    let head = parse_command(command);
    if head.name.as_deref() != Some("AUTHENTICATE") {
        return None;
    }
    let mechanism = head.args().first()?;
    let mechanism = String::from_utf8_lossy(&command[mechanism.span.clone()]).to_ascii_uppercase();
    mechanism.starts_with("SCRAM-").then_some(mechanism)
}

/// A session state as the report says it.
fn describe(context: &Context) -> String {
    match context {
        Context::NotAuthenticated => "before logging in".into(),
        Context::Authenticated => "logged in with no mailbox selected".into(),
        Context::Selected(mailbox) => {
            format!("with {} selected", String::from_utf8_lossy(mailbox))
        }
    }
}

/// The command a server unit answers, as its seq and place in the timeline: a completion's
/// or continuation's own, and for untagged data with several commands in flight, the one its
/// content names ([`answered_command`]).
fn owner(script: &Script, unit: &Unit) -> Option<(u64, usize)> {
    let command_at = |seq: u64| script.command_at.get(&seq).copied();
    let timeline = &script.timeline;
    match unit.kind {
        Kind::Completion | Kind::ContinuationRequest => {
            let seq = unit.reply_to?;
            Some((seq, command_at(seq)?))
        }
        Kind::Untagged if unit.in_flight.len() > 1 => {
            let commands: Vec<(u64, usize)> = unit
                .in_flight
                .iter()
                .filter_map(|&seq| Some((seq, command_at(seq)?)))
                .collect();
            let candidates: Vec<(u64, &[u8])> = commands
                .iter()
                .map(|&(seq, at)| (seq, timeline[at].bytes.as_slice()))
                .collect();
            let seq = answered_command(&unit.bytes, &candidates)?;
            commands.into_iter().find(|&(s, _)| s == seq)
        }
        _ => None,
    }
}

/// `* OK [CLOSED] ...`: the previously selected mailbox was closed by a SELECT or EXAMINE.
pub fn is_closed_line(bytes: &[u8]) -> bool {
    bytes.starts_with(b"* OK [CLOSED]")
}

/// The client's command with LOGIN/AUTHENTICATE secrets hidden, for diagnostics.
fn redacted_view(bytes: &[u8], head: &crate::protocol::message::Head) -> Vec<u8> {
    let secrets = crate::protocol::redact::secrets(Kind::Command, head, bytes, true);
    crate::protocol::redact::apply(bytes, &secrets)
}

/// Same arguments, normalized: atoms without regard to case, a quoted string equal to the same
/// atom, lists element by element; a redacted recorded argument matches anything.
fn same_arguments(recorded: &Unit, bytes: &[u8], head: &crate::protocol::message::Head) -> bool {
    // ID's arguments describe the client (RFC 2971: its name, version, OS), and the server's
    // answer does not depend on them: a client upgraded since the recording (Thunderbird
    // 153.7.0 to 153.8.0) asks the same thing.
    if recorded.name.as_deref() == Some("ID") {
        return true;
    }
    let rec_head = parse_command(&recorded.bytes);
    let rec_args = rec_head.args();
    let args = head.args();
    if rec_args.len() != args.len() {
        return false;
    }
    rec_args.iter().zip(args).all(|(r, c)| {
        let rec_text = &recorded.bytes[r.span.clone()];
        rec_text == crate::protocol::redact::PLACEHOLDER || same_token(&recorded.bytes, r, bytes, c)
    })
}

fn same_token(rb: &[u8], r: &Token, cb: &[u8], c: &Token) -> bool {
    match (&r.kind, &c.kind) {
        (TokenKind::List(a), TokenKind::List(b)) | (TokenKind::Code(a), TokenKind::Code(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_token(rb, x, cb, y))
        }
        // A literal's data is the client's own (the message an APPEND uploads, which a client
        // may stamp anew each run: mbsync's X-TUID header): compared by size, whether it
        // came with the command (LITERAL+) or after a continuation.
        (TokenKind::Literal { len: a, .. }, TokenKind::Literal { len: b, .. }) => a == b,
        _ => match (string_value(rb, r), string_value(cb, c)) {
            // An APPEND's date-time comes from the client's copy (offlineimap: the file's
            // modification time): any date-time stands for any other.
            (Some(a), Some(b)) if is_date_time(&a) && is_date_time(&b) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(&b),
            _ => rb[r.span.clone()].eq_ignore_ascii_case(&cb[c.span.clone()]),
        },
    }
}

/// An IMAP date-time (RFC 3501): `dd-Mon-yyyy hh:mm:ss +zzzz`, the day possibly space-padded.
fn is_date_time(s: &[u8]) -> bool {
    let digit = |i: usize| s[i].is_ascii_digit();
    s.len() == 26
        && (s[0] == b' ' || digit(0))
        && digit(1)
        && s[2] == b'-'
        && s[3..6].iter().all(u8::is_ascii_alphabetic)
        && s[6] == b'-'
        && (7..11).all(digit)
        && s[11] == b' '
        && digit(12)
        && digit(13)
        && s[14] == b':'
        && digit(15)
        && digit(16)
        && s[17] == b':'
        && digit(18)
        && digit(19)
        && s[20] == b' '
        && (s[21] == b'+' || s[21] == b'-')
        && (22..26).all(digit)
}

/// Where two commands that read the same when shortened differ, for a person.
fn first_difference(recorded: &[u8], received: &[u8]) -> String {
    let at = recorded
        .iter()
        .zip(received)
        .position(|(a, b)| a != b)
        .unwrap_or(recorded.len().min(received.len()));
    let around = |b: &[u8]| {
        let start = at.saturating_sub(20);
        let end = (at + 40).min(b.len());
        String::from_utf8_lossy(&b[start.min(end)..end])
            .escape_debug()
            .to_string()
    };
    format!(
        "; they differ at byte {at}: recorded `…{}…`, received `…{}…`",
        around(recorded),
        around(received)
    )
}

/// What the fake server needs.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub mode: MatchMode,
    pub speed: f64,
    /// TLS towards the client from its first byte (`Tls`) or not; `None`: as the capture was
    /// recorded. STARTTLS is played where the recording has it.
    pub client_tls: Option<TlsMode>,
    /// Needed when the capture or `client_tls` uses TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How many times to serve the whole capture before stopping; 0: until stopped.
    pub rounds: usize,
    /// When every connection has closed with exchanges still unplayed: how long to wait for
    /// the client to come back before the round ends as incomplete.
    pub linger: Duration,
    /// The password a SCRAM login is answered with (its client checks the server's proof of
    /// it); without it, AUTHENTICATE SCRAM-* is refused with the reason.
    pub login: Option<Login>,
    /// Answer after the recorded latency (scaled by `speed`) rather than at once.
    pub recorded_latency: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mode: MatchMode::Strict,
            speed: 1.0,
            client_tls: None,
            tls: None,
            rounds: 1,
            linger: Duration::from_secs(5),
            login: None,
            recorded_latency: false,
        }
    }
}

/// A fake IMAP server playing a capture: each connection plays the recording whose exchange it
/// follows (see [`super::pool`]), concurrently.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use imapscope::replay::serve::{FakeServer, ServeOptions};
/// // a file, a directory of transcripts, or a glob pattern
/// let server = FakeServer::start(&["recordings/golden/login-select.jsonl"], ServeOptions::default()).await?;
/// let addr = server.addr(); // point the client under test here
/// // ... run the client ...
/// let report = server.finish().await;
/// report.assert_consumed();
/// # Ok(()) }
/// ```
pub struct FakeServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<ServeReport>,
}

/// What a fake server saw: one outcome per recording played (per round).
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    pub sessions: Vec<SessionOutcome>,
    /// Recordings of the last round no client connection played.
    pub unserved: Vec<String>,
    /// Connections that sent commands after every recording they could follow was taken.
    pub strays: Vec<SessionOutcome>,
    /// Connections that closed before their first command (they consumed nothing).
    pub probes: usize,
    /// Whole passes over the capture.
    pub rounds: usize,
}

impl ServeReport {
    pub fn ok(&self) -> bool {
        self.unserved.is_empty()
            && self.strays.is_empty()
            && self.sessions.iter().all(SessionOutcome::ok)
    }

    pub fn render(&self) -> String {
        let mut s: String = self.sessions.iter().map(SessionOutcome::render).collect();
        for u in &self.unserved {
            s.push_str(&format!("FAIL {u}: no client connected for it\n"));
        }
        for stray in &self.strays {
            s.push_str(&format!(
                "FAIL (a connection without a recording) {}",
                stray.render()
            ));
        }
        if self.probes > 0 {
            s.push_str(&format!(
                "{} connection(s) closed before their first command (nothing used)\n",
                self.probes
            ));
        }
        s
    }

    /// Panics with the diagnostics unless every recording was used fully and exactly.
    pub fn assert_consumed(&self) {
        assert!(
            self.ok(),
            "the recordings were not played exactly:\n{}",
            self.render()
        );
    }
}

impl FakeServer {
    /// Reads the capture (transcript files, directories, glob patterns) and starts listening.
    /// Fails on unusable transcripts.
    pub async fn start<P: AsRef<Path>>(
        transcripts: &[P],
        options: ServeOptions,
    ) -> Result<FakeServer, ServeError> {
        let capture = Capture::load(transcripts).map_err(|e| ServeError::Input(e.to_string()))?;
        FakeServer::from_capture(capture, options).await
    }

    pub async fn from_capture(
        capture: Capture,
        options: ServeOptions,
    ) -> Result<FakeServer, ServeError> {
        FakeServer::from_scripts(capture.scripts, options).await
    }

    pub async fn from_scripts(
        scripts: Vec<Script>,
        options: ServeOptions,
    ) -> Result<FakeServer, ServeError> {
        if scripts.is_empty() {
            return Err(ServeError::Input("no recording to serve".into()));
        }
        if options.tls.is_none() && needs_tls(&scripts, &options) {
            return Err(ServeError::Input(
                "the capture uses TLS towards the client: a TLS configuration is needed".into(),
            ));
        }
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(ServeError::Listen)?;
        let addr = listener.local_addr().map_err(ServeError::Listen)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(listener, scripts, options, stop.clone()));
        Ok(FakeServer { addr, stop, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancelling it stops the server as [`FakeServer::finish`] does.
    pub fn stop_handle(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the capture has been served (`rounds` times), or `finish` is called: then
    /// stops accepting and reports.
    pub async fn wait(self) -> ServeReport {
        self.task.await.unwrap_or_default()
    }

    /// Stops accepting, lets open sessions end, and reports.
    pub async fn finish(self) -> ServeReport {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Whether serving `scripts` needs a TLS configuration.
pub fn needs_tls(scripts: &[Script], options: &ServeOptions) -> bool {
    options.client_tls.is_some_and(|m| m != TlsMode::None)
        || scripts.iter().any(|s| {
            // A client that asked for STARTTLS asks again, even where the recorded handshake
            // then failed (the client did not trust the certificate yet).
            s.client_tls != TlsMode::None
                || s.commands().any(|u| u.name.as_deref() == Some("STARTTLS"))
        })
}

/// The name for the certificate of a client that sends no SNI (one that connects by address):
/// the name the recorded client accepted, else the address served on, else `localhost`.
pub fn certificate_name(scripts: &[Script], listen: SocketAddr) -> String {
    scripts
        .iter()
        .find_map(|s| s.client_certificate_name.clone())
        .unwrap_or_else(|| match listen.ip() {
            ip if ip.is_unspecified() => "localhost".to_string(),
            ip => ip.to_string(),
        })
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
}

async fn run(
    listener: TcpListener,
    scripts: Vec<Script>,
    options: ServeOptions,
    stop: CancellationToken,
) -> ServeReport {
    // Implicit TLS when the capture's client spoke TLS from its first byte.
    let implicit = options.client_tls.map_or_else(
        || scripts.iter().any(|s| s.client_tls == TlsMode::Tls),
        |m| m == TlsMode::Tls,
    );
    let pool = Arc::new(std::sync::Mutex::new(Pool::new(scripts)));
    let names: Vec<String> = pool
        .lock()
        .map(|p| (0..p.len()).map(|i| p.script(i).name.clone()).collect())
        .unwrap_or_default();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let connections = stop.child_token();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut report = ServeReport::default();
    let tally = |ended: Ended, report: &mut ServeReport| match ended {
        Ended::Probe => report.probes += 1,
        Ended::Played => {}
        Ended::Round(outcomes) => {
            report.sessions.extend(outcomes);
            report.rounds += 1;
        }
    };
    // Set while no connection is open and the round is not over: when the client is not
    // coming back for the rest.
    let mut lingering: Option<tokio::time::Instant> = None;
    loop {
        let linger = async {
            match lingering {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(ended) = ended_rx.recv() => {
                tally(ended, &mut report);
                let idle = pool.lock().is_ok_and(|p| p.open() == 0 && p.touched());
                if options.rounds != 0 && report.rounds >= options.rounds {
                    break;
                }
                lingering = idle.then(|| tokio::time::Instant::now() + options.linger);
            }
            _ = linger => {
                lingering = None;
                let outcomes = pool.lock().ok().and_then(|mut p| {
                    (p.open() == 0).then(|| p.cut_short()).flatten()
                });
                if let Some(outcomes) = outcomes {
                    tally(Ended::Round(outcomes), &mut report);
                    if options.rounds != 0 && report.rounds >= options.rounds {
                        break;
                    }
                }
            }
            accepted = listener.accept() => {
                lingering = None;
                let Ok((tcp, _)) = accepted else { continue };
                let (pool, options, stop, ended_tx) =
                    (pool.clone(), options.clone(), connections.clone(), ended_tx.clone());
                tasks.spawn(async move {
                    let ended = serve_connection(tcp, &pool, implicit, &options, stop).await;
                    let _ = ended_tx.send(ended);
                });
            }
        }
    }
    drop(listener);
    connections.cancel();
    tasks.close();
    tasks.wait().await;
    drop(ended_tx);
    while let Some(ended) = ended_rx.recv().await {
        tally(ended, &mut report);
    }
    // A round cut short by a stop: what it played, and what it did not.
    if let Ok(mut p) = pool.lock() {
        match p.cut_short() {
            Some(outcomes) => report.sessions.extend(outcomes),
            None if report.rounds == 0 => report.unserved = names,
            None => {}
        }
    }
    report
}

/// How a connection ended, for the accept loop's count.
enum Ended {
    /// It sent no command: it used nothing.
    Probe,
    /// It played exchanges; the round goes on.
    Played,
    /// It was the last of a round: the round's report.
    Round(Vec<SessionOutcome>),
}

/// Serves one connection: TLS if the capture started with it, the greeting, then each chunk
/// the client sends.
async fn serve_connection(
    tcp: TcpStream,
    pool: &std::sync::Mutex<Pool>,
    implicit: bool,
    options: &ServeOptions,
    stop: CancellationToken,
) -> Ended {
    let _ = tcp.set_nodelay(true);
    let mut stream = Some(Stream::Plain(tcp));
    if implicit {
        match accept(stream.take(), options).await {
            Ok(s) => stream = Some(s),
            Err(e) => {
                // A probe, or a client that does not trust the CA: nothing consumed.
                eprintln!("imapscope serve: {e}");
                return Ended::Probe;
            }
        }
    }
    let mut session = ServeSession::new(options.mode, options.speed)
        .with_login(options.login.clone())
        .with_recorded_latency(options.recorded_latency);
    let mut told = 0;
    let body = async {
        let greeting = session.greeting(&*pool.lock().map_err(|_| "the pool is unusable")?);
        write(&mut stream, &greeting).await?;
        let mut buf = BytesMut::new();
        loop {
            if session.finished(&*pool.lock().map_err(|_| "the pool is unusable")?) {
                if let Some(s) = stream.as_mut() {
                    let _ = s.shutdown().await;
                }
                return Ok(());
            }
            buf.reserve(64 * 1024);
            let s = stream.as_mut().ok_or("no connection")?;
            let n = tokio::select! {
                r = s.read_buf(&mut buf) => match r {
                    Ok(n) => n,
                    // Mail clients often close TLS without close_notify: an end, not a failure.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                    Err(e) => return Err(format!("reading from the client failed: {e}")),
                },
                _ = stop.cancelled() => return Ok(()),
            };
            if n == 0 {
                let outputs = {
                    let mut p = pool.lock().map_err(|_| "the pool is unusable")?;
                    session.on_client_closed(&mut p)
                };
                // What the recorded server said after such a command: the client may still
                // read after closing its side.
                for output in outputs {
                    if let Output::Bytes { bytes, .. } = output {
                        let _ = write(&mut stream, &bytes).await;
                    }
                }
                return Ok(());
            }
            let chunk = buf.split();
            let outputs = {
                let mut p = pool.lock().map_err(|_| "the pool is unusable")?;
                session.on_client(&chunk, &mut p)
            };
            // Said as it happens, so the client's own log and this line can be read together.
            for m in &session.mismatches()[told..] {
                eprintln!("imapscope serve: unexpected command {m}");
            }
            told = session.mismatches().len();
            // Lines due at once go out in one write, as a server sends `* 6 EXISTS` and
            // `* 6 RECENT` together: a client may read them otherwise when they come apart.
            let mut due = Vec::new();
            for output in outputs {
                match output {
                    Output::Bytes { bytes, delay } => {
                        if !delay.is_zero() || due.len() + bytes.len() > WRITE_AT_ONCE {
                            write(&mut stream, &std::mem::take(&mut due)).await?;
                            tokio::time::sleep(delay).await;
                        }
                        due.extend_from_slice(&bytes);
                    }
                    Output::StartTls => {
                        write(&mut stream, &std::mem::take(&mut due)).await?;
                        stream = Some(accept(stream.take(), options).await?);
                    }
                }
            }
            write(&mut stream, &due).await?;
        }
    };
    // A stop ends the session wherever it waits (a recorded IDLE delay, a write).
    let error = tokio::select! {
        r = body => r.err(),
        _ = stop.cancelled() => None,
    };
    if session.commands() == 0 {
        // It used nothing, however it went: a port probe that connects and closes at once
        // may leave the greeting unread, and its close then arrives as a reset.
        if let Some(e) = &error {
            eprintln!("imapscope serve: a connection ended before its first command: {e}");
        }
        return Ended::Probe;
    }
    let Ok(mut p) = pool.lock() else {
        return Ended::Played;
    };
    let mut outcome = session.finish(&mut p);
    outcome.error = outcome.error.or(error);
    match p.connection_ended(outcome) {
        Some(round) => Ended::Round(round),
        None => Ended::Played,
    }
}

/// The most bytes gathered into one write (a large literal goes out as it comes).
const WRITE_AT_ONCE: usize = 256 * 1024;

async fn write(stream: &mut Option<Stream>, bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = stream.as_mut().ok_or("no connection")?;
    // Flushed: over TLS, rustls may still hold records the socket had no room for, and the
    // end of the answer would wait for the next write.
    let written = match stream.write_all(bytes).await {
        Ok(()) => stream.flush().await,
        Err(e) => Err(e),
    };
    written.map_err(|e| format!("writing to the client failed: {e}"))
}

async fn accept(stream: Option<Stream>, options: &ServeOptions) -> Result<Stream, String> {
    let Some(Stream::Plain(tcp)) = stream else {
        return Err("TLS requested on a connection that is not plain TCP".into());
    };
    let config = options.tls.clone().ok_or("no TLS configuration")?;
    tokio_rustls::TlsAcceptor::from(config)
        .accept(crate::relay::read_ahead::ReadAhead::new(tcp))
        .await
        .map(|s| Stream::TlsToClient(Box::new(s)))
        .map_err(|e| crate::tls::diagnose::client_failure(&e))
}
