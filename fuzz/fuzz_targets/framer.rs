//! Framing loses nothing and does not depend on how the stream is cut into reads: the
//! fragments of the whole input and of the same input in arbitrary pieces agree.
#![no_main]

use imapscope::protocol::Side;
use imapscope::protocol::framer::{Fragment, Framer};
use libfuzzer_sys::fuzz_target;

/// Fragments coalesced into whole units: (kind, bytes, how the unit ended).
type Units = Vec<(u8, Vec<u8>, String)>;

fn frame(side: Side, pieces: &[&[u8]]) -> Units {
    let mut framer = Framer::new(side);
    let mut units: Units = Vec::new();
    let mut open = false;
    for piece in pieces {
        let mut input = *piece;
        while let Some(fragment) = framer.next(&mut input) {
            let (kind, bytes, end) = match fragment {
                Fragment::Line { bytes, end } => (0, bytes, end.map(|e| format!("{e:?}"))),
                Fragment::Literal { bytes, last } => (1, bytes, last.then(String::new)),
                Fragment::Opaque(bytes) => (2, bytes, None),
            };
            match units.last_mut() {
                Some(unit) if open && unit.0 == kind => unit.1.extend_from_slice(bytes),
                _ => units.push((kind, bytes.to_vec(), String::new())),
            }
            open = end.is_none();
            if let (Some(end), Some(unit)) = (end, units.last_mut()) {
                unit.2 = end;
            }
        }
    }
    units
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let side = if control & 1 == 0 {
        Side::Client
    } else {
        Side::Server
    };
    let step = usize::from(control >> 1) + 1;
    let whole = frame(side, &[stream]);
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    let split = frame(side, &pieces);
    assert_eq!(whole, split, "framing depends on read boundaries");
    let total: usize = whole.iter().map(|u| u.1.len()).sum();
    assert_eq!(total, stream.len(), "framing lost or invented bytes");
});
