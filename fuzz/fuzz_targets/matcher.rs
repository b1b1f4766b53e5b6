//! The replay matcher on arbitrary recorded and received responses: comparison, variable
//! binding and the rendered diff never panic.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use imapscope::replay::matcher::{Extras, Group, compare};
use libfuzzer_sys::fuzz_target;

/// Lines of one side; a line's first byte picks its group.
fn responses(side: &[u8]) -> Vec<(Group, Vec<u8>)> {
    side.split_inclusive(|&b| b == b'\n')
        .filter_map(|line| line.split_first())
        .map(|(&g, line)| {
            let group = match g % 4 {
                0 => Group::Greeting,
                1 => Group::Unsolicited,
                n => Group::Command(usize::from(n)),
            };
            (group, line.to_vec())
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (expected, received) = data.split_at(split);
    let received = received.get(1..).unwrap_or_default();
    let mut commands = BTreeMap::new();
    commands.insert(Group::Command(2), "a SELECT INBOX".to_string());
    let extras = if data.len() % 2 == 0 {
        Extras::Forbid
    } else {
        Extras::Allow
    };
    let mut cut_off = BTreeSet::new();
    if data.len() % 3 == 0 {
        cut_off.insert(Group::Command(3));
    }
    let expected = responses(expected);
    // Now and then the last recorded message is taken as cut short (a client killed
    // mid-FETCH), as a recording can have it, so that both paths of the comparison are run.
    let cut_short: BTreeSet<usize> = expected
        .len()
        .checked_sub(1)
        .filter(|_| data.len() % 5 < 2)
        .into_iter()
        .collect();
    let comparison = compare(
        &commands,
        &cut_off,
        &expected,
        &cut_short,
        &responses(received),
        extras,
    );
    let _ = comparison.ok();
    let _ = comparison.render(true);
});
