//! Follows one IMAP session from both directions' bytes and says what each message is.
//!
//! The tracker owns a [`Framer`] per direction, assembles fragments into messages, reads each
//! message's head and keeps the session's state: commands in flight by tag (so completions
//! are paired with their commands and timed), AUTHENTICATE and IDLE exchanges (so the lines
//! the client sends inside them are not taken for commands), STARTTLS (after which the stream
//! is opaque), the selected mailbox, the capabilities seen and the user.
//!
//! Sans-I/O: bytes and microsecond timestamps in, [`Event`]s out. Messages are held whole up
//! to [`MESSAGE_HOLD_LIMIT`]; beyond that (a large literal) they are handed out in parts, so
//! memory stays bounded. A client line that announces a synchronizing literal also hands its
//! head out at once, so the server's `+` that follows reads after the command it answers.

use super::framer::{Fragment, Framer};
use super::message::{Head, Status, parse_command, parse_response};
use super::redact;
use super::{Kind, Side};

/// How many bytes of one message are held before it is handed out in parts.
pub const MESSAGE_HOLD_LIMIT: usize = 256 * 1024;

/// How long a command summary for the live log may be.
const SUMMARY_LEN: usize = 80;

/// Something the tracker learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message, or the head of one handed out in parts (`partial`).
    Message(Message),
    /// More bytes of a message handed out as partial; `last` ends it.
    Part {
        seq: u64,
        from: Side,
        t_us: u64,
        bytes: Vec<u8>,
        last: bool,
    },
    /// Bytes that are no longer IMAP text (after STARTTLS), counted, not decoded.
    Opaque { from: Side, t_us: u64, len: usize },
    /// Something worth saying that belongs to no single message's bytes.
    Note {
        seq: Option<u64>,
        from: Side,
        t_us: u64,
        text: String,
    },
}

/// One IMAP message with what the tracker knows about it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub seq: u64,
    pub t_us: u64,
    pub from: Side,
    pub kind: Kind,
    pub tag: Option<String>,
    pub name: Option<String>,
    /// The exact bytes, or the first of them if `partial`.
    pub bytes: Vec<u8>,
    pub partial: bool,
    pub status: Option<Status>,
    /// First atom of the response code.
    pub code: Option<String>,
    /// For completions, continuation requests and IDLE's DONE: the command's seq.
    pub reply_to: Option<u64>,
    /// For completions: microseconds since the command's first byte.
    pub latency_us: Option<u64>,
    /// For completions: the command name and a short, redacted summary of the command.
    pub command: Option<String>,
    pub summary: Option<String>,
    /// For untagged responses: the commands in flight when it arrived.
    pub in_flight: Vec<u64>,
    /// The mailbox selected once this completion took effect (SELECT/EXAMINE).
    pub mailbox: Option<String>,
    /// The user named by LOGIN or AUTHENTICATE.
    pub user: Option<String>,
    /// Capabilities announced by this message (CAPABILITY response or code).
    pub capabilities: Option<Vec<String>>,
    /// Anything odd: parse errors, bare LF, unknown tags. Shown, never fatal.
    pub notes: Vec<String>,
}

/// Where the session is, in RFC 9051 terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SessionState {
    #[default]
    NotAuthenticated,
    Authenticated,
    Selected(String),
    Logout,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    tag: String,
    name: String,
    summary: String,
    start_us: u64,
    /// The mailbox argument of SELECT/EXAMINE.
    mailbox: Option<String>,
    /// The SASL mechanism of AUTHENTICATE.
    mechanism: Option<String>,
    /// The server answered this command with a continuation request.
    continued: bool,
}

/// A message being assembled from fragments.
#[derive(Debug)]
struct Assembly {
    seq: u64,
    t_us: u64,
    /// Bytes not yet handed out.
    buf: Vec<u8>,
    /// The head was handed out already; what follows goes out as parts.
    head_sent: bool,
    bare_lf: bool,
}

#[derive(Debug)]
struct Direction {
    framer: Framer,
    assembly: Option<Assembly>,
}

/// Tracks one session. See the module documentation.
#[derive(Debug)]
pub struct SessionTracker {
    client: Direction,
    server: Direction,
    next_seq: u64,
    in_flight: Vec<InFlight>,
    greeting_seen: bool,
    state: SessionState,
    capabilities: Vec<String>,
    user: Option<String>,
}

impl Default for SessionTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTracker {
    pub fn new() -> SessionTracker {
        SessionTracker {
            client: Direction {
                framer: Framer::new(Side::Client),
                assembly: None,
            },
            server: Direction {
                framer: Framer::new(Side::Server),
                assembly: None,
            },
            next_seq: 1,
            in_flight: Vec::new(),
            greeting_seen: false,
            state: SessionState::NotAuthenticated,
            capabilities: Vec::new(),
            user: None,
        }
    }

    pub fn state(&self) -> &SessionState {
        &self.state
    }

    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Commands still waiting for their completion, as (seq, tag, name).
    pub fn unanswered(&self) -> Vec<(u64, String, String)> {
        self.in_flight
            .iter()
            .map(|c| (c.seq, c.tag.clone(), c.name.clone()))
            .collect()
    }

    /// Feeds bytes that `from` sent at `t_us`; appends what was learned to `out`.
    pub fn on_bytes(&mut self, from: Side, t_us: u64, mut input: &[u8], out: &mut Vec<Event>) {
        loop {
            let dir = self.direction(from);
            let Some(fragment) = dir.framer.next(&mut input) else {
                return;
            };
            match fragment {
                Fragment::Opaque(bytes) => out.push(Event::Opaque {
                    from,
                    t_us,
                    len: bytes.len(),
                }),
                Fragment::Line { bytes, end } => {
                    self.append(from, t_us, bytes, out);
                    if let Some(end) = end {
                        if end.bare_lf
                            && let Some(a) = self.direction(from).assembly.as_mut()
                        {
                            a.bare_lf = true;
                        }
                        if end.message_end {
                            self.finish_message(from, out);
                        } else if from == Side::Client && end.literal.is_some_and(|l| !l.non_sync) {
                            // The client now waits for `+`: hand the head out first.
                            self.hand_out(from, false, out);
                        }
                    }
                }
                Fragment::Literal { bytes, .. } => self.append(from, t_us, bytes, out),
            }
        }
    }

    /// The connection ended: hands out whatever message was cut short, with a note.
    pub fn finish(&mut self, t_us: u64, out: &mut Vec<Event>) {
        for from in [Side::Client, Side::Server] {
            let Some(seq) = self.direction(from).assembly.as_ref().map(|a| a.seq) else {
                continue;
            };
            // Handed out as partial: the message never reached its end.
            self.hand_out(from, false, out);
            self.direction(from).assembly = None;
            out.push(Event::Note {
                seq: Some(seq),
                from,
                t_us,
                text: "connection closed before this message was complete".into(),
            });
        }
    }

    fn direction(&mut self, side: Side) -> &mut Direction {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    fn append(&mut self, from: Side, t_us: u64, mut bytes: &[u8], out: &mut Vec<Event>) {
        while !bytes.is_empty() {
            if self.direction(from).assembly.is_none() {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.direction(from).assembly = Some(Assembly {
                    seq,
                    t_us,
                    buf: Vec::new(),
                    head_sent: false,
                    bare_lf: false,
                });
            }
            let Some(a) = self.direction(from).assembly.as_mut() else {
                return;
            };
            let room = MESSAGE_HOLD_LIMIT - a.buf.len();
            let take = room.min(bytes.len());
            a.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if a.buf.len() >= MESSAGE_HOLD_LIMIT {
                self.hand_out(from, false, out);
            }
        }
    }

    /// Hands out the held bytes of the current message: as its head, or as a part.
    fn hand_out(&mut self, from: Side, last: bool, out: &mut Vec<Event>) {
        let Some(a) = self.direction(from).assembly.as_mut() else {
            return;
        };
        let bytes = std::mem::take(&mut a.buf);
        if a.head_sent {
            out.push(Event::Part {
                seq: a.seq,
                from,
                t_us: a.t_us,
                bytes,
                last,
            });
            return;
        }
        a.head_sent = true;
        let (seq, t_us, bare_lf) = (a.seq, a.t_us, a.bare_lf);
        let message = self.understand(from, seq, t_us, bytes, !last, bare_lf);
        out.push(Event::Message(message));
    }

    fn finish_message(&mut self, from: Side, out: &mut Vec<Event>) {
        self.hand_out(from, true, out);
        self.direction(from).assembly = None;
    }

    /// Reads a message's head in the light of the session so far.
    fn understand(
        &mut self,
        from: Side,
        seq: u64,
        t_us: u64,
        bytes: Vec<u8>,
        partial: bool,
        bare_lf: bool,
    ) -> Message {
        let mut m = Message {
            seq,
            t_us,
            from,
            partial,
            ..Message::default()
        };
        if bare_lf {
            m.notes
                .push("line ended with a bare LF instead of CRLF".into());
        }
        match from {
            Side::Client => self.understand_client(&mut m, &bytes),
            Side::Server => self.understand_server(&mut m, &bytes),
        }
        m.bytes = bytes;
        m
    }

    fn understand_client(&mut self, m: &mut Message, bytes: &[u8]) {
        // Inside AUTHENTICATE, after the server's `+`, client lines are SASL data.
        if let Some(auth) = self
            .in_flight
            .iter_mut()
            .rev()
            .find(|c| c.name == "AUTHENTICATE" && c.continued)
        {
            m.kind = Kind::SaslData;
            m.reply_to = Some(auth.seq);
            if let (None, Some(mech)) = (&self.user, &auth.mechanism)
                && let Some(user) = redact::sasl_user(mech, bytes)
            {
                m.user = Some(user.clone());
                self.user = Some(user);
            }
            // Each line of SASL data is answered separately.
            auth.continued = false;
            return;
        }
        if let Some(idle) = self
            .in_flight
            .iter()
            .rev()
            .find(|c| c.name == "IDLE" && c.continued)
            && trim_line_end(bytes).eq_ignore_ascii_case(b"DONE")
        {
            m.kind = Kind::IdleDone;
            m.name = Some("DONE".into());
            m.reply_to = Some(idle.seq);
            return;
        }
        m.kind = Kind::Command;
        let head = parse_command(bytes);
        if let Some(e) = &head.error
            && !m.partial
        {
            m.notes
                .push(format!("unparsed from byte {}: {}", e.offset, e.reason));
        }
        m.tag = head.tag.clone();
        m.name = head.name.clone();
        let Some(name) = head.name.clone() else {
            m.notes.push("command without a name".into());
            return;
        };
        let secrets = redact::secrets(Kind::Command, &head, bytes, !m.partial);
        let mut command = InFlight {
            seq: m.seq,
            tag: head.tag.clone().unwrap_or_default(),
            name: name.clone(),
            summary: summary(bytes, &head, &secrets),
            start_us: m.t_us,
            mailbox: None,
            mechanism: None,
            continued: false,
        };
        match name.as_str() {
            "LOGIN" if !m.partial => {
                m.user = redact::login_user(&head, bytes);
                self.user = m.user.clone().or(self.user.take());
            }
            "AUTHENTICATE" => {
                let (mech, ir) = redact::authenticate_args(&head, bytes);
                if let (Some(mech), Some(ir)) = (&mech, &ir)
                    && let Some(user) = redact::sasl_user(mech, ir)
                {
                    m.user = Some(user.clone());
                    self.user = Some(user);
                }
                command.mechanism = mech;
            }
            "SELECT" | "EXAMINE" => {
                command.mailbox = head
                    .args()
                    .first()
                    .and_then(|t| super::token::string_value(bytes, t))
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
            }
            _ => {}
        }
        if self.in_flight.iter().any(|c| c.tag == command.tag) {
            m.notes.push(format!(
                "tag {} is already in use by a command in flight",
                command.tag
            ));
        }
        self.in_flight.push(command);
    }

    fn understand_server(&mut self, m: &mut Message, bytes: &[u8]) {
        let head = parse_response(bytes);
        if let Some(e) = &head.error
            && !m.partial
        {
            m.notes
                .push(format!("unparsed from byte {}: {}", e.offset, e.reason));
        }
        m.tag = head.tag.clone();
        m.name = head.name.clone();
        m.status = head.status;
        m.code = head.code.clone();
        self.note_capabilities(m, &head, bytes);
        let first = !self.greeting_seen;
        self.greeting_seen = true;
        if head.is_continuation() {
            m.kind = Kind::ContinuationRequest;
            m.name = None;
            if let Some(c) = self.in_flight.last_mut() {
                c.continued = true;
                m.reply_to = Some(c.seq);
            } else {
                m.notes
                    .push("continuation request with no command in flight".into());
            }
            return;
        }
        if head.is_untagged() {
            m.kind = if first && head.status.is_some() {
                Kind::Greeting
            } else {
                Kind::Untagged
            };
            match head.status {
                Some(Status::Preauth) if first => self.state = SessionState::Authenticated,
                Some(Status::Bye) => self.state = SessionState::Logout,
                _ => {}
            }
            m.in_flight = self.in_flight.iter().map(|c| c.seq).collect();
            return;
        }
        let Some(status) = head.status else {
            m.kind = Kind::Unknown;
            m.notes
                .push("not a continuation, untagged response or tagged status".into());
            return;
        };
        m.kind = Kind::Completion;
        let tag = head.tag.clone().unwrap_or_default();
        let Some(pos) = self.in_flight.iter().position(|c| c.tag == tag) else {
            m.notes.push(format!(
                "completion for tag {tag}, which no command in flight has"
            ));
            return;
        };
        let command = self.in_flight.remove(pos);
        m.reply_to = Some(command.seq);
        m.latency_us = Some(m.t_us.saturating_sub(command.start_us));
        m.summary = Some(command.summary.clone());
        let ok = status == Status::Ok;
        match command.name.as_str() {
            "LOGIN" | "AUTHENTICATE" if ok => self.state = SessionState::Authenticated,
            "SELECT" | "EXAMINE" => {
                if ok {
                    let mailbox = command.mailbox.clone().unwrap_or_default();
                    m.mailbox = Some(mailbox.clone());
                    self.state = SessionState::Selected(mailbox);
                } else if matches!(self.state, SessionState::Selected(_)) {
                    // A failed SELECT leaves no mailbox selected (RFC 9051 6.3.2).
                    self.state = SessionState::Authenticated;
                }
            }
            "CLOSE" | "UNSELECT" if ok => self.state = SessionState::Authenticated,
            "LOGOUT" if ok => self.state = SessionState::Logout,
            "STARTTLS" if ok => {
                self.client.framer.set_opaque();
                self.server.framer.set_opaque();
            }
            _ => {}
        }
        m.command = Some(command.name);
    }

    fn note_capabilities(&mut self, m: &mut Message, head: &Head, bytes: &[u8]) {
        use super::token::TokenKind;
        let words: Option<Vec<String>> =
            if head.is_untagged() && head.name.as_deref() == Some("CAPABILITY") {
                Some(head.args().iter().map(|t| text(bytes, t)).collect())
            } else if head.code.as_deref() == Some("CAPABILITY") {
                head.tokens.iter().find_map(|t| match &t.kind {
                    TokenKind::Code(items) => {
                        Some(items.iter().skip(1).map(|t| text(bytes, t)).collect())
                    }
                    _ => None,
                })
            } else {
                None
            };
        if let Some(words) = words {
            self.capabilities = words.clone();
            m.capabilities = Some(words);
        }
    }
}

impl SessionTracker {
    /// True once a successful STARTTLS made the stream opaque.
    pub fn is_opaque(&self) -> bool {
        self.client.framer.is_opaque()
    }
}

fn text(bytes: &[u8], t: &super::token::Token) -> String {
    String::from_utf8_lossy(&bytes[t.span.clone()]).into_owned()
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// `SELECT INBOX`: the command's first line without its tag, secrets hidden, shortened.
fn summary(bytes: &[u8], head: &Head, secrets: &[redact::Secret]) -> String {
    let shown = redact::apply(bytes, secrets);
    let line_end = memchr::memchr(b'\n', &shown).unwrap_or(shown.len());
    let line = trim_line_end(&shown[..(line_end + 1).min(shown.len())]);
    let start = head
        .tokens
        .get(1)
        .map_or(0, |t| t.span.start)
        .min(line.len());
    let text = String::from_utf8_lossy(&line[start..]);
    let mut s: String = text.chars().take(SUMMARY_LEN).collect();
    if text.chars().count() > SUMMARY_LEN {
        s.push('…');
    }
    s
}
