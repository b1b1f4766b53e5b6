//! Transcripts: the public, versioned record of a session (see `docs/transcript.md`).
//!
//! [`format`](mod@format) defines the records, [`writer`] is the one path to disk (it applies redaction)
//! and [`reader`] reads files back, tolerating a torn last line. Nothing here knows sockets.

pub mod format;
pub mod reader;
pub mod writer;

pub use format::{FORMAT_VERSION, Record};
pub use reader::{ReadError, Transcript, read_transcript};
pub use writer::TranscriptWriter;

/// The file stem of a transcript: sorts by start time, shows the connection id.
/// `2026-11-25T21:05:01.250000Z` and 3 give `20261125T210501.250000Z-000003`. The stamp is to
/// the microsecond, so the files of two imapscope processes writing to one directory (each
/// numbering its connections from 1) still sort in the order the sessions started.
pub fn file_stem(start: std::time::SystemTime, id: u64) -> String {
    let stamp: String = humantime::format_rfc3339_micros(start)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{id:06}")
}

/// The stem for the `n`th try when `stem` is taken (two sessions in one microsecond with the
/// same id: two processes). `_` sorts after `.`, so the later file sorts after the first.
pub fn file_stem_again(stem: &str, n: u32) -> String {
    format!("{stem}_{n}")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn file_stem_sorts_by_time() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_640_701_250_000);
        assert_eq!(super::file_stem(t, 3), "20261125T210501.250000Z-000003");
        // Two processes, each with its own connection numbers: start order wins.
        let first = super::file_stem(t, 7) + ".jsonl";
        let second = super::file_stem(t + Duration::from_micros(1), 2) + ".jsonl";
        assert!(first < second);
        // A name taken: the second file sorts after the first.
        let stem = super::file_stem(t, 2);
        let again = super::file_stem_again(&stem, 1) + ".jsonl";
        assert!(stem + ".jsonl" < again);
    }
}
