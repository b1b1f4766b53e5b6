//! The token tree never fails and never reads outside its input; command and response heads
//! and the replay canonical form are derived from it.
#![no_main]

use imapscope::protocol::message::{parse_command, parse_response};
use imapscope::protocol::token::Tokenizer;
use imapscope::replay::canon::canon;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tokenizer = Tokenizer::new(data);
    let _ = tokenizer.rest();
    assert!(tokenizer.position() <= data.len());
    let _ = parse_command(data);
    let _ = parse_response(data);
    let _ = canon(data);
});
