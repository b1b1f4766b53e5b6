//! The session tracker and the transcript writer (with its redaction) on two interleaved
//! arbitrary streams: no panic, and no message held beyond the limit.
#![no_main]

use imapscope::protocol::tracker::MESSAGE_HOLD_LIMIT;
use imapscope::protocol::{Event, SessionTracker, Side};
use imapscope::transcript::TranscriptWriter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Each chunk: one control byte (side in bit 0, length in the rest), then its bytes.
    let mut tracker = SessionTracker::new();
    let mut writer = TranscriptWriter::in_memory(true);
    let mut events = Vec::new();
    let mut rest = data;
    let mut t_us = 0u64;
    while let Some((&control, tail)) = rest.split_first() {
        let side = if control & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        let len = (usize::from(control >> 1) + 1).min(tail.len());
        let (chunk, after) = tail.split_at(len);
        rest = after;
        t_us += 7;
        tracker.on_bytes(side, t_us, chunk, &mut events);
        for event in events.drain(..) {
            if let Event::Message(m) = &event {
                assert!(m.bytes.len() <= MESSAGE_HOLD_LIMIT);
            }
            writer.event(event);
        }
    }
    tracker.finish(t_us, &mut events);
    for event in events.drain(..) {
        writer.event(event);
    }
});
