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
