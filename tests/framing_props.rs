//! Property: how the byte stream is split into reads never changes what is recorded.

use imapscope::protocol::{Event, SessionTracker, Side};
use proptest::prelude::*;

/// Pieces that exercise every framing rule, glued into a stream at random.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"* OK ready\r\n".to_vec()),
        Just(b"a1 LOGIN nell \"pa ss\"\r\n".to_vec()),
        Just(b"+ go ahead\r\n".to_vec()),
        Just(b"* 1 FETCH (BODY[] {5}\r\nHello)\r\n".to_vec()),
        Just(b"a2 APPEND INBOX {3+}\r\nabc\r\n".to_vec()),
        Just(b"a3 APPEND INBOX ~{2}\r\n\x00\x01\r\n".to_vec()),
        Just(b"a4 OK done\r\n".to_vec()),
        Just(b"bare lf line\n".to_vec()),
        Just(b"a5 SEARCH {0}\r\n\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
        (0usize..600).prop_map(|n| format!("* 2 FETCH (BODY[] {{{n}}}\r\n")
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b'z', n))
            .chain(*b")\r\n")
            .collect()),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..30).prop_map(|v| v.concat())
}

/// What the tracker makes of `bytes` fed in pieces cut at `cuts`: per message, its seq,
/// kind and the full bytes (head and parts joined).
fn record(side: Side, bytes: &[u8], cuts: &[usize]) -> Vec<(u64, String, Vec<u8>)> {
    let mut tracker = SessionTracker::new();
    let mut events = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    for w in points.windows(2) {
        tracker.on_bytes(side, 0, &bytes[w[0]..w[1]], &mut events);
    }
    tracker.finish(0, &mut events);
    let mut out: Vec<(u64, String, Vec<u8>)> = Vec::new();
    for e in events {
        match e {
            Event::Message(m) => out.push((m.seq, format!("{:?}", m.kind), m.bytes)),
            Event::Part { seq, bytes, .. } => {
                if let Some(m) = out.iter_mut().find(|m| m.0 == seq) {
                    m.2.extend_from_slice(&bytes);
                }
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn splitting_does_not_change_messages(
        bytes in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        server in any::<bool>(),
    ) {
        let side = if server { Side::Server } else { Side::Client };
        let whole = record(side, &bytes, &[]);
        let split = record(side, &bytes, &cuts);
        prop_assert_eq!(&whole, &split);
        // Nothing is lost or invented: the messages are the stream.
        let joined: Vec<u8> = whole.iter().flat_map(|m| m.2.clone()).collect();
        prop_assert_eq!(joined, bytes);
    }
}

/// One exchange in which the server answers an APPEND around its literal, fed to one tracker
/// from both sides in the order a relay sees it: the command line, then (depending on the
/// case) the server's `+` or its answer, the literal's data before and after that answer, and
/// a NOOP the client sends next.
#[derive(Debug, Clone)]
enum Answered {
    /// `{n+}` / `~{n+}`: the data follows at once; the server answers after `at` bytes.
    NonSync { binary: bool, at: usize, bad: bool },
    /// `{n}` refused: no data follows.
    SyncRefused { binary: bool, bad: bool },
    /// `{n}` accepted: the data follows the `+`, whatever it looks like.
    SyncAccepted { binary: bool },
}

fn answered() -> impl Strategy<Value = (Answered, Vec<u8>)> {
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        Just(b"a3 NOOP\r\na2 OK fake\r\n".to_vec()),
    ];
    (
        prop_oneof![
            (any::<bool>(), any::<usize>(), any::<bool>())
                .prop_map(|(binary, at, bad)| { Answered::NonSync { binary, at, bad } }),
            (any::<bool>(), any::<bool>())
                .prop_map(|(binary, bad)| Answered::SyncRefused { binary, bad }),
            any::<bool>().prop_map(|binary| Answered::SyncAccepted { binary }),
        ],
        data,
    )
}

/// Cuts `bytes` at `cuts` and feeds each piece.
fn feed_cut(
    tracker: &mut SessionTracker,
    side: Side,
    bytes: &[u8],
    cuts: &[usize],
    events: &mut Vec<Event>,
) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.extend([0, bytes.len()]);
    points.sort_unstable();
    for w in points.windows(2) {
        tracker.on_bytes(side, 0, &bytes[w[0]..w[1]], events);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_command_answered_around_its_literal_stays_paired(
        (case, data) in answered(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut t = SessionTracker::new();
        let mut events = Vec::new();
        t.on_bytes(Side::Server, 0, b"* PREAUTH ready\r\n", &mut events);
        let n = data.len();
        let (binary, plus) = match &case {
            Answered::NonSync { binary, .. } => (*binary, "+"),
            Answered::SyncRefused { binary, .. } | Answered::SyncAccepted { binary } => {
                (*binary, "")
            }
        };
        let tilde = if binary { "~" } else { "" };
        let line = format!("a2 APPEND INBOX {tilde}{{{n}{plus}}}\r\n");
        let mut client: Vec<u8> = line.clone().into_bytes();
        feed_cut(&mut t, Side::Client, line.as_bytes(), &cuts, &mut events);
        let status = |bad: bool| if bad { "a2 BAD no\r\n" } else { "a2 NO [TRYCREATE] no\r\n" };
        let refused = match case {
            Answered::NonSync { at, bad, .. } => {
                let at = at % (n + 1);
                feed_cut(&mut t, Side::Client, &data[..at], &cuts, &mut events);
                t.on_bytes(Side::Server, 1, status(bad).as_bytes(), &mut events);
                feed_cut(&mut t, Side::Client, &data[at..], &cuts, &mut events);
                t.on_bytes(Side::Client, 2, b"\r\n", &mut events);
                client.extend_from_slice(&data);
                client.extend_from_slice(b"\r\n");
                true
            }
            Answered::SyncRefused { bad, .. } => {
                t.on_bytes(Side::Server, 1, status(bad).as_bytes(), &mut events);
                true
            }
            Answered::SyncAccepted { .. } => {
                t.on_bytes(Side::Server, 1, b"+ go\r\n", &mut events);
                feed_cut(&mut t, Side::Client, &data, &cuts, &mut events);
                t.on_bytes(Side::Client, 2, b"\r\n", &mut events);
                client.extend_from_slice(&data);
                client.extend_from_slice(b"\r\n");
                t.on_bytes(Side::Server, 3, b"a2 OK appended\r\n", &mut events);
                false
            }
        };
        prop_assert!(refused || t.unanswered().is_empty());
        t.on_bytes(Side::Client, 4, b"a3 NOOP\r\n", &mut events);
        client.extend_from_slice(b"a3 NOOP\r\n");
        t.on_bytes(Side::Server, 5, b"a3 OK done\r\n", &mut events);
        t.finish(6, &mut events);

        let mut commands = Vec::new();
        let mut answers = Vec::new();
        let mut rebuilt = Vec::new();
        for e in &events {
            match e {
                Event::Message(m) if m.from == Side::Client => {
                    if m.kind == imapscope::protocol::Kind::Command {
                        commands.push((m.seq, m.name.as_deref().unwrap_or("").to_string()));
                    }
                    rebuilt.extend_from_slice(&m.bytes);
                }
                Event::Message(m) if m.kind == imapscope::protocol::Kind::Completion => {
                    prop_assert!(m.detail().notes.is_empty(), "{:?}", m.detail().notes);
                    answers.push(m.reply_to);
                }
                Event::Part { from: Side::Client, bytes, .. } => rebuilt.extend_from_slice(bytes),
                _ => {}
            }
        }
        let names: Vec<&str> = commands.iter().map(|c| c.1.as_str()).collect();
        prop_assert_eq!(names, vec!["APPEND", "NOOP"]);
        let paired: Vec<Option<u64>> = commands.iter().map(|c| Some(c.0)).collect();
        prop_assert_eq!(answers, paired);
        prop_assert_eq!(rebuilt, client);
        prop_assert!(t.unanswered().is_empty());
    }
}
