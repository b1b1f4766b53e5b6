//! The transcript reader on arbitrary files, bare and behind a valid header line: an error
//! or a transcript, never a panic.
#![no_main]

use imapscope::transcript::reader::parse_transcript;
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = br#"{"type":"session","version":1,"imapscope":"x","id":1,"client":"c","listen":"l","upstream":"u","start":"s","redaction":true}
"#;

fuzz_target!(|data: &[u8]| {
    let _ = parse_transcript(data, "fuzz");
    let mut file = HEADER.to_vec();
    file.extend_from_slice(data);
    let _ = parse_transcript(&file[..], "fuzz");
});
