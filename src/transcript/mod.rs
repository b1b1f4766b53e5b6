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
/// `2026-11-25T21:05:01Z` and 3 give `20261125T210501Z-000003`.
pub fn file_stem(start: std::time::SystemTime, id: u64) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(start)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{id:06}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_stem_sorts_by_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_640_701);
        assert_eq!(super::file_stem(t, 3), "20261125T210501Z-000003");
    }
}
