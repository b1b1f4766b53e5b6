//! Finds the STARTTLS boundary in the plaintext phase, so the relay can stop at it exactly.
//!
//! When imapscope terminates TLS itself on both legs, the relay must not forward a byte past
//! the client's `STARTTLS` line or past the server's tagged `OK` to it: what a peer sends after
//! those lines and before the handshake is plaintext that a man in the middle could have
//! injected (CVE-2011-0411). The relay asks this watch, chunk by chunk, how much it may
//! forward. Sans-I/O: bytes in, verdicts out. Only a line's first KiB is kept, which holds its
//! tag and its command or status word (the text of a server's OK may be any length), so
//! memory stays bounded.

use super::Side;
use super::framer::{Fragment, Framer};
use super::message::{Status, parse_command, parse_response};

/// How much of a line is kept to check whether it is STARTTLS or its answer.
const MAX_LINE: usize = 1024;

/// What the relay may do with a chunk of client bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Forward all of it.
    Forward,
    /// Forward the first `end` bytes (they end with the STARTTLS line); whatever follows is
    /// injected plaintext, never to be relayed. Then wait for the server's answer.
    Starttls { end: usize, tag: String },
}

/// What the relay may do with a chunk of server bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Forward all of it.
    Forward,
    /// The server accepted STARTTLS: forward `..start`, hold `start..end` (the tagged OK) until
    /// the upstream handshake is done, and drop `end..` (injected plaintext).
    Accepted { start: usize, end: usize },
    /// The server refused STARTTLS (NO/BAD): forward everything; the session stays plain.
    Refused,
}

/// One direction: a framer plus the start of the current line.
#[derive(Debug)]
struct LineWatch {
    framer: Framer,
    line: Vec<u8>,
    /// The current line starts a message (it is not the tail after a literal).
    line_starts_message: bool,
    line_start: usize,
}

impl LineWatch {
    fn new(side: Side) -> LineWatch {
        LineWatch {
            framer: Framer::new(side),
            line: Vec::new(),
            line_starts_message: true,
            line_start: 0,
        }
    }

    /// Calls `on_line(line, start, end)` for each complete line that starts a message, with
    /// its offsets in `bytes` (`start` is 0 for a line that began in an earlier chunk); stops
    /// as soon as `on_line` returns `Some`.
    fn scan<T>(
        &mut self,
        bytes: &[u8],
        mut on_line: impl FnMut(&[u8], usize, usize) -> Option<T>,
    ) -> Option<T> {
        // A line begun in an earlier chunk starts, as far as this chunk goes, at 0.
        self.line_start = 0;
        let mut input = bytes;
        while let Some(fragment) = self.framer.next(&mut input) {
            let consumed = bytes.len() - input.len();
            match fragment {
                Fragment::Line { bytes: part, end } => {
                    if self.line.is_empty() {
                        self.line_start = consumed - part.len();
                    }
                    let room = MAX_LINE.saturating_sub(self.line.len());
                    self.line.extend_from_slice(&part[..room.min(part.len())]);
                    if let Some(end) = end {
                        let result = if self.line_starts_message {
                            on_line(&self.line, self.line_start, consumed)
                        } else {
                            None
                        };
                        self.line.clear();
                        self.line_starts_message = end.message_end;
                        if result.is_some() {
                            return result;
                        }
                    }
                }
                Fragment::Literal { .. } | Fragment::Opaque(_) => {}
            }
        }
        None
    }
}

/// Watches both directions of the plaintext phase. See the module documentation.
#[derive(Debug)]
pub struct StarttlsWatch {
    client: LineWatch,
    server: LineWatch,
    pending: Option<String>,
    /// The tag of the client's latest command, to know whether a server answer refuses the
    /// synchronizing literal the client's framer waits for.
    last_tag: Option<String>,
}

impl Default for StarttlsWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl StarttlsWatch {
    pub fn new() -> StarttlsWatch {
        StarttlsWatch {
            client: LineWatch::new(Side::Client),
            server: LineWatch::new(Side::Server),
            pending: None,
            last_tag: None,
        }
    }

    /// The tag of a STARTTLS awaiting its answer.
    pub fn pending(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    pub fn client(&mut self, bytes: &[u8]) -> ClientStep {
        let last_tag = &mut self.last_tag;
        let found = self.client.scan(bytes, |line, _, end| {
            let head = parse_command(line);
            *last_tag = head.tag.as_deref().map(str::to_owned);
            (head.name.as_deref() == Some("STARTTLS")).then(|| (end, head.tag.unwrap_or_default()))
        });
        match found {
            Some((end, tag)) => {
                self.pending = Some(tag.to_string());
                // What follows the STARTTLS line is not framed: it is dropped.
                self.client = LineWatch::new(Side::Client);
                ClientStep::Starttls {
                    end,
                    tag: tag.into_owned(),
                }
            }
            None => ClientStep::Forward,
        }
    }

    pub fn server(&mut self, bytes: &[u8]) -> ServerStep {
        let client = &mut self.client;
        let last_tag = self.last_tag.as_deref();
        // Keeps the client's framing in step: the server's `+` lets a synchronizing literal
        // follow; an answer instead means none follows (a refused APPEND, say).
        let mut follow = |line: &[u8]| {
            if !client.framer.awaits_continuation() {
                return;
            }
            if line.starts_with(b"+") {
                client.framer.literal_accepted();
            } else if last_tag.is_some_and(|t| {
                line.strip_prefix(t.as_bytes())
                    .is_some_and(|rest| rest.starts_with(b" "))
            }) {
                client.framer.literal_refused();
                client.line_starts_message = true;
            }
        };
        let Some(tag) = self.pending.clone() else {
            self.server.scan(bytes, |line, _, _| {
                follow(line);
                None::<()>
            });
            return ServerStep::Forward;
        };
        let answer = self.server.scan(bytes, |line, start, end| {
            follow(line);
            let head = parse_response(line);
            if head.tag.as_deref() == Some(tag.as_str()) {
                head.status.map(|s| (s == Status::Ok, start, end))
            } else {
                None
            }
        });
        match answer {
            Some((true, start, end)) => {
                self.pending = None;
                self.server = LineWatch::new(Side::Server);
                ServerStep::Accepted { start, end }
            }
            Some((false, ..)) => {
                self.pending = None;
                ServerStep::Refused
            }
            None => ServerStep::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_exactly_after_the_starttls_line() {
        let mut w = StarttlsWatch::new();
        assert_eq!(w.client(b"a1 CAPABILITY\r\n"), ClientStep::Forward);
        let chunk = b"a2 NOOP\r\na3 starttls\r\na4 LOGIN nell secret\r\n";
        assert_eq!(
            w.client(chunk),
            ClientStep::Starttls {
                end: 22,
                tag: "a3".into()
            }
        );
        assert_eq!(&chunk[..22], b"a2 NOOP\r\na3 starttls\r\n");
    }

    #[test]
    fn a_literal_saying_starttls_is_not_a_command() {
        let mut w = StarttlsWatch::new();
        assert_eq!(
            w.client(b"a APPEND INBOX {13}\r\nb STARTTLS\r\n\r\n"),
            ClientStep::Forward
        );
    }

    #[test]
    fn server_answer_split_across_reads_and_injection() {
        let mut w = StarttlsWatch::new();
        w.client(b"s STARTTLS\r\n");
        assert_eq!(w.server(b"* OK still here\r\ns O"), ServerStep::Forward);
        assert_eq!(
            w.server(b"K Begin TLS\r\n* OK injected\r\n"),
            ServerStep::Accepted { start: 0, end: 13 }
        );
        let mut w = StarttlsWatch::new();
        w.client(b"s STARTTLS\r\n");
        assert_eq!(
            w.server(b"* 1 EXISTS\r\ns OK go\r\n"),
            ServerStep::Accepted { start: 12, end: 21 }
        );
    }

    #[test]
    fn an_ok_of_any_length_is_the_answer() {
        let mut w = StarttlsWatch::new();
        w.client(b"s STARTTLS\r\n");
        let mut ok = b"s OK ".to_vec();
        ok.extend(std::iter::repeat_n(b'x', 5000));
        ok.extend_from_slice(b"\r\n");
        assert_eq!(w.server(&ok[..3000]), ServerStep::Forward);
        assert_eq!(
            w.server(&ok[3000..]),
            ServerStep::Accepted {
                start: 0,
                end: ok.len() - 3000
            }
        );
    }

    #[test]
    fn starttls_after_a_refused_literal_is_found() {
        let mut w = StarttlsWatch::new();
        assert_eq!(
            w.client(b"a2 APPEND nosuchbox {21}\r\n"),
            ClientStep::Forward
        );
        assert_eq!(
            w.server(b"a2 NO [TRYCREATE] Mailbox doesn't exist\r\n"),
            ServerStep::Forward
        );
        assert_eq!(
            w.client(b"a3 STARTTLS\r\n"),
            ClientStep::Starttls {
                end: 13,
                tag: "a3".into()
            }
        );
        // Accepted, the literal is data, whatever it says.
        let mut w = StarttlsWatch::new();
        w.client(b"a2 APPEND INBOX {13}\r\n");
        w.server(b"+ OK\r\n");
        assert_eq!(w.client(b"b STARTTLS\r\n\r\n"), ClientStep::Forward);
    }

    #[test]
    fn refusal_keeps_the_session_plain() {
        let mut w = StarttlsWatch::new();
        w.client(b"s STARTTLS\r\n");
        assert_eq!(w.server(b"s NO not now\r\n"), ServerStep::Refused);
        assert_eq!(w.pending(), None);
        assert_eq!(w.server(b"s OK late\r\n"), ServerStep::Forward);
    }
}
