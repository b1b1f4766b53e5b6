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

use std::sync::Arc;

use super::compress::Inflater;
use super::framer::{Fragment, Framer};
use super::message::{Head, Status, Word, parse_command, parse_response_head};
use super::redact;
use super::{Kind, Side};

/// How many bytes of one message are held before it is handed out in parts.
pub const MESSAGE_HOLD_LIMIT: usize = 256 * 1024;

/// How much of a message a heads-only tracker keeps.
pub const HEAD_LIMIT: usize = 4 * 1024;

/// How many commands in flight are followed. Clients pipeline tens at most; a peer that sends
/// millions without answers must not grow the tracker without bound.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How long a command summary for the live log may be.
const SUMMARY_LEN: usize = 80;

/// Something the tracker learned.
// Most events are messages, so boxing them would save nothing.
#[allow(clippy::large_enum_variant)]
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
    /// COMPRESS=DEFLATE took effect: from here on both directions are inflated before framing.
    Compress { t_us: u64 },
    /// Something worth saying that belongs to no single message's bytes.
    Note {
        seq: Option<u64>,
        from: Side,
        t_us: u64,
        text: String,
    },
}

/// One IMAP message with what the tracker knows about it.
///
/// What every message has is inline; what completions, commands, greetings and odd messages
/// add is in a boxed [`Detail`], absent for plain untagged data. A mailbox's worth of
/// `* n FETCH` responses then moves events half the size, which keeps a 64 KiB read's
/// events in cache.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub seq: u64,
    pub t_us: u64,
    pub from: Side,
    pub kind: Kind,
    pub partial: bool,
    pub status: Option<Status>,
    pub tag: Option<Word>,
    pub name: Option<Word>,
    /// The exact bytes, or the first of them if `partial`.
    pub bytes: Vec<u8>,
    /// For completions, continuation requests and IDLE's DONE: the command's seq.
    pub reply_to: Option<u64>,
    /// For untagged responses: the commands in flight when it arrived. Shared: every
    /// response of a long FETCH carries the same list without copying it.
    pub in_flight: Arc<[u64]>,
    /// Everything else, when there is any: see [`Message::detail`].
    pub more: Option<Box<Detail>>,
}

/// The less common facts about a message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detail {
    /// First atom of the response code.
    pub code: Option<Word>,
    /// For completions: microseconds since the command's first byte.
    pub latency_us: Option<u64>,
    /// For completions: the command name and a short, redacted summary of the command.
    pub command: Option<Word>,
    pub summary: Option<String>,
    /// The mailbox selected once this completion took effect (SELECT/EXAMINE).
    pub mailbox: Option<String>,
    /// The user named by LOGIN or AUTHENTICATE.
    pub user: Option<String>,
    /// Capabilities announced by this message (CAPABILITY response or code).
    pub capabilities: Option<Vec<String>>,
    /// Anything odd: parse errors, bare LF, unknown tags. Shown, never fatal.
    pub notes: Vec<String>,
}

static NO_DETAIL: Detail = Detail {
    code: None,
    latency_us: None,
    command: None,
    summary: None,
    mailbox: None,
    user: None,
    capabilities: None,
    notes: Vec::new(),
};

impl Message {
    /// The message's [`Detail`] (all empty when it has none).
    pub fn detail(&self) -> &Detail {
        self.more.as_deref().unwrap_or(&NO_DETAIL)
    }

    /// The message's [`Detail`], created on first use.
    pub fn detail_mut(&mut self) -> &mut Detail {
        self.more.get_or_insert_default()
    }

    /// Takes the [`Detail`] out (all empty when it has none).
    pub fn take_detail(&mut self) -> Detail {
        self.more.take().map(|d| *d).unwrap_or_default()
    }

    fn note(&mut self, text: impl Into<String>) {
        self.detail_mut().notes.push(text.into());
    }
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
    tag: Word,
    name: Word,
    summary: String,
    start_us: u64,
    /// The mailbox argument of SELECT/EXAMINE.
    mailbox: Option<String>,
    /// The SASL mechanism of AUTHENTICATE, until its first response (the only one that may
    /// name the user) has been read.
    mechanism: Option<String>,
    /// The server answered this command with a continuation request.
    continued: bool,
    /// The command may be answered with `+`: IDLE, AUTHENTICATE, or it announced a
    /// synchronizing literal.
    may_continue: bool,
}

/// A message being assembled from fragments.
#[derive(Debug)]
struct Assembly {
    seq: u64,
    t_us: u64,
    /// When the latest bytes arrived (the time of a part).
    t_last: u64,
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
    /// After COMPRESS: what was sent is inflated before framing.
    inflater: Option<Inflater>,
}

/// How much of the inflated stream is framed at once: bounds memory whatever the ratio.
const INFLATE_STEP: usize = 16 * 1024;

/// After this many events, [`SessionTracker::on_bytes_bounded`] stops and leaves the rest of
/// its input for the next call: a peer that sends a million empty lines in 2 MB must not make a
/// million events at once (each weighs about a hundred times its two bytes).
pub const EVENTS_PER_CALL: usize = 4096;

/// After this many inflated bytes [`SessionTracker::on_bytes_bounded`] stops as well: a
/// DEFLATE stream may inflate a thousandfold.
const INFLATED_PER_CALL: usize = 1 << 20;

/// How far [`SessionTracker::on_bytes_bounded`] came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input taken.
    pub taken: usize,
    /// It stopped early: call again with the rest of the input (which may be empty, when a
    /// compressed stream still has inflated bytes to give) once `out` has been handed on.
    pub more: bool,
}

/// What one bounded call may still produce.
struct Budget {
    /// `out`'s length when the call began; `None`: no limit.
    events_before: Option<usize>,
    inflated: usize,
}

impl Budget {
    fn unlimited() -> Budget {
        Budget {
            events_before: None,
            inflated: 0,
        }
    }

    fn spent(&self, out: &[Event]) -> bool {
        self.events_before.is_some_and(|before| {
            out.len() - before >= EVENTS_PER_CALL || self.inflated >= INFLATED_PER_CALL
        })
    }
}

/// Tracks one session. See the module documentation.
#[derive(Debug)]
pub struct SessionTracker {
    client: Direction,
    server: Direction,
    next_seq: u64,
    in_flight: Vec<InFlight>,
    /// The seqs of `in_flight` handed to untagged responses; `None` when `in_flight` changed
    /// since, so a burst of pipelined commands costs no rebuilding.
    in_flight_seqs: Option<Arc<[u64]>>,
    greeting_seen: bool,
    state: SessionState,
    capabilities: Vec<String>,
    user: Option<String>,
    /// Set when COMPRESS took effect, until the event saying so is handed out.
    compressed_at: Option<u64>,
    /// Keep message bytes beyond the head (off when nothing is recorded: `record --out none`).
    keep_bodies: bool,
    /// The seq of a client command the server answered before its synchronizing literal, set
    /// while the answer is read, acted on once it is handed out.
    refused_literal: Option<u64>,
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
                inflater: None,
            },
            server: Direction {
                framer: Framer::new(Side::Server),
                assembly: None,
                inflater: None,
            },
            next_seq: 1,
            in_flight: Vec::new(),
            in_flight_seqs: None,
            greeting_seen: false,
            state: SessionState::NotAuthenticated,
            capabilities: Vec::new(),
            user: None,
            compressed_at: None,
            keep_bodies: true,
            refused_literal: None,
        }
    }

    /// A tracker that hands out each message's head (up to [`HEAD_LIMIT`]) and forgets the
    /// rest: for following a session without recording it, at a fraction of the cost.
    pub fn heads_only() -> SessionTracker {
        SessionTracker {
            keep_bodies: false,
            ..SessionTracker::new()
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
            .map(|c| (c.seq, c.tag.to_string(), c.name.to_string()))
            .collect()
    }

    /// Feeds bytes that `from` sent at `t_us`; appends what was learned to `out`, however
    /// much that is (see [`SessionTracker::on_bytes_bounded`] for a bounded amount).
    pub fn on_bytes(&mut self, from: Side, t_us: u64, mut input: &[u8], out: &mut Vec<Event>) {
        loop {
            let progress = self.on_bytes_bounded(from, t_us, input, out);
            if !progress.more {
                return;
            }
            input = &input[progress.taken..];
        }
    }

    /// As [`SessionTracker::on_bytes`], but stops after about [`EVENTS_PER_CALL`] events (or
    /// a megabyte inflated), so that whoever hands the events on holds a bounded number.
    pub fn on_bytes_bounded(
        &mut self,
        from: Side,
        t_us: u64,
        input: &[u8],
        out: &mut Vec<Event>,
    ) -> Progress {
        let mut rest = input;
        let mut budget = Budget {
            events_before: Some(out.len()),
            inflated: 0,
        };
        let more = if self.direction(from).inflater.is_some() {
            self.on_compressed(from, t_us, &mut rest, out, &mut budget)
        } else {
            self.frame(from, t_us, &mut rest, false, out, &mut budget)
        };
        Progress {
            taken: input.len() - rest.len(),
            more,
        }
    }

    /// Inflates `input` step by step and frames what comes out; returns whether it stopped
    /// with inflated bytes still to give (the budget was spent).
    fn on_compressed(
        &mut self,
        from: Side,
        t_us: u64,
        input: &mut &[u8],
        out: &mut Vec<Event>,
        budget: &mut Budget,
    ) -> bool {
        let mut plain = Vec::with_capacity(INFLATE_STEP);
        loop {
            plain.clear();
            let Some(inflater) = self.direction(from).inflater.as_mut() else {
                return false;
            };
            match inflater.inflate_step(input, &mut plain) {
                Ok(full) => {
                    budget.inflated += plain.len();
                    // A step is framed whole (it is small: INFLATE_STEP bytes at most); the
                    // budget is looked at between steps.
                    self.frame(
                        from,
                        t_us,
                        &mut &plain[..],
                        true,
                        out,
                        &mut Budget::unlimited(),
                    );
                    if input.is_empty() && !full {
                        return false;
                    }
                    if budget.spent(out) {
                        return true;
                    }
                }
                Err(e) => {
                    // Relayed on untouched; only the decoding stops.
                    let dir = self.direction(from);
                    dir.inflater = None;
                    dir.framer.set_opaque();
                    out.push(Event::Note {
                        seq: None,
                        from,
                        t_us,
                        text: format!(
                            "the {} stream stopped inflating ({e}); what follows is counted, not decoded",
                            from.as_str()
                        ),
                    });
                    if !input.is_empty() {
                        out.push(Event::Opaque {
                            from,
                            t_us,
                            len: input.len(),
                        });
                        *input = &[];
                    }
                    return false;
                }
            }
        }
    }

    /// Frames `input`, advancing it; returns whether it stopped early (the budget spent)
    /// with more to do.
    fn frame(
        &mut self,
        from: Side,
        t_us: u64,
        input: &mut &[u8],
        inflated: bool,
        out: &mut Vec<Event>,
        budget: &mut Budget,
    ) -> bool {
        loop {
            if !inflated && self.direction(from).inflater.is_some() {
                // COMPRESS took effect inside this chunk: the rest of it is compressed.
                return self.on_compressed(from, t_us, input, out, budget);
            }
            if budget.spent(out) {
                return !input.is_empty();
            }
            let dir = self.direction(from);
            let Some(fragment) = dir.framer.next(input) else {
                return false;
            };
            match fragment {
                Fragment::Opaque(bytes) => out.push(Event::Opaque {
                    from,
                    t_us,
                    len: bytes.len(),
                }),
                Fragment::Line { bytes, end } => {
                    self.append(from, t_us, bytes, 0, out);
                    if let Some(end) = end {
                        if end.bare_lf
                            && let Some(a) = self.direction(from).assembly.as_mut()
                        {
                            a.bare_lf = true;
                        }
                        if end.message_end {
                            if from == Side::Server {
                                self.hand_out_answered_command(out);
                            }
                            self.finish_message(from, out);
                        } else if from == Side::Client && end.literal.is_some_and(|l| !l.non_sync) {
                            // The client now waits for `+`: hand the head out first.
                            self.hand_out(from, false, out);
                        }
                    }
                }
                Fragment::Literal { bytes, .. } => {
                    let more = self.direction(from).framer.literal_remaining();
                    self.append(from, t_us, bytes, more, out)
                }
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

    /// Adds `bytes` to the message being assembled. `more`: how many bytes of it are known to
    /// follow (the rest of a literal), so that the buffer is sized once rather than grown by
    /// doubling, which copied a large literal's bytes almost twice more on their way to the
    /// transcript.
    fn append(&mut self, from: Side, t_us: u64, mut bytes: &[u8], more: u64, out: &mut Vec<Event>) {
        while !bytes.is_empty() {
            if self.direction(from).assembly.is_none() {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.direction(from).assembly = Some(Assembly {
                    seq,
                    t_us,
                    t_last: t_us,
                    buf: Vec::new(),
                    head_sent: false,
                    bare_lf: false,
                });
            }
            let keep_bodies = self.keep_bodies;
            let limit = if keep_bodies {
                MESSAGE_HOLD_LIMIT
            } else {
                HEAD_LIMIT
            };
            let Some(a) = self.direction(from).assembly.as_mut() else {
                return;
            };
            a.t_last = t_us;
            if a.head_sent && !keep_bodies {
                return;
            }
            let room = limit - a.buf.len();
            let take = room.min(bytes.len());
            // What this message will still bring, as far as it is known: the rest of the
            // literal, and room for the line after it (`)` and CRLF, or a few more items);
            // never more than is held at once.
            let expected = usize::try_from(more)
                .unwrap_or(usize::MAX)
                .saturating_add(take + 64)
                .min(room);
            if a.buf.is_empty() {
                // Most messages are one line that arrives whole: one exact allocation.
                if more == 0 {
                    a.buf = bytes[..take].to_vec();
                } else {
                    a.buf = Vec::with_capacity(expected);
                    a.buf.extend_from_slice(&bytes[..take]);
                }
            } else {
                if a.buf.capacity() - a.buf.len() < take {
                    a.buf.reserve(expected.max(take));
                }
                a.buf.extend_from_slice(&bytes[..take]);
            }
            bytes = &bytes[take..];
            if a.buf.len() >= limit {
                self.hand_out(from, false, out);
            }
        }
    }

    /// Hands out the held bytes of the current message: as its head, or as a part.
    fn hand_out(&mut self, from: Side, last: bool, out: &mut Vec<Event>) {
        let keep_bodies = self.keep_bodies;
        let Some(a) = self.direction(from).assembly.as_mut() else {
            return;
        };
        let bytes = std::mem::take(&mut a.buf);
        if a.head_sent {
            if !keep_bodies {
                return;
            }
            out.push(Event::Part {
                seq: a.seq,
                from,
                t_us: a.t_last,
                bytes,
                last,
            });
            return;
        }
        a.head_sent = true;
        let (seq, t_us, bare_lf) = (a.seq, a.t_us, a.bare_lf);
        // Filled in where it lies: a message is large, and a mailbox's worth of FETCH
        // responses would otherwise be copied a few times each on the way out.
        out.push(Event::Message(Message {
            seq,
            t_us,
            from,
            partial: !last,
            ..Message::default()
        }));
        if let Some(Event::Message(m)) = out.last_mut() {
            self.understand(m, bytes, bare_lf);
        }
        if let Some(seq) = self.refused_literal.take()
            && self.client.framer.literal_refused()
        {
            // RFC 9051 7.5: the client sends no data and goes on with its next command.
            self.finish_message(Side::Client, out);
            out.push(Event::Note {
                seq: Some(seq),
                from: Side::Client,
                t_us,
                text: "the server answered before the literal was sent: no literal data follows"
                    .into(),
            });
        }
        if let Some(t_us) = self.compressed_at.take() {
            out.push(Event::Compress { t_us });
        }
    }

    /// A server line is about to be handed out. If it is tagged with the tag of a client
    /// command whose head has not been handed out yet (a LITERAL+ command answered while its
    /// data is still arriving, or a line refused before its end), the command goes out first:
    /// a command is in flight from its first byte.
    fn hand_out_answered_command(&mut self, out: &mut Vec<Event>) {
        let Some(client) = self.client.assembly.as_ref() else {
            return;
        };
        let Some(server) = self.server.assembly.as_ref() else {
            return;
        };
        if client.head_sent || client.buf.is_empty() {
            return;
        }
        let Some(space) = memchr::memchr(b' ', &client.buf) else {
            return;
        };
        let tag = &client.buf[..space];
        let answers = !tag.is_empty()
            && tag != b"*"
            && tag != b"+"
            && server.buf.len() > space
            && server.buf[..space] == *tag
            && server.buf[space] == b' ';
        if answers {
            self.hand_out(Side::Client, false, out);
        }
    }

    fn finish_message(&mut self, from: Side, out: &mut Vec<Event>) {
        self.hand_out(from, true, out);
        self.direction(from).assembly = None;
    }

    /// Reads a message's head in the light of the session so far.
    fn understand(&mut self, m: &mut Message, bytes: Vec<u8>, bare_lf: bool) {
        if bare_lf {
            m.note("line ended with a bare LF instead of CRLF");
        }
        match m.from {
            Side::Client => self.understand_client(m, &bytes),
            Side::Server => self.understand_server(m, &bytes),
        }
        m.bytes = bytes;
    }

    fn understand_client(&mut self, m: &mut Message, bytes: &[u8]) {
        // Inside AUTHENTICATE, after the server's `+` (or the command without an initial
        // response), the client's next line is SASL data.
        if let Some(auth) = self
            .in_flight
            .iter_mut()
            .rev()
            .find(|c| c.name == "AUTHENTICATE" && c.continued)
        {
            m.kind = Kind::SaslData;
            m.reply_to = Some(auth.seq);
            // Only the first response names the user (LOGIN's second is the password, which
            // must not be taken for a name when the first did not decode).
            if let (None, Some(mech)) = (&self.user, auth.mechanism.take())
                && let Some(user) = redact::sasl_user(&mech, bytes)
            {
                m.detail_mut().user = Some(user.clone());
                self.user = Some(user);
            }
            // Each line of SASL data is answered separately.
            auth.continued = false;
            return;
        }
        // `DONE` ends the IDLE in flight, whether or not the server's `+` came first (a client
        // may send both in one write; a command always has a tag and a name).
        if let Some(idle) = self.in_flight.iter().rev().find(|c| c.name == "IDLE")
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
            m.note(format!("unparsed from byte {}: {}", e.offset, e.reason));
        }
        m.tag = head.tag.clone();
        m.name = head.name.clone();
        let Some(name) = head.name.clone() else {
            m.note("command without a name");
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
            may_continue: matches!(&*name, "IDLE" | "AUTHENTICATE")
                || has_sync_literal(head.args()),
        };
        match &*name {
            "LOGIN" => {
                m.detail_mut().user = redact::login_user(&head, bytes);
                self.user = m.detail().user.clone().or(self.user.take());
            }
            "AUTHENTICATE" => {
                let (mech, ir) = redact::authenticate_args(&head, bytes);
                if let (Some(mech), Some(ir)) = (&mech, &ir)
                    && let Some(user) = redact::sasl_user(mech, ir)
                {
                    m.detail_mut().user = Some(user.clone());
                    self.user = Some(user);
                }
                // Without an initial response the server reads the client's next line as
                // the first SASL response, whether or not its `+` came first: a client that
                // sends both in one write (Dovecot accepts it) must not have its
                // credentials read as a command.
                command.continued = ir.is_none();
                // With an initial response, that was the first response; `=` (an empty one)
                // names nobody, and the credentials follow the server's `+`.
                let named_nobody = ir.as_deref().is_none_or(|ir| ir == b"=");
                command.mechanism = if named_nobody { mech } else { None };
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
            m.note(format!(
                "tag {} is already in use by a command in flight",
                command.tag
            ));
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let oldest = self.in_flight.remove(0);
            m.note(format!(
                "more than {MAX_IN_FLIGHT} commands in flight: the oldest, {} {} (seq {}), is no longer followed",
                oldest.tag, oldest.name, oldest.seq
            ));
        }
        self.in_flight.push(command);
        self.in_flight_seqs = None;
    }

    fn understand_server(&mut self, m: &mut Message, bytes: &[u8]) {
        let head = parse_response_head(bytes);
        if let Some(e) = &head.error
            && !m.partial
        {
            m.note(format!("unparsed from byte {}: {}", e.offset, e.reason));
        }
        self.note_capabilities(m, &head, bytes);
        let (untagged, continuation) = (head.is_untagged(), head.is_continuation());
        let mut head = head;
        m.tag = head.tag.take();
        m.name = head.name.take();
        m.status = head.status;
        if let Some(code) = head.code.take() {
            // Only then: untagged data carries no Detail at all.
            m.detail_mut().code = Some(code);
        }
        let first = !self.greeting_seen;
        self.greeting_seen = true;
        if continuation {
            m.kind = Kind::ContinuationRequest;
            m.name = None;
            // The client may now send the literal it announced.
            self.client.framer.literal_accepted();
            // It answers the newest command that can be answered so; a client that sent its
            // literal before the `+` may have sent another command after it.
            let newest = self.in_flight.len().checked_sub(1);
            let answered = self
                .in_flight
                .iter()
                .rposition(|c| c.may_continue)
                .or(newest);
            if let Some(c) = answered.and_then(|i| self.in_flight.get_mut(i)) {
                c.continued = true;
                m.reply_to = Some(c.seq);
            } else {
                m.note("continuation request with no command in flight");
            }
            return;
        }
        if untagged {
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
            m.in_flight = self
                .in_flight_seqs
                .get_or_insert_with(|| self.in_flight.iter().map(|c| c.seq).collect())
                .clone();
            return;
        }
        let Some(status) = head.status else {
            m.kind = Kind::Unknown;
            m.note("not a continuation, untagged response or tagged status");
            return;
        };
        m.kind = Kind::Completion;
        let tag = m.tag.as_deref().unwrap_or_default();
        let Some(pos) = self.in_flight.iter().position(|c| c.tag == tag) else {
            m.note(format!(
                "completion for tag {tag}, which no command in flight has"
            ));
            return;
        };
        let command = self.in_flight.remove(pos);
        self.in_flight_seqs = None;
        if self.client.framer.awaits_continuation()
            && self.client.assembly.as_ref().map(|a| a.seq) == Some(command.seq)
        {
            self.refused_literal = Some(command.seq);
        }
        m.reply_to = Some(command.seq);
        m.detail_mut().latency_us = Some(m.t_us.saturating_sub(command.start_us));
        m.detail_mut().summary = Some(command.summary.clone());
        let ok = status == Status::Ok;
        match &*command.name {
            "LOGIN" | "AUTHENTICATE" if ok => self.state = SessionState::Authenticated,
            "SELECT" | "EXAMINE" => {
                if ok {
                    let mailbox = command.mailbox.clone().unwrap_or_default();
                    m.detail_mut().mailbox = Some(mailbox.clone());
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
            "COMPRESS" if ok => {
                self.client.inflater = Some(Inflater::new());
                self.server.inflater = Some(Inflater::new());
                self.compressed_at = Some(m.t_us);
            }
            _ => {}
        }
        m.detail_mut().command = Some(command.name);
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
            m.detail_mut().capabilities = Some(words);
        }
    }
}

impl SessionTracker {
    /// The relay terminated TLS on its legs: what follows is IMAP text again, at a message
    /// boundary (after STARTTLS's OK, or from the first byte with implicit TLS).
    pub fn tls_established(&mut self) {
        if self.client.framer.is_opaque() {
            self.client.framer.reset();
            self.server.framer.reset();
        }
    }

    /// The client command being read, when its head has not been handed out and its data is
    /// arriving as a literal that did not wait for `+` (LITERAL+): its bytes so far. A server
    /// may answer such a command before its data ends (Dovecot refuses an APPEND to a missing
    /// mailbox at once); a fake server that plays such a recording asks for the head here.
    pub fn unsent_command(&self) -> Option<&[u8]> {
        let a = self.client.assembly.as_ref()?;
        (!a.head_sent && self.client.framer.in_literal()).then_some(&a.buf[..])
    }

    /// Hands out the head of the command [`SessionTracker::unsent_command`] shows: the rest of
    /// it follows as parts.
    pub fn hand_out_command(&mut self, out: &mut Vec<Event>) {
        if self.unsent_command().is_some() {
            self.hand_out(Side::Client, false, out);
        }
    }

    /// For each side (client, server): compressed bytes read and inflated bytes produced since
    /// COMPRESS took effect, or `None` without COMPRESS.
    pub fn compression(&self) -> Option<[(u64, u64); 2]> {
        let c = self.client.inflater.as_ref().map(Inflater::totals);
        let s = self.server.inflater.as_ref().map(Inflater::totals);
        (c.is_some() || s.is_some()).then(|| [c.unwrap_or_default(), s.unwrap_or_default()])
    }

    /// True once a successful STARTTLS made the stream opaque.
    pub fn is_opaque(&self) -> bool {
        self.client.framer.is_opaque()
    }

    /// Whether the server may still be sending: a command awaits its completion, or the
    /// server is in the middle of a message (a literal, a line). False once everything asked
    /// was answered in full: a relay need not hurry its acknowledgement then, since no held
    /// segment of the server's waits for it. An opaque stream could be anything: true.
    pub fn server_may_send_more(&self) -> bool {
        !self.in_flight.is_empty()
            || !self.server.framer.at_message_start()
            || self.server.framer.is_opaque()
            || self.server.inflater.is_some()
    }
}

fn text(bytes: &[u8], t: &super::token::Token) -> String {
    String::from_utf8_lossy(&bytes[t.span.clone()]).into_owned()
}

/// Whether a command's arguments announce a synchronizing literal (`{5}`, not `{5+}`), at
/// any depth (CATENATE's are inside a list).
fn has_sync_literal(tokens: &[super::token::Token]) -> bool {
    use super::token::TokenKind;
    tokens.iter().any(|t| match &t.kind {
        TokenKind::Literal { non_sync, .. } => !non_sync,
        TokenKind::List(items) | TokenKind::Code(items) => has_sync_literal(items),
        _ => false,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed exchange as (side, bytes) in the order they crossed the wire.
    fn seed() -> Vec<(Side, Vec<u8>)> {
        let raw = include_bytes!("../../tests/fixtures/seed/dovecot-telnet.exchange");
        let mut out = Vec::new();
        let mut rest = &raw[..];
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            let header = std::str::from_utf8(&rest[..nl]).unwrap();
            rest = &rest[nl + 1..];
            if header.starts_with('#') {
                continue;
            }
            let (side, len) = header.split_once(' ').unwrap();
            let len: usize = len.parse().unwrap();
            let side = if side == "C" {
                Side::Client
            } else {
                Side::Server
            };
            out.push((side, rest[..len].to_vec()));
            rest = &rest[len..];
        }
        out
    }

    fn run(chunks: &[(Side, Vec<u8>)], piece: usize) -> Vec<Event> {
        let mut tracker = SessionTracker::new();
        let mut events = Vec::new();
        for (i, (side, bytes)) in chunks.iter().enumerate() {
            for (j, p) in bytes.chunks(piece).enumerate() {
                tracker.on_bytes(*side, (i * 1000 + j) as u64, p, &mut events);
            }
        }
        tracker.finish(99_999, &mut events);
        events
    }

    #[test]
    fn the_server_may_send_more_until_every_command_is_answered_in_full() {
        let mut tracker = SessionTracker::new();
        let mut events = Vec::new();
        let mut feed = |tracker: &mut SessionTracker, side, bytes: &[u8]| {
            tracker.on_bytes(side, 1, bytes, &mut events);
            tracker.server_may_send_more()
        };
        assert!(!feed(&mut tracker, Side::Server, b"* OK ready\r\n"));
        assert!(feed(&mut tracker, Side::Client, b"a1 NOOP\r\n"));
        assert!(!feed(&mut tracker, Side::Server, b"a1 OK done\r\n"));
        assert!(feed(&mut tracker, Side::Client, b"a2 FETCH 1 BODY[]\r\n"));
        // Mid-literal, mid-line, and after the literal but before the completion.
        assert!(feed(
            &mut tracker,
            Side::Server,
            b"* 1 FETCH (BODY[] {10}\r\n0123"
        ));
        assert!(feed(&mut tracker, Side::Server, b"456789)\r\na2 OK"));
        assert!(feed(&mut tracker, Side::Server, b" done\r\n* 2 EXI"));
        assert!(!feed(&mut tracker, Side::Server, b"STS\r\n"));
    }

    fn messages(events: &[Event]) -> Vec<&Message> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn seed_session_is_understood() {
        let events = run(&seed(), usize::MAX);
        let ms = messages(&events);
        assert_eq!(ms[0].kind, Kind::Greeting);
        assert!(
            ms[0]
                .detail()
                .capabilities
                .as_ref()
                .unwrap()
                .contains(&"STARTTLS".to_string())
        );
        let login = ms[1];
        assert_eq!(
            (login.kind, login.tag.as_deref(), login.name.as_deref()),
            (Kind::Command, Some("A"), Some("LOGIN"))
        );
        assert_eq!(login.detail().user.as_deref(), Some("nell"));
        let ok = ms[2];
        assert_eq!(ok.kind, Kind::Completion);
        assert_eq!(ok.reply_to, Some(login.seq));
        assert_eq!(
            ok.detail().summary.as_deref(),
            Some("login nell <redacted>")
        );
        assert_eq!(ok.detail().latency_us, Some(1000));
        let select_done = ms
            .iter()
            .find(|m| m.tag.as_deref() == Some("B") && m.kind == Kind::Completion)
            .unwrap();
        assert_eq!(select_done.detail().mailbox.as_deref(), Some("inbox"));
        assert_eq!(select_done.detail().code.as_deref(), Some("READ-WRITE"));
        let exists = ms
            .iter()
            .find(|m| m.name.as_deref() == Some("EXISTS"))
            .unwrap();
        assert_eq!(exists.kind, Kind::Untagged);
        assert_eq!(*exists.in_flight, vec![select_done.reply_to.unwrap()]);
        // The 230-byte literal stays inside its FETCH.
        let body = ms
            .iter()
            .find(|m| m.name.as_deref() == Some("FETCH") && m.bytes.len() > 500)
            .unwrap();
        assert!(body.bytes.ends_with(b")\r\n") && body.detail().notes.is_empty());
        let bad = ms.iter().find(|m| m.status == Some(Status::Bad)).unwrap();
        assert_eq!(bad.kind, Kind::Completion);
        assert_eq!(bad.detail().command.as_deref(), Some("INBOX"));
        let last = ms.last().unwrap();
        assert_eq!(
            (last.tag.as_deref(), last.detail().command.as_deref()),
            (Some("F"), Some("LOGOUT"))
        );
        // Every command got its completion.
        let commands = ms.iter().filter(|m| m.kind == Kind::Command).count();
        let completions = ms.iter().filter(|m| m.kind == Kind::Completion).count();
        assert_eq!(commands, completions);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_messages() {
        let whole = run(&seed(), usize::MAX);
        let bytewise = run(&seed(), 1);
        let strip = |e: &[Event]| -> Vec<(u64, Kind, Vec<u8>, Option<u64>)> {
            messages(e)
                .iter()
                .map(|m| (m.seq, m.kind, m.bytes.clone(), m.reply_to))
                .collect()
        };
        assert_eq!(strip(&whole), strip(&bytewise));
    }

    fn feed(tracker: &mut SessionTracker, side: Side, t: u64, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        tracker.on_bytes(side, t, bytes, &mut events);
        events
    }

    #[test]
    fn pipelined_commands_pair_by_tag() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* PREAUTH ready\r\n");
        assert_eq!(t.state(), &SessionState::Authenticated);
        feed(
            &mut t,
            Side::Client,
            10,
            b"a1 NOOP\r\na2 SELECT \"Sent Items\"\r\na3 NOOP\r\n",
        );
        let events = feed(
            &mut t,
            Side::Server,
            50,
            b"* 3 EXISTS\r\na2 OK [READ-WRITE] done\r\na3 OK\r\na1 OK\r\n",
        );
        let ms = messages(&events);
        assert_eq!(*ms[0].in_flight, vec![2, 3, 4]);
        assert_eq!(
            ms[1..]
                .iter()
                .map(|m| (m.reply_to, m.detail().latency_us))
                .collect::<Vec<_>>(),
            vec![
                (Some(3), Some(40)),
                (Some(4), Some(40)),
                (Some(2), Some(40))
            ]
        );
        assert_eq!(t.state(), &SessionState::Selected("Sent Items".into()));
        let events = feed(&mut t, Side::Server, 60, b"zz OK what\r\n");
        assert!(messages(&events)[0].detail().notes[0].contains("no command in flight"));
    }

    #[test]
    fn authenticate_exchange_is_sasl_data() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"a AUTHENTICATE LOGIN\r\n");
        let cont = feed(&mut t, Side::Server, 2, b"+ VXNlcm5hbWU6\r\n");
        assert_eq!(messages(&cont)[0].kind, Kind::ContinuationRequest);
        let user = feed(&mut t, Side::Client, 3, b"bmVsbA==\r\n");
        assert_eq!(messages(&user)[0].kind, Kind::SaslData);
        assert_eq!(t.user(), Some("nell"));
        feed(&mut t, Side::Server, 4, b"+ UGFzc3dvcmQ6\r\n");
        let pass = feed(&mut t, Side::Client, 5, b"c2VjcmV0\r\n");
        assert_eq!(messages(&pass)[0].kind, Kind::SaslData);
        let done = feed(&mut t, Side::Server, 6, b"a OK logged in\r\n");
        assert_eq!(messages(&done)[0].reply_to, Some(2));
        assert_eq!(t.state(), &SessionState::Authenticated);
        // Lines after the exchange are commands again.
        let next = feed(&mut t, Side::Client, 7, b"b NOOP\r\n");
        assert_eq!(messages(&next)[0].kind, Kind::Command);
    }

    #[test]
    fn a_sasl_response_sent_with_its_command_is_sasl_data() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        // Before the server's `+`, in the same write as the command.
        let sent = feed(
            &mut t,
            Side::Client,
            1,
            b"a AUTHENTICATE PLAIN\r\nAG5lbGwAc2VjcmV0\r\n",
        );
        let sent = messages(&sent);
        assert_eq!(sent[1].kind, Kind::SaslData);
        assert_eq!(sent[1].reply_to, Some(sent[0].seq));
        assert_eq!(t.user(), Some("nell"));
        let cont = feed(&mut t, Side::Server, 2, b"+ \r\n");
        assert_eq!(messages(&cont)[0].reply_to, Some(sent[0].seq));
        let done = feed(&mut t, Side::Server, 3, b"a OK logged in\r\n");
        assert_eq!(messages(&done)[0].reply_to, Some(sent[0].seq));
        // With an initial response the exchange needs no more lines: the next one is a
        // command, pipelined or not.
        let ir = feed(
            &mut t,
            Side::Client,
            4,
            b"b AUTHENTICATE PLAIN AG5lbGwAc2VjcmV0\r\nc NOOP\r\n",
        );
        assert_eq!(messages(&ir)[1].kind, Kind::Command);
        assert_eq!(messages(&ir)[1].name.as_deref(), Some("NOOP"));
    }

    #[test]
    fn idle_and_done() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"i IDLE\r\n");
        feed(&mut t, Side::Server, 2, b"+ idling\r\n");
        let push = feed(&mut t, Side::Server, 3, b"* 4 EXISTS\r\n");
        assert_eq!(*messages(&push)[0].in_flight, vec![2]);
        let done = feed(&mut t, Side::Client, 4, b"DONE\r\n");
        let m = messages(&done)[0];
        assert_eq!((m.kind, m.reply_to), (Kind::IdleDone, Some(2)));
        let end = feed(&mut t, Side::Server, 5, b"i OK Idle completed.\r\n");
        assert_eq!(messages(&end)[0].detail().latency_us, Some(4));
    }

    /// LOGIN's first response names the user; when it does not decode, the second (the
    /// password) is not taken for the name.
    #[test]
    fn only_the_first_sasl_response_may_name_the_user() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"a AUTHENTICATE LOGIN\r\n");
        feed(&mut t, Side::Server, 2, b"+ VXNlcm5hbWU6\r\n");
        feed(&mut t, Side::Client, 3, b"bmVsbA\r\n");
        feed(&mut t, Side::Server, 4, b"+ UGFzc3dvcmQ6\r\n");
        let pass = feed(&mut t, Side::Client, 5, b"QVNlY3JldFBhc3N3b3Jk\r\n");
        assert_eq!(messages(&pass)[0].kind, Kind::SaslData);
        assert_eq!(messages(&pass)[0].detail().user, None);
        assert_eq!(t.user(), None);
        // With an initial response, that was the first response.
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"a AUTHENTICATE LOGIN bmVsbA\r\n");
        feed(&mut t, Side::Server, 2, b"+ UGFzc3dvcmQ6\r\n");
        feed(&mut t, Side::Client, 3, b"QVNlY3JldFBhc3N3b3Jk\r\n");
        assert_eq!(t.user(), None);
        // An empty initial response (`=`) names nobody: the response after the `+` does.
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"a AUTHENTICATE PLAIN =\r\n");
        feed(&mut t, Side::Server, 2, b"+ \r\n");
        feed(&mut t, Side::Client, 3, b"AG5lbGwAc2VjcmV0\r\n");
        assert_eq!(t.user(), Some("nell"));
    }

    /// A client may send DONE, or a literal, without waiting for the server's `+`; Dovecot
    /// takes both. DONE still ends the IDLE, and the `+` answers the command that can be
    /// answered so, not the newest one.
    #[test]
    fn what_a_client_sends_before_the_servers_plus_is_paired_right() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        let sent = feed(&mut t, Side::Client, 1, b"c IDLE\r\nDONE\r\n");
        let sent = messages(&sent);
        assert_eq!(
            (sent[1].kind, sent[1].reply_to),
            (Kind::IdleDone, Some(sent[0].seq))
        );
        feed(
            &mut t,
            Side::Server,
            2,
            b"+ idling\r\nc OK Idle completed.\r\n",
        );
        let sent = feed(
            &mut t,
            Side::Client,
            3,
            b"d APPEND INBOX {5}\r\nhello\r\ne NOOP\r\n",
        );
        let sent = messages(&sent);
        let (append, noop) = (sent[0].seq, sent[1].seq);
        assert_eq!(sent[1].name.as_deref(), Some("NOOP"));
        let cont = feed(&mut t, Side::Server, 4, b"+ OK\r\n");
        assert_eq!(messages(&cont)[0].reply_to, Some(append));
        let done = feed(&mut t, Side::Server, 5, b"d OK done\r\ne OK done\r\n");
        let done = messages(&done);
        assert_eq!(done[0].reply_to, Some(append));
        assert_eq!(done[1].reply_to, Some(noop));
    }

    #[test]
    fn synchronizing_literal_hands_out_the_head_first() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        let head = feed(&mut t, Side::Client, 1, b"a APPEND INBOX {5}\r\n");
        let m = messages(&head)[0];
        assert!(m.partial);
        assert_eq!(m.name.as_deref(), Some("APPEND"));
        let cont = feed(&mut t, Side::Server, 2, b"+ OK\r\n");
        assert_eq!(messages(&cont)[0].reply_to, Some(m.seq));
        let rest = feed(&mut t, Side::Client, 3, b"Hello\r\n");
        assert_eq!(
            rest,
            vec![Event::Part {
                seq: m.seq,
                from: Side::Client,
                t_us: 3,
                bytes: b"Hello\r\n".to_vec(),
                last: true
            }]
        );
    }

    #[test]
    fn a_literal_arriving_in_pieces_is_held_in_one_buffer_sized_once() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"f FETCH 1 BODY[]\r\n");
        let head = b"* 1 FETCH (BODY[] {100000}\r\n";
        let mut events = Vec::new();
        t.on_bytes(Side::Server, 2, head, &mut events);
        for _ in 0..100 {
            t.on_bytes(Side::Server, 3, &[b'x'; 1000], &mut events);
        }
        let tail = b" FLAGS (\\Seen))\r\n";
        t.on_bytes(Side::Server, 4, tail, &mut events);
        let m = messages(&events)[0];
        assert!(!m.partial);
        let whole = head.len() + 100_000 + tail.len();
        assert_eq!(m.bytes.len(), whole);
        // Grown as the pieces came, it would hold 128 KiB, reached through eight
        // reallocations; sized once, it holds the message and the slack.
        assert!(m.bytes.capacity() <= whole + 64, "{}", m.bytes.capacity());
    }

    #[test]
    fn large_literal_is_handed_out_in_bounded_parts() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"f FETCH 1 BODY[]\r\n");
        let size = 3 * MESSAGE_HOLD_LIMIT + 17;
        let mut events = Vec::new();
        t.on_bytes(
            Side::Server,
            2,
            format!("* 1 FETCH (BODY[] {{{size}}}\r\n").as_bytes(),
            &mut events,
        );
        let chunk = vec![b'x'; 8192];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            t.on_bytes(Side::Server, 3, &chunk[..n], &mut events);
            sent += n;
        }
        t.on_bytes(Side::Server, 4, b")\r\nf OK done\r\n", &mut events);
        let mut total = 0;
        for e in &events {
            match e {
                Event::Message(m) if m.name.as_deref() == Some("FETCH") => {
                    assert!(m.partial && m.bytes.len() <= MESSAGE_HOLD_LIMIT);
                    total += m.bytes.len();
                }
                Event::Part { bytes, .. } => {
                    assert!(bytes.len() <= MESSAGE_HOLD_LIMIT);
                    total += bytes.len();
                }
                _ => {}
            }
        }
        assert_eq!(
            total,
            size + format!("* 1 FETCH (BODY[] {{{size}}}\r\n").len() + 3
        );
        let done = messages(&events).into_iter().last().unwrap();
        assert_eq!(done.detail().command.as_deref(), Some("FETCH"));
    }

    #[test]
    fn starttls_makes_the_stream_opaque() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"s STARTTLS\r\n");
        let events = feed(&mut t, Side::Server, 2, b"s OK Begin TLS\r\n");
        assert_eq!(
            messages(&events)[0].detail().command.as_deref(),
            Some("STARTTLS")
        );
        assert!(t.is_opaque());
        let hello = feed(&mut t, Side::Client, 3, b"\x16\x03\x01\x02\x00\x01");
        assert_eq!(
            hello,
            vec![Event::Opaque {
                from: Side::Client,
                t_us: 3,
                len: 6
            }]
        );
    }

    #[test]
    fn cut_message_is_kept_and_noted() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"f FETCH 1 BODY[]\r\n");
        feed(&mut t, Side::Server, 2, b"* 1 FETCH (BODY[] {100}\r\nabc");
        let mut events = Vec::new();
        t.finish(3, &mut events);
        let m = messages(&events)[0];
        assert!(m.partial);
        assert!(m.bytes.ends_with(b"abc"));
        assert!(
            matches!(&events[1], Event::Note { text, .. } if text.contains("before this message was complete"))
        );
        assert_eq!(t.unanswered().len(), 1);
    }

    #[test]
    fn compress_inflates_both_directions_and_counts() {
        use crate::protocol::compress::Deflater;
        let mut t = SessionTracker::new();
        let (mut to_server, mut to_client) = (Deflater::new(), Deflater::new());
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"z COMPRESS DEFLATE\r\n");
        // The OK and the first compressed bytes in one read.
        let mut chunk = b"z OK DEFLATE active\r\n".to_vec();
        chunk.extend(to_client.deflate(b"* 1 EXISTS\r\n"));
        let events = feed(&mut t, Side::Server, 2, &chunk);
        assert!(
            matches!(events[1], Event::Compress { t_us: 2 }),
            "{events:?}"
        );
        assert_eq!(messages(&events)[1].name.as_deref(), Some("EXISTS"));
        let wire = to_server.deflate(b"n NOOP\r\n");
        let events = feed(&mut t, Side::Client, 3, &wire[..3]);
        assert!(events.is_empty());
        let events = feed(&mut t, Side::Client, 4, &wire[3..]);
        assert_eq!(messages(&events)[0].bytes, b"n NOOP\r\n");
        let [c, s] = t.compression().unwrap();
        assert_eq!(c, (wire.len() as u64, 8));
        assert_eq!(s.1, 12);
        // A stream that does not inflate is noted and then only counted.
        let events = feed(&mut t, Side::Client, 5, b"\xff\xff\xff\xff garbage");
        assert!(
            matches!(&events[0], Event::Note { text, .. } if text.contains("stopped inflating"))
        );
        let events = feed(&mut t, Side::Client, 6, b"more");
        assert!(matches!(events[0], Event::Opaque { len: 4, .. }));
    }

    /// Feeds `input` in bounded calls; returns the most events one call made and all of them.
    fn feed_bounded(t: &mut SessionTracker, side: Side, mut input: &[u8]) -> (usize, Vec<Event>) {
        let (mut most, mut all) = (0, Vec::new());
        loop {
            let mut out = Vec::new();
            let p = t.on_bytes_bounded(side, 1, input, &mut out);
            most = most.max(out.len());
            all.extend(out);
            input = &input[p.taken..];
            if !p.more {
                assert!(input.is_empty());
                return (most, all);
            }
        }
    }

    #[test]
    fn a_flood_of_empty_lines_comes_out_a_bounded_number_at_a_time() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        let flood = b"\r\n".repeat(100_000);
        let (most, all) = feed_bounded(&mut t, Side::Client, &flood);
        assert_eq!(messages(&all).len(), 100_000);
        assert!(most <= EVENTS_PER_CALL + 2, "{most}");
        // Through COMPRESS, where 2 MB of them are a few kilobytes on the wire.
        use crate::protocol::compress::Deflater;
        let mut to_client = Deflater::new();
        feed(&mut t, Side::Client, 1, b"z COMPRESS DEFLATE\r\n");
        let mut chunk = b"z OK DEFLATE active\r\n".to_vec();
        chunk.extend(to_client.deflate(&b"\r\n".repeat(1_000_000)));
        chunk.extend(to_client.deflate(b"* 1 EXISTS\r\n"));
        assert!(chunk.len() < 64 * 1024, "{}", chunk.len());
        let (most, all) = feed_bounded(&mut t, Side::Server, &chunk);
        assert_eq!(messages(&all).len(), 1_000_002);
        assert_eq!(
            messages(&all).last().unwrap().name.as_deref(),
            Some("EXISTS")
        );
        // A step of inflated bytes is framed whole: bounded by INFLATE_STEP too.
        assert!(most <= EVENTS_PER_CALL + INFLATE_STEP / 2, "{most}");
    }

    #[test]
    fn heads_only_keeps_heads_and_pairs_alike() {
        let mut t = SessionTracker::heads_only();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        feed(&mut t, Side::Client, 1, b"f FETCH 1 BODY[]\r\n");
        let mut events = Vec::new();
        t.on_bytes(
            Side::Server,
            2,
            b"* 1 FETCH (BODY[] {100000}\r\n",
            &mut events,
        );
        for _ in 0..100 {
            t.on_bytes(Side::Server, 3, &[b'x'; 1000], &mut events);
        }
        t.on_bytes(Side::Server, 4, b")\r\nf OK done\r\n", &mut events);
        assert!(events.iter().all(|e| !matches!(e, Event::Part { .. })));
        let ms = messages(&events);
        assert_eq!(ms[0].bytes.len(), HEAD_LIMIT);
        assert_eq!((ms[1].kind, ms[1].reply_to), (Kind::Completion, Some(2)));
    }

    #[test]
    fn commands_in_flight_are_bounded() {
        let mut t = SessionTracker::new();
        feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        // A client that pipelines far more than any real one, to a server that never answers.
        let pipelined: Vec<u8> = (0..MAX_IN_FLIGHT + 5)
            .flat_map(|i| format!("t{i} NOOP\r\n").into_bytes())
            .collect();
        let events = feed(&mut t, Side::Client, 1, &pipelined);
        assert_eq!(t.unanswered().len(), MAX_IN_FLIGHT);
        let dropped: Vec<_> = messages(&events)
            .iter()
            .flat_map(|m| &m.detail().notes)
            .filter(|n| n.contains("no longer followed"))
            .collect();
        assert_eq!(dropped.len(), 5);
        assert!(
            dropped[0].contains("the oldest, t0 NOOP (seq 2)"),
            "{dropped:?}"
        );
        // The newest are still paired; an untagged response lists them all.
        let events = feed(&mut t, Side::Server, 2, b"* 3 EXISTS\r\nt1028 OK done\r\n");
        let ms = messages(&events);
        assert_eq!(ms[0].in_flight.len(), MAX_IN_FLIGHT);
        assert_eq!(ms[1].kind, Kind::Completion);
        assert_eq!(t.unanswered().len(), MAX_IN_FLIGHT - 1);
        // A completion for a command no longer followed is noted, not paired.
        let events = feed(&mut t, Side::Server, 3, b"t0 OK late\r\n");
        assert!(messages(&events)[0].detail().notes[0].contains("which no command in flight has"));
    }

    /// Each completion as (the seq of the command it answers, its status), and every note.
    fn pairs(events: &[Event]) -> (Vec<(u64, Option<Status>)>, Vec<String>) {
        let ms = messages(events);
        let pairs = ms
            .iter()
            .filter(|m| m.kind == Kind::Completion)
            .map(|m| (m.reply_to.unwrap_or(0), m.status))
            .collect();
        let mut notes: Vec<String> = ms.iter().flat_map(|m| m.detail().notes.clone()).collect();
        notes.extend(events.iter().filter_map(|e| match e {
            Event::Note { text, .. } => Some(text.clone()),
            _ => None,
        }));
        (pairs, notes)
    }

    #[test]
    fn a_synchronizing_literal_refused_is_never_read() {
        for (announce, status) in [
            ("{21}", "NO [TRYCREATE] Mailbox doesn't exist: nosuchbox"),
            ("~{21}", "NO [TRYCREATE] no such mailbox"),
            ("{21}", "BAD Invalid arguments"),
            ("{0}", "NO refused"),
        ] {
            let mut t = SessionTracker::new();
            let mut events = feed(&mut t, Side::Server, 0, b"* PREAUTH hi\r\n");
            let append = format!("a2 APPEND nosuchbox {announce}\r\n");
            events.extend(feed(&mut t, Side::Client, 1, append.as_bytes()));
            events.extend(feed(
                &mut t,
                Side::Server,
                2,
                format!("a2 {status}\r\n").as_bytes(),
            ));
            events.extend(feed(&mut t, Side::Client, 3, b"a3 NOOP\r\na4 LOGOUT\r\n"));
            events.extend(feed(
                &mut t,
                Side::Server,
                4,
                b"a3 OK NOOP completed.\r\n* BYE\r\na4 OK bye\r\n",
            ));
            t.finish(5, &mut events);
            let ms = messages(&events);
            let commands: Vec<_> = ms
                .iter()
                .filter(|m| m.kind == Kind::Command)
                .map(|m| (m.seq, m.name.clone().unwrap_or_default().to_string()))
                .collect();
            assert_eq!(
                commands,
                vec![
                    (2, "APPEND".into()),
                    (4, "NOOP".into()),
                    (5, "LOGOUT".into())
                ],
                "{announce} {status}"
            );
            let (pairs, notes) = pairs(&events);
            assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 4, 5]);
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains("answered before the literal")),
                "{notes:?}"
            );
            assert!(
                !notes.iter().any(|n| n.contains("no command in flight")),
                "{notes:?}"
            );
            // The APPEND's message ends with its line: an empty last part, no data.
            let parts: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Part {
                        seq, bytes, last, ..
                    } => Some((*seq, bytes.len(), *last)),
                    _ => None,
                })
                .collect();
            assert_eq!(parts, vec![(2, 0, true)]);
            assert!(t.unanswered().is_empty());
        }
    }

    #[test]
    fn a_synchronizing_literal_accepted_is_data_whatever_it_says() {
        let mut t = SessionTracker::new();
        let mut events = feed(&mut t, Side::Server, 0, b"* PREAUTH hi\r\n");
        events.extend(feed(&mut t, Side::Client, 1, b"a2 APPEND INBOX {9}\r\n"));
        events.extend(feed(&mut t, Side::Server, 2, b"+ OK\r\n"));
        events.extend(feed(&mut t, Side::Client, 3, b"a3 NOOP\r\n\r\n"));
        events.extend(feed(&mut t, Side::Server, 4, b"a2 OK appended\r\n"));
        let (pairs, notes) = pairs(&events);
        assert_eq!(pairs, vec![(2, Some(Status::Ok))]);
        assert!(notes.is_empty(), "{notes:?}");
        // A second literal of the same command (MULTIAPPEND), refused.
        events.extend(feed(&mut t, Side::Client, 5, b"a5 APPEND INBOX {1}\r\n"));
        events.extend(feed(&mut t, Side::Server, 6, b"+ go\r\n"));
        events.extend(feed(&mut t, Side::Client, 7, b"x {2}\r\n"));
        events.extend(feed(&mut t, Side::Server, 8, b"a5 NO [LIMIT] too many\r\n"));
        events.extend(feed(&mut t, Side::Client, 9, b"a6 NOOP\r\n"));
        let ms = messages(&events);
        assert_eq!(ms.last().unwrap().name.as_deref(), Some("NOOP"));
        assert_eq!(t.unanswered().len(), 1);
    }

    #[test]
    fn a_non_synchronizing_literal_answered_midway_is_in_flight_from_its_first_byte() {
        for (announce, status) in [("{93+}", "NO [TRYCREATE]"), ("~{93+}", "BAD no")] {
            let mut t = SessionTracker::new();
            let mut events = feed(&mut t, Side::Server, 0, b"* PREAUTH hi\r\n");
            let line = format!("1.12 APPEND imaptestnonexistent {announce}\r\n");
            events.extend(feed(&mut t, Side::Client, 1, line.as_bytes()));
            events.extend(feed(&mut t, Side::Client, 2, &[b'x'; 40]));
            events.extend(feed(
                &mut t,
                Side::Server,
                3,
                format!("1.12 {status} Mailbox doesn't exist\r\n").as_bytes(),
            ));
            events.extend(feed(&mut t, Side::Client, 4, &[b'y'; 53]));
            events.extend(feed(&mut t, Side::Client, 5, b"\r\n1.13 NOOP\r\n"));
            events.extend(feed(&mut t, Side::Server, 6, b"1.13 OK\r\n"));
            t.finish(7, &mut events);
            let ms = messages(&events);
            let append = ms.iter().find(|m| m.kind == Kind::Command).unwrap();
            assert!(append.partial && append.name.as_deref() == Some("APPEND"));
            let (pairs, notes) = pairs(&events);
            assert_eq!(pairs.len(), 2, "{announce}");
            assert_eq!(pairs[0].0, append.seq);
            assert!(notes.is_empty(), "{notes:?}");
            // The rest of the literal and the line's end stay in the APPEND.
            let rest: usize = events
                .iter()
                .filter_map(|e| match e {
                    Event::Part { seq, bytes, .. } if *seq == append.seq => Some(bytes.len()),
                    _ => None,
                })
                .sum();
            assert_eq!(append.bytes.len() + rest, line.len() + 93 + 2);
            assert!(t.unanswered().is_empty());
        }
    }

    #[test]
    fn login_with_the_password_as_a_literal_keeps_the_user() {
        let mut t = SessionTracker::new();
        let mut events = feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        events.extend(feed(&mut t, Side::Client, 1, b"e2 LOGIN \"alice\" {6}\r\n"));
        events.extend(feed(&mut t, Side::Server, 2, b"+ OK\r\n"));
        events.extend(feed(&mut t, Side::Client, 3, b"secret\r\n"));
        events.extend(feed(&mut t, Side::Server, 4, b"e2 OK logged in\r\n"));
        let ms = messages(&events);
        assert_eq!(ms[1].detail().user.as_deref(), Some("alice"));
        assert_eq!(t.user(), Some("alice"));
        assert_eq!(
            ms.last().unwrap().detail().summary.as_deref(),
            Some("LOGIN \"alice\" <redacted>")
        );
        // The user as a literal: nothing is known to be the user name until it is whole.
        let mut t = SessionTracker::new();
        let mut events = feed(&mut t, Side::Server, 0, b"* OK hi\r\n");
        events.extend(feed(&mut t, Side::Client, 1, b"e2 LOGIN {5}\r\n"));
        assert_eq!(messages(&events)[1].detail().user, None);
    }
}
