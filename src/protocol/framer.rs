//! Splits one direction of an IMAP byte stream into line and literal fragments.
//!
//! Framing comes before any grammar, as in imap-codec's fragmentizer: a line ends at LF (CRLF
//! or a tolerated bare LF); a line that ends in `{n}`, `{n+}` or `~{n}` announces `n` bytes of
//! literal data, after which the message goes on with another line. Getting this right even
//! for malformed input keeps literal data from ever being read as a command.
//!
//! The framer is zero-copy and holds no message: it hands back sub-slices of the caller's
//! input, so memory stays bounded whatever the peer sends (a 100 MB literal or a line with
//! no end). The only state kept across calls is a 24-byte tail of the current line, enough to
//! recognise a literal announcement split across reads; the first 40 bytes of a server's
//! message, since a status response (`a1 NO quota {5}`) ends in text, never in a literal; and
//! on the client's side whether a synchronizing literal still waits for the server's `+` (a
//! server may refuse it instead: then no data follows, and whoever reads the server says so).

use memchr::memchr;

use super::Side;

/// How many trailing bytes of a line are kept to recognise `{n}` / `~{n+}` at its end.
/// 20 digits of length, the braces, `~` and `+` fit.
const TAIL_LEN: usize = 24;

/// Reads a server message's first bytes as far as needed to tell a status response (`tag OK
/// `, `* BYE `), whose text cannot announce a literal, from one that can. A tag may be of
/// any length (the grammar sets none), so what is kept is what is known of it, not its bytes:
/// how long it is, its first byte, and then the word after it.
#[derive(Debug, Clone, Copy)]
enum StatusScan {
    Tag {
        len: usize,
        first: u8,
    },
    /// The word after the tag; no status word is longer than `PREAUTH`.
    Word {
        untagged: bool,
        word: [u8; 7],
        len: u8,
    },
    Decided(bool),
}

impl StatusScan {
    const START: StatusScan = StatusScan::Tag { len: 0, first: 0 };

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            *self = match *self {
                StatusScan::Decided(_) => return,
                StatusScan::Tag { len: 0, .. } if b == b' ' => StatusScan::Decided(false),
                StatusScan::Tag {
                    len: 1,
                    first: b'+',
                } if b == b' ' => StatusScan::Decided(false),
                StatusScan::Tag { len, first } if b == b' ' => StatusScan::Word {
                    untagged: len == 1 && first == b'*',
                    word: [0; 7],
                    len: 0,
                },
                StatusScan::Tag { len: 0, .. } => StatusScan::Tag { len: 1, first: b },
                StatusScan::Tag { len, first } => StatusScan::Tag {
                    len: len.saturating_add(1),
                    first,
                },
                StatusScan::Word {
                    untagged,
                    word,
                    len,
                } if b == b' ' => {
                    let word = &word[..usize::from(len)];
                    let status = |w: &[u8]| word.eq_ignore_ascii_case(w);
                    StatusScan::Decided(
                        status(b"OK")
                            || status(b"NO")
                            || status(b"BAD")
                            || (untagged && (status(b"BYE") || status(b"PREAUTH"))),
                    )
                }
                StatusScan::Word { len: 7, .. } => StatusScan::Decided(false),
                StatusScan::Word {
                    untagged,
                    mut word,
                    len,
                } => {
                    word[usize::from(len)] = b;
                    StatusScan::Word {
                        untagged,
                        word,
                        len: len + 1,
                    }
                }
            };
        }
    }

    /// `tag OK|NO|BAD ` or `* OK|NO|BAD|BYE|PREAUTH `: a response whose text runs to the
    /// line's end.
    fn is_status(&self) -> bool {
        matches!(self, StatusScan::Decided(true))
    }
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralHeader {
    /// Number of data bytes that follow the line.
    pub len: u64,
    /// `{n+}` (LITERAL+ / LITERAL-): the sender does not wait for a continuation request.
    pub non_sync: bool,
    /// `~{n}` (RFC 3516 literal8): the data may contain NUL.
    pub binary: bool,
}

/// One piece of the stream, borrowed from the caller's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment<'a> {
    /// Bytes of a line. `end` is `Some` when these bytes finish the line (line ending
    /// included); a long line arrives as several fragments.
    Line {
        bytes: &'a [u8],
        end: Option<LineEnd>,
    },
    /// Bytes of literal data; `last` when the announced count is complete.
    Literal { bytes: &'a [u8], last: bool },
    /// Bytes after the stream stopped being IMAP text (after STARTTLS or COMPRESS).
    Opaque(&'a [u8]),
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEnd {
    /// The literal the line announces, if any.
    pub literal: Option<LiteralHeader>,
    /// The line ended with a bare LF rather than CRLF.
    pub bare_lf: bool,
    /// This line ends the message (no literal follows).
    pub message_end: bool,
}

#[derive(Debug, Clone)]
enum State {
    Line {
        /// Last bytes of the line so far, for the literal suffix check.
        tail: [u8; TAIL_LEN],
        tail_len: usize,
        /// Bytes of this line seen so far.
        line_len: u64,
        /// The line is the first of its message (decides whether `+` starts a continuation).
        first_of_message: bool,
        /// The line's first byte, once seen.
        first_byte: Option<u8>,
        /// What a server message's first bytes say (see [`StatusScan`]).
        head: StatusScan,
    },
    Literal {
        remaining: u64,
    },
    /// A client line announced a synchronizing literal: the data comes only after the server's
    /// `+`. If the server answers the command instead (NO, BAD), no data follows and the
    /// client's next line is a new command. Whoever reads the server tells the framer which
    /// ([`Framer::literal_accepted`], [`Framer::literal_refused`]); bytes that come before
    /// either are taken as the literal, as from a client that does not wait.
    AwaitingContinuation {
        len: u64,
    },
    Opaque,
}

impl State {
    fn new_line(first_of_message: bool) -> State {
        State::Line {
            tail: [0; TAIL_LEN],
            tail_len: 0,
            line_len: 0,
            first_of_message,
            first_byte: None,
            head: StatusScan::START,
        }
    }
}

/// Frames one direction of a connection. See the module documentation.
#[derive(Debug, Clone)]
pub struct Framer {
    side: Side,
    state: State,
}

impl Framer {
    pub fn new(side: Side) -> Framer {
        Framer {
            side,
            state: State::new_line(true),
        }
    }

    /// From now on every byte is opaque (TLS after STARTTLS, DEFLATE after COMPRESS).
    pub fn set_opaque(&mut self) {
        self.state = State::Opaque;
    }

    /// Whether the stream has been switched to opaque.
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Starts framing IMAP text again at a message boundary (the decoded stream after a
    /// TLS or DEFLATE switch).
    pub fn reset(&mut self) {
        self.state = State::new_line(true);
    }

    /// In the middle of literal data.
    pub fn in_literal(&self) -> bool {
        matches!(self.state, State::Literal { .. })
    }

    /// How many bytes of the current literal are still to come (0 outside one).
    pub fn literal_remaining(&self) -> u64 {
        match self.state {
            State::Literal { remaining } => remaining,
            _ => 0,
        }
    }

    /// A client line announced a synchronizing literal and no data has come yet.
    pub fn awaits_continuation(&self) -> bool {
        matches!(self.state, State::AwaitingContinuation { .. })
    }

    /// The server sent `+`: the announced literal follows.
    pub fn literal_accepted(&mut self) {
        if let State::AwaitingContinuation { len } = self.state {
            self.state = literal_state(len);
        }
    }

    /// The server answered the command instead of sending `+`: no literal follows and the
    /// command is over. Returns whether a literal was awaited.
    pub fn literal_refused(&mut self) -> bool {
        let awaited = self.awaits_continuation();
        if awaited {
            self.state = State::new_line(true);
        }
        awaited
    }

    /// True between messages: the last fragment ended a message.
    pub fn at_message_start(&self) -> bool {
        matches!(
            self.state,
            State::Line {
                line_len: 0,
                first_of_message: true,
                ..
            }
        )
    }

    /// Takes the next fragment from the front of `input`, advancing it. Returns `None` only
    /// when `input` is empty.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Option<Fragment<'a>> {
        if input.is_empty() {
            return None;
        }
        match &mut self.state {
            State::AwaitingContinuation { len } => {
                // Data before the server's `+`: a client that does not wait.
                self.state = literal_state(*len);
                self.next(input)
            }
            State::Opaque => {
                let bytes = *input;
                *input = &[];
                Some(Fragment::Opaque(bytes))
            }
            State::Literal { remaining } => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                let (bytes, rest) = input.split_at(take);
                *input = rest;
                *remaining -= take as u64;
                let last = *remaining == 0;
                if last {
                    self.state = State::new_line(false);
                }
                Some(Fragment::Literal { bytes, last })
            }
            State::Line {
                tail,
                tail_len,
                line_len,
                first_of_message,
                first_byte,
                head,
            } => {
                if first_byte.is_none() {
                    *first_byte = input.first().copied();
                }
                let keeps_head = self.side == Side::Server && *first_of_message;
                let Some(nl) = memchr(b'\n', input) else {
                    let bytes = *input;
                    *input = &[];
                    if keeps_head {
                        head.feed(bytes);
                    }
                    push_tail(tail, tail_len, bytes);
                    *line_len += bytes.len() as u64;
                    return Some(Fragment::Line { bytes, end: None });
                };
                let (bytes, rest) = input.split_at(nl + 1);
                *input = rest;
                let body = &bytes[..nl];
                if keeps_head {
                    head.feed(body);
                }
                push_tail(tail, tail_len, body);
                let tail = &tail[..*tail_len];
                let (content, bare_lf) = match tail.last() {
                    Some(b'\r') => (&tail[..tail.len() - 1], false),
                    _ => (tail, true),
                };
                let continuation =
                    self.side == Side::Server && *first_of_message && *first_byte == Some(b'+');
                // A continuation request or a status response ends with its text, which may
                // end in `{5}` without announcing anything (RFC 9051: resp-text has no
                // literal).
                let literal = if continuation {
                    None
                } else {
                    literal_suffix(content).filter(|_| !(keeps_head && head.is_status()))
                };
                self.state = match literal {
                    // Only a client waits for `+`; a server's literal follows at once.
                    Some(header) if self.side == Side::Client && !header.non_sync => {
                        State::AwaitingContinuation { len: header.len }
                    }
                    Some(header) => literal_state(header.len),
                    None => State::new_line(true),
                };
                Some(Fragment::Line {
                    bytes,
                    end: Some(LineEnd {
                        literal,
                        bare_lf,
                        message_end: literal.is_none(),
                    }),
                })
            }
        }
    }
}

/// Where the framer goes once `len` bytes of literal data are due.
fn literal_state(len: u64) -> State {
    if len > 0 {
        State::Literal { remaining: len }
    } else {
        State::new_line(false)
    }
}

fn push_tail(tail: &mut [u8; TAIL_LEN], tail_len: &mut usize, bytes: &[u8]) {
    if bytes.len() >= TAIL_LEN {
        tail.copy_from_slice(&bytes[bytes.len() - TAIL_LEN..]);
        *tail_len = TAIL_LEN;
        return;
    }
    let keep = (TAIL_LEN - bytes.len()).min(*tail_len);
    tail.copy_within(*tail_len - keep..*tail_len, 0);
    tail[keep..keep + bytes.len()].copy_from_slice(bytes);
    *tail_len = keep + bytes.len();
}

/// Recognises `{n}`, `{n+}`, `{n-}` (tolerated), `~{n}` at the end of a line (line ending
/// already removed).
pub fn literal_suffix(line: &[u8]) -> Option<LiteralHeader> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let mut non_sync = false;
    if let Some(d) = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        digits = d;
        non_sync = true;
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    let binary = open > 0 && inner[open - 1] == b'~';
    Some(LiteralHeader {
        len,
        non_sync,
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `input` fed in the given pieces and returns a readable trace.
    fn frame(side: Side, pieces: &[&[u8]]) -> Vec<String> {
        let mut framer = Framer::new(side);
        let mut out = Vec::new();
        for piece in pieces {
            let mut input: &[u8] = piece;
            while let Some(f) = framer.next(&mut input) {
                out.push(match f {
                    Fragment::Line { bytes, end } => format!(
                        "L{}{}:{}",
                        if end.is_some() { "$" } else { "" },
                        match end.and_then(|e| e.literal) {
                            Some(l) => format!("{{{}}}", l.len),
                            None => String::new(),
                        },
                        String::from_utf8_lossy(bytes)
                    ),
                    Fragment::Literal { bytes, last } => format!(
                        "D{}:{}",
                        if last { "$" } else { "" },
                        String::from_utf8_lossy(bytes)
                    ),
                    Fragment::Opaque(b) => format!("O:{}", String::from_utf8_lossy(b)),
                });
            }
        }
        out
    }

    #[test]
    fn lines_and_literals() {
        let got = frame(
            Side::Client,
            &[b"a1 LOGIN {4}\r\nnell {3+}\r\nabc\r\na2 NOOP\n"],
        );
        assert_eq!(
            got,
            vec![
                "L${4}:a1 LOGIN {4}\r\n",
                "D$:nell",
                "L${3}: {3+}\r\n",
                "D$:abc",
                "L$:\r\n",
                "L$:a2 NOOP\n"
            ]
        );
    }

    #[test]
    fn a_status_response_ending_in_braces_announces_nothing() {
        let stream: &[u8] = b"a1 NO x {5}\r\na2 OK done\r\n* BYE going {3}\r\n\
            * OK [ALERT] quota {5}\r\n* 1 EXISTS\r\n* LIST () \"/\" {3}\r\nabc\r\n";
        let want = vec![
            "L$:a1 NO x {5}\r\n",
            "L$:a2 OK done\r\n",
            "L$:* BYE going {3}\r\n",
            "L$:* OK [ALERT] quota {5}\r\n",
            "L$:* 1 EXISTS\r\n",
            "L${3}:* LIST () \"/\" {3}\r\n",
            "D$:abc",
            "L$:\r\n",
        ];
        assert_eq!(frame(Side::Server, &[stream]), want);
        // The same one byte at a time: the head is gathered across reads.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let joined: Vec<String> = frame(Side::Server, &bytes)
            .into_iter()
            .filter_map(|f| f.strip_prefix("L$").map(String::from))
            .collect();
        assert_eq!(joined[0], ":\n");
        assert_eq!(joined.len(), 7, "{joined:?}");
        assert!(joined[5].starts_with("{3}"), "{joined:?}");
        // A client's command may end in a literal whatever its name.
        assert_eq!(
            frame(Side::Client, &[b"a1 NO {2+}\r\nhi\r\n"])[0],
            "L${2}:a1 NO {2+}\r\n"
        );
    }

    /// The grammar sets no length for a tag: a long one does not push the status word out
    /// of sight, however the bytes are split.
    #[test]
    fn a_long_tag_does_not_hide_a_status_response() {
        let tag = "t".repeat(5000);
        let stream =
            format!("{tag} OK done {{30}}\r\n* 4 EXISTS\r\n{tag}x PREAUTH {{2}}\r\nhi\r\n");
        let want = vec![
            format!("L$:{tag} OK done {{30}}\r\n"),
            "L$:* 4 EXISTS\r\n".to_string(),
            // PREAUTH is a status only untagged: this line announces a literal.
            format!("L${{2}}:{tag}x PREAUTH {{2}}\r\n"),
            "D$:hi".to_string(),
            "L$:\r\n".to_string(),
        ];
        assert_eq!(frame(Side::Server, &[stream.as_bytes()]), want);
        let pieces: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
        let split = frame(Side::Server, &pieces);
        let announced: Vec<&String> = split.iter().filter(|f| f.starts_with("L${")).collect();
        assert_eq!(announced.len(), 1, "{announced:?}");
        assert!(announced[0].starts_with("L${2}:"), "{announced:?}");
        let data: String = split
            .iter()
            .filter_map(|f| f.strip_prefix('D'))
            .map(|f| f.trim_start_matches('$').trim_start_matches(':'))
            .collect();
        assert_eq!(data, "hi");
        // `*` alone is untagged; `**` is a tag, for which BYE is no status.
        assert_eq!(
            frame(Side::Server, &[b"** BYE x {1}\r\nz\r\n"])[0],
            "L${1}:** BYE x {1}\r\n"
        );
    }

    #[test]
    fn literal_announcement_split_across_reads() {
        let got = frame(
            Side::Server,
            &[b"* 1 FETCH (BODY[] {1", b"0}\r", b"\n0123456", b"789)\r\n"],
        );
        assert_eq!(
            got,
            vec![
                "L:* 1 FETCH (BODY[] {1",
                "L:0}\r",
                "L${10}:\n",
                "D:0123456",
                "D$:789",
                "L$:)\r\n"
            ]
        );
    }

    #[test]
    fn binary_and_zero_literals() {
        assert_eq!(
            literal_suffix(b"A APPEND INBOX ~{12}"),
            Some(LiteralHeader {
                len: 12,
                non_sync: false,
                binary: true
            })
        );
        let got = frame(Side::Client, &[b"a SEARCH {0}\r\n\r\n"]);
        assert_eq!(got, vec!["L${0}:a SEARCH {0}\r\n", "L$:\r\n"]);
    }

    #[test]
    fn not_literals() {
        for line in [
            &b"a LOGIN x {}"[..],
            b"a {12a}",
            b"a {99999999999999999999}",
            b"a \"{5}\"",
            b"{",
            b"}",
        ] {
            assert_eq!(literal_suffix(line), None, "{:?}", line);
        }
    }

    #[test]
    fn server_continuation_never_announces_a_literal() {
        let got = frame(Side::Server, &[b"+ Ready {5}\r\n* OK\r\n"]);
        assert_eq!(got, vec!["L$:+ Ready {5}\r\n", "L$:* OK\r\n"]);
    }

    #[test]
    fn a_synchronizing_literal_waits_for_the_server() {
        let mut input: &[u8];
        // Refused: what follows is a new command.
        let mut framer = Framer::new(Side::Client);
        input = b"a APPEND box {5}\r\n";
        while framer.next(&mut input).is_some() {}
        assert!(framer.awaits_continuation());
        assert!(framer.literal_refused());
        assert!(framer.at_message_start());
        input = b"b NOOP\r\n";
        assert!(matches!(
            framer.next(&mut input),
            Some(Fragment::Line {
                end: Some(LineEnd {
                    message_end: true,
                    ..
                }),
                ..
            })
        ));
        // Accepted: data, whatever it says.
        let mut framer = Framer::new(Side::Client);
        input = b"a APPEND box {8}\r\n";
        while framer.next(&mut input).is_some() {}
        framer.literal_accepted();
        assert!(!framer.literal_refused());
        input = b"b NOOP\r\n";
        assert!(matches!(
            framer.next(&mut input),
            Some(Fragment::Literal { last: true, .. })
        ));
        // A server's literal never waits.
        let mut framer = Framer::new(Side::Server);
        input = b"* 1 FETCH (BODY[] {2}\r\n";
        while framer.next(&mut input).is_some() {}
        assert!(!framer.awaits_continuation());
    }

    #[test]
    fn opaque_after_switch() {
        let mut framer = Framer::new(Side::Client);
        let mut input: &[u8] = b"a STARTTLS\r\n\x16\x03\x01";
        assert!(matches!(
            framer.next(&mut input),
            Some(Fragment::Line { .. })
        ));
        framer.set_opaque();
        assert_eq!(
            framer.next(&mut input),
            Some(Fragment::Opaque(b"\x16\x03\x01"))
        );
        assert_eq!(framer.next(&mut input), None);
    }

    #[test]
    fn long_line_is_bounded() {
        let mut framer = Framer::new(Side::Client);
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..100 {
            let mut input: &[u8] = &chunk;
            while framer.next(&mut input).is_some() {}
        }
        // The framer's size does not depend on what it has seen.
        assert!(std::mem::size_of::<Framer>() <= 128);
        let mut input: &[u8] = b"{3}\r\nabc\r\n";
        let got: Vec<_> = std::iter::from_fn(|| framer.next(&mut input)).collect();
        assert_eq!(got.len(), 3);
    }
}
